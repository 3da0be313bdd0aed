/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <string.h>

#include "migration_policy.h"
#include "migration_wire.h"

/* Until a round has been measured: 1 Gbit/s, a full page per page. */
#define	MIG_BW_GUESS		(125u * 1000 * 1000)
#define	MIG_BPP_GUESS		(MIG_PAGE_SIZE + 8)
/* Rounds shorter than this say little about the bandwidth. */
#define	MIG_BW_MIN_SAMPLE_US	2000

void
mig_policy_init(struct mig_policy *pol, const struct mig_params *p,
    uint64_t now_us, uint64_t state_bytes, uint64_t rtt_us)
{
	memset(pol, 0, sizeof(*pol));
	pol->mode = p->policy;
	pol->fixed_rounds = p->fixed_rounds;
	pol->max_rounds = p->max_rounds;
	pol->downtime_limit_us = p->downtime_limit_us;
	pol->max_time_us = p->max_time_ms * 1000;
	pol->auto_throttle = p->auto_throttle;
	pol->start_us = now_us;
	pol->state_bytes = state_bytes;
	pol->rtt_us = rtt_us;
	pol->bandwidth = MIG_BW_GUESS;
	pol->bytes_per_page = MIG_BPP_GUESS;
	if (p->bandwidth_limit != 0 && p->bandwidth_limit < pol->bandwidth)
		pol->bandwidth = p->bandwidth_limit;
}

void
mig_policy_round(struct mig_policy *pol, const struct mig_round_stats *r)
{
	uint64_t bw, pages;

	pol->rounds++;
	pages = r->pages_sent + r->zero_pages;
	pol->prev_round_pages = pages;
	if (r->duration_us >= MIG_BW_MIN_SAMPLE_US && r->bytes > 0) {
		bw = r->bytes * 1000000 / r->duration_us;
		/* The first real sample replaces the guess. */
		if (pol->rounds == 1 || pol->bandwidth == MIG_BW_GUESS)
			pol->bandwidth = bw;
		else
			pol->bandwidth = (pol->bandwidth + bw) / 2;
	}
	/*
	 * Round 1 sends all of memory, mostly zero in a fresh guest: its
	 * mix says little about what later rounds' dirty pages cost.
	 */
	if (pages > 0 && pol->rounds > 1)
		pol->bytes_per_page = (r->bytes - r->disk_bytes) / pages;
}

void
mig_policy_disk(struct mig_policy *pol, uint64_t dirty_bytes)
{

	pol->disk_dirty_bytes = dirty_bytes;
}

uint64_t
mig_policy_estimate(const struct mig_policy *pol, uint64_t dirty_pages)
{
	uint64_t bytes;

	bytes = dirty_pages * pol->bytes_per_page + pol->disk_dirty_bytes +
	    pol->state_bytes;
	return (bytes * 1000000 / (pol->bandwidth > 0 ? pol->bandwidth : 1) +
	    pol->rtt_us);
}

void
mig_policy_decide(struct mig_policy *pol, uint64_t dirty_pages,
    uint64_t now_us, struct mig_decision *d)
{
	memset(d, 0, sizeof(*d));
	d->est_downtime_us = mig_policy_estimate(pol, dirty_pages);
	d->throttle_pct = pol->throttle_pct;

	if (pol->mode == MIG_POLICY_FIXED) {
		if (pol->rounds >= pol->fixed_rounds) {
			d->stop = true;
			d->reason = MIG_STOP_FIXED_ROUNDS;
		}
		return;
	}
	if (d->est_downtime_us <= pol->downtime_limit_us ||
	    (dirty_pages == 0 && pol->disk_dirty_bytes == 0)) {
		d->stop = true;
		d->reason = MIG_STOP_CONVERGED;
	} else if (pol->rounds >= pol->max_rounds) {
		d->stop = true;
		d->reason = MIG_STOP_MAX_ROUNDS;
	} else if (pol->max_time_us != 0 &&
	    now_us - pol->start_us >= pol->max_time_us) {
		d->stop = true;
		d->reason = MIG_STOP_MAX_TIME;
	}
	if (d->stop)
		return;

	/* Rounds pay while the dirty set, memory and disk, shrinks. */
	if (pol->rounds > 1 && dirty_pages >= pol->prev_dirty &&
	    pol->disk_dirty_bytes >= pol->prev_disk_dirty)
		pol->flat_rounds++;
	else
		pol->flat_rounds = 0;
	pol->prev_dirty = dirty_pages;
	pol->prev_disk_dirty = pol->disk_dirty_bytes;

	/*
	 * The guest dirtied at least half of what the round could send:
	 * sending harder cannot win, slowing the guest can.  Two such
	 * rounds in a row, as QEMU's auto-converge does, before acting.
	 */
	if (pol->rounds > 1 && dirty_pages > 0 &&
	    dirty_pages * 2 >= pol->prev_round_pages)
		pol->hot_rounds++;
	else
		pol->hot_rounds = 0;
	if (pol->auto_throttle && pol->hot_rounds >= 2) {
		if (pol->throttle_pct == 0)
			pol->throttle_pct = MIG_THROTTLE_FIRST;
		else if (pol->throttle_pct + MIG_THROTTLE_STEP <=
		    MIG_THROTTLE_MAX)
			pol->throttle_pct += MIG_THROTTLE_STEP;
		d->throttle_pct = pol->throttle_pct;
	}
	if (pol->flat_rounds >= MIG_NO_PROGRESS_ROUNDS &&
	    (!pol->auto_throttle || pol->throttle_pct >= MIG_THROTTLE_MAX)) {
		d->stop = true;
		d->reason = MIG_STOP_NO_PROGRESS;
	}
}
