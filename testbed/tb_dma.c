/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The tb-dma device thread and its write log.  Each write is a request
 * that takes 1/rate seconds to complete, like a disk read, and always
 * one is in flight: a pause finds it in flight and waits for it, as
 * bhyve's vm_pause_devices() drains block_if.  The log is marked on
 * completion, after the data is in guest memory, through the tracked
 * mapping's addresses as block_if marks its I/O vectors.
 */

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "migration_devlog.h"
#include "tb_dirty.h"
#include "tb_dma.h"

#define	NSEC	1000000000ull

struct tb_dma {
	struct tb_dma_config cfg;
	uint8_t		*mem;
	uint8_t		*alias;
	uint64_t	npages;
	struct mig_devlog *log;
	_Atomic uint64_t seq;

	pthread_mutex_t	mtx;
	pthread_cond_t	cv;
	bool		hold;
	bool		parked;
	bool		stop;
	bool		started;
	pthread_t	thread;
};

uint64_t
tb_dma_expected(uint64_t seq, uint64_t npages, uint64_t idx)
{

	return ((seq / npages + (npages - 1 - idx < seq % npages ? 1 : 0)) &
	    ((1ull << 56) - 1));
}

static void
dma_write(struct tb_dma *d, bool draining)
{
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

static void *
dma_main(void *arg)
{
	struct tb_dma *d = arg;
	struct timespec ts;
	uint64_t period;
	bool draining;

	period = NSEC / d->cfg.rate;
	pthread_mutex_lock(&d->mtx);
	for (;;) {
		while (d->hold && !d->stop) {
			d->parked = true;
			pthread_cond_broadcast(&d->cv);
			pthread_cond_wait(&d->cv, &d->mtx);
		}
		d->parked = false;
		if (d->stop)
			break;
		pthread_mutex_unlock(&d->mtx);
		/* The request is in flight: a pause waits for it. */
		ts.tv_sec = (time_t)(period / NSEC);
		ts.tv_nsec = (long)(period % NSEC);
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
		pthread_mutex_lock(&d->mtx);
		draining = d->hold;
		dma_write(d, draining);
	}
	d->parked = true;
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mtx);
	return (NULL);
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
	d->hold = true;
	pthread_mutex_init(&d->mtx, NULL);
	pthread_cond_init(&d->cv, NULL);
	error = pthread_create(&d->thread, NULL, dma_main, d);
	if (error != 0) {
		snprintf(msg, msglen, "cannot start tb-dma: %s",
		    strerror(error));
		tb_dma_destroy(d);
		return (error);
	}
	d->started = true;
	*dp = d;
	return (0);
}

void
tb_dma_destroy(struct tb_dma *d)
{

	if (d == NULL)
		return;
	if (d->started) {
		pthread_mutex_lock(&d->mtx);
		d->stop = true;
		pthread_cond_broadcast(&d->cv);
		pthread_mutex_unlock(&d->mtx);
		pthread_join(d->thread, NULL);
	}
	pthread_cond_destroy(&d->cv);
	pthread_mutex_destroy(&d->mtx);
	mig_devlog_destroy(d->log);
	free(d);
}

void
tb_dma_pause(struct tb_dma *d)
{

	pthread_mutex_lock(&d->mtx);
	d->hold = true;
	pthread_cond_broadcast(&d->cv);
	while (!d->parked)
		pthread_cond_wait(&d->cv, &d->mtx);
	pthread_mutex_unlock(&d->mtx);
}

void
tb_dma_resume(struct tb_dma *d)
{

	pthread_mutex_lock(&d->mtx);
	d->hold = false;
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mtx);
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
