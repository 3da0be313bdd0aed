/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The guest's disks at the hand-over, for shared storage (and for disks
 * an orchestrator copies at the switchover hook).  The block backend
 * (bhyve: block_if; the test bed: tb-disk) registers each open image.
 *
 *	source		mig_storage_flush() once the guest is paused and
 *			its I/O drained: every disk's writes reach stable
 *			storage before the destination may read them;
 *	destination	mig_storage_reopen() after GO, before the guest
 *			runs: the images were opened at start-up, long
 *			before the source stopped writing, so each image
 *			file is opened again (NFS revalidates its cache on
 *			open: close-to-open consistency) and takes the old
 *			descriptor's number and capability rights.  Disk
 *			devices are left alone: FreeBSD caches no data of
 *			a GEOM provider in the host.
 */

#ifndef _MIGRATION_STORAGE_H_
#define	_MIGRATION_STORAGE_H_

#include <stdbool.h>
#include <stddef.h>

#define	MIG_STORAGE_MAX		64	/* disks registered at once */

/* An image open as fd, by path with open(2)'s flags; ENOSPC if full. */
int	mig_storage_add(int fd, const char *path, int oflags);
void	mig_storage_remove(int fd);
/* 0, or the first failure as an errno with msg naming the disk. */
int	mig_storage_flush(char *msg, size_t msglen);
int	mig_storage_reopen(char *msg, size_t msglen);

#endif /* !_MIGRATION_STORAGE_H_ */
