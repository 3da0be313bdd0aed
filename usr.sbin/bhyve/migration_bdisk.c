/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Disk migration's I/O on bhyve's block_if images (migration_bdisk.h),
 * through block_if's own descriptors (CAP_PREAD/CAP_PWRITE).  The write
 * bitmaps are the registry's (migration_storage.c); the final
 * collection follows vm_pause_devices(), whose blockif_pause() waits for
 * requests in flight.
 */

#include <sys/param.h>
#include <sys/capsicum.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "migration_bdisk.h"
#include "migration_storage.h"

#define	MIG_BDISK_MARKDIR	"/var/db/bhyve"
#define	MIG_BDISK_PATH_MAX	1024

/* Image i's "incomplete" mark on the destination. */
struct mark {
	bool	made;
	int	dir;
	char	name[NAME_MAX + 1];
};

static struct mark marks[MIG_STORAGE_MAX];

/* Bytes from block first to the end of block first + n - 1. */
static size_t
span(const struct mig_image *d, uint64_t first, uint64_t n)
{
	uint64_t end;

	end = (first + n) * d->block;
	if (end > d->size)
		end = d->size;
	return ((size_t)(end - first * d->block));
}

static int
io_fail(const struct mig_image *d, int error, const char *doing, char *msg,
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
	const struct mig_image *d;
	off_t pos, end, data, hole;
	uint64_t b, from, to;
	int error;

	if ((error = mig_storage_check(i, first, n, msg, msglen)) != 0)
		return (error);
	d = mig_storage_image(i);
	pos = (off_t)(first * d->block);
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
		from = (uint64_t)data / d->block;
		to = ((uint64_t)hole + d->block - 1) / d->block;
		for (b = from; b < to && b < first + n; b++)
			bitmap[(b - first) / 64] |= 1ull << ((b - first) % 64);
		pos = hole;
	}
	return (0);
}

/* Read (buf) or write (wbuf) blocks [first, first + n) of disk i. */
static int
bdisk_io(uint32_t i, uint64_t first, uint64_t n, void *buf,
    const void *wbuf, char *msg, size_t msglen)
{
	const struct mig_image *d;
	size_t len;
	ssize_t done;
	off_t off;
	int error;

	if ((error = mig_storage_check(i, first, n, msg, msglen)) != 0)
		return (error);
	d = mig_storage_image(i);
	len = span(d, first, n);
	off = (off_t)(first * d->block);
	done = wbuf != NULL ? pwrite(d->fd, wbuf, len, off) :
	    pread(d->fd, buf, len, off);
	if (done < 0 || (size_t)done != len)
		return (io_fail(d, done < 0 ? errno : EIO, wbuf != NULL ?
		    "writing" : "reading", msg, msglen));
	return (0);
}

int
mig_bdisk_read(uint32_t i, uint64_t first, uint64_t n, void *buf, char *msg,
    size_t msglen)
{

	return (bdisk_io(i, first, n, buf, NULL, msg, msglen));
}

int
mig_bdisk_write(uint32_t i, uint64_t first, uint64_t n, const void *buf,
    char *msg, size_t msglen)
{

	return (bdisk_io(i, first, n, NULL, buf, msg, msglen));
}

int
mig_bdisk_zero(uint32_t i, uint64_t first, uint64_t n, char *msg,
    size_t msglen)
{
	/* block_if's images: in blocks of MIG_STORAGE_BLOCK. */
	static const uint8_t zero[MIG_STORAGE_BLOCK];
	uint64_t b;
	int error;

	/* Written, not deallocated: BIO_DELETE need not read back zero. */
	for (b = first; b < first + n; b++)
		if ((error = mig_bdisk_write(i, b, 1, zero, msg, msglen)) != 0)
			return (error);
	return (0);
}

/* Create image i's mark, durably, and keep its directory open. */
static int
mark_one(const struct mig_image *d, uint32_t i, const char *vmname,
    char *msg, size_t msglen)
{
	static const char why[] = "a migration into this disk has not "
	    "finished: its blocks may be from several moments\n";
	char dir[MIG_BDISK_PATH_MAX], tmp[MIG_BDISK_PATH_MAX];
	struct mark *m = &marks[i];
	cap_rights_t rights;
	int error, fd;

	if (d->ischr) {
		(void)mkdir(MIG_BDISK_MARKDIR, 0700);
		snprintf(dir, sizeof(dir), "%s", MIG_BDISK_MARKDIR);
		snprintf(m->name, sizeof(m->name), "%s.disk%u.incomplete",
		    vmname, i);
	} else {
		/* Both may change their argument: give each a copy. */
		snprintf(tmp, sizeof(tmp), "%s", d->path);
		snprintf(dir, sizeof(dir), "%s", dirname(tmp));
		snprintf(tmp, sizeof(tmp), "%s", d->path);
		snprintf(m->name, sizeof(m->name), "%s.incomplete",
		    basename(tmp));
	}
	if ((m->dir = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return (io_fail(d, errno, "marking (its directory)", msg,
		    msglen));
	m->made = true;
	fd = openat(m->dir, m->name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0600);
	if (fd < 0)
		return (io_fail(d, errno, "marking", msg, msglen));
	error = write(fd, why, sizeof(why) - 1) == (ssize_t)(sizeof(why) - 1) &&
	    fsync(fd) == 0 && fsync(m->dir) == 0 ? 0 : errno;
	close(fd);
	if (error != 0)
		return (io_fail(d, error, "marking", msg, msglen));
	cap_rights_init(&rights, CAP_FSYNC, CAP_LOOKUP, CAP_UNLINKAT);
	if (cap_rights_limit(m->dir, &rights) != 0 && errno != ENOSYS)
		return (io_fail(d, errno, "marking (limiting)", msg, msglen));
	return (0);
}

int
mig_bdisk_mark(const char *vmname, char *msg, size_t msglen)
{
	const struct mig_image *d;
	uint32_t i;
	int error;

	for (i = 0; i < mig_storage_count(); i++)
		if ((d = mig_storage_image(i)) != NULL &&
		    (error = mark_one(d, i, vmname, msg, msglen)) != 0)
			return (error);
	return (0);
}

int
mig_bdisk_unmark(char *msg, size_t msglen)
{
	const struct mig_image *d;
	struct mark *m;
	uint32_t i;

	for (i = 0; i < mig_storage_count(); i++) {
		m = &marks[i];
		if (!m->made || (d = mig_storage_image(i)) == NULL)
			continue;
		if ((unlinkat(m->dir, m->name, 0) != 0 && errno != ENOENT) ||
		    fsync(m->dir) != 0)
			return (io_fail(d, errno, "unmarking", msg, msglen));
		close(m->dir);
		m->made = false;
	}
	return (0);
}
