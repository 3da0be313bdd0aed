/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Source side of a migration's control: take the connected socket and
 * the event channel the controller passed, run mig_send() in a thread
 * of its own, stream the events (migration_ctl.h) and keep the state
 * the operator commands act on.  Portable: bhyve (migration_ipc.c) and
 * tbvm serve the same code, each through its migration_seam.h.
 *
 * The event channel doubles as the controller's lifeline: if it hangs
 * up before GO (bhyvectl was killed), the migration is cancelled.
 */

#include <sys/socket.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "migration.h"
#include "migration_backend.h"
#include "migration_ctl.h"
#include "migration_net.h"
#include "migration_seam.h"
#include "migration_source_cmd.h"

#define	QUEUE_MAX		(1u << 20)	/* bytes of events queued */
#define	WATCH_MS		100	/* hang-up check, progress interval */
#define	PROGRESS_INTERVAL_US	100000

struct line {
	struct line	*next;
	size_t		len;
	char		text[];
};

/* The event channel: lines queued by the engine, written by a thread. */
struct writer {
	int		fd;
	pthread_t	thread;
	pthread_mutex_t	mtx;
	pthread_cond_t	cv;
	struct line	*head;
	struct line	**tailp;
	size_t		queued;
	bool		closing;
	bool		dead;		/* the reader went away */
};

struct job {
	int		socks[MIG_STREAMS_MAX];
	int		nsocks;
	struct writer	*w;
	struct mig_params params;
	struct mig_cancel cancel;
	struct mig_hook	hook;
	struct mig_backend *be;
	bool		check;
	enum mig_phase	phase;		/* the last one announced */
	uint64_t	bytes_sent;
	uint64_t	last_progress_us;
	uint64_t	rate;
	uint64_t	est_downtime_us;
};

static struct {
	struct mig_source_seam seam;
	pthread_mutex_t	mtx;		/* what follows */
	enum mig_source_state state;
	struct job	*job;		/* while migrating */
	struct mig_backend *paused_be;	/* while indeterminate */
} src = {
	.mtx = PTHREAD_MUTEX_INITIALIZER,
};

static const char *const state_names[] = {
	[MIG_SOURCE_IDLE] = "running",
	[MIG_SOURCE_MIGRATING] = "migrating",
	[MIG_SOURCE_CHECKPOINT] = "checkpoint",
	[MIG_SOURCE_INDETERMINATE] = "paused",
	[MIG_SOURCE_MIGRATED] = "migrated",
};

static void
src_log(const char *fmt, ...) __attribute__((__format__(__printf__, 1, 2)));

static void
src_log(const char *fmt, ...)
{
	char line[MIG_ERRMSG_MAX + 128];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (src.seam.log != NULL)
		src.seam.log(src.seam.arg, line);
}

static bool
write_all(int fd, const char *p, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return (false);
		p += n;
		len -= (size_t)n;
	}
	return (true);
}

/* The controller never writes: readable means it hung up. */
static bool
reader_gone(int fd)
{
	struct pollfd pfd;
	char c;

	pfd.fd = fd;
	pfd.events = POLLIN;
	pfd.revents = 0;
	if (poll(&pfd, 1, 0) <= 0)
		return (false);
	if ((pfd.revents & (POLLHUP | POLLERR)) != 0)
		return (true);
	return (recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0);
}

static void
deadline_in(struct timespec *ts, int ms)
{

	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_nsec += (long)ms * 1000000;
	ts->tv_sec += ts->tv_nsec / 1000000000;
	ts->tv_nsec %= 1000000000;
}

static void *
writer_main(void *arg)
{
	struct writer *w = arg;
	struct timespec ts;
	struct line *l;

	pthread_mutex_lock(&w->mtx);
	for (;;) {
		while (w->head == NULL && !w->closing) {
			deadline_in(&ts, WATCH_MS);
			(void)pthread_cond_timedwait(&w->cv, &w->mtx, &ts);
			if (w->head != NULL || w->closing || w->dead)
				continue;
			pthread_mutex_unlock(&w->mtx);
			if (reader_gone(w->fd)) {
				w->dead = true;
				/* Before GO that is a cancel. */
				(void)mig_source_cancel(NULL, 0);
			}
			pthread_mutex_lock(&w->mtx);
		}
		if ((l = w->head) == NULL)
			break;
		w->head = l->next;
		if (w->head == NULL)
			w->tailp = &w->head;
		w->queued -= l->len;
		pthread_mutex_unlock(&w->mtx);
		if (!w->dead && !write_all(w->fd, l->text, l->len)) {
			w->dead = true;
			(void)mig_source_cancel(NULL, 0);
		}
		free(l);
		pthread_mutex_lock(&w->mtx);
	}
	pthread_mutex_unlock(&w->mtx);
	return (NULL);
}

static int
writer_open(struct writer **wp, int fd)
{
	struct writer *w;
	int error;

	if ((w = calloc(1, sizeof(*w))) == NULL)
		return (ENOMEM);
	w->fd = fd;
	w->tailp = &w->head;
	pthread_mutex_init(&w->mtx, NULL);
	pthread_cond_init(&w->cv, NULL);
	if ((error = pthread_create(&w->thread, NULL, writer_main, w)) != 0) {
		pthread_cond_destroy(&w->cv);
		pthread_mutex_destroy(&w->mtx);
		free(w);
		return (error);
	}
	*wp = w;
	return (0);
}

/*
 * Queue one event.  Progress is dropped rather than stall the engine
 * when the reader is slow; the result and "paused", which the reader
 * must answer, always go out.
 */
static void
writer_post(struct writer *w, const struct mig_event *ev)
{
	struct line *l;
	char *text;
	size_t len;

	if ((text = mig_event_encode(ev)) == NULL)
		return;
	len = strlen(text);
	l = malloc(sizeof(*l) + len + 1);
	if (l != NULL) {
		memcpy(l->text, text, len);
		l->text[len] = '\n';
		l->len = len + 1;
		l->next = NULL;
	}
	free(text);
	if (l == NULL)
		return;
	pthread_mutex_lock(&w->mtx);
	if (ev->type != MIG_EV_RESULT && ev->type != MIG_EV_PAUSED &&
	    w->queued + l->len > QUEUE_MAX) {
		pthread_mutex_unlock(&w->mtx);
		free(l);
		return;
	}
	*w->tailp = l;
	w->tailp = &l->next;
	w->queued += l->len;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mtx);
}

/* Write out what is queued, then close the channel. */
static void
writer_close(struct writer *w)
{

	pthread_mutex_lock(&w->mtx);
	w->closing = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mtx);
	pthread_join(w->thread, NULL);
	close(w->fd);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mtx);
	free(w);
}

/* A refusal before any thread runs: the result goes out at once. */
static void
refuse(int events, int code, const char *msg)
{
	struct mig_error err;
	struct mig_event ev;
	char *text;

	src_log("Migration request refused: %s", msg);
	if (events < 0)
		return;
	memset(&err, 0, sizeof(err));
	err.side = MIG_SIDE_SOURCE;
	err.phase = MIG_PHASE_CONNECT;
	err.code = code;
	err.guest_running_on_source = true;
	snprintf(err.msg, sizeof(err.msg), "%s", msg);
	mig_event_result(&ev, MIG_OUT_FAILED, &err, NULL);
	if ((text = mig_event_encode(&ev)) != NULL) {
		(void)write_all(events, text, strlen(text));
		(void)write_all(events, "\n", 1);
		free(text);
	}
}

static void
on_progress(void *arg, const struct mig_progress *p)
{
	struct job *job = arg;
	struct mig_event ev;
	uint64_t now;

	memset(&ev, 0, sizeof(ev));
	if (p->estimate_missed) {
		ev.type = MIG_EV_ESTIMATE_MISSED;
		ev.phase = p->phase;
		ev.est_downtime_us = p->est_downtime_us;
		ev.paused_us = p->paused_us;
		writer_post(job->w, &ev);
		return;
	}
	if (p->last_round != NULL) {
		ev.type = MIG_EV_ROUND;
		ev.round = *p->last_round;
		job->bytes_sent += p->last_round->bytes;
		if (p->last_round->duration_us > 0)
			job->rate = p->last_round->bytes * 1000000 /
			    p->last_round->duration_us;
		job->est_downtime_us = p->last_round->est_downtime_us;
		writer_post(job->w, &ev);
		return;
	}
	if (p->phase != job->phase) {
		job->phase = p->phase;
		ev.type = MIG_EV_PHASE;
		ev.phase = p->phase;
		writer_post(job->w, &ev);
	}
	if (p->hold_ms != 0) {
		memset(&ev, 0, sizeof(ev));
		ev.type = MIG_EV_PAUSED;
		ev.round_index = p->round;
		ev.remaining_pages = p->remaining_pages;
		ev.hold_ms = p->hold_ms;
		writer_post(job->w, &ev);
		src_log("Migration: the guest is paused for the switchover "
		    "hook; waiting up to %ju ms for its go-ahead",
		    (uintmax_t)p->hold_ms);
		return;
	}
	now = mig_now_us();
	if (now - job->last_progress_us < PROGRESS_INTERVAL_US)
		return;
	job->last_progress_us = now;
	ev.type = MIG_EV_PROGRESS;
	ev.phase = p->phase;
	ev.round_index = p->round;
	ev.remaining_pages = p->remaining_pages;
	ev.bytes_sent = job->bytes_sent;
	ev.rate_bytes_per_s = job->rate;
	ev.est_downtime_us = job->est_downtime_us;
	writer_post(job->w, &ev);
}

static enum mig_outcome
outcome_of(const struct job *job, enum mig_result res,
    const struct mig_error *err)
{

	if (res == MIG_OK)
		return (job->check ? MIG_OUT_COMPATIBLE : MIG_OUT_OK);
	if (res == MIG_INDETERMINATE)
		return (MIG_OUT_INDETERMINATE);
	if (mig_cancelled(&job->cancel) && err->code == ECANCELED)
		return (MIG_OUT_CANCELLED);
	/* A dry run refused in the compatibility check says why. */
	if (job->check && err->phase == MIG_PHASE_COMPAT)
		return (MIG_OUT_INCOMPATIBLE);
	return (MIG_OUT_FAILED);
}

static void
close_socks(const int *socks, int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (socks[i] >= 0)
			close(socks[i]);
}

static void *
migrate_main(void *arg)
{
	struct job *job = arg;
	struct mig_event ev;
	struct mig_error err;
	struct mig_stats st;
	enum mig_outcome out;
	enum mig_result res;

	memset(&err, 0, sizeof(err));
	memset(&st, 0, sizeof(st));
	memset(&ev, 0, sizeof(ev));
	ev.type = MIG_EV_PHASE;
	ev.phase = job->phase = MIG_PHASE_CONNECT;
	writer_post(job->w, &ev);
	res = MIG_FAILED;
	if (mig_stats_init(&st) != 0) {
		err.side = MIG_SIDE_SOURCE;
		err.code = ENOMEM;
		err.guest_running_on_source = true;
		snprintf(err.msg, sizeof(err.msg), "out of memory");
	} else
		res = mig_send(job->socks, job->be, &job->params, &st, &err);
	close_socks(job->socks, job->nsocks);
	out = outcome_of(job, res, &err);

	/* The state first: whoever reads the result may act on it. */
	pthread_mutex_lock(&src.mtx);
	src.job = NULL;
	switch (out) {
	case MIG_OUT_OK:
		src.state = MIG_SOURCE_MIGRATED;
		break;
	case MIG_OUT_INDETERMINATE:
		src.state = MIG_SOURCE_INDETERMINATE;
		src.paused_be = job->be;
		job->be = NULL;
		break;
	default:
		src.state = MIG_SOURCE_IDLE;
		break;
	}
	pthread_mutex_unlock(&src.mtx);

	mig_event_result(&ev, out, &err, st.rounds != NULL ? &st : NULL);
	writer_post(job->w, &ev);
	writer_close(job->w);
	switch (out) {
	case MIG_OUT_OK:
		src_log("Guest migrated: it runs on the destination now");
		break;
	case MIG_OUT_COMPATIBLE:
		src_log("Migration check: the destination accepts this guest");
		break;
	case MIG_OUT_INDETERMINATE:
		src_log("Migration outcome unknown (%s side, during %s): %s",
		    mig_side_name(err.side), mig_phase_name(err.phase),
		    err.msg);
		break;
	default:
		src_log("Migration %s (%s side, during %s): %s",
		    mig_outcome_name(out), mig_side_name(err.side),
		    mig_phase_name(err.phase), err.msg);
		break;
	}
	if (job->be != NULL)
		src.seam.backend_destroy(src.seam.arg, job->be);
	mig_stats_free(&st);
	explicit_bzero(&job->params, sizeof(job->params));
	free(job);
	if (out == MIG_OUT_OK)
		src.seam.migrated(src.seam.arg);
	return (NULL);
}

void
mig_source_init(const struct mig_source_seam *seam)
{

	src.seam = *seam;
}

int
mig_source_migrate(const char *payload, size_t len, const int *socks,
    int nsocks, int events, bool check, char *msg, size_t msglen)
{
	pthread_attr_t attr;
	pthread_t thr;
	struct job *job;
	int error;

	if ((job = calloc(1, sizeof(*job))) == NULL) {
		error = ENOMEM;
		snprintf(msg, msglen, "out of memory");
		goto fail;
	}
	job->check = check;
	job->phase = MIG_PHASE_COUNT;
	if (nsocks < 1 || nsocks > MIG_STREAMS_MAX) {
		error = EINVAL;
		snprintf(msg, msglen, "the request carries %d migration "
		    "connections, not 1 to %d", nsocks, MIG_STREAMS_MAX);
		goto fail;
	}
	if (socks[0] < 0) {
		error = EINVAL;
		snprintf(msg, msglen, "the request carries no migration "
		    "connection");
		goto fail;
	}
	memcpy(job->socks, socks, sizeof(*socks) * (size_t)nsocks);
	job->nsocks = nsocks;
	if ((error = mig_request_decode(payload, len, &job->params, msg,
	    msglen)) != 0)
		goto fail;
	/* A dry run uses stream 0 alone; a migration every stream. */
	if ((check && nsocks != 1) || (!check &&
	    job->params.nstreams != (uint32_t)nsocks)) {
		error = EINVAL;
		snprintf(msg, msglen, "the request asks for %u streams but "
		    "carries %d connections", check ? 1 : job->params.nstreams,
		    nsocks);
		goto fail;
	}
	job->params.check_only = check;
	mig_cancel_init(&job->cancel);
	job->params.cancel = &job->cancel;
	mig_hook_init(&job->hook);
	job->params.hook = &job->hook;

	pthread_mutex_lock(&src.mtx);
	if (src.state != MIG_SOURCE_IDLE) {
		error = EBUSY;
		snprintf(msg, msglen, "the guest is %s%s",
		    state_names[src.state], src.state ==
		    MIG_SOURCE_MIGRATING ? ": one migration at a time" :
		    src.state == MIG_SOURCE_INDETERMINATE ? " after an "
		    "indeterminate migration" : "");
		pthread_mutex_unlock(&src.mtx);
		goto fail;
	}
	job->be = src.seam.backend_create(src.seam.arg, on_progress, job);
	if (job->be == NULL) {
		pthread_mutex_unlock(&src.mtx);
		error = ENOMEM;
		snprintf(msg, msglen, "cannot set the migration backend up");
		goto fail;
	}
	if ((error = writer_open(&job->w, events)) != 0) {
		pthread_mutex_unlock(&src.mtx);
		snprintf(msg, msglen, "cannot start the event writer: %s",
		    strerror(error));
		goto fail;
	}
	src.state = MIG_SOURCE_MIGRATING;
	src.job = job;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	error = pthread_create(&thr, &attr, migrate_main, job);
	pthread_attr_destroy(&attr);
	if (error != 0) {
		src.state = MIG_SOURCE_IDLE;
		src.job = NULL;
		pthread_mutex_unlock(&src.mtx);
		snprintf(msg, msglen, "cannot start the migration thread: %s",
		    strerror(error));
		/* The writer owns the channel now. */
		writer_close(job->w);
		events = -1;
		goto fail;
	}
	pthread_mutex_unlock(&src.mtx);
	return (0);
fail:
	refuse(events, error, msg);
	if (events >= 0)
		close(events);
	if (nsocks > 0 && nsocks <= MIG_STREAMS_MAX)
		close_socks(socks, nsocks);
	if (job != NULL) {
		if (job->be != NULL)
			src.seam.backend_destroy(src.seam.arg, job->be);
		explicit_bzero(&job->params, sizeof(job->params));
		free(job);
	}
	return (error);
}

int
mig_source_cancel(char *msg, size_t msglen)
{
	int error;

	error = 0;
	pthread_mutex_lock(&src.mtx);
	if (src.state != MIG_SOURCE_MIGRATING || src.job == NULL)
		error = ESRCH;
	else if (!mig_cancel_request(&src.job->cancel))
		error = EALREADY;
	pthread_mutex_unlock(&src.mtx);
	if (msg != NULL && error == ESRCH)
		snprintf(msg, msglen, "no migration is running");
	else if (msg != NULL && error == EALREADY)
		snprintf(msg, msglen, "too late to cancel: GO was sent");
	else if (msg != NULL)
		snprintf(msg, msglen, "cancelling: the guest resumes here");
	if (error == 0)
		src_log("Migration cancelled by the operator");
	return (error);
}

int
mig_source_continue(char *msg, size_t msglen)
{
	int error;

	error = 0;
	pthread_mutex_lock(&src.mtx);
	if (src.state != MIG_SOURCE_MIGRATING || src.job == NULL)
		error = ESRCH;
	else if (!mig_hook_release(&src.job->hook))
		error = EINVAL;
	pthread_mutex_unlock(&src.mtx);
	if (error == ESRCH)
		snprintf(msg, msglen, "no migration is running");
	else if (error == EINVAL)
		snprintf(msg, msglen, "refused: the migration is not waiting "
		    "for a switchover hook");
	else {
		snprintf(msg, msglen, "switching over: the migration "
		    "finishes");
		src_log("Migration: the switchover hook gave its go-ahead");
	}
	return (error);
}

int
mig_source_resume(char *msg, size_t msglen)
{
	struct mig_backend *be;
	int error;

	pthread_mutex_lock(&src.mtx);
	if (src.state != MIG_SOURCE_INDETERMINATE) {
		snprintf(msg, msglen, "refused: the guest is %s, and only a "
		    "guest paused by an indeterminate migration is resumed",
		    state_names[src.state]);
		pthread_mutex_unlock(&src.mtx);
		return (EINVAL);
	}
	be = src.paused_be;
	error = be->ops->resume(be->arg);
	if (error == 0) {
		src.paused_be = NULL;
		src.state = MIG_SOURCE_IDLE;
	}
	pthread_mutex_unlock(&src.mtx);
	if (error != 0) {
		snprintf(msg, msglen, "resuming the guest failed: %s",
		    be->errmsg[0] != '\0' ? be->errmsg : strerror(error));
		return (error);
	}
	src.seam.backend_destroy(src.seam.arg, be);
	snprintf(msg, msglen, "the guest runs here again");
	src_log("Guest resumed after an indeterminate migration");
	return (0);
}

int
mig_source_checkpoint_begin(char *msg, size_t msglen)
{
	enum mig_source_state st;

	pthread_mutex_lock(&src.mtx);
	st = src.state;
	if (st == MIG_SOURCE_IDLE)
		src.state = MIG_SOURCE_CHECKPOINT;
	pthread_mutex_unlock(&src.mtx);
	if (st == MIG_SOURCE_IDLE)
		return (0);
	snprintf(msg, msglen, "refused: %s", st == MIG_SOURCE_CHECKPOINT ?
	    "a checkpoint is being taken" : st == MIG_SOURCE_MIGRATING ?
	    "a migration is running" : st == MIG_SOURCE_INDETERMINATE ?
	    "the guest is paused after an indeterminate migration" :
	    "the guest was migrated away");
	return (EBUSY);
}

void
mig_source_checkpoint_end(void)
{

	pthread_mutex_lock(&src.mtx);
	if (src.state == MIG_SOURCE_CHECKPOINT)
		src.state = MIG_SOURCE_IDLE;
	pthread_mutex_unlock(&src.mtx);
}

enum mig_source_state
mig_source_state(void)
{
	enum mig_source_state st;

	pthread_mutex_lock(&src.mtx);
	st = src.state;
	pthread_mutex_unlock(&src.mtx);
	return (st);
}

const char *
mig_source_state_name(enum mig_source_state st)
{

	return (state_names[st]);
}

char *
mig_source_status_json(void)
{
	enum mig_source_state st;
	char *buf;

	st = mig_source_state();
	if (asprintf(&buf, "{\"state\":\"%s\",\"guest_runs_here\":%s}",
	    state_names[st], st == MIG_SOURCE_IDLE || st ==
	    MIG_SOURCE_MIGRATING || st == MIG_SOURCE_CHECKPOINT ? "true" :
	    "false") < 0)
		return (NULL);
	return (buf);
}
