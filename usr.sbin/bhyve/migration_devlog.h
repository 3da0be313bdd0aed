/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The device write log: guest pages that device emulation wrote where
 * no page table sees it.  A block backend's read into guest memory is
 * the case in point: for GEOM providers physio holds the pages and the
 * data lands by DMA or through a kernel mapping, after the dirty-bit
 * hook ran.  Writers mark on completion, from any thread, without a
 * lock; the backend's devlog_collect() fetches and clears the marks.
 */

#ifndef _MIGRATION_DEVLOG_H_
#define	_MIGRATION_DEVLOG_H_

#include <sys/types.h>
#include <sys/uio.h>

#include <stddef.h>
#include <stdint.h>

#include "migration_backend.h"

struct mig_devlog;

/* A log over the guest's segments (their host mappings); disarmed. */
int	mig_devlog_create(struct mig_devlog **, const struct mig_memseg *segs,
	    uint32_t nsegs, uint32_t page_size);
void	mig_devlog_destroy(struct mig_devlog *);
/* Clear every mark and log from now on; disarm stops logging. */
void	mig_devlog_arm(struct mig_devlog *);
void	mig_devlog_disarm(struct mig_devlog *);
/* Mark the pages of [host, host + len) that are guest memory. */
void	mig_devlog_mark(struct mig_devlog *, const void *host, size_t len);
/* Mark the first len bytes an I/O vector received. */
void	mig_devlog_mark_iov(struct mig_devlog *, const struct iovec *,
	    int iovcnt, size_t len);
/* OR the marks of pages [first, first + npages) of seg into bitmap. */
int	mig_devlog_collect(struct mig_devlog *, uint32_t seg, uint64_t first,
	    uint64_t npages, uint64_t *bitmap);

/*
 * bhyve's one log, for device emulations that have no backend at hand:
 * the migration backend installs it, block_if calls
 * mig_devlog_block_read() when a read into guest memory completes.
 */
void	mig_devlog_set_current(struct mig_devlog *);
void	mig_devlog_block_read(const struct iovec *, int iovcnt, size_t len);

#endif /* _MIGRATION_DEVLOG_H_ */
