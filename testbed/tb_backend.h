/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/* The migration engine's backend over the test guest. */

#ifndef _TB_BACKEND_H_
#define	_TB_BACKEND_H_

#include <stdbool.h>
#include <stdint.h>

#include "migration.h"
#include "migration_backend.h"

struct tb_guest;

typedef void	tb_progress_fn(void *arg, const struct mig_progress *);

struct tb_backend {
	struct mig_backend mb;		/* what the engine is given */
	struct tb_guest	*guest;
	tb_progress_fn	*progress;
	void		*progress_arg;
	uint64_t	restored;	/* sections restored, one bit each */
	/*
	 * A device without a snapshot routine, as bhyve's hostbridge:
	 * its name, or NULL.  The guest's description refuses it, so the
	 * source refuses the migration before memory moves.
	 */
	const char	*stateless_device;
};

/* Set up tb for guest g; progress may be NULL. */
void	tb_backend_init(struct tb_backend *tb, struct tb_guest *g,
	    tb_progress_fn *progress, void *progress_arg);
/* Name the first section not restored, or return false if none. */
bool	tb_backend_missing_section(const struct tb_backend *, char *name,
	    size_t namelen);

#endif /* _TB_BACKEND_H_ */
