/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * A bit per guest page and segment, set with atomic OR by writers and
 * taken with atomic AND by the collector, so that a mark made during a
 * collection is either taken by it or left for the next one.
 */

#include <sys/types.h>
#include <sys/uio.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "migration_backend.h"
#include "migration_devlog.h"

#define	BITS	64

struct devlog_seg {
	const uint8_t	*host;
	uint64_t	len;
	uint64_t	npages;
	_Atomic uint64_t *bits;		/* one spare word: see take() */
};

struct mig_devlog {
	uint32_t	nsegs;
	uint32_t	page_shift;
	_Atomic bool	armed;
	struct devlog_seg segs[MIG_MAX_SEGS];
};

static _Atomic(struct mig_devlog *) current_log;

int
mig_devlog_create(struct mig_devlog **lp, const struct mig_memseg *segs,
    uint32_t nsegs, uint32_t page_size)
{
	struct mig_devlog *l;
	uint32_t i;

	*lp = NULL;
	if (nsegs > MIG_MAX_SEGS || page_size == 0 ||
	    (page_size & (page_size - 1)) != 0)
		return (EINVAL);
	l = calloc(1, sizeof(*l));
	if (l == NULL)
		return (ENOMEM);
	l->nsegs = nsegs;
	while ((1u << l->page_shift) < page_size)
		l->page_shift++;
	for (i = 0; i < nsegs; i++) {
		l->segs[i].host = segs[i].host;
		l->segs[i].len = segs[i].len;
		l->segs[i].npages = segs[i].len >> l->page_shift;
		l->segs[i].bits = calloc(l->segs[i].npages / BITS + 2,
		    sizeof(uint64_t));
		if (l->segs[i].bits == NULL) {
			mig_devlog_destroy(l);
			return (ENOMEM);
		}
	}
	*lp = l;
	return (0);
}

void
mig_devlog_destroy(struct mig_devlog *l)
{
	uint32_t i;

	if (l == NULL)
		return;
	for (i = 0; i < l->nsegs; i++)
		free(l->segs[i].bits);
	free(l);
}

void
mig_devlog_arm(struct mig_devlog *l)
{
	uint64_t w;
	uint32_t i;

	for (i = 0; i < l->nsegs; i++)
		for (w = 0; w < l->segs[i].npages / BITS + 2; w++)
			atomic_store(&l->segs[i].bits[w], 0);
	atomic_store(&l->armed, true);
}

void
mig_devlog_disarm(struct mig_devlog *l)
{

	atomic_store(&l->armed, false);
}

void
mig_devlog_mark(struct mig_devlog *l, const void *host, size_t len)
{
	const struct devlog_seg *s;
	const uint8_t *p = host;
	uint64_t off, pg, last;
	uint32_t i;

	if (len == 0 || !atomic_load_explicit(&l->armed, memory_order_acquire))
		return;
	for (i = 0; i < l->nsegs; i++) {
		s = &l->segs[i];
		if (p < s->host || p >= s->host + s->len)
			continue;
		off = (uint64_t)(p - s->host);
		if (len > s->len - off)
			len = s->len - off;
		last = (off + len - 1) >> l->page_shift;
		for (pg = off >> l->page_shift; pg <= last; pg++)
			atomic_fetch_or(&s->bits[pg / BITS],
			    1ull << (pg % BITS));
		return;
	}
}

void
mig_devlog_mark_iov(struct mig_devlog *l, const struct iovec *iov,
    int iovcnt, size_t len)
{
	size_t n;
	int i;

	for (i = 0; i < iovcnt && len > 0; i++) {
		n = iov[i].iov_len < len ? iov[i].iov_len : len;
		mig_devlog_mark(l, iov[i].iov_base, n);
		len -= n;
	}
}

/* Fetch and clear n <= 64 bits from bit idx on (two words at most). */
static uint64_t
take(_Atomic uint64_t *bits, uint64_t idx, uint32_t n)
{
	uint64_t mask, v;
	uint32_t off, nlo;

	off = idx % BITS;
	nlo = BITS - off < n ? BITS - off : n;
	mask = nlo == BITS ? ~0ull : ((1ull << nlo) - 1) << off;
	v = (atomic_fetch_and(&bits[idx / BITS], ~mask) & mask) >> off;
	if (nlo < n) {
		mask = (1ull << (n - nlo)) - 1;
		v |= (atomic_fetch_and(&bits[idx / BITS + 1], ~mask) &
		    mask) << nlo;
	}
	return (v);
}

int
mig_devlog_collect(struct mig_devlog *l, uint32_t seg, uint64_t first,
    uint64_t npages, uint64_t *bitmap)
{
	struct devlog_seg *s;
	uint64_t i;
	uint32_t n;

	if (seg >= l->nsegs)
		return (EINVAL);
	s = &l->segs[seg];
	if (first > s->npages || npages > s->npages - first)
		return (EINVAL);
	for (i = 0; i < npages; i += BITS) {
		n = npages - i < BITS ? (uint32_t)(npages - i) : BITS;
		bitmap[i / BITS] |= take(s->bits, first + i, n);
	}
	return (0);
}

void
mig_devlog_set_current(struct mig_devlog *l)
{

	atomic_store(&current_log, l);
}

void
mig_devlog_block_read(const struct iovec *iov, int iovcnt, size_t len)
{
	struct mig_devlog *l;

	l = atomic_load_explicit(&current_log, memory_order_acquire);
	if (l != NULL)
		mig_devlog_mark_iov(l, iov, iovcnt, len);
}
