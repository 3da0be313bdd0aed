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
 * the page was written (harvested PTE dirty bits, kernel writes) and cleared
 * only when a get-and-clear reports it.
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

/*
 * A harvest over [sva, eva) reports what it consumed as address ranges: a
 * 4 KiB leaf, or a whole superpage whose dirty bit it took without being
 * able to split it (a failed demotion, a 1 GiB leaf).  The range may start
 * before sva or end after eva; only the part inside is recorded.
 */
struct vdl_harvest {
	uint64_t	sva;
	uint64_t	eva;
	unsigned int	pageshift;
	uint64_t	*bitmap;	/* bit i: page sva + (i << pageshift) */
};

uint64_t vdl_harvest_report(struct vdl_harvest *h, uint64_t va,
	    uint64_t len);

/*
 * Segments being tracked, found by their VM object when a kernel write
 * must be marked.  Readers walk the list without a lock (inside an epoch
 * section in the kernel); publish and unpublish are serialised by the
 * caller, and an unpublished segment is freed only after readers drained.
 * "nsegs" lets markers skip the walk when nothing is tracked: it counts
 * published segments, so one VM stopping never hides another VM's.
 */
struct vdl_seg {
	struct vdl_seg	*next;
	const void	*object;
	struct vdl_log	log;
};

struct vdl_registry {
	struct vdl_seg	*head;
	unsigned int	nsegs;
};

void	vdl_registry_publish(struct vdl_registry *reg, struct vdl_seg *seg);
int	vdl_registry_unpublish(struct vdl_registry *reg, struct vdl_seg *seg);
int	vdl_registry_mark(struct vdl_registry *reg, const void *object,
	    uint64_t pindex);

/*
 * Who may use a VM's tracking: the open file that started it, from the
 * process whose address space maps guest memory (its writes are harvested
 * from that address space).  Anyone else gets EPERM.
 */
struct vdl_owner {
	const void	*file;
	const void	*vmspace;
};

int	vdl_owner_check(const struct vdl_owner *owner, const void *file,
	    const void *vmspace);

/*
 * Tracking ends in two ways that may come in either order: the owner
 * stops it or closes its descriptor, and the VM's memory is destroyed.
 * vdl_end() says what the caller must undo for an event, given the state.
 */
enum vdl_state {
	VDL_TRACKING,		/* segments published, memory wired */
	VDL_DETACHED,		/* memory gone; only the owner's record left */
};

enum vdl_event {
	VDL_OWNER_DONE,		/* stop, close or exit of the owner */
	VDL_MEMORY_GONE,	/* the VM's memory is being destroyed */
};

#define	VDL_UNPUBLISH	0x1	/* unpublish the segments, drop objects */
#define	VDL_UNWIRE	0x2	/* unwire what start wired */
#define	VDL_FREE	0x4	/* free the record */

unsigned int vdl_end(enum vdl_state *state, enum vdl_event event);

#endif /* !_DEV_VMM_DIRTY_LOG_H_ */
