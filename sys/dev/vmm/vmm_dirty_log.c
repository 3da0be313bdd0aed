/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Machine-independent logic of vmm(4) dirty page tracking; see
 * vmm_dirty_log.h.  Every update of a sticky log is an atomic operation on
 * one 64-bit word, so that marking (from any thread, without a lock) and
 * get-and-clear (under the tracker's shared lock) never lose a bit: a bit
 * is either still in the log or in exactly one caller's bitmap.
 */

#ifdef _KERNEL
#include <sys/param.h>
#include <sys/systm.h>
#include <sys/errno.h>

#include <machine/atomic.h>
#else
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#endif

#include "vmm_dirty_log.h"

#ifdef _KERNEL
static inline void *
vdl_load_ptr(void *pp)
{
	return ((void *)atomic_load_acq_ptr((volatile uintptr_t *)pp));
}

static inline void
vdl_store_ptr(void *pp, void *v)
{
	atomic_store_rel_ptr((volatile uintptr_t *)pp, (uintptr_t)v);
}

static inline void
vdl_add_uint(unsigned int *p, int v)
{
	atomic_add_int(p, (unsigned int)v);
}

static inline unsigned int
vdl_load_uint(unsigned int *p)
{
	return (atomic_load_acq_int(p));
}

static inline uint64_t
vdl_load(uint64_t *p)
{
	return (atomic_load_64(p));
}

static inline void
vdl_or(uint64_t *p, uint64_t v)
{
	atomic_set_64(p, v);
}

/* Atomically clear the bits of mask in *p; return their old values. */
static inline uint64_t
vdl_fetch_clear(uint64_t *p, uint64_t mask)
{
	uint64_t old;

	if (mask == UINT64_MAX)
		return (atomic_readandclear_64(p));
	old = atomic_load_64(p);
	while (!atomic_fcmpset_64(p, &old, old & ~mask))
		;
	return (old & mask);
}
#else
static inline void *
vdl_load_ptr(void *pp)
{
	return (__atomic_load_n((void **)pp, __ATOMIC_ACQUIRE));
}

static inline void
vdl_store_ptr(void *pp, void *v)
{
	__atomic_store_n((void **)pp, v, __ATOMIC_RELEASE);
}

static inline void
vdl_add_uint(unsigned int *p, int v)
{
	(void)__atomic_fetch_add(p, (unsigned int)v, __ATOMIC_SEQ_CST);
}

static inline unsigned int
vdl_load_uint(unsigned int *p)
{
	return (__atomic_load_n(p, __ATOMIC_ACQUIRE));
}

static inline uint64_t
vdl_load(uint64_t *p)
{
	return (__atomic_load_n(p, __ATOMIC_RELAXED));
}

static inline void
vdl_or(uint64_t *p, uint64_t v)
{
	(void)__atomic_fetch_or(p, v, __ATOMIC_SEQ_CST);
}

static inline uint64_t
vdl_fetch_clear(uint64_t *p, uint64_t mask)
{
	return (__atomic_fetch_and(p, ~mask, __ATOMIC_SEQ_CST) & mask);
}
#endif

/* The low n bits set, 0 <= n <= 64. */
static inline uint64_t
vdl_lowmask(unsigned int n)
{
	return (n >= VDL_WORD_BITS ? UINT64_MAX : (UINT64_C(1) << n) - 1);
}

/*
 * Validate the arguments of a bitmap request (get-and-clear, populated)
 * before any lookup: gpa page-aligned, at least one page, at most maxpages
 * pages (which bounds the bitmap the kernel allocates and copies), and no
 * wrap-around of the guest-physical range.
 */
int
vdl_check_request(uint64_t gpa, uint64_t npages, uint64_t maxpages,
    unsigned int pageshift)
{
	uint64_t len;

	if (pageshift == 0 || pageshift >= 32)
		return (EINVAL);
	if ((gpa & vdl_lowmask(pageshift)) != 0)
		return (EINVAL);
	if (npages == 0)
		return (EINVAL);
	if (npages > maxpages)
		return (ERANGE);
	if (npages > (UINT64_MAX >> pageshift))
		return (EOVERFLOW);
	len = npages << pageshift;
	if (gpa + len < gpa)
		return (EOVERFLOW);
	return (0);
}

/*
 * Find the mapping that holds [gpa, gpa + npages pages).  The range must lie
 * inside one mapping; a range in a hole, or one that runs past the end of
 * its mapping (even into an adjacent one), is refused with EFAULT so that a
 * bit never stands for pages of two segments.  The caller has validated the
 * request with vdl_check_request().
 */
int
vdl_lookup(const struct vdl_map *maps, int nmaps, uint64_t gpa,
    uint64_t npages, unsigned int pageshift, struct vdl_loc *loc)
{
	const struct vdl_map *m;
	uint64_t len;
	int i;

	len = npages << pageshift;
	for (i = 0; i < nmaps; i++) {
		m = &maps[i];
		if (m->len == 0 || gpa < m->gpa || gpa - m->gpa >= m->len)
			continue;
		if (len > m->len - (gpa - m->gpa))
			return (EFAULT);
		loc->segid = m->segid;
		loc->first = (m->segoff + (gpa - m->gpa)) >> pageshift;
		return (0);
	}
	return (EFAULT);
}

void
vdl_log_init(struct vdl_log *log, uint64_t *bits, uint64_t npages)
{
	uint64_t i;

	log->npages = npages;
	log->bits = bits;
	for (i = 0; i < VDL_NWORDS(npages); i++)
		bits[i] = 0;
}

static int
vdl_log_range(const struct vdl_log *log, uint64_t first, uint64_t npages)
{
	if (npages == 0 || first >= log->npages ||
	    npages > log->npages - first)
		return (EINVAL);
	return (0);
}

/* Mark one page; lock-free, callable from any context. */
int
vdl_log_mark(struct vdl_log *log, uint64_t pindex)
{
	if (pindex >= log->npages)
		return (EINVAL);
	vdl_or(&log->bits[pindex / VDL_WORD_BITS],
	    UINT64_C(1) << (pindex % VDL_WORD_BITS));
	return (0);
}

/* OR bitmap (bit i: page first + i) into the log. */
int
vdl_log_merge(struct vdl_log *log, uint64_t first, uint64_t npages,
    const uint64_t *bitmap)
{
	uint64_t bit, in, n, q, w;
	unsigned int r;
	int error;

	error = vdl_log_range(log, first, npages);
	if (error != 0)
		return (error);
	r = first % VDL_WORD_BITS;
	for (w = 0; w < VDL_NWORDS(npages); w++) {
		bit = w * VDL_WORD_BITS;
		n = npages - bit;
		in = bitmap[w] & vdl_lowmask(n > VDL_WORD_BITS ?
		    VDL_WORD_BITS : (unsigned int)n);
		if (in == 0)
			continue;
		q = (first + bit) / VDL_WORD_BITS;
		vdl_or(&log->bits[q], in << r);
		if (r != 0 && (in >> (VDL_WORD_BITS - r)) != 0)
			vdl_or(&log->bits[q + 1], in >> (VDL_WORD_BITS - r));
	}
	return (0);
}

/*
 * Move the log's bits for pages [first, first + npages) into bitmap (bit i:
 * page first + i), clearing them in the log; bitmap is overwritten.  Words
 * with nothing set are only read, so a mostly clean log costs no atomics.
 */
int
vdl_log_fetch_clear(struct vdl_log *log, uint64_t first, uint64_t npages,
    uint64_t *bitmap, uint64_t *ndirty)
{
	uint64_t bit, count, m1, m2, n, out, q;
	unsigned int part1, r;
	int error;

	error = vdl_log_range(log, first, npages);
	if (error != 0)
		return (error);
	r = first % VDL_WORD_BITS;
	count = 0;
	for (bit = 0; bit < npages; bit += VDL_WORD_BITS) {
		n = npages - bit;
		if (n > VDL_WORD_BITS)
			n = VDL_WORD_BITS;
		q = (first + bit) / VDL_WORD_BITS;
		part1 = VDL_WORD_BITS - r;
		if (part1 > n)
			part1 = (unsigned int)n;
		out = 0;
		m1 = vdl_lowmask(part1) << r;
		if ((vdl_load(&log->bits[q]) & m1) != 0)
			out = vdl_fetch_clear(&log->bits[q], m1) >> r;
		if (n > part1) {
			m2 = vdl_lowmask((unsigned int)n - part1);
			if ((vdl_load(&log->bits[q + 1]) & m2) != 0)
				out |= vdl_fetch_clear(&log->bits[q + 1], m2) <<
				    part1;
		}
		bitmap[bit / VDL_WORD_BITS] = out;
		count += (uint64_t)__builtin_popcountll(out);
	}
	if (ndirty != NULL)
		*ndirty = count;
	return (0);
}

uint64_t
vdl_bitmap_count(const uint64_t *bitmap, uint64_t npages)
{
	uint64_t count, n, w;

	count = 0;
	for (w = 0; w < VDL_NWORDS(npages); w++) {
		n = npages - w * VDL_WORD_BITS;
		count += (uint64_t)__builtin_popcountll(bitmap[w] &
		    vdl_lowmask(n > VDL_WORD_BITS ? VDL_WORD_BITS :
		    (unsigned int)n));
	}
	return (count);
}

/*
 * Record the part of [va, va + len) inside the harvest window; returns the
 * number of pages recorded.  Called under the pmap lock: no sleeping, no
 * allocation.
 */
uint64_t
vdl_harvest_report(struct vdl_harvest *h, uint64_t va, uint64_t len)
{
	uint64_t first, i, last, lo, hi;

	lo = va < h->sva ? h->sva : va;
	hi = (va + len < va || va + len > h->eva) ? h->eva : va + len;
	if (lo >= hi)
		return (0);
	first = (lo - h->sva) >> h->pageshift;
	last = (hi - h->sva + vdl_lowmask(h->pageshift)) >> h->pageshift;
	for (i = first; i < last; i++)
		h->bitmap[i / VDL_WORD_BITS] |= UINT64_C(1) <<
		    (i % VDL_WORD_BITS);
	return (last - first);
}

/* Make seg visible to markers; the caller serialises writers. */
void
vdl_registry_publish(struct vdl_registry *reg, struct vdl_seg *seg)
{
	seg->next = reg->head;
	vdl_store_ptr(&reg->head, seg);
	vdl_add_uint(&reg->nsegs, 1);
}

/*
 * Unlink seg.  Markers may still be looking at it: the caller frees it only
 * after they have drained (epoch_wait() in the kernel).
 */
int
vdl_registry_unpublish(struct vdl_registry *reg, struct vdl_seg *seg)
{
	struct vdl_seg **prevp, *cur;

	for (prevp = &reg->head; (cur = *prevp) != NULL; prevp = &cur->next) {
		if (cur == seg) {
			vdl_store_ptr(prevp, seg->next);
			vdl_add_uint(&reg->nsegs, -1);
			return (0);
		}
	}
	return (ENOENT);
}

/* Mark page pindex of object in every published log; lock-free. */
int
vdl_registry_mark(struct vdl_registry *reg, const void *object,
    uint64_t pindex)
{
	struct vdl_seg *seg;
	int marked;

	if (vdl_load_uint(&reg->nsegs) == 0)
		return (0);
	marked = 0;
	for (seg = vdl_load_ptr(&reg->head); seg != NULL;
	    seg = vdl_load_ptr(&seg->next)) {
		if (seg->object == object && vdl_log_mark(&seg->log,
		    pindex) == 0)
			marked++;
	}
	return (marked);
}

int
vdl_owner_check(const struct vdl_owner *owner, const void *file,
    const void *vmspace)
{
	if (owner->file != file || owner->vmspace != vmspace)
		return (EPERM);
	return (0);
}

unsigned int
vdl_end(enum vdl_state *state, enum vdl_event event)
{
	switch (event) {
	case VDL_OWNER_DONE:
		/* The owner's record goes; memory is undone if still there. */
		if (*state == VDL_TRACKING)
			return (VDL_UNPUBLISH | VDL_UNWIRE | VDL_FREE);
		return (VDL_FREE);
	case VDL_MEMORY_GONE:
		/*
		 * The mappings go away next, unwiring them; the record stays
		 * until its owner is done with it.
		 */
		if (*state == VDL_TRACKING) {
			*state = VDL_DETACHED;
			return (VDL_UNPUBLISH);
		}
		return (0);
	}
	return (0);
}
