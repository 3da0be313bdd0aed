/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Exact dirty-page tracking for the test bed: userfaultfd write-protect
 * in asynchronous mode, read and re-armed atomically by PAGEMAP_SCAN.
 */

#ifndef _TB_DIRTY_H_
#define	_TB_DIRTY_H_

#include <stddef.h>
#include <stdint.h>

#define	TB_PAGE_SHIFT	12
#define	TB_PAGE_SIZE	(1u << TB_PAGE_SHIFT)

struct tb_dirty;

/* Register [base, base + len) for tracking; it starts disarmed. */
int	tb_dirty_open(struct tb_dirty **, void *base, size_t len, char *msg,
	    size_t msglen);
/* Clear every mark; from now on each write marks its page. */
int	tb_dirty_arm(struct tb_dirty *);
/* Fetch and clear the marks of pages [first, first + npages). */
int	tb_dirty_collect(struct tb_dirty *, uint64_t first, uint64_t npages,
	    uint64_t *bitmap);
/*
 * Pages of [first, first + npages) that held data (resident or swapped,
 * not the shared zero page) when tracking was armed; now if disarmed.
 */
int	tb_dirty_populated(struct tb_dirty *, uint64_t first, uint64_t npages,
	    uint64_t *bitmap);
/* Stop tracking: writes no longer fault. */
int	tb_dirty_disarm(struct tb_dirty *);
void	tb_dirty_close(struct tb_dirty *);

/* Prove on a probe mapping that the kernel tracks writes exactly. */
int	tb_dirty_selftest(char *msg, size_t msglen);

#endif /* _TB_DIRTY_H_ */
