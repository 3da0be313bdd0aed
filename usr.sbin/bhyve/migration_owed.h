/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The destination's debt of pages (MIG_CAP_OWED).  Live rounds may tag
 * data straight from the running guest's memory, so a page the guest
 * writes between its tag and its send fails the check.  Such frames come
 * as a PAGES_INDEX, which must pass, and its PAGES_DATA, which may fail:
 * then every page of the verified index is owed, the source learns which
 * after the round (OWED) and sends them again, and the guest may not run
 * here while any is owed.  Data altered on the way costs a resend; an
 * altered index fails the migration.
 *
 * Within a round, a failed frame only sets bits (failed) and a passed
 * one only clears bits owed from earlier rounds (owed), so that a failed
 * and a passed frame of one page, on two streams, leave it owed in
 * either order.  The round's end merges the two.
 */

#ifndef _MIGRATION_OWED_H_
#define	_MIGRATION_OWED_H_

#include <stdbool.h>
#include <stdint.h>

#include "migration.h"
#include "migration_backend.h"
#include "migration_chan.h"

struct mig_owed {
	uint32_t	nsegs;
	uint64_t	npages[MIG_MAX_SEGS];
	uint64_t	*owed[MIG_MAX_SEGS];	/* earlier rounds' */
	uint64_t	*failed[MIG_MAX_SEGS];	/* this round's, __atomic */
	uint64_t	count;		/* owed after the last merge */
	bool		live;		/* this round's failed frames are owed */
};

/* Bitmaps for local's segments; 0 or ENOMEM. */
int	mig_owed_init(struct mig_owed *, const struct mig_vminfo *local);
void	mig_owed_free(struct mig_owed *);
/* A frame of count index entries in seg failed its tag: they are owed. */
void	mig_owed_fail(struct mig_owed *, uint32_t seg, const uint64_t *idx,
	    uint32_t count);
/* A frame passed its tag: its pages are owed no longer. */
void	mig_owed_pass(struct mig_owed *, uint32_t seg, const uint64_t *idx,
	    uint32_t count);
/* The round ended, every stream's part in: the pages owed now. */
uint64_t mig_owed_merge(struct mig_owed *);
/* OWED frames for every owed page, then OWED_END; 0 or the error. */
int	mig_owed_send(const struct mig_owed *, struct mig_chan *,
	    uint32_t round);

#endif /* _MIGRATION_OWED_H_ */
