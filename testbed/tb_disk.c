/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migration_storage.h"
#include "migration_wire.h"
#include "tb_devthread.h"
#include "tb_disk.h"
#include "tb_guest.h"
#include "tb_pattern.h"

struct tb_disk {
	struct tb_disk_config cfg;
	uint64_t	seed;
	uint64_t	nblocks;
	uint64_t	nhot;
	int		fd;
	_Atomic uint64_t seq;
	char		mark[TB_DISK_PATH_MAX + 16]; /* IMAGE.incomplete */
	int		error;		/* first failed write, sticky */
	struct tb_devthread thread;
};

/* Write n goes to a hot block when even, to the sweep's when odd. */
static uint64_t
block_of(const struct tb_disk *d, uint64_t n)
{

	return (n % 2 == 0 ? n / 2 % d->nhot : n / 2 % d->nblocks);
}

/* How many of the first seq writes went to block b. */
static uint64_t
generation(const struct tb_disk *d, uint64_t seq, uint64_t b)
{
	uint64_t even, odd, g;

	even = (seq + 1) / 2;
	odd = seq / 2;
	g = odd / d->nblocks + (b < odd % d->nblocks ? 1 : 0);
	if (b < d->nhot)
		g += even / d->nhot + (b < even % d->nhot ? 1 : 0);
	return (g);
}

static void
fill_block(const struct tb_disk *d, uint64_t b, uint64_t g, uint8_t *buf)
{

	if (g == 0) {
		memset(buf, 0, TB_DISK_BLOCK);
		return;
	}
	tb_pattern_page(d->seed + g, b * TB_DISK_BLOCK, buf);
	mig_le64enc(buf, g);
}

static void
disk_write(void *arg, bool draining __attribute__((unused)))
{
	struct tb_disk *d = arg;
	uint8_t buf[TB_DISK_BLOCK];
	uint64_t seq, b;

	if (d->error != 0)
		return;
	seq = atomic_load(&d->seq);
	b = block_of(d, seq);
	fill_block(d, b, generation(d, seq + 1, b), buf);
	if (pwrite(d->fd, buf, TB_DISK_BLOCK, (off_t)(b * TB_DISK_BLOCK)) !=
	    TB_DISK_BLOCK) {
		d->error = errno != 0 ? errno : EIO;
		return;
	}
	/* On completion, as block_if's: a read of it now sees the data. */
	mig_storage_written(d->fd, b * TB_DISK_BLOCK, TB_DISK_BLOCK);
	atomic_store(&d->seq, seq + 1);
}

/* Write the whole image as it is after 2 x nblocks writes. */
static int
prefill(struct tb_disk *d)
{
	uint8_t *buf;
	uint64_t b, n, seq;
	size_t i;
	int error;

	if ((buf = malloc(256 * TB_DISK_BLOCK)) == NULL)
		return (ENOMEM);
	seq = 2 * d->nblocks;
	error = 0;
	for (b = 0; b < d->nblocks && error == 0; b += n) {
		n = d->nblocks - b < 256 ? d->nblocks - b : 256;
		for (i = 0; i < n; i++)
			fill_block(d, b + i, generation(d, seq, b + i),
			    buf + i * TB_DISK_BLOCK);
		error = tb_disk_write(d, b, n, buf);
	}
	free(buf);
	/* On the image, as a disk written long ago would be. */
	if (error == 0 && fdatasync(d->fd) != 0)
		error = errno;
	if (error == 0)
		atomic_store(&d->seq, seq);
	return (error);
}

int
tb_disk_create(struct tb_disk **dp, const struct tb_disk_config *cfg,
    uint64_t seed, bool fresh, char *msg, size_t msglen)
{
	struct tb_disk *d;
	int error;

	*dp = NULL;
	if ((d = calloc(1, sizeof(*d))) == NULL) {
		snprintf(msg, msglen, "out of memory");
		return (ENOMEM);
	}
	d->cfg = *cfg;
	d->seed = seed;
	d->nblocks = cfg->size / TB_DISK_BLOCK;
	d->nhot = cfg->hot_bytes / TB_DISK_BLOCK;
	d->fd = -1;
	snprintf(d->mark, sizeof(d->mark), "%s.incomplete", cfg->image);
	if (fresh && access(d->mark, F_OK) == 0) {
		snprintf(msg, msglen, "disk image %s is marked incomplete "
		    "(%s): a migration into it did not finish", cfg->image,
		    d->mark);
		tb_disk_destroy(d);
		return (EINVAL);
	}
	d->fd = open(cfg->image, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (d->fd < 0 || ftruncate(d->fd, (off_t)cfg->size) != 0) {
		error = errno;
		snprintf(msg, msglen, "disk image %s: %s", cfg->image,
		    strerror(error));
		tb_disk_destroy(d);
		return (error);
	}
	if ((error = mig_storage_add(d->fd, cfg->image, O_RDWR, cfg->size,
	    TB_DISK_BLOCK)) != 0) {
		snprintf(msg, msglen, "disk image %s: %s", cfg->image,
		    strerror(error));
		tb_disk_destroy(d);
		return (error);
	}
	if (fresh && cfg->prefill && (error = prefill(d)) != 0) {
		snprintf(msg, msglen, "disk image %s: writing it: %s",
		    cfg->image, strerror(error));
		tb_disk_destroy(d);
		return (error);
	}
	error = tb_devthread_start(&d->thread, cfg->rate, disk_write, d);
	if (error != 0) {
		snprintf(msg, msglen, "cannot start tb-disk: %s",
		    strerror(error));
		tb_disk_destroy(d);
		return (error);
	}
	*dp = d;
	return (0);
}

void
tb_disk_destroy(struct tb_disk *d)
{

	if (d == NULL)
		return;
	tb_devthread_stop(&d->thread);
	if (d->fd >= 0) {
		mig_storage_remove(d->fd);
		close(d->fd);
	}
	free(d);
}

int
tb_disk_pause(struct tb_disk *d)
{

	tb_devthread_pause(&d->thread);
	/* As blockif_pause(): what the guest wrote is on the image. */
	return (fdatasync(d->fd) == 0 ? 0 : errno);
}

void
tb_disk_resume(struct tb_disk *d)
{

	tb_devthread_resume(&d->thread);
}

uint64_t
tb_disk_seq(const struct tb_disk *d)
{

	return (atomic_load(&d->seq));
}

void
tb_disk_set_seq(struct tb_disk *d, uint64_t seq)
{

	atomic_store(&d->seq, seq);
}

const char *
tb_disk_image(const struct tb_disk *d)
{

	return (d->cfg.image);
}

/* Mark blocks [from, to) of the n from first. */
static void
mark_range(uint64_t *bitmap, uint64_t first, uint64_t n, uint64_t from,
    uint64_t to)
{
	uint64_t b;

	if (from < first)
		from = first;
	if (to > first + n)
		to = first + n;
	for (b = from; b < to; b++)
		bitmap[(b - first) / 64] |= 1ull << ((b - first) % 64);
}

int
tb_disk_allocated(struct tb_disk *d, uint64_t first, uint64_t n,
    uint64_t *bitmap)
{
	off_t pos, end, data, hole;

	pos = (off_t)(first * TB_DISK_BLOCK);
	end = (off_t)((first + n) * TB_DISK_BLOCK);
	while (pos < end) {
		if ((data = lseek(d->fd, pos, SEEK_DATA)) < 0) {
			if (errno == ENXIO)
				return (0);	/* holes to the end */
			/* No hole reporting here: all may hold data. */
			mark_range(bitmap, first, n, first, first + n);
			return (0);
		}
		if (data >= end)
			return (0);
		if ((hole = lseek(d->fd, data, SEEK_HOLE)) < 0)
			return (errno);
		mark_range(bitmap, first, n, (uint64_t)data / TB_DISK_BLOCK,
		    ((uint64_t)hole + TB_DISK_BLOCK - 1) / TB_DISK_BLOCK);
		pos = hole;
	}
	return (0);
}

int
tb_disk_read(struct tb_disk *d, uint64_t first, uint64_t n, void *buf)
{
	size_t len;
	ssize_t got;

	len = (size_t)(n * TB_DISK_BLOCK);
	got = pread(d->fd, buf, len, (off_t)(first * TB_DISK_BLOCK));
	if (got < 0)
		return (errno);
	return ((size_t)got == len ? 0 : EIO);
}

int
tb_disk_write(struct tb_disk *d, uint64_t first, uint64_t n,
    const void *buf)
{
	size_t len;
	ssize_t put;

	len = (size_t)(n * TB_DISK_BLOCK);
	put = pwrite(d->fd, buf, len, (off_t)(first * TB_DISK_BLOCK));
	if (put < 0)
		return (errno);
	return ((size_t)put == len ? 0 : EIO);
}

int
tb_disk_zero(struct tb_disk *d, uint64_t first, uint64_t n)
{
	static const uint8_t zero[TB_DISK_BLOCK];
	uint64_t b;
	int error;

	if (fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
	    (off_t)(first * TB_DISK_BLOCK), (off_t)(n * TB_DISK_BLOCK)) == 0)
		return (0);
	if (errno != EOPNOTSUPP)
		return (errno);
	for (b = first; b < first + n; b++)
		if ((error = tb_disk_write(d, b, 1, zero)) != 0)
			return (error);
	return (0);
}

/* Make a name change in the image's directory durable. */
static int
sync_dir(const struct tb_disk *d)
{
	char path[TB_DISK_PATH_MAX];
	int error, fd;

	snprintf(path, sizeof(path), "%s", d->cfg.image);
	if ((fd = open(dirname(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return (errno);
	error = fsync(fd) == 0 ? 0 : errno;
	close(fd);
	return (error);
}

int
tb_disk_mark_incomplete(struct tb_disk *d)
{
	static const char why[] = "a migration into this disk image has not "
	    "finished: its blocks may be from several moments\n";
	int error, fd;

	fd = open(d->mark, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return (errno);
	error = write(fd, why, sizeof(why) - 1) == (ssize_t)(sizeof(why) - 1) &&
	    fsync(fd) == 0 ? 0 : (errno != 0 ? errno : EIO);
	close(fd);
	return (error != 0 ? error : sync_dir(d));
}

int
tb_disk_flush(struct tb_disk *d)
{

	return (fdatasync(d->fd) == 0 ? 0 : errno);
}

int
tb_disk_mark_complete(struct tb_disk *d)
{

	if (unlink(d->mark) != 0 && errno != ENOENT)
		return (errno);
	return (sync_dir(d));
}

int
tb_disk_verify(struct tb_disk *d, struct tb_verify *v, char *msg,
    size_t msglen)
{
	uint8_t got[TB_DISK_BLOCK], want[TB_DISK_BLOCK];
	uint64_t b, seq, g;
	char line[160];

	if (d->error != 0) {
		snprintf(msg, msglen, "tb-disk: writing %s failed: %s",
		    d->cfg.image, strerror(d->error));
		return (d->error);
	}
	seq = tb_disk_seq(d);
	for (b = 0; b < d->nblocks; b++) {
		if (pread(d->fd, got, TB_DISK_BLOCK,
		    (off_t)(b * TB_DISK_BLOCK)) != TB_DISK_BLOCK) {
			snprintf(msg, msglen, "tb-disk: reading block %" PRIu64
			    " of %s failed", b, d->cfg.image);
			return (EIO);
		}
		g = generation(d, seq, b);
		fill_block(d, b, g, want);
		if (memcmp(got, want, TB_DISK_BLOCK) != 0) {
			snprintf(line, sizeof(line), "tb-disk block %" PRIu64
			    ": generation %" PRIu64 " expected, the image "
			    "holds %" PRIu64 "%s", b, g, mig_le64dec(got),
			    mig_le64dec(got) == g ? " with other bytes" : "");
			tb_verify_add(v, line);
		}
	}
	return (0);
}
