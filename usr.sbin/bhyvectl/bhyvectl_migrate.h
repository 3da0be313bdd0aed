/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The controller of a migration's source side: bhyvectl --migrate* and
 * tbctl.  Portable; it reaches the VM through mig_ctl_send()
 * (migration_seam.h).
 */

#ifndef _BHYVECTL_MIGRATE_H_
#define	_BHYVECTL_MIGRATE_H_

#include <stdbool.h>

#include "migration_ctl.h"

/* bhyvectl's options: its own, then mig_opts[]'s (MIGRATE_OPT_TABLE + id). */
enum {
	MIGRATE_OPT_MIGRATE,		/* --migrate=host[:port] */
	MIGRATE_OPT_LIVE,		/* --migrate-live=host[:port] */
	MIGRATE_OPT_CHECK,		/* --migrate-check=host[:port] */
	MIGRATE_OPT_CANCEL,		/* --migrate-cancel */
	MIGRATE_OPT_RESUME,		/* --migrate-resume */
	MIGRATE_OPT_STATUS,		/* --migrate-status */
	MIGRATE_OPT_KEYFILE,		/* --migrate-keyfile=path */
	MIGRATE_OPT_JSON,		/* --migrate-json */
	MIGRATE_OPT_TABLE,
	MIGRATE_OPT_COUNT = MIGRATE_OPT_TABLE + MIG_OPT_COUNT
};

/* What the controller does. */
enum migrate_cmd {
	MIGRATE_CMD_NONE = 0,
	MIGRATE_CMD_MIGRATE,
	MIGRATE_CMD_CHECK,
	MIGRATE_CMD_CANCEL,
	MIGRATE_CMD_RESUME,
	MIGRATE_CMD_STATUS
};

struct migrate_ctl {
	const char	*progname;	/* before each problem reported */
	enum migrate_cmd cmd;
	const char	*target;	/* destination host[:port] */
	const char	*keyfile;
	bool		json;		/* events as JSON lines on stdout */
	bool		human;		/* events in words (stderr if json) */
	int		connect_timeout_ms;
	struct mig_request req;
};

/* bhyvectl: record option opt (0 .. MIGRATE_OPT_COUNT - 1). */
int	migrate_option(int opt, const char *arg);
bool	migrate_requested(void);
/* bhyvectl: run what the options asked for; a MIG_EXIT_* code. */
int	migrate_request(const char *vmname);
/* Run a controller command against the VM named vm; a MIG_EXIT_* code. */
int	migrate_run(const char *vm, struct migrate_ctl *);
/* The name of bhyvectl's option opt, "migrate-..." */
const char *migrate_option_name(int opt);

#endif /* !_BHYVECTL_MIGRATE_H_ */
