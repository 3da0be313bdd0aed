/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * bhyve's migration commands on its control socket (/var/run/bhyve/
 * <vmname>): the nvlist envelope around the portable command handler
 * (migration_source_cmd.c), and bhyve's side of its seam.  bhyve runs in
 * capability mode and can open no connection itself, so bhyvectl(8)
 * connects to the destination and passes the connected socket.
 *
 *	cmd		"migrate", "migrate_check", "migrate_cancel",
 *			"migrate_continue", "migrate_resume" or
 *			"migrate_status"
 *	request		string: the request payload (migration_ctl.h),
 *			the same bytes the test bed's tbctl sends
 *	socket		descriptor: the connected migration stream
 *			(migrate, migrate-check): stream 0
 *	streams		descriptor array: streams 1..n-1 of a migration
 *			with "streams=n" in its request (optional)
 *	progress	descriptor: one end of a socketpair: the events
 *			(migrate, migrate-check) or the one-line answer
 *
 * The handlers return at once; 15.0's control socket sends no reply,
 * so every answer travels on the progress descriptor.  After a
 * completed migration bhyve destroys the VM and exits with status 1,
 * the status of a powered-off guest, so that nothing restarts it here.
 */

#include <sys/param.h>
#include <sys/socket.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vmmapi.h>

#include "debug.h"
#include "ipc.h"
#include "migration.h"
#include "migration_backend.h"
#include "migration_bhyve.h"
#include "migration_ctl.h"
#include "migration_json.h"
#include "migration_seam.h"
#include "migration_source_cmd.h"

#define	MIGRATE_EXIT_DONE	1	/* as if the guest powered off */

static struct vmctx *migrate_ctx;

static struct mig_backend *
seam_backend_create(void *arg, mig_progress_cb *cb, void *cbarg)
{

	return (mig_bhyve_backend_create(arg, cb, cbarg));
}

static void
seam_backend_destroy(void *arg __unused, struct mig_backend *be)
{

	mig_bhyve_backend_destroy(be);
}

static void
seam_migrated(void *arg)
{

	vm_destroy(arg);
	exit(MIGRATE_EXIT_DONE);
}

static void
seam_log(void *arg __unused, const char *line)
{

	EPRINTLN("%s", line);
}

static void
migrate_seam(struct vmctx *ctx)
{
	struct mig_source_seam seam = {
		.backend_create = seam_backend_create,
		.backend_destroy = seam_backend_destroy,
		.migrated = seam_migrated,
		.log = seam_log,
		.arg = ctx,
	};

	if (migrate_ctx == NULL) {
		migrate_ctx = ctx;
		mig_source_init(&seam);
	}
}

/* A descriptor of the request, duplicated: the caller closes its own. */
static int
migrate_fd(const nvlist_t *nvl, const char *name)
{

	if (!nvlist_exists_descriptor(nvl, name))
		return (-1);
	return (dup(nvlist_get_descriptor(nvl, name)));
}

/*
 * The streams of the request, duplicated, stream 0 first: how many.  More
 * than the engine takes are counted, not taken, for the refusal to say.
 */
static int
migrate_socks(const nvlist_t *nvl, int *socks)
{
	const int *more;
	size_t i, n;

	socks[0] = migrate_fd(nvl, "socket");
	if (!nvlist_exists_descriptor_array(nvl, "streams"))
		return (1);
	more = nvlist_get_descriptor_array(nvl, "streams", &n);
	if (n >= MIG_STREAMS_MAX) {
		if (socks[0] >= 0)
			close(socks[0]);
		return ((int)n + 1);
	}
	for (i = 0; i < n; i++)
		socks[i + 1] = dup(more[i]);
	return ((int)n + 1);
}

static int
migrate_start(struct vmctx *ctx, const nvlist_t *nvl, bool check)
{
	char msg[MIG_ERRMSG_MAX];
	int socks[MIG_STREAMS_MAX];
	const char *payload;

	migrate_seam(ctx);
	payload = nvlist_exists_string(nvl, "request") ?
	    nvlist_get_string(nvl, "request") : "";
	return (mig_source_migrate(payload, strlen(payload), socks,
	    migrate_socks(nvl, socks), migrate_fd(nvl, "progress"), check,
	    msg, sizeof(msg)));
}

static int
migrate_cmd(struct vmctx *ctx, const nvlist_t *nvl)
{

	return (migrate_start(ctx, nvl, false));
}
IPC_COMMAND(ipc_cmd_set, migrate, migrate_cmd);

static int
migrate_check_cmd(struct vmctx *ctx, const nvlist_t *nvl)
{

	return (migrate_start(ctx, nvl, true));
}
IPC_COMMAND(ipc_cmd_set, migrate_check, migrate_check_cmd);

/* Write one answer line to the request's progress descriptor. */
static void
migrate_answer(const nvlist_t *nvl, bool ok, const char *status,
    const char *message)
{
	char *line;
	size_t len;
	FILE *f;
	int fd;

	if ((fd = migrate_fd(nvl, "progress")) < 0)
		return;
	if ((f = open_memstream(&line, &len)) != NULL) {
		if (status != NULL)
			fputs(status, f);
		else {
			fprintf(f, "{\"ok\":%s,\"message\":", ok ? "true" :
			    "false");
			mig_json_string(f, message);
			fputc('}', f);
		}
		fputc('\n', f);
		if (fclose(f) == 0)
			(void)send(fd, line, len, MSG_NOSIGNAL);
		free(line);
	}
	close(fd);
}

static int
migrate_cancel_cmd(struct vmctx *ctx, const nvlist_t *nvl)
{
	char msg[MIG_ERRMSG_MAX];
	int error;

	migrate_seam(ctx);
	error = mig_source_cancel(msg, sizeof(msg));
	migrate_answer(nvl, error == 0, NULL, msg);
	return (error);
}
IPC_COMMAND(ipc_cmd_set, migrate_cancel, migrate_cancel_cmd);

/* The switchover hook's go-ahead. */
static int
migrate_continue_cmd(struct vmctx *ctx, const nvlist_t *nvl)
{
	char msg[MIG_ERRMSG_MAX];
	int error;

	migrate_seam(ctx);
	error = mig_source_continue(msg, sizeof(msg));
	migrate_answer(nvl, error == 0, NULL, msg);
	return (error);
}
IPC_COMMAND(ipc_cmd_set, migrate_continue, migrate_continue_cmd);

static int
migrate_resume_cmd(struct vmctx *ctx, const nvlist_t *nvl)
{
	char msg[MIG_ERRMSG_MAX];
	int error;

	migrate_seam(ctx);
	error = mig_source_resume(msg, sizeof(msg));
	migrate_answer(nvl, error == 0, NULL, msg);
	return (error);
}
IPC_COMMAND(ipc_cmd_set, migrate_resume, migrate_resume_cmd);

/*
 * A bhyve that serves its control socket runs its guest, or holds it
 * for a migration: a destination answers only once the guest runs
 * here, since bhyve -R creates the socket after the stream arrived.
 */
static int
migrate_status_cmd(struct vmctx *ctx, const nvlist_t *nvl)
{
	char *line;

	migrate_seam(ctx);
	if ((line = mig_source_status_json()) == NULL)
		return (ENOMEM);
	migrate_answer(nvl, true, line, NULL);
	free(line);
	return (0);
}
IPC_COMMAND(ipc_cmd_set, migrate_status, migrate_status_cmd);

int
migration_checkpoint_begin(void)
{
	char msg[MIG_ERRMSG_MAX];
	int error;

	if ((error = mig_source_checkpoint_begin(msg, sizeof(msg))) != 0)
		EPRINTLN("Checkpoint %s", msg);
	return (error);
}

void
migration_checkpoint_end(void)
{

	mig_source_checkpoint_end();
}
