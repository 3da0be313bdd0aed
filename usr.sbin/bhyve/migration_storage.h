/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The guest's disk images, one registry for every use a migration makes
 * of them.  The block backend (bhyve: block_if; the test bed: tb-disk)
 * adds each image as it opens it and marks the blocks a write or delete
 * covered once it completed; the registry's numbering, in the order of
 * opening (the same on both hosts for the same configuration), is the
 * engine's disk numbering.
 *
 * Shared storage (or disks an orchestrator copies at the switchover hook):
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
 * Disks moved with the guest: the write bitmap, cleared by
 * mig_storage_track() and taken by mig_storage_collect(); the backend
 * reads and writes the images through mig_storage_image()'s descriptor.
 */

#ifndef _MIGRATION_STORAGE_H_
#define	_MIGRATION_STORAGE_H_

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define	MIG_STORAGE_MAX		64	/* disks registered at once */
#define	MIG_STORAGE_BLOCK	(64u << 10)	/* block_if's tracking unit */

struct mig_image {
	int		fd;		/* -1: a free slot */
	int		oflags;		/* open(2)'s, to reopen it */
	bool		ischr;		/* a disk device */
	uint32_t	block;		/* bytes a bit of written covers */
	uint64_t	size;		/* bytes */
	uint64_t	nblocks;
	_Atomic uint64_t *written;	/* blocks written since the last take */
	char		*path;
};

/*
 * An image open as fd, by path with open(2)'s flags, of size bytes,
 * tracked in blocks of block bytes.  ENOSPC if full.
 */
int	mig_storage_add(int fd, const char *path, int oflags, uint64_t size,
	    uint32_t block);
void	mig_storage_remove(int fd);
/* A write or delete of len bytes at offset to the image open as fd. */
void	mig_storage_written(int fd, uint64_t offset, uint64_t len);

/* Image i of mig_storage_count(), NULL if it was closed. */
uint32_t mig_storage_count(void);
/* Images that found the list full (ENOSPC): none of them can migrate. */
uint32_t mig_storage_unregistered(void);
const struct mig_image *mig_storage_image(uint32_t i);
/*
 * Image i holds blocks [first, first + n): 0, or EINVAL with msg.  Then
 * clear its write bitmap, or take and clear n bits of it (first: a
 * multiple of 64, so that the bitmap's words line up).
 */
int	mig_storage_check(uint32_t i, uint64_t first, uint64_t n, char *msg,
	    size_t msglen);
int	mig_storage_track(uint32_t i, char *msg, size_t msglen);
int	mig_storage_collect(uint32_t i, uint64_t first, uint64_t n,
	    uint64_t *bitmap, char *msg, size_t msglen);

/* 0, or the first failure as an errno with msg naming the disk. */
int	mig_storage_flush(char *msg, size_t msglen);
int	mig_storage_reopen(char *msg, size_t msglen);

#endif /* !_MIGRATION_STORAGE_H_ */
