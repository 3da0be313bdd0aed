/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Machine-independent logic of vmm(4) dirty page tracking: validation of a
 * request's guest-physical range, lookup of the memory segment behind it,
 * and the per-segment "sticky" dirty log.
 *
 * This file and vmm_dirty_log.c compile both in the kernel and in userland
 * (where the project's tests exercise them), so they use neither kernel
 * nor libc facilities beyond fixed-width integers and atomics.
 *
 * Bitmaps are arrays of uint64_t in which bit i of the bitmap is bit
 * (i % 64) of word (i / 64).  Bits past the last page are zero on output
 * and ignored on input.
 */

#ifndef _DEV_VMM_DIRTY_LOG_H_
#define	_DEV_VMM_DIRTY_LOG_H_

#ifdef _KERNEL
#include <sys/types.h>
#else
#include <stdint.h>
#endif

#define	VDL_WORD_BITS		64
#define	VDL_NWORDS(npages)	(((npages) + VDL_WORD_BITS - 1) / VDL_WORD_BITS)

/* One mapping of a memory segment into the guest-physical address space. */
struct vdl_map {
	uint64_t	gpa;		/* first guest-physical address */
	uint64_t	len;		/* bytes */
	uint64_t	segoff;		/* offset into the segment */
	int		segid;
};

/* Where a validated request lands. */
struct vdl_loc {
	int		segid;
	uint64_t	first;		/* page index in the segment */
};

/*
 * Sticky per-segment log: a bit per segment page, set by whoever learns that
 * the page was written (harvested PTE dirty bits, kernel writes, put-back)
 * and cleared only when a get-and-clear reports it.
 */
struct vdl_log {
	uint64_t	npages;
	uint64_t	*bits;		/* VDL_NWORDS(npages) words */
};

int	vdl_check_request(uint64_t gpa, uint64_t npages, uint64_t maxpages,
	    unsigned int pageshift);
int	vdl_lookup(const struct vdl_map *maps, int nmaps, uint64_t gpa,
	    uint64_t npages, unsigned int pageshift, struct vdl_loc *loc);

void	vdl_log_init(struct vdl_log *log, uint64_t *bits, uint64_t npages);
int	vdl_log_mark(struct vdl_log *log, uint64_t pindex);
int	vdl_log_merge(struct vdl_log *log, uint64_t first, uint64_t npages,
	    const uint64_t *bitmap);
int	vdl_log_fetch_clear(struct vdl_log *log, uint64_t first,
	    uint64_t npages, uint64_t *bitmap, uint64_t *ndirty);
uint64_t vdl_bitmap_count(const uint64_t *bitmap, uint64_t npages);

#endif /* !_DEV_VMM_DIRTY_LOG_H_ */
