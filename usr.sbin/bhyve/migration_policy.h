/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * When to stop pre-copy.  After every live round the sender asks the
 * policy with the number of pages dirtied meanwhile.  The policy keeps a
 * bandwidth estimate from the rounds so far and stops when
 *
 *	remaining dirty bytes / bandwidth + state bytes / bandwidth + RTT
 *
 * fits the downtime limit, or when a bound (rounds, time) is reached, or
 * when rounds stop paying (the dirty set no longer shrinks even with the
 * vCPUs throttled).  When the guest dirties memory about as fast as it
 * can be sent, it asks for the vCPUs to be throttled, harder each round.
 * Pure logic: no I/O, no clock of its own.
 */

#ifndef _MIGRATION_POLICY_H_
#define	_MIGRATION_POLICY_H_

#include <stdbool.h>
#include <stdint.h>

#include "migration.h"

#define	MIG_THROTTLE_FIRST	20	/* percent */
#define	MIG_THROTTLE_STEP	10
#define	MIG_THROTTLE_MAX	90
#define	MIG_NO_PROGRESS_ROUNDS	3

struct mig_policy {
	enum mig_policy_mode mode;
	uint32_t	fixed_rounds;
	uint32_t	max_rounds;
	uint64_t	downtime_limit_us;
	uint64_t	max_time_us;
	bool		auto_throttle;
	uint64_t	start_us;
	uint64_t	state_bytes;	/* expected vCPU + device state */
	uint64_t	rtt_us;
	uint32_t	rounds;		/* live rounds completed */
	uint64_t	bandwidth;	/* bytes/s, smoothed */
	uint64_t	bytes_per_page;	/* wire bytes per dirty page */
	uint64_t	prev_dirty;
	uint64_t	prev_round_pages; /* pages the last round sent */
	uint32_t	hot_rounds;	/* dirtying outran sending */
	uint32_t	flat_rounds;	/* dirty set did not shrink */
	uint32_t	throttle_pct;
	uint64_t	disk_dirty_bytes; /* disk blocks owed, wire bytes */
	uint64_t	prev_disk_dirty;
};

struct mig_decision {
	bool		stop;
	enum mig_stop_reason reason;
	uint64_t	est_downtime_us;
	uint32_t	throttle_pct;	/* to apply before the next round */
};

void	mig_policy_init(struct mig_policy *, const struct mig_params *,
	    uint64_t now_us, uint64_t state_bytes, uint64_t rtt_us);
/* Feed a finished live round (bytes on the wire, pages, duration). */
void	mig_policy_round(struct mig_policy *, const struct mig_round_stats *);
/* Decide, given the pages dirtied since the last collection. */
void	mig_policy_decide(struct mig_policy *, uint64_t dirty_pages,
	    uint64_t now_us, struct mig_decision *);
/* Disk blocks owed after a collection, as wire bytes (0: no disks). */
void	mig_policy_disk(struct mig_policy *, uint64_t dirty_bytes);
/* The estimate alone, for a given dirty page count (and disk bytes). */
uint64_t mig_policy_estimate(const struct mig_policy *, uint64_t dirty_pages);

#endif /* _MIGRATION_POLICY_H_ */
