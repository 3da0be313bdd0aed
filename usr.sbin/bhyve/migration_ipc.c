/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Source side of a live migration: the "migrate" command of bhyve's
 * control socket (/var/run/bhyve/<vmname>).  bhyve runs in capability
 * mode and can open no connection itself, so bhyvectl(8) connects to the
 * destination and hands the connected socket over.  The request is an
 * nvlist:
 *
 *	cmd		"migrate"
 *	socket		descriptor: the connected migration stream
 *	progress	descriptor: one end of a socketpair for the reply
 *	key		binary, MIG_KEY_LEN bytes: the per-migration key
 *	live		bool: pre-copy while the guest runs (default true)
 *	encrypt		bool: encrypt guest memory on the wire
 *	downtime_ms, max_rounds, fixed_rounds, bandwidth (bytes/s),
 *	max_time_ms, timeout_ms
 *			numbers, each optional: the round policy
 *	throttle	bool: slow the vCPUs down to converge (default true)
 *
 * The handler checks the request, starts a thread running mig_send() and
 * returns at once, so the control socket stays free.  The thread reports
 * on the progress descriptor in text lines, one event per line, the
 * first word naming the event and the rest key=value pairs:
 *
 *	phase name=<phase>
 *	round index=<n> final=<0|1> dirty=<pages> sent=<pages>
 *	    zero=<pages> bytes=<n> ms=<n> throttle=<pct>
 *	    est_downtime_ms=<n>
 *	stats total_ms=<n> downtime_ms=<n> bytes=<n> memory=<n>
 *	    rounds=<n> encrypted=<0|1> protocol=<n>
 *	error side=<source|destination|link> phase=<phase> code=<errno>
 *	message <text to the end of the line>
 *	result <ok|failed|indeterminate>
 *
 * "result" is always the last line.  Progress lines are dropped rather
 * than stall the migration when the reader is slow.  After "result ok"
 * the guest runs on the destination: bhyve destroys the VM here and
 * exits with status 1, the status of a powered-off guest, so that
 * nothing restarts it on this host.
 */

#include <sys/param.h>
#include <sys/socket.h>

#include <errno.h>
#include <pthread.h>
#include <pthread_np.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <vmmapi.h>

#include "debug.h"
#include "ipc.h"
#include "migration.h"
#include "migration_backend.h"
#include "migration_bhyve.h"

#define	MIGRATE_LINE_MAX	(MIG_ERRMSG_MAX + 128)
#define	MIGRATE_EXIT_DONE	1	/* as if the guest powered off */

struct migrate_job {
	struct vmctx	*ctx;
	int		sock;
	int		progress;
	struct mig_params params;
};

static pthread_mutex_t migrate_mtx = PTHREAD_MUTEX_INITIALIZER;
static bool migrate_busy;

static void
migrate_report(int fd, bool wait, const char *fmt, ...)
{
	char line[MIGRATE_LINE_MAX];
	va_list ap;
	size_t len, off;
	ssize_t n;
	int flags;
	char *p;

	if (fd < 0)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	/* One event, one line. */
	for (p = line; *p != '\0'; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	len = strlen(line);
	line[len++] = '\n';
	flags = MSG_NOSIGNAL | (wait ? 0 : MSG_DONTWAIT);
	for (off = 0; off < len; off += n) {
		n = send(fd, line + off, len - off, flags);
		if (n < 0) {
			if (errno == EINTR) {
				n = 0;
				continue;
			}
			return;
		}
	}
}

static void
migrate_progress(void *arg, const struct mig_progress *p)
{
	struct migrate_job *job = arg;
	const struct mig_round_stats *r;

	r = p->last_round;
	if (r == NULL) {
		migrate_report(job->progress, false, "phase name=%s",
		    mig_phase_name(p->phase));
		return;
	}
	migrate_report(job->progress, false, "round index=%u final=%d "
	    "dirty=%ju sent=%ju zero=%ju bytes=%ju ms=%ju throttle=%u "
	    "est_downtime_ms=%ju", r->index, r->final ? 1 : 0,
	    (uintmax_t)r->dirty_pages, (uintmax_t)r->pages_sent,
	    (uintmax_t)r->zero_pages, (uintmax_t)r->bytes,
	    (uintmax_t)(r->duration_us / 1000), r->throttle_pct,
	    (uintmax_t)(r->est_downtime_us / 1000));
}

static const char *
migrate_result_name(enum mig_result res)
{

	switch (res) {
	case MIG_OK:
		return ("ok");
	case MIG_INDETERMINATE:
		return ("indeterminate");
	default:
		return ("failed");
	}
}

static void
migrate_job_free(struct migrate_job *job)
{

	if (job->sock >= 0)
		close(job->sock);
	if (job->progress >= 0)
		close(job->progress);
	explicit_bzero(&job->params, sizeof(job->params));
	free(job);
	pthread_mutex_lock(&migrate_mtx);
	migrate_busy = false;
	pthread_mutex_unlock(&migrate_mtx);
}

static void *
migrate_thread(void *arg)
{
	struct migrate_job *job = arg;
	struct mig_backend *be;
	struct mig_error merr;
	struct mig_stats stats;
	enum mig_result res;
	int error;

	pthread_set_name_np(pthread_self(), "migration");
	memset(&merr, 0, sizeof(merr));
	memset(&stats, 0, sizeof(stats));
	res = MIG_FAILED;

	be = mig_bhyve_backend_create(job->ctx, migrate_progress, job);
	error = be == NULL ? ENOMEM : mig_stats_init(&stats);
	if (error != 0) {
		merr.side = MIG_SIDE_SOURCE;
		merr.code = error;
		merr.guest_running_on_source = true;
		strlcpy(merr.msg, "bhyve is out of memory", sizeof(merr.msg));
		goto report;
	}
	res = mig_send(job->sock, be, &job->params, &stats, &merr);

report:
	if (res == MIG_OK || stats.nrounds > 0)
		migrate_report(job->progress, true, "stats total_ms=%ju "
		    "downtime_ms=%ju bytes=%ju memory=%ju rounds=%u "
		    "encrypted=%d protocol=%u",
		    (uintmax_t)(stats.total_time_us / 1000),
		    (uintmax_t)(stats.downtime_us / 1000),
		    (uintmax_t)stats.bytes_sent,
		    (uintmax_t)stats.memory_bytes, stats.nrounds,
		    stats.encrypted ? 1 : 0, stats.protocol_version);
	if (res != MIG_OK) {
		migrate_report(job->progress, true, "error side=%s phase=%s "
		    "code=%d", mig_side_name(merr.side),
		    mig_phase_name(merr.phase), merr.code);
		migrate_report(job->progress, true, "message %s",
		    merr.msg[0] != '\0' ? merr.msg : strerror(merr.code));
		EPRINTLN("Migration %s (%s side, during %s): %s",
		    res == MIG_INDETERMINATE ? "outcome unknown" : "failed",
		    mig_side_name(merr.side), mig_phase_name(merr.phase),
		    merr.msg);
	}
	migrate_report(job->progress, true, "result %s",
	    migrate_result_name(res));

	if (res == MIG_OK) {
		/* The guest lives on the destination now. */
		EPRINTLN("Guest migrated: it runs on the destination now");
		close(job->progress);
		close(job->sock);
		vm_destroy(job->ctx);
		exit(MIGRATE_EXIT_DONE);
	}
	if (be != NULL)
		mig_bhyve_backend_destroy(be);
	mig_stats_free(&stats);
	migrate_job_free(job);
	return (NULL);
}

static int
migrate_number(const nvlist_t *nvl, const char *name, uint64_t *val)
{

	if (!nvlist_exists(nvl, name))
		return (0);
	if (!nvlist_exists_number(nvl, name))
		return (EINVAL);
	*val = nvlist_get_number(nvl, name);
	return (0);
}

static int
migrate_request(const nvlist_t *nvl, struct migrate_job *job, char *msg,
    size_t msglen)
{
	struct mig_params *p;
	const void *key;
	uint64_t v;
	size_t keylen;

	p = &job->params;
	mig_params_init(p);
	if (!nvlist_exists_binary(nvl, "key")) {
		snprintf(msg, msglen, "the request carries no migration key");
		return (EINVAL);
	}
	key = nvlist_get_binary(nvl, "key", &keylen);
	if (keylen != MIG_KEY_LEN) {
		snprintf(msg, msglen, "the migration key must be %d bytes",
		    MIG_KEY_LEN);
		return (EINVAL);
	}
	memcpy(p->key, key, MIG_KEY_LEN);

	/* Not live: the engine pauses first and sends memory once. */
	p->live = !nvlist_exists_bool(nvl, "live") ||
	    nvlist_get_bool(nvl, "live");
	if (nvlist_exists_bool(nvl, "encrypt"))
		p->encrypt = nvlist_get_bool(nvl, "encrypt");
	if (nvlist_exists_bool(nvl, "throttle"))
		p->auto_throttle = nvlist_get_bool(nvl, "throttle");

	v = UINT64_MAX;
	if (migrate_number(nvl, "downtime_ms", &v) != 0)
		goto bad;
	if (v != UINT64_MAX)
		p->downtime_limit_us = v * 1000;
	v = UINT64_MAX;
	if (migrate_number(nvl, "max_rounds", &v) != 0)
		goto bad;
	if (v != UINT64_MAX)
		p->max_rounds = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
	v = UINT64_MAX;
	if (migrate_number(nvl, "fixed_rounds", &v) != 0)
		goto bad;
	if (v != UINT64_MAX) {
		p->policy = MIG_POLICY_FIXED;
		p->fixed_rounds = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
	}
	if (migrate_number(nvl, "bandwidth", &p->bandwidth_limit) != 0 ||
	    migrate_number(nvl, "max_time_ms", &p->max_time_ms) != 0)
		goto bad;
	v = UINT64_MAX;
	if (migrate_number(nvl, "timeout_ms", &v) != 0)
		goto bad;
	if (v != UINT64_MAX)
		p->io_timeout_ms = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;

	return (mig_params_check(p, msg, msglen));
bad:
	snprintf(msg, msglen, "a policy value in the request is not a "
	    "number");
	return (EINVAL);
}

static int
migrate_cmd(struct vmctx *ctx, const nvlist_t *nvl)
{
	struct migrate_job *job;
	pthread_attr_t attr;
	pthread_t thr;
	char msg[MIG_ERRMSG_MAX];
	int error, progress;

	/* The caller closes the request's descriptors: keep copies. */
	progress = -1;
	if (nvlist_exists_descriptor(nvl, "progress"))
		progress = dup(nvlist_get_descriptor(nvl, "progress"));
	job = calloc(1, sizeof(*job));
	if (job == NULL) {
		error = ENOMEM;
		strlcpy(msg, "bhyve is out of memory", sizeof(msg));
		goto fail;
	}
	job->ctx = ctx;
	job->progress = progress;
	job->sock = -1;
	if (!nvlist_exists_descriptor(nvl, "socket")) {
		error = EINVAL;
		strlcpy(msg, "the request carries no migration connection",
		    sizeof(msg));
		goto fail;
	}
	job->sock = dup(nvlist_get_descriptor(nvl, "socket"));
	if (job->sock < 0) {
		error = errno;
		snprintf(msg, sizeof(msg), "cannot take the migration "
		    "connection: %s", strerror(error));
		goto fail;
	}
	error = migrate_request(nvl, job, msg, sizeof(msg));
	if (error != 0)
		goto fail;
	error = mig_socket_setup(job->sock, job->params.io_timeout_ms);
	if (error != 0) {
		snprintf(msg, sizeof(msg), "cannot set up the migration "
		    "connection: %s", strerror(error));
		goto fail;
	}

	pthread_mutex_lock(&migrate_mtx);
	if (migrate_busy) {
		pthread_mutex_unlock(&migrate_mtx);
		error = EBUSY;
		strlcpy(msg, "a migration of this guest is already running",
		    sizeof(msg));
		goto fail;
	}
	migrate_busy = true;
	pthread_mutex_unlock(&migrate_mtx);

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	error = pthread_create(&thr, &attr, migrate_thread, job);
	pthread_attr_destroy(&attr);
	if (error != 0) {
		pthread_mutex_lock(&migrate_mtx);
		migrate_busy = false;
		pthread_mutex_unlock(&migrate_mtx);
		snprintf(msg, sizeof(msg), "cannot start the migration "
		    "thread: %s", strerror(error));
		goto fail;
	}
	return (0);

fail:
	migrate_report(progress, true, "error side=source phase=%s code=%d",
	    mig_phase_name(MIG_PHASE_CONNECT), error);
	migrate_report(progress, true, "message %s", msg);
	migrate_report(progress, true, "result failed");
	EPRINTLN("Migration request refused: %s", msg);
	if (job != NULL) {
		if (job->sock >= 0)
			close(job->sock);
		explicit_bzero(&job->params, sizeof(job->params));
		free(job);
	}
	if (progress >= 0)
		close(progress);
	return (error);
}
IPC_COMMAND(ipc_cmd_set, migrate, migrate_cmd);
