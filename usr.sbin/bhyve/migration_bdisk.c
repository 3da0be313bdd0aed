/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The write bitmaps of bhyve's block_if disks (migration_bdisk.h).
 *
 * A block is marked once a write or delete to it completed, before the
 * device's callback, so a collection that cleared the mark and then
 * read the block either saw the new data or finds the mark set again.
 * Marking is always on (an atomic OR per request): collection starts by
 * clearing, and nothing needs arming in block_if's threads.  The final
 * collection follows vm_pause_devices(), whose blockif_pause() waits for
 * requests in flight.
 */

#include <sys/param.h>
#include <sys/capsicum.h>
#include <sys/stat.h>

#include <machine/atomic.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migration_bdisk.h"

#define	MIG_BDISK_MARKDIR	"/var/db/bhyve"
#define	MIG_BDISK_PATH_MAX	1024

struct bdisk {
	const void	*bc;		/* block_if's context; NULL: closed */
	int		fd;
	bool		ischr;
	uint64_t	size;
	uint64_t	nblocks;
	volatile uint64_t *written;
	char		path[MIG_BDISK_PATH_MAX];
	int		markdir;	/* -1: not marked */
	char		markname[NAME_MAX + 1];
};

static pthread_mutex_t bdisk_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct bdisk bdisks[MIG_MAX_DISKS];
static uint32_t nbdisks;

void
mig_bdisk_attach(const void *bc, int fd, uint64_t size, bool ischr,
    const char *path)
{
	struct bdisk *d;
	uint64_t nblocks;

	nblocks = (size + MIG_BDISK_BLOCK - 1) / MIG_BDISK_BLOCK;
	pthread_mutex_lock(&bdisk_mtx);
	/* Beyond the table a disk is not tracked: vminfo refuses then. */
	if (nbdisks < MIG_MAX_DISKS) {
		d = &bdisks[nbdisks];
		d->written = calloc((nblocks + 63) / 64, sizeof(uint64_t));
		d->bc = bc;
		d->fd = fd;
		d->ischr = ischr;
		d->size = size;
		d->nblocks = nblocks;
		d->markdir = -1;
		snprintf(d->path, sizeof(d->path), "%s", path);
		nbdisks++;
	}
	pthread_mutex_unlock(&bdisk_mtx);
}

static struct bdisk *
bdisk_of(const void *bc)
{
	uint32_t i;

	for (i = 0; i < nbdisks; i++)
		if (bdisks[i].bc == bc)
			return (&bdisks[i]);
	return (NULL);
}

void
mig_bdisk_detach(const void *bc)
{
	struct bdisk *d;

	pthread_mutex_lock(&bdisk_mtx);
	if ((d = bdisk_of(bc)) != NULL)
		d->bc = NULL;
	pthread_mutex_unlock(&bdisk_mtx);
}

void
mig_bdisk_written(const void *bc, uint64_t offset, uint64_t len)
{
	struct bdisk *d;
	uint64_t b, last;

	/* Attach and detach run at start-up and exit: no lock here. */
	if (len == 0 || (d = bdisk_of(bc)) == NULL || d->written == NULL ||
	    offset >= d->size)
		return;
	last = (offset + len - 1) / MIG_BDISK_BLOCK;
	if (last >= d->nblocks)
		last = d->nblocks - 1;
	for (b = offset / MIG_BDISK_BLOCK; b <= last; b++)
		atomic_set_64(&d->written[b / 64], 1ull << (b % 64));
}

uint32_t
mig_bdisk_count(void)
{

	return (nbdisks);
}

void
mig_bdisk_describe(uint32_t i, struct mig_disk *disk)
{

	disk->block_size = MIG_BDISK_BLOCK;
	disk->size = bdisks[i].size;
}

void
mig_bdisk_track(uint32_t i)
{
	uint64_t w;

	for (w = 0; w < (bdisks[i].nblocks + 63) / 64; w++)
		(void)atomic_readandclear_64(&bdisks[i].written[w]);
}

void
mig_bdisk_collect(uint32_t i, uint64_t first, uint64_t n, uint64_t *bitmap)
{
	uint64_t w;

	for (w = 0; w < (n + 63) / 64; w++)
		bitmap[w] = atomic_readandclear_64(
		    &bdisks[i].written[first / 64 + w]);
}

/* Bytes from block first to the end of block first + n - 1. */
static size_t
span(const struct bdisk *d, uint64_t first, uint64_t n)
{
	uint64_t end;

	end = (first + n) * MIG_BDISK_BLOCK;
	if (end > d->size)
		end = d->size;
	return ((size_t)(end - first * MIG_BDISK_BLOCK));
}

static int
io_fail(const struct bdisk *d, int error, const char *doing, char *msg,
    size_t msglen)
{

	snprintf(msg, msglen, "%s disk %s: %s", doing, d->path,
	    strerror(error));
	return (error);
}

int
mig_bdisk_allocated(uint32_t i, uint64_t first, uint64_t n, uint64_t *bitmap,
    char *msg, size_t msglen)
{
	const struct bdisk *d = &bdisks[i];
	off_t pos, end, data, hole;
	uint64_t b, from, to;

	pos = (off_t)(first * MIG_BDISK_BLOCK);
	end = pos + (off_t)span(d, first, n);
	while (pos < end) {
		/* A device, or no hole reporting: every block may hold data. */
		if (d->ischr || (data = lseek(d->fd, pos, SEEK_DATA)) < 0) {
			if (!d->ischr && errno == ENXIO)
				return (0);
			data = pos;
			hole = end;
		} else if (data >= end)
			return (0);
		else if ((hole = lseek(d->fd, data, SEEK_HOLE)) < 0)
			return (io_fail(d, errno, "finding the data of", msg,
			    msglen));
		from = (uint64_t)data / MIG_BDISK_BLOCK;
		to = ((uint64_t)hole + MIG_BDISK_BLOCK - 1) / MIG_BDISK_BLOCK;
		for (b = from; b < to && b < first + n; b++)
			bitmap[(b - first) / 64] |= 1ull << ((b - first) % 64);
		pos = hole;
	}
	return (0);
}

int
mig_bdisk_read(uint32_t i, uint64_t first, uint64_t n, void *buf, char *msg,
    size_t msglen)
{
	const struct bdisk *d = &bdisks[i];
	size_t len;
	ssize_t got;

	len = span(d, first, n);
	got = pread(d->fd, buf, len, (off_t)(first * MIG_BDISK_BLOCK));
	if (got < 0 || (size_t)got != len)
		return (io_fail(d, got < 0 ? errno : EIO, "reading", msg,
		    msglen));
	return (0);
}

int
mig_bdisk_write(uint32_t i, uint64_t first, uint64_t n, const void *buf,
    char *msg, size_t msglen)
{
	const struct bdisk *d = &bdisks[i];
	size_t len;
	ssize_t put;

	len = span(d, first, n);
	put = pwrite(d->fd, buf, len, (off_t)(first * MIG_BDISK_BLOCK));
	if (put < 0 || (size_t)put != len)
		return (io_fail(d, put < 0 ? errno : EIO, "writing", msg,
		    msglen));
	return (0);
}

int
mig_bdisk_zero(uint32_t i, uint64_t first, uint64_t n, char *msg,
    size_t msglen)
{
	static const uint8_t zero[MIG_BDISK_BLOCK];
	uint64_t b;
	int error;

	/* Written, not deallocated: BIO_DELETE need not read back zero. */
	for (b = first; b < first + n; b++)
		if ((error = mig_bdisk_write(i, b, 1, zero, msg, msglen)) != 0)
			return (error);
	return (0);
}

int
mig_bdisk_flush(char *msg, size_t msglen)
{
	uint32_t i;

	for (i = 0; i < nbdisks; i++)
		if (fsync(bdisks[i].fd) != 0)
			return (io_fail(&bdisks[i], errno, "flushing", msg,
			    msglen));
	return (0);
}

/* Create disk d's mark, durably, and keep its directory open. */
static int
mark_one(struct bdisk *d, uint32_t i, const char *vmname, char *msg,
    size_t msglen)
{
	static const char why[] = "a migration into this disk has not "
	    "finished: its blocks may be from several moments\n";
	char dir[MIG_BDISK_PATH_MAX], tmp[MIG_BDISK_PATH_MAX];
	cap_rights_t rights;
	int error, fd;

	if (d->ischr) {
		(void)mkdir(MIG_BDISK_MARKDIR, 0700);
		snprintf(dir, sizeof(dir), "%s", MIG_BDISK_MARKDIR);
		snprintf(d->markname, sizeof(d->markname),
		    "%s.disk%u.incomplete", vmname, i);
	} else {
		/* Both may change their argument: give each a copy. */
		snprintf(tmp, sizeof(tmp), "%s", d->path);
		snprintf(dir, sizeof(dir), "%s", dirname(tmp));
		snprintf(tmp, sizeof(tmp), "%s", d->path);
		snprintf(d->markname, sizeof(d->markname), "%s.incomplete",
		    basename(tmp));
	}
	if ((d->markdir = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return (io_fail(d, errno, "marking (its directory)", msg,
		    msglen));
	fd = openat(d->markdir, d->markname, O_WRONLY | O_CREAT | O_TRUNC |
	    O_CLOEXEC, 0600);
	if (fd < 0)
		return (io_fail(d, errno, "marking", msg, msglen));
	error = write(fd, why, sizeof(why) - 1) == (ssize_t)(sizeof(why) - 1) &&
	    fsync(fd) == 0 && fsync(d->markdir) == 0 ? 0 : errno;
	close(fd);
	if (error != 0)
		return (io_fail(d, error, "marking", msg, msglen));
	cap_rights_init(&rights, CAP_FSYNC, CAP_LOOKUP, CAP_UNLINKAT);
	if (cap_rights_limit(d->markdir, &rights) != 0 && errno != ENOSYS)
		return (io_fail(d, errno, "marking (limiting)", msg, msglen));
	return (0);
}

int
mig_bdisk_mark(const char *vmname, char *msg, size_t msglen)
{
	uint32_t i;
	int error;

	for (i = 0; i < nbdisks; i++)
		if ((error = mark_one(&bdisks[i], i, vmname, msg, msglen)) != 0)
			return (error);
	return (0);
}

int
mig_bdisk_unmark(char *msg, size_t msglen)
{
	struct bdisk *d;
	uint32_t i;

	for (i = 0; i < nbdisks; i++) {
		d = &bdisks[i];
		if (d->markdir < 0)
			continue;
		if ((unlinkat(d->markdir, d->markname, 0) != 0 &&
		    errno != ENOENT) || fsync(d->markdir) != 0)
			return (io_fail(d, errno, "unmarking", msg, msglen));
		close(d->markdir);
		d->markdir = -1;
	}
	return (0);
}
