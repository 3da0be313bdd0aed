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
		    listen(fd, 4) != 0) {
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

/* Wait for one connection on any listening socket. */
static int
dest_wait(struct mig_dest *d, int *connp)
{
	struct pollfd pfd[MIG_DEST_MAXLISTEN];
	struct sockaddr_storage ss;
	char h[NI_MAXHOST], s[NI_MAXSERV];
	socklen_t sslen;
	int conn, i;

	for (i = 0; i < d->nfds; i++) {
		pfd[i].fd = d->fds[i];
		pfd[i].events = POLLIN;
		pfd[i].revents = 0;
	}
	for (;;) {
		if (poll(pfd, (nfds_t)d->nfds, -1) < 0) {
			if (errno == EINTR)
				continue;
			return (errno);
		}
		for (i = 0; i < d->nfds; i++) {
			if ((pfd[i].revents & POLLIN) == 0)
				continue;
			sslen = sizeof(ss);
			conn = accept(d->fds[i], (struct sockaddr *)&ss,
			    &sslen);
			if (conn < 0) {
				if (errno == EINTR || errno == ECONNABORTED)
					continue;
				return (errno);
			}
			if (getnameinfo((struct sockaddr *)&ss, sslen, h,
			    sizeof(h), s, sizeof(s),
			    NI_NUMERICHOST | NI_NUMERICSERV) == 0)
				snprintf(d->peer, sizeof(d->peer),
				    ss.ss_family == AF_INET6 ? "[%s]:%s" :
				    "%s:%s", h, s);
			else
				snprintf(d->peer, sizeof(d->peer), "the source");
			*connp = conn;
			return (0);
		}
	}
}

int
mig_dest_accept(struct mig_dest *d, const struct mig_params *p,
    struct mig_conn **cp, struct mig_vminfo *vi, struct mig_error *err)
{
	int error, fd;

	for (;;) {
		if ((error = dest_wait(d, &fd)) != 0) {
			memset(err, 0, sizeof(*err));
			err->side = MIG_SIDE_DEST;
			err->phase = MIG_PHASE_CONNECT;
			err->code = error;
			snprintf(err->msg, sizeof(err->msg), "waiting for the "
			    "source: %s", strerror(error));
			mig_dest_set_state(MIG_DEST_FAILED);
			return (error);
		}
		if ((error = mig_recv_accept(fd, p, cp, vi, err)) == 0) {
			mig_dest_set_state(MIG_DEST_RECEIVING);
			return (0);
		}
		close(fd);
		/*
		 * A connection that fails before proving the key (a port
		 * scan, a health check, a wrong key), or a dry run, must not
		 * cost the real source its destination: refuse it and keep
		 * listening.
		 */
		if (err->phase > MIG_PHASE_AUTH && !err->dry_run) {
			mig_dest_set_state(MIG_DEST_FAILED);
			return (error);
		}
		dest_log(d, "Refused a migration connection from %s (%s side, "
		    "during %s): %s; still waiting", d->peer,
		    mig_side_name(err->side), mig_phase_name(err->phase),
		    err->msg);
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
