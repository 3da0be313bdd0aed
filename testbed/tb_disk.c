/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
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
	atomic_store(&d->seq, seq + 1);
}

int
tb_disk_create(struct tb_disk **dp, const struct tb_disk_config *cfg,
    uint64_t seed, char *msg, size_t msglen)
{
	struct tb_disk *d;
	int error;

	*dp = NULL;
	d = calloc(1, sizeof(*d));
	if (d == NULL) {
		snprintf(msg, msglen, "out of memory");
		return (ENOMEM);
	}
	d->cfg = *cfg;
	d->seed = seed;
	d->nblocks = cfg->size / TB_DISK_BLOCK;
	d->nhot = cfg->hot_bytes / TB_DISK_BLOCK;
	d->fd = open(cfg->image, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (d->fd < 0 || ftruncate(d->fd, (off_t)cfg->size) != 0) {
		error = errno;
		snprintf(msg, msglen, "disk image %s: %s", cfg->image,
		    strerror(error));
		tb_disk_destroy(d);
		return (error);
	}
	if ((error = mig_storage_add(d->fd, cfg->image, O_RDWR)) != 0) {
		snprintf(msg, msglen, "disk image %s: %s", cfg->image,
		    strerror(error));
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
