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
	MIGRATE_OPT_CONTINUE,		/* --migrate-continue */
	MIGRATE_OPT_RESUME,		/* --migrate-resume */
	MIGRATE_OPT_STATUS,		/* --migrate-status */
	MIGRATE_OPT_KEYFILE,		/* --migrate-keyfile=path */
	MIGRATE_OPT_JSON,		/* --migrate-json */
	MIGRATE_OPT_TABLE,
	MIGRATE_OPT_COUNT = MIGRATE_OPT_TABLE + MIG_OPT_COUNT,
	/* The table's last entry, the test bed's fault, is not bhyvectl's. */
	MIGRATE_OPT_BHYVECTL = MIGRATE_OPT_COUNT - 1
};

_Static_assert(MIG_OPT_FAULT == MIG_OPT_COUNT - 1,
    "the test bed's fault option must be the table's last");
_Static_assert(MIGRATE_OPT_BHYVECTL == 22,
    "MIGRATE_LONG_OPTIONS() must list every bhyvectl migration option");

/*
 * bhyvectl.c's long option entries, values base + MIGRATE_OPT_*: the
 * names, argument kinds and arguments' names come from the table.
 */
#define	MIGRATE_LONG_OPTION(base, i)					\
	{ migrate_option_name(i), migrate_option_has_arg(i), NULL, (base) + (i) }
#define	MIGRATE_LONG_OPTIONS(base)					\
	MIGRATE_LONG_OPTION(base, 0), MIGRATE_LONG_OPTION(base, 1),	\
	MIGRATE_LONG_OPTION(base, 2), MIGRATE_LONG_OPTION(base, 3),	\
	MIGRATE_LONG_OPTION(base, 4), MIGRATE_LONG_OPTION(base, 5),	\
	MIGRATE_LONG_OPTION(base, 6), MIGRATE_LONG_OPTION(base, 7),	\
	MIGRATE_LONG_OPTION(base, 8), MIGRATE_LONG_OPTION(base, 9),	\
	MIGRATE_LONG_OPTION(base, 10), MIGRATE_LONG_OPTION(base, 11),	\
	MIGRATE_LONG_OPTION(base, 12), MIGRATE_LONG_OPTION(base, 13),	\
	MIGRATE_LONG_OPTION(base, 14), MIGRATE_LONG_OPTION(base, 15),	\
	MIGRATE_LONG_OPTION(base, 16), MIGRATE_LONG_OPTION(base, 17),	\
	MIGRATE_LONG_OPTION(base, 18), MIGRATE_LONG_OPTION(base, 19),	\
	MIGRATE_LONG_OPTION(base, 20), MIGRATE_LONG_OPTION(base, 21)

/* bhyvectl: record option opt (0 .. MIGRATE_OPT_COUNT - 1). */
int	migrate_option(int opt, const char *arg);
bool	migrate_requested(void);
/*
 * tbctl: its name and its spelling of the table's options (no
 * "migrate-"), JSON lines on stdout, words (on stderr with JSON).
 */
void	migrate_output(const char *progname, const char *table_prefix,
	    bool json, bool human);
/* Run what the options asked for against the VM; a MIG_EXIT_* code. */
int	migrate_request(const char *vmname);
/* bhyvectl's option opt: "migrate-...", getopt's has_arg, its argument. */
const char *migrate_option_name(int opt);
int	migrate_option_has_arg(int opt);
const char *migrate_option_arg(int opt);

#endif /* !_BHYVECTL_MIGRATE_H_ */
