/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The tb-dma device and its write log.  Its writes are requests of a
 * tb_devthread: a pause finds one in flight and waits for it, as
 * bhyve's vm_pause_devices() drains block_if.  The log is marked on
 * completion, after the data is in guest memory, through the tracked
 * mapping's addresses as block_if marks its I/O vectors.
 */

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migration_devlog.h"
#include "tb_devthread.h"
#include "tb_dirty.h"
#include "tb_dma.h"

struct tb_dma {
	struct tb_dma_config cfg;
	uint8_t		*mem;
	uint8_t		*alias;
	uint64_t	npages;
	struct mig_devlog *log;
	_Atomic uint64_t seq;
	struct tb_devthread thread;
};

uint64_t
tb_dma_expected(uint64_t seq, uint64_t npages, uint64_t idx)
{

	return ((seq / npages + (npages - 1 - idx < seq % npages ? 1 : 0)) &
	    ((1ull << 56) - 1));
}

static void
dma_write(void *arg, bool draining)
{
	struct tb_dma *d = arg;
	uint64_t seq, idx, v;
	uint8_t *page;
	bool logged;
	int i;

	seq = atomic_load(&d->seq);
	idx = d->npages - 1 - seq % d->npages;
	v = tb_dma_expected(seq + 1, d->npages, idx);
	page = d->alias + (idx << TB_PAGE_SHIFT);
	for (i = 1; i < 8; i++)
		page[i] = (uint8_t)(v >> (8 * (i - 1)));
	atomic_store(&d->seq, seq + 1);
	switch (d->cfg.unlogged) {
	case TB_DMA_UNLOGGED_RUNNING:
		logged = draining;
		break;
	case TB_DMA_UNLOGGED_DRAIN:
		logged = !draining;
		break;
	default:
		logged = true;
	}
	if (logged)
		mig_devlog_mark(d->log, d->mem + (idx << TB_PAGE_SHIFT),
		    TB_PAGE_SIZE);
}

int
tb_dma_create(struct tb_dma **dp, const struct tb_dma_config *cfg,
    uint8_t *mem, uint8_t *alias, uint64_t npages,
    const struct mig_memseg *segs, uint32_t nsegs, char *msg, size_t msglen)
{
	struct tb_dma *d;
	int error;

	*dp = NULL;
	d = calloc(1, sizeof(*d));
	if (d == NULL || npages == 0 ||
	    mig_devlog_create(&d->log, segs, nsegs, TB_PAGE_SIZE) != 0) {
		free(d);
		snprintf(msg, msglen, "out of memory");
		return (ENOMEM);
	}
	d->cfg = *cfg;
	d->mem = mem;
	d->alias = alias;
	d->npages = npages;
	error = tb_devthread_start(&d->thread, cfg->rate, dma_write, d);
	if (error != 0) {
		snprintf(msg, msglen, "cannot start tb-dma: %s",
		    strerror(error));
		tb_dma_destroy(d);
		return (error);
	}
	*dp = d;
	return (0);
}

void
tb_dma_destroy(struct tb_dma *d)
{

	if (d == NULL)
		return;
	tb_devthread_stop(&d->thread);
	mig_devlog_destroy(d->log);
	free(d);
}

void
tb_dma_pause(struct tb_dma *d)
{

	tb_devthread_pause(&d->thread);
}

void
tb_dma_resume(struct tb_dma *d)
{

	tb_devthread_resume(&d->thread);
}

struct mig_devlog *
tb_dma_log(const struct tb_dma *d)
{

	return (d->log);
}

uint64_t
tb_dma_seq(const struct tb_dma *d)
{

	return (atomic_load(&d->seq));
}

void
tb_dma_set_seq(struct tb_dma *d, uint64_t seq)
{

	atomic_store(&d->seq, seq);
}
