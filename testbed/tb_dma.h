/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * "tb-dma": a device that writes guest memory as a disk controller's
 * DMA would, through a second mapping of the guest's memory that the
 * dirty tracker does not see.  Only its device write log tells the
 * engine which pages it wrote.  It sweeps the guest page by page from
 * the top (vCPU hot sets sit at the bottom of their regions, and would
 * resend its pages) and stores in bytes 1..7 of each page how many
 * sweeps reached it, so the memory check can tell a lost write exactly.
 */

#ifndef _TB_DMA_H_
#define	_TB_DMA_H_

#include <stdint.h>

#include "migration_devlog.h"

/* Test-only: which of the device's writes it leaves out of its log. */
enum tb_dma_unlogged {
	TB_DMA_LOG_ALL = 0,
	TB_DMA_UNLOGGED_RUNNING,	/* writes while the guest runs */
	TB_DMA_UNLOGGED_DRAIN		/* the write drained by a pause */
};

struct tb_dma_config {
	uint64_t	rate;		/* writes per second; 0: no device */
	enum tb_dma_unlogged unlogged;
};

struct tb_dma;

/*
 * mem: the guest's tracked mapping of npages pages, in nsegs segments;
 * alias: the device's second mapping of it.  Starts paused.
 */
int	tb_dma_create(struct tb_dma **, const struct tb_dma_config *,
	    uint8_t *mem, uint8_t *alias, uint64_t npages,
	    const struct mig_memseg *segs, uint32_t nsegs, char *msg,
	    size_t msglen);
void	tb_dma_destroy(struct tb_dma *);
/* Finish the write in flight, then park; resume releases the device. */
void	tb_dma_pause(struct tb_dma *);
void	tb_dma_resume(struct tb_dma *);
/* Writes done so far: the device's state. */
uint64_t tb_dma_seq(const struct tb_dma *);
void	tb_dma_set_seq(struct tb_dma *, uint64_t);
/* What bytes 1..7 of page idx must hold after seq writes. */
uint64_t tb_dma_expected(uint64_t seq, uint64_t npages, uint64_t idx);
/* The device's write log (migration_devlog.c, as bhyve's block_if). */
struct mig_devlog *tb_dma_log(const struct tb_dma *);

#endif /* _TB_DMA_H_ */
