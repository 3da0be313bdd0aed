/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/* bhyvectl --migrate and --migrate-live: the source side's controller. */

#ifndef _BHYVECTL_MIGRATE_H_
#define	_BHYVECTL_MIGRATE_H_

#include <stdbool.h>

/*
 * The migration options, in the order of their entries in bhyvectl.c's
 * option enum, which passes (option - SET_MIGRATE) to migrate_option().
 */
enum {
	MIGRATE_OPT_MIGRATE,		/* --migrate=host[:port] */
	MIGRATE_OPT_LIVE,		/* --migrate-live=host[:port] */
	MIGRATE_OPT_DOWNTIME,		/* --migrate-downtime=ms */
	MIGRATE_OPT_MAX_ROUNDS,		/* --migrate-max-rounds=n */
	MIGRATE_OPT_FIXED_ROUNDS,	/* --migrate-fixed-rounds=n */
	MIGRATE_OPT_BANDWIDTH,		/* --migrate-bandwidth=bytes/s */
	MIGRATE_OPT_ENCRYPT,		/* --migrate-encrypt */
	MIGRATE_OPT_KEYFILE,		/* --migrate-keyfile=path */
	MIGRATE_OPT_COUNT
};

/* Record one option; prints why and returns -1 if it is wrong. */
int	migrate_option(int opt, const char *arg);
bool	migrate_requested(void);
/*
 * Migrate vmname as the options say, printing progress.  Returns 0 when
 * the guest runs on the destination, 1 when the migration failed and
 * the guest still runs here, 2 when the outcome is unknown and the guest
 * is kept paused here.
 */
int	migrate_request(const char *vmname);

#endif /* !_BHYVECTL_MIGRATE_H_ */
