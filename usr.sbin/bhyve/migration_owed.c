/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "migration_internal.h"
#include "migration_owed.h"
#include "migration_wire.h"

int
mig_owed_init(struct mig_owed *o, const struct mig_vminfo *local)
{
	uint32_t seg;
	size_t n;

	memset(o, 0, sizeof(*o));
	o->nsegs = local->nsegs;
	for (seg = 0; seg < o->nsegs; seg++) {
		o->npages[seg] = local->segs[seg].len / MIG_PAGE_SIZE;
		n = bitmap_words(o->npages[seg]);
		o->owed[seg] = calloc(n > 0 ? n : 1, sizeof(uint64_t));
		o->failed[seg] = calloc(n > 0 ? n : 1, sizeof(uint64_t));
		if (o->owed[seg] == NULL || o->failed[seg] == NULL) {
			mig_owed_free(o);
			return (ENOMEM);
		}
	}
	return (0);
}

void
mig_owed_free(struct mig_owed *o)
{
	uint32_t seg;

	for (seg = 0; seg < MIG_MAX_SEGS; seg++) {
		free(o->owed[seg]);
		free(o->failed[seg]);
		o->owed[seg] = o->failed[seg] = NULL;
	}
}

/* Index entries were checked against the segment by the receiver. */
void
mig_owed_fail(struct mig_owed *o, uint32_t seg, const uint64_t *idx,
    uint32_t count)
{
	uint64_t page;
	uint32_t i;

	for (i = 0; i < count; i++) {
		page = idx[i] & ~MIG_PAGE_ZERO;
		(void)__atomic_fetch_or(&o->failed[seg][page / BITS_PER_WORD],
		    1ull << (page % BITS_PER_WORD), __ATOMIC_RELAXED);
	}
}

void
mig_owed_pass(struct mig_owed *o, uint32_t seg, const uint64_t *idx,
    uint32_t count)
{
	uint64_t page;
	uint32_t i;

	/* Written only between rounds: the common case costs a test. */
	if (o->count == 0)
		return;
	for (i = 0; i < count; i++) {
		page = idx[i] & ~MIG_PAGE_ZERO;
		(void)__atomic_fetch_and(&o->owed[seg][page / BITS_PER_WORD],
		    ~(1ull << (page % BITS_PER_WORD)), __ATOMIC_RELAXED);
	}
}

uint64_t
mig_owed_merge(struct mig_owed *o)
{
	uint64_t count;
	uint32_t seg;
	size_t w, n;

	count = 0;
	for (seg = 0; seg < o->nsegs; seg++) {
		n = bitmap_words(o->npages[seg]);
		for (w = 0; w < n; w++) {
			o->owed[seg][w] |= o->failed[seg][w];
			o->failed[seg][w] = 0;
		}
		count += popcount_words(o->owed[seg], n);
	}
	o->count = count;
	return (count);
}

static int
send_ranges(struct mig_chan *ch, struct mig_zero_ranges *z)
{
	uint8_t buf[MIG_ZERO_RANGES_HDR_LEN +
	    MIG_ZERO_RANGES_MAX * MIG_ZERO_RANGE_LEN];
	int error;

	if (z->count == 0)
		return (0);
	error = mig_chan_send(ch, MIG_MSG_OWED, buf,
	    mig_zero_ranges_encode(buf, sizeof(buf), z));
	z->count = 0;
	return (error);
}

int
mig_owed_send(const struct mig_owed *o, struct mig_chan *ch, uint32_t round)
{
	struct mig_zero_ranges z;
	struct mig_round_end end;
	uint8_t buf[MIG_ROUND_END_LEN];
	uint64_t page, run;
	uint32_t seg;
	int error;

	for (seg = 0; seg < o->nsegs && o->count > 0; seg++) {
		z.seg = seg;
		z.count = 0;
		for (page = 0; page < o->npages[seg]; page += run) {
			run = 0;
			while (page + run < o->npages[seg] &&
			    (o->owed[seg][(page + run) / BITS_PER_WORD] &
			    (1ull << ((page + run) % BITS_PER_WORD))) != 0)
				run++;
			if (run == 0) {
				/* A clear word is skipped whole. */
				run = o->owed[seg][page / BITS_PER_WORD] == 0 ?
				    BITS_PER_WORD - page % BITS_PER_WORD : 1;
				continue;
			}
			if (z.count == MIG_ZERO_RANGES_MAX &&
			    (error = send_ranges(ch, &z)) != 0)
				return (error);
			z.r[z.count].first = page;
			z.r[z.count++].npages = run;
		}
		if ((error = send_ranges(ch, &z)) != 0)
			return (error);
	}
	end.index = round;
	end.pages = o->count;
	return (mig_chan_send(ch, MIG_MSG_OWED_END, buf,
	    mig_round_end_encode(buf, sizeof(buf), &end)));
}
