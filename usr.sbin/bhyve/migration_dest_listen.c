/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The destination's accept and receive loop (migration_dest_listen.h).
 */

#include <sys/socket.h>

#include <netinet/in.h>

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migration.h"
#include "migration_backend.h"
#include "migration_dest_listen.h"
#include "migration_net.h"

static const char *const state_names[] = {
	[MIG_DEST_LISTENING] = "listening",
	[MIG_DEST_RECEIVING] = "receiving",
	[MIG_DEST_RUNNING] = "running",
	[MIG_DEST_FAILED] = "failed",
};

/* Read by the status query from another thread. */
static int dest_state = MIG_DEST_LISTENING;

static void
dest_log(struct mig_dest *d, const char *fmt, ...)
    __attribute__((__format__(__printf__, 2, 3)));

static void
dest_log(struct mig_dest *d, const char *fmt, ...)
{
	char line[MIG_ERRMSG_MAX + 160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (d->log != NULL)
		d->log(d->logarg, line);
}

void
mig_dest_set_state(enum mig_dest_state st)
{

	__atomic_store_n(&dest_state, (int)st, __ATOMIC_SEQ_CST);
}

enum mig_dest_state
mig_dest_state(void)
{

	return ((enum mig_dest_state)__atomic_load_n(&dest_state,
	    __ATOMIC_SEQ_CST));
}

char *
mig_dest_status_json(void)
{
	enum mig_dest_state st;
	char *buf;

	st = mig_dest_state();
	if (asprintf(&buf, "{\"state\":\"%s\",\"guest_runs_here\":%s}",
	    state_names[st], st == MIG_DEST_RUNNING ? "true" : "false") < 0)
		return (NULL);
	return (buf);
}

int
mig_dest_listen(struct mig_dest *d, const char *spec, char *host,
    size_t hostlen, char *port, size_t portlen, char *msg, size_t msglen)
{
	char h[NI_MAXHOST], p[NI_MAXSERV];
	struct addrinfo hints, *ai, *res;
	struct sockaddr_storage ss;
	socklen_t sslen;
	int error, fd, on;

	d->nfds = 0;
	if ((error = mig_hostport_split(spec, MIG_DEFAULT_PORT, h, sizeof(h),
	    p, sizeof(p), msg, msglen)) != 0)
		return (error);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	if ((error = getaddrinfo(h[0] != '\0' ? h : NULL, p, &hints,
	    &res)) != 0) {
		snprintf(msg, msglen, "%s port %s: %s", h[0] != '\0' ? h :
		    "any address", p, gai_strerror(error));
		return (EINVAL);
	}
	error = 0;
	for (ai = res; ai != NULL && d->nfds < MIG_DEST_MAXLISTEN;
	    ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
		    ai->ai_protocol);
		if (fd < 0) {
			error = errno;
			continue;
		}
		on = 1;
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on,
		    sizeof(on));
		if (ai->ai_family == AF_INET6)
			(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on,
			    sizeof(on));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
		    listen(fd, MIG_DEST_BACKLOG) != 0) {
			error = errno;
			close(fd);
			continue;
		}
		d->fds[d->nfds++] = fd;
	}
	freeaddrinfo(res);
	if (d->nfds == 0) {
		snprintf(msg, msglen, "%s port %s: %s", h[0] != '\0' ? h :
		    "any address", p, strerror(error));
		return (error != 0 ? error : EADDRNOTAVAIL);
	}
	sslen = sizeof(ss);
	if (getsockname(d->fds[0], (struct sockaddr *)&ss, &sslen) != 0 ||
	    getnameinfo((struct sockaddr *)&ss, sslen, host, hostlen, port,
	    portlen, NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		snprintf(host, hostlen, "%s", h);
		snprintf(port, portlen, "%s", p);
	}
	mig_dest_set_state(MIG_DEST_LISTENING);
	return (0);
}

void
mig_dest_close(struct mig_dest *d)
{
	int i;

	for (i = 0; i < d->nfds; i++)
		close(d->fds[i]);
	d->nfds = 0;
}

/*
 * Connections that have not proved the key yet are served by one thread
 * each, at most DEST_SLOTS at once, and each gets one deadline for the
 * whole exchange up to and including the guest's description: a peer
 * that sends nothing, or one byte now and then, loses its slot when the
 * deadline passes, and a new connection displaces the oldest when all slots
 * are busy, so junk cannot keep the real source out.  A connection that
 * proved the key (a source past AUTH, a stream with a good JOIN) is never
 * displaced, and a source opens all of its streams at once, each holding
 * a slot until its JOIN arrives: MIG_DEST_PREAUTH_MAX slots beyond one
 * session's further streams, so that strangers connecting then displace
 * each other, not the session.
 */
#define	DEST_SLOTS	(MIG_DEST_PREAUTH_MAX + MIG_STREAMS_MAX - 1)

struct preauth {
	pthread_t	tid;
	int		fd;
	int		wakefd;		/* the main loop's pipe */
	bool		busy;
	bool		cut;		/* shut down by the main loop */
	bool		evicted;	/* cut to make room, not for time */
	int		proven;		/* set by the thread: the key held */
	int		done;		/* set by the thread when it ends */
	uint64_t	started_us;
	const struct mig_params *p;
	char		peer[MIG_DEST_PEER_MAX];
	struct mig_conn	*conn;
	struct mig_vminfo vi;
	struct mig_error err;
	int		error;
};

/*
 * A connection that answered HELLO with JOIN (migration_streams.h):
 * parked until the session it names is accepted, within its deadline.
 */
struct parked {
	bool		busy;
	int		fd;
	uint64_t	started_us;
	struct mig_conn	*conn;
	char		peer[MIG_DEST_PEER_MAX];
};

struct preauth_set {
	struct preauth	slot[DEST_SLOTS];
	struct parked	joins[MIG_DEST_PREAUTH_MAX];
	struct mig_conn	*session;	/* accepted, its streams joining */
	int		session_fd;
	uint64_t	session_us;
	char		session_peer[MIG_DEST_PEER_MAX];
	struct mig_vminfo session_vi;
	int		wake[2];
};

static void *
preauth_thread(void *arg)
{
	struct preauth *s;
	char one;

	s = arg;
	s->error = mig_recv_accept(s->fd, s->p, &s->proven, &s->conn, &s->vi, &s->err);
	__atomic_store_n(&s->done, 1, __ATOMIC_SEQ_CST);
	one = 0;
	(void)write(s->wakefd, &one, 1);
	return (NULL);
}

static void
preauth_cut(struct preauth *s, bool evict)
{

	if (s->cut)
		return;
	s->cut = true;
	s->evicted = evict;
	(void)shutdown(s->fd, SHUT_RDWR);
}

/* End every pending handshake but keep (not free) slot "keep". */
static void
preauth_stop_all(struct preauth_set *ps, struct preauth *keep)
{
	struct preauth *s;
	int i;

	for (i = 0; i < DEST_SLOTS; i++) {
		s = &ps->slot[i];
		if (!s->busy || s == keep)
			continue;
		preauth_cut(s, true);
		(void)pthread_join(s->tid, NULL);
		mig_conn_free(s->conn);
		close(s->fd);
		s->busy = false;
	}
	close(ps->wake[0]);
	close(ps->wake[1]);
}

static int
preauth_start(struct mig_dest *d, struct preauth_set *ps,
    const struct mig_params *p, int lfd)
{
	char h[NI_MAXHOST], sv[NI_MAXSERV];
	struct sockaddr_storage ss;
	struct preauth *s;
	socklen_t sslen;
	int conn, error, i;

	s = NULL;
	for (i = 0; i < DEST_SLOTS && s == NULL; i++)
		if (!ps->slot[i].busy)
			s = &ps->slot[i];
	sslen = sizeof(ss);
	conn = accept(lfd, (struct sockaddr *)&ss, &sslen);
	if (conn < 0)
		return (errno == EINTR || errno == ECONNABORTED ||
		    errno == EAGAIN || errno == EWOULDBLOCK ? 0 : errno);
	memset(s, 0, sizeof(*s));
	if (getnameinfo((struct sockaddr *)&ss, sslen, h, sizeof(h), sv,
	    sizeof(sv), NI_NUMERICHOST | NI_NUMERICSERV) == 0)
		snprintf(s->peer, sizeof(s->peer), ss.ss_family == AF_INET6 ?
		    "[%s]:%s" : "%s:%s", h, sv);
	else
		snprintf(s->peer, sizeof(s->peer), "the source");
	s->fd = conn;
	s->wakefd = ps->wake[1];
	s->p = p;
	s->started_us = mig_now_us();
	if ((error = pthread_create(&s->tid, NULL, preauth_thread, s)) != 0) {
		dest_log(d, "Refused a migration connection from %s: no "
		    "thread to serve it: %s", s->peer, strerror(error));
		close(conn);
		return (0);
	}
	s->busy = true;
	return (0);
}

/* Cut a handshake past its deadline, else shorten the next wait to it. */
static void
preauth_check_time(struct preauth *s, uint64_t now, uint64_t hs_ms,
    uint64_t *wait_us)
{
	uint64_t end;

	if (s->cut)
		return;
	end = s->started_us + hs_ms * 1000;
	if (now >= end)
		preauth_cut(s, false);
	else if (end - now < *wait_us)
		*wait_us = end - now;
}

static void
preauth_fail(struct mig_error *err, int error, const char *fmt, ...)
    __attribute__((__format__(__printf__, 3, 4)));

static void
preauth_fail(struct mig_error *err, int error, const char *fmt, ...)
{
	va_list ap;

	memset(err, 0, sizeof(*err));
	err->side = MIG_SIDE_DEST;
	err->phase = MIG_PHASE_CONNECT;
	err->code = error;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	mig_dest_set_state(MIG_DEST_FAILED);
}

/*
 * One ended handshake: 1 when it is the source to serve, 2 when it is
 * a stream joining a session, 0 to keep listening, -1 when the whole
 * receive fails.
 */
static int
preauth_reap(struct mig_dest *d, struct preauth *s, uint64_t hs_ms)
{

	(void)pthread_join(s->tid, NULL);
	if (s->error == 0)
		return (1);
	if (s->error == EINPROGRESS)
		return (2);
	close(s->fd);
	s->busy = false;
	/*
	 * Only a peer that proved the key can fail the receive; before
	 * that (a port scan, a health check, a wrong key, junk) the real
	 * source must not lose its destination.  Dry runs never do.
	 */
	if (s->err.phase > MIG_PHASE_AUTH && !s->err.dry_run && !s->cut)
		return (-1);
	if (s->cut && s->evicted)
		dest_log(d, "Refused a migration connection from %s: closed to "
		    "make room for a newer one (%d connections already "
		    "waiting); still waiting", s->peer, DEST_SLOTS);
	else if (s->cut)
		dest_log(d, "Refused a migration connection from %s: no "
		    "authenticated guest description within %ju ms; still "
		    "waiting", s->peer, (uintmax_t)hs_ms);
	else
		dest_log(d, "Refused a migration connection from %s (%s side, "
		    "during %s): %s; still waiting", s->peer,
		    mig_side_name(s->err.side), mig_phase_name(s->err.phase),
		    s->err.msg);
	return (0);
}

/* Check a join against the session; the socket is the session's if 0. */
static void
join_try(struct mig_dest *d, struct preauth_set *ps, struct mig_conn *conn,
    int fd, const char *peer)
{
	char msg[MIG_ERRMSG_MAX];
	int error;

	error = mig_conn_join(ps->session, conn, msg, sizeof(msg));
	mig_conn_free(conn);
	if (error == 0)
		return;
	dest_log(d, "Refused a stream join from %s: %s; still waiting", peer,
	    msg);
	close(fd);
}

static void
join_drop(struct parked *j)
{

	mig_conn_free(j->conn);
	close(j->fd);
	j->busy = false;
}

/* Park a join that came before its session; the oldest makes room. */
static void
join_park(struct mig_dest *d, struct preauth_set *ps, struct preauth *s)
{
	struct parked *j, *oldest;
	int i;

	j = oldest = NULL;
	for (i = 0; i < MIG_DEST_PREAUTH_MAX && j == NULL; i++) {
		if (!ps->joins[i].busy)
			j = &ps->joins[i];
		else if (oldest == NULL ||
		    ps->joins[i].started_us < oldest->started_us)
			oldest = &ps->joins[i];
	}
	if (j == NULL) {
		dest_log(d, "Refused a stream join from %s: closed to make "
		    "room for a newer one; still waiting", oldest->peer);
		join_drop(oldest);
		j = oldest;
	}
	j->busy = true;
	j->fd = s->fd;
	j->conn = s->conn;
	j->started_us = s->started_us;
	snprintf(j->peer, sizeof(j->peer), "%s", s->peer);
}

/* Parked joins: try them on the session, drop the ones past time. */
static void
joins_check(struct mig_dest *d, struct preauth_set *ps, uint64_t now,
    uint64_t hs_ms, uint64_t *wait_us)
{
	struct parked *j;
	uint64_t end;
	int i;

	for (i = 0; i < MIG_DEST_PREAUTH_MAX; i++) {
		j = &ps->joins[i];
		if (!j->busy)
			continue;
		if (ps->session != NULL) {
			join_try(d, ps, j->conn, j->fd, j->peer);
			j->busy = false;
			continue;
		}
		end = j->started_us + hs_ms * 1000;
		if (now >= end) {
			dest_log(d, "Refused a stream join from %s: no session "
			    "it belongs to within %ju ms; still waiting",
			    j->peer, (uintmax_t)hs_ms);
			join_drop(j);
		} else if (end - now < *wait_us)
			*wait_us = end - now;
	}
}

static void
joins_drop_all(struct preauth_set *ps)
{
	int i;

	for (i = 0; i < MIG_DEST_PREAUTH_MAX; i++)
		if (ps->joins[i].busy)
			join_drop(&ps->joins[i]);
}

/*
 * A served handshake while a session's streams join: a join is tried,
 * another source refused.
 */
static void
session_reap(struct mig_dest *d, struct preauth_set *ps, struct preauth *s,
    int r)
{

	if (r == 2) {
		join_try(d, ps, s->conn, s->fd, s->peer);
	} else {
		dest_log(d, "Refused a migration connection from %s: the "
		    "migration from %s is being set up; still waiting",
		    s->peer, ps->session_peer);
		mig_conn_free(s->conn);
		close(s->fd);
	}
	s->busy = false;
}

/*
 * The session once every stream joined: 0 with it, an errno value when
 * its time ran out (the source proved the key: the receive fails), -1
 * to go on waiting.  ps is freed unless -1.
 */
static int
session_check(struct mig_dest *d, struct preauth_set *ps, uint64_t now,
    uint64_t hs_ms, uint64_t *wait_us, struct mig_conn **cp,
    struct mig_vminfo *vi, struct mig_error *err)
{
	uint64_t end;
	uint32_t n;

	end = ps->session_us + hs_ms * 1000;
	if (!mig_conn_joined_all(ps->session) && now < end) {
		if (end - now < *wait_us)
			*wait_us = end - now;
		return (-1);
	}
	preauth_stop_all(ps, NULL);
	joins_drop_all(ps);
	if (mig_conn_joined_all(ps->session)) {
		snprintf(d->peer, sizeof(d->peer), "%s", ps->session_peer);
		*cp = ps->session;
		*vi = ps->session_vi;
		free(ps);
		mig_dest_set_state(MIG_DEST_RECEIVING);
		return (0);
	}
	n = mig_conn_nstreams(ps->session);
	mig_conn_free(ps->session);
	close(ps->session_fd);
	preauth_fail(err, ETIMEDOUT, "not every one of the %u streams of the "
	    "migration from %s joined within %ju ms", n, ps->session_peer,
	    (uintmax_t)hs_ms);
	free(ps);
	return (ETIMEDOUT);
}

int
mig_dest_accept(struct mig_dest *d, const struct mig_params *p,
    struct mig_conn **cp, struct mig_vminfo *vi, struct mig_error *err)
{
	struct pollfd pfd[MIG_DEST_MAXLISTEN + 1];
	struct preauth_set *ps;
	struct preauth *s, *oldest;
	uint64_t hs_ms, now, deadline, wait_us;
	char drain[64];
	bool held;
	int error, i, n, nbusy, r, timeout;

	hs_ms = d->handshake_timeout_ms != 0 ? d->handshake_timeout_ms :
	    MIG_DEST_HANDSHAKE_MS;
	deadline = d->listen_timeout_ms != 0 ? mig_now_us() +
	    d->listen_timeout_ms * 1000 : 0;
	if ((ps = calloc(1, sizeof(*ps))) == NULL ||
	    pipe(ps->wake) != 0) {
		error = ps == NULL ? ENOMEM : errno;
		free(ps);
		preauth_fail(err, error, "waiting for the source: %s",
		    strerror(error));
		return (error);
	}
	for (;;) {
		now = mig_now_us();
		nbusy = 0;
		oldest = NULL;
		wait_us = deadline != 0 ? (deadline > now ? deadline - now :
		    0) : UINT64_MAX;
		for (i = 0; i < DEST_SLOTS; i++) {
			s = &ps->slot[i];
			if (!s->busy)
				continue;
			nbusy++;
			if (!__atomic_load_n(&s->done, __ATOMIC_SEQ_CST)) {
				preauth_check_time(s, now, hs_ms, &wait_us);
				if (!s->cut && !__atomic_load_n(&s->proven,
				    __ATOMIC_SEQ_CST) && (oldest == NULL ||
				    s->started_us < oldest->started_us))
					oldest = s;
				continue;
			}
			r = preauth_reap(d, s, hs_ms);
			held = r == 0;
			if (r != 0 && ps->session != NULL) {
				session_reap(d, ps, s, r);
				held = true;
			} else if (r == 2) {
				join_park(d, ps, s);
				s->busy = false;
				held = true;
			} else if (r == 1 && mig_conn_nstreams(s->conn) > 1) {
				/* Its streams join before it is served. */
				ps->session = s->conn;
				ps->session_fd = s->fd;
				ps->session_us = now;
				ps->session_vi = s->vi;
				snprintf(ps->session_peer,
				    sizeof(ps->session_peer), "%s", s->peer);
				s->busy = false;
				held = true;
			}
			if (held) {
				nbusy--;
				continue;
			}
			preauth_stop_all(ps, s);
			joins_drop_all(ps);
			if (r < 0) {
				error = s->error;
				*err = s->err;
				free(ps);
				mig_dest_set_state(MIG_DEST_FAILED);
				return (error);
			}
			snprintf(d->peer, sizeof(d->peer), "%s", s->peer);
			*cp = s->conn;
			*vi = s->vi;
			free(ps);
			mig_dest_set_state(MIG_DEST_RECEIVING);
			return (0);
		}
		joins_check(d, ps, now, hs_ms, &wait_us);
		if (ps->session != NULL && (r = session_check(d, ps, now, hs_ms,
		    &wait_us, cp, vi, err)) >= 0)
			return (r);
		if (deadline != 0 && now >= deadline && nbusy == 0 &&
		    ps->session == NULL) {
			preauth_stop_all(ps, NULL);
			free(ps);
			preauth_fail(err, ETIMEDOUT, "no source proved the key "
			    "within the listen deadline (%ju ms)",
			    (uintmax_t)d->listen_timeout_ms);
			return (ETIMEDOUT);
		}
		n = 0;
		pfd[n].fd = ps->wake[0];
		pfd[n].events = POLLIN;
		pfd[n++].revents = 0;
		/* Past the listen deadline only the pending ones finish. */
		if (deadline == 0 || now < deadline || ps->session != NULL) {
			for (i = 0; i < d->nfds; i++) {
				pfd[n].fd = d->fds[i];
				pfd[n].events = POLLIN;
				pfd[n++].revents = 0;
			}
		}
		/* All slots busy, none to displace or one being: wait. */
		if (nbusy == DEST_SLOTS && oldest == NULL)
			n = 1;
		timeout = wait_us == UINT64_MAX ? -1 :
		    (int)((wait_us + 999) / 1000);
		if (poll(pfd, (nfds_t)n, timeout) < 0) {
			if (errno == EINTR)
				continue;
			error = errno;
			preauth_stop_all(ps, NULL);
			free(ps);
			preauth_fail(err, error, "waiting for the source: %s",
			    strerror(error));
			return (error);
		}
		if ((pfd[0].revents & POLLIN) != 0)
			(void)read(ps->wake[0], drain, sizeof(drain));
		for (i = 1; i < n; i++) {
			if ((pfd[i].revents & POLLIN) == 0)
				continue;
			if (nbusy == DEST_SLOTS) {
				if (oldest != NULL)
					preauth_cut(oldest, true);
				break;
			}
			if ((error = preauth_start(d, ps, p, pfd[i].fd)) !=
			    0) {
				preauth_stop_all(ps, NULL);
				free(ps);
				preauth_fail(err, error, "waiting for the "
				    "source: %s", strerror(error));
				return (error);
			}
			nbusy++;
		}
	}
}

int
mig_dest_receive(struct mig_dest *d, const struct mig_params *p,
    struct mig_conn **cp, struct mig_backend *be, struct mig_stats *st,
    struct mig_error *err)
{
	struct mig_vminfo *vi;
	int error;

	for (;;) {
		error = mig_recv_run(*cp, be, st, err);
		if (!mig_conn_check_only(*cp)) {
			mig_dest_set_state(error == 0 ? MIG_DEST_RECEIVING :
			    MIG_DEST_FAILED);
			return (error);
		}
		dest_log(d, "Migration check from %s: %s%s", d->peer,
		    error == 0 ? "compatible" : "refused: ",
		    error == 0 ? "" : err->msg);
		mig_conn_free(*cp);
		*cp = NULL;
		mig_dest_set_state(MIG_DEST_LISTENING);
		if ((vi = malloc(sizeof(*vi))) == NULL)
			return (ENOMEM);
		error = mig_dest_accept(d, p, cp, vi, err);
		free(vi);
		if (error != 0)
			return (error);
	}
}

int
mig_dest_finish(struct mig_dest *d, struct mig_conn *c, bool confirm,
    struct mig_error *err)
{
	int error;

	/* From GO on the guest runs here, confirmed or not. */
	mig_dest_set_state(MIG_DEST_RUNNING);
	if (!confirm)
		return (0);
	if ((error = mig_recv_finish(c, err)) != 0)
		dest_log(d, "Warning: the guest runs here, but the source did "
		    "not get the confirmation (%s); it keeps its copy paused "
		    "until an operator resolves it", err->msg);
	return (error);
}
