/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The source's migration commands, as bhyve's control socket (the nvlist
 * envelope in migration_ipc.c) and tbvm's serve them: migrate, check,
 * cancel, continue, resume, status; and the gate that keeps a checkpoint and a
 * migration from pausing the guest at the same time.  One guest per
 * process, as in bhyve.
 */

#ifndef _MIGRATION_SOURCE_CMD_H_
#define	_MIGRATION_SOURCE_CMD_H_

#include <stdbool.h>
#include <stddef.h>

struct mig_source_seam;

enum mig_source_state {
	MIG_SOURCE_IDLE = 0,		/* the guest runs here */
	MIG_SOURCE_MIGRATING,		/* a migration or a check runs */
	MIG_SOURCE_CHECKPOINT,		/* a checkpoint holds the guest */
	MIG_SOURCE_INDETERMINATE,	/* paused: GO sent, no RUNNING */
	MIG_SOURCE_MIGRATED		/* the destination runs it */
};

void	mig_source_init(const struct mig_source_seam *);
/*
 * Start a migration (or with check a dry run) in its own thread and
 * return at once.  socks are the nsocks connected streams (stream 0
 * first; one for a dry run, as many as the request's "streams" for a
 * migration).  The handler takes socks and events in every case; a
 * refusal goes to events as a result and to the return value.
 */
int	mig_source_migrate(const char *payload, size_t len, const int *socks,
	    int nsocks, int events, bool check, char *msg, size_t msglen);
/* Cancel before GO: ESRCH if none runs, EALREADY once GO is decided. */
int	mig_source_cancel(char *msg, size_t msglen);
/*
 * The switchover hook's go-ahead: ESRCH if no migration runs, EINVAL
 * unless it waits for the hook now.
 */
int	mig_source_continue(char *msg, size_t msglen);
/* Resume after an indeterminate outcome, and only then (EINVAL). */
int	mig_source_resume(char *msg, size_t msglen);
/* The gate: EBUSY with msg while a migration holds the guest. */
int	mig_source_checkpoint_begin(char *msg, size_t msglen);
void	mig_source_checkpoint_end(void);
enum mig_source_state mig_source_state(void);
const char *mig_source_state_name(enum mig_source_state);
/* One JSON line answering "status": state and whether the guest runs. */
char	*mig_source_status_json(void);

#endif /* !_MIGRATION_SOURCE_CMD_H_ */
