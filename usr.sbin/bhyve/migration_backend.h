/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The narrow interface between the migration engine and the hypervisor
 * it runs in.  bhyve implements it with libvmmapi and the snapshot code;
 * the Linux test bed with an anonymous mapping and userfaultfd.
 *
 * Every operation returns 0 or an errno value.  A backend may leave a
 * sentence for the user in its errmsg buffer; the engine quotes it.
 */

#ifndef _MIGRATION_BACKEND_H_
#define	_MIGRATION_BACKEND_H_

#include <stddef.h>
#include <stdint.h>

#include "migration.h"

#define	MIG_MAX_SEGS		16	/* guest memory segments */
#define	MIG_MAX_SECTIONS	64	/* vCPU and device state sections */
#define	MIG_NAME_MAX		32	/* section name, with its NUL */
#define	MIG_FEATURES_MAX	128	/* CPU feature summary, with NUL */
#define	MIG_SECTION_MAX		(64u << 20) /* one section's state, bytes */
#define	MIG_MAX_DISKS		16	/* guest disks */
#define	MIG_DISK_BLOCK_MIN	512u	/* tracking unit, bytes: a power */
#define	MIG_DISK_BLOCK_MAX	(1u << 20) /* of two in this range */

/* One contiguous range of guest-physical memory. */
struct mig_memseg {
	uint64_t	gpa;
	uint64_t	len;		/* a multiple of the page size */
	uint8_t		*host;		/* the process's mapping of it */
};

/* One piece of vCPU or device state, moved as an opaque blob. */
struct mig_section {
	char		name[MIG_NAME_MAX];
	uint32_t	version;
	uint32_t	flags;		/* local only, not on the wire */
	uint32_t	size_hint;	/* local only: expected bytes, or 0 */
};

#define	MIG_SECTION_VCPU	0x1	/* a vCPU's registers, not a device */

/*
 * One guest disk, as its block backend tracks it: size bytes in blocks
 * of block_size (the last one may be short).
 */
struct mig_disk {
	uint32_t	block_size;
	uint64_t	size;
	uint32_t	flags;		/* local only, not on the wire */
};

#define	MIG_DISK_READONLY	0x1	/* opened read-only: cannot be moved */

#define	MIG_DISKS_MOVE		0x1	/* the source sends the disks' blocks */

/* What both sides must agree on before any memory moves. */
struct mig_vminfo {
	uint32_t	ncpus;
	uint32_t	page_size;
	uint32_t	nsegs;
	struct mig_memseg segs[MIG_MAX_SEGS];
	uint32_t	nsections;
	struct mig_section sections[MIG_MAX_SECTIONS];
	char		cpu_features[MIG_FEATURES_MAX];
	uint32_t	disk_flags;	/* MIG_DISKS_*: set by the engine */
	uint32_t	ndisks;
	struct mig_disk	disks[MIG_MAX_DISKS];
	uint32_t	ndisks_beyond;	/* local only: disks not in disks[] */
};

struct mig_backend_ops {
	/* Describe the guest; host pointers are valid until the end. */
	int	(*vminfo)(void *arg, struct mig_vminfo *);

	/*
	 * Dirty tracking.  dirty_start() arms it: from then on every write
	 * to guest memory marks its page.  dirty_collect() atomically
	 * fetches and clears the marks of npages pages starting at page
	 * first of segment seg into bitmap (bit i: page first + i), without
	 * stopping the vCPUs.  dirty_stop() ends tracking: every attempt
	 * starts it afresh and sends all memory first, so nothing outlives
	 * one attempt.  npages never exceeds MIG_DIRTY_CHUNK_PAGES.
	 */
	int	(*dirty_start)(void *arg);
	int	(*dirty_collect)(void *arg, uint32_t seg, uint64_t first,
		    uint64_t npages, uint64_t *bitmap);
	void	(*dirty_stop)(void *arg);

	/*
	 * Optional device write log: pages device emulation wrote without
	 * a page-table dirty bit (a block backend's read that lands by DMA
	 * or through a kernel mapping).  devlog_collect() ORs the marks of
	 * the given pages into bitmap and clears them, like dirty_collect();
	 * the engine calls it in every collection, the last one after
	 * pause(), so pause() must return only once device emulation has
	 * finished its writes to guest memory (in-flight I/O drained).
	 */
	int	(*devlog_collect)(void *arg, uint32_t seg, uint64_t first,
		    uint64_t npages, uint64_t *bitmap);

	/*
	 * Optional.  Which pages may hold data: bit i of bitmap set if page
	 * first + i of segment seg was populated (resident or swapped, not
	 * the shared zero page) when dirty_start() armed tracking.  A
	 * superset is fine; a page left clear is sent as zero without being
	 * read, so a page populated later must be in the dirty log.  Same
	 * chunking as dirty_collect().
	 */
	int	(*populated)(void *arg, uint32_t seg, uint64_t first,
		    uint64_t npages, uint64_t *bitmap);

	/*
	 * Stop and restart vCPUs and device emulation together.  pause()
	 * returns with device I/O drained and every disk's writes flushed
	 * to stable storage (what shared storage or a switchover hook
	 * hands to the destination).
	 */
	int	(*pause)(void *arg);
	int	(*resume)(void *arg);

	/*
	 * Optional, destination: all memory and state arrived, the source
	 * is paused with its disks flushed; the last step before READY, so
	 * a failure here still rolls back.  bhyve and the test bed reopen
	 * the disk images (migration_storage.h).
	 */
	int	(*before_ready)(void *arg);

	/* Run vCPUs for (100 - percent)% of the time; 0 lifts it. */
	int	(*throttle)(void *arg, uint32_t percent);

	/*
	 * State of section idx (of vminfo's list).  state_save() returns a
	 * malloc'd buffer the engine frees.  Called with the guest paused.
	 * The destination restores sections in list order, after all of
	 * memory arrived.
	 */
	int	(*state_save)(void *arg, uint32_t idx, void **buf,
		    size_t *len);
	int	(*state_restore)(void *arg, uint32_t idx, const void *buf,
		    size_t len);

	/*
	 * Disks without shared storage (--migrate-disks); needed only then.
	 * Source: disk_start() arms the disk's write bitmap (a block is
	 * marked once a write to it completed), disk_collect() fetches and
	 * clears the marks of nblocks blocks from first into bitmap, like
	 * dirty_collect(), and disk_stop() ends tracking.  Optional
	 * disk_allocated(): which blocks may hold data (a superset; a block
	 * left clear is sent as zero unread).  disk_read() reads blocks
	 * into buf, the disk's last block short if its size says so.  The
	 * source never writes its disks for the migration.
	 * Destination: disk_recv_begin() marks every image incomplete,
	 * durably, before the first write; disk_write() and disk_zero()
	 * change blocks of its own image; disk_recv_done(), after GO,
	 * makes every image durable, then drops the marks.  nblocks
	 * never exceeds MIG_DIRTY_CHUNK_PAGES.
	 */
	int	(*disk_start)(void *arg, uint32_t disk);
	int	(*disk_collect)(void *arg, uint32_t disk, uint64_t first,
		    uint64_t nblocks, uint64_t *bitmap);
	int	(*disk_allocated)(void *arg, uint32_t disk, uint64_t first,
		    uint64_t nblocks, uint64_t *bitmap);
	int	(*disk_read)(void *arg, uint32_t disk, uint64_t first,
		    uint64_t nblocks, void *buf);
	void	(*disk_stop)(void *arg, uint32_t disk);
	int	(*disk_recv_begin)(void *arg);
	int	(*disk_write)(void *arg, uint32_t disk, uint64_t first,
		    uint64_t nblocks, const void *buf);
	int	(*disk_zero)(void *arg, uint32_t disk, uint64_t first,
		    uint64_t nblocks);
	int	(*disk_recv_done)(void *arg);

	/* Optional: progress for an operator; must not block long. */
	void	(*progress)(void *arg, const struct mig_progress *);
};

struct mig_backend {
	const struct mig_backend_ops *ops;
	void		*arg;
	char		errmsg[MIG_ERRMSG_MAX];
};

#define	MIG_DIRTY_CHUNK_PAGES	(256u * 1024)	/* 1 GiB of 4 KiB pages */

#endif /* _MIGRATION_BACKEND_H_ */
