/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * struct mig_backend_ops over the test guest: segments from its
 * mapping, dirty bits from the userfaultfd tracker and tb-dma's write
 * log, state sections from tb_state.c.
 */

#include <sys/mman.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "migration.h"
#include "migration_backend.h"
#include "migration_devlog.h"
#include "migration_storage.h"

#include "tb_backend.h"
#include "tb_dirty.h"
#include "tb_disk.h"
#include "tb_guest.h"
#include "tb_state.h"

/* The test guest runs no CPU-specific code: only the model must match. */
#define	TB_CPU_FEATURES	"testbed-v1"

static int
tb_vminfo(void *arg, struct mig_vminfo *vi)
{
	struct tb_backend *tb = arg;
	struct tb_guest *g = tb->guest;
	const struct tb_guest_config *cfg;
	uint32_t i;

	memset(vi, 0, sizeof(*vi));
	if (tb->stateless_device != NULL) {
		snprintf(tb->mb.errmsg, sizeof(tb->mb.errmsg), "device %s has "
		    "no snapshot routine, so its state cannot be moved and "
		    "this guest cannot be migrated", tb->stateless_device);
		return (ENOTSUP);
	}
	vi->ncpus = tb_guest_config(g)->nvcpus;
	vi->page_size = TB_PAGE_SIZE;
	vi->nsegs = tb_guest_nsegs(g);
	for (i = 0; i < vi->nsegs; i++)
		tb_guest_seg(g, i, &vi->segs[i].gpa, &vi->segs[i].len,
		    &vi->segs[i].host);
	if (tb_guest_disk(g) != NULL) {
		vi->ndisks = 1;
		vi->disks[0].block_size = TB_DISK_BLOCK;
		vi->disks[0].size = tb_guest_config(g)->disk.size;
	}
	vi->nsections = tb_state_nsections(g);
	for (i = 0; i < vi->nsections; i++) {
		tb_state_name(g, i, vi->sections[i].name,
		    sizeof(vi->sections[i].name));
		vi->sections[i].version = TB_STATE_VERSION;
		vi->sections[i].size_hint = (uint32_t)tb_state_len(g, i);
		if (i < vi->ncpus)
			vi->sections[i].flags = MIG_SECTION_VCPU;
	}
	/*
	 * The guest's fill and seed decide what its memory check expects:
	 * two ends that disagree would "complete", then fail that check.
	 * They ride in the features the compatibility check compares.
	 */
	cfg = tb_guest_config(g);
	snprintf(vi->cpu_features, sizeof(vi->cpu_features), "%s fill=%s "
	    "seed=%ju", TB_CPU_FEATURES, cfg->fill == TB_FILL_ZERO ? "zero" :
	    "pattern", (uintmax_t)cfg->seed);
	return (0);
}

static int
tb_dirty_start(void *arg)
{
	struct tb_backend *tb = arg;
	int error;

	error = tb_dirty_arm(tb_guest_dirty(tb->guest));
	if (error == 0 && tb_guest_dma(tb->guest) != NULL)
		mig_devlog_arm(tb_dma_log(tb_guest_dma(tb->guest)));
	if (error != 0)
		snprintf(tb->mb.errmsg, sizeof(tb->mb.errmsg),
		    "cannot write-protect guest memory: %s", strerror(error));
	return (error);
}

/* Turn (segment, first page) into a page index of the whole guest. */
static int
chunk_pages(struct tb_backend *tb, uint32_t seg, uint64_t first,
    uint64_t npages, uint64_t *idx)
{
	uint64_t gpa, len;
	uint8_t *host;

	if (seg >= tb_guest_nsegs(tb->guest)) {
		snprintf(tb->mb.errmsg, sizeof(tb->mb.errmsg),
		    "dirty log of segment %u: the guest has %u", seg,
		    tb_guest_nsegs(tb->guest));
		return (EINVAL);
	}
	tb_guest_seg(tb->guest, seg, &gpa, &len, &host);
	if (npages > MIG_DIRTY_CHUNK_PAGES || first > len / TB_PAGE_SIZE ||
	    npages > len / TB_PAGE_SIZE - first) {
		snprintf(tb->mb.errmsg, sizeof(tb->mb.errmsg),
		    "dirty log of pages %" PRIu64 "+%" PRIu64 " is outside "
		    "segment %u", first, npages, seg);
		return (EINVAL);
	}
	*idx = seg * (len / TB_PAGE_SIZE) + first;
	return (0);
}

static int
tb_dirty_collect_op(void *arg, uint32_t seg, uint64_t first,
    uint64_t npages, uint64_t *bitmap)
{
	struct tb_backend *tb = arg;
	uint64_t idx;
	int error;

	error = chunk_pages(tb, seg, first, npages, &idx);
	if (error != 0)
		return (error);
	error = tb_dirty_collect(tb_guest_dirty(tb->guest), idx, npages,
	    bitmap);
	if (error != 0)
		snprintf(tb->mb.errmsg, sizeof(tb->mb.errmsg),
		    "reading the dirty log (PAGEMAP_SCAN): %s",
		    strerror(error));
	return (error);
}

/*
 * Add the pages of the guest's shared memory object that are resident,
 * whichever mapping faulted them in.  With tb-dma, guest memory is a
 * memfd mapped twice, and a page only the device wrote is in the object
 * but not in the tracked mapping's page tables, which PAGEMAP_SCAN
 * reads: without this it would count as never populated and go as a
 * zero range.  (bhyve's VM_POPULATED asks the memory object itself.)
 */
static int
or_resident(const uint8_t *host, uint64_t npages, uint64_t *bitmap)
{
	unsigned char vec[4096];
	uint64_t done, i, n, page;

	for (done = 0; done < npages; done += n) {
		n = npages - done < sizeof(vec) ? npages - done : sizeof(vec);
		if (mincore((void *)(uintptr_t)(host + (done << TB_PAGE_SHIFT)),
		    n << TB_PAGE_SHIFT, vec) != 0)
			return (errno);
		for (i = 0; i < n; i++) {
			page = done + i;
			if ((vec[i] & 1) != 0)
				bitmap[page >> 6] |= 1ull << (page & 63);
		}
	}
	return (0);
}

static int
tb_populated_op(void *arg, uint32_t seg, uint64_t first, uint64_t npages,
    uint64_t *bitmap)
{
	struct tb_backend *tb = arg;
	uint64_t gpa, idx, len;
	uint8_t *host;
	int error;

	error = chunk_pages(tb, seg, first, npages, &idx);
	if (error != 0)
		return (error);
	error = tb_dirty_populated(tb_guest_dirty(tb->guest), idx, npages,
	    bitmap);
	if (error != 0) {
		snprintf(tb->mb.errmsg, sizeof(tb->mb.errmsg),
		    "reading populated pages (PAGEMAP_SCAN): %s",
		    strerror(error));
		return (error);
	}
	if (tb_guest_dma(tb->guest) == NULL)
		return (0);
	tb_guest_seg(tb->guest, seg, &gpa, &len, &host);
	error = or_resident(host + (first << TB_PAGE_SHIFT), npages, bitmap);
	if (error != 0)
		snprintf(tb->mb.errmsg, sizeof(tb->mb.errmsg),
		    "reading resident pages (mincore): %s", strerror(error));
	return (error);
}

static int
tb_devlog_collect_op(void *arg, uint32_t seg, uint64_t first,
    uint64_t npages, uint64_t *bitmap)
{
	struct tb_backend *tb = arg;
	struct tb_dma *dma = tb_guest_dma(tb->guest);
	int error;

	if (dma == NULL)
		return (0);
	error = mig_devlog_collect(tb_dma_log(dma), seg, first, npages,
	    bitmap);
	if (error != 0)
		snprintf(tb->mb.errmsg, sizeof(tb->mb.errmsg),
		    "device write log of pages %" PRIu64 "+%" PRIu64 " of "
		    "segment %u: outside the guest", first, npages, seg);
	return (error);
}

static void
tb_dirty_stop(void *arg)
{
	struct tb_backend *tb = arg;

	if (tb_guest_dma(tb->guest) != NULL)
		mig_devlog_disarm(tb_dma_log(tb_guest_dma(tb->guest)));
	(void)tb_dirty_disarm(tb_guest_dirty(tb->guest));
}

/* The guest's disk, if blocks [first, first + n) of disk are in it. */
static struct tb_disk *
disk_range(void *arg, uint32_t disk, uint64_t first, uint64_t n)
{
	struct tb_backend *tb = arg;
	struct tb_disk *d = tb_guest_disk(tb->guest);
	uint64_t nblocks;

	nblocks = d != NULL ? tb_guest_config(tb->guest)->disk.size /
	    TB_DISK_BLOCK : 0;
	if (d == NULL || disk != 0 || first > nblocks || n > nblocks - first) {
		snprintf(tb->mb.errmsg, sizeof(tb->mb.errmsg), "blocks %"
		    PRIu64 "+%" PRIu64 " of disk %u: the guest has %s", first,
		    n, disk, d == NULL ? "no disk" : "one disk, smaller");
		return (NULL);
	}
	return (d);
}

/* An I/O error on the image: say which. */
static int
disk_error(void *arg, int error, const char *doing)
{
	struct tb_backend *tb = arg;

	if (error != 0)
		snprintf(tb->mb.errmsg, sizeof(tb->mb.errmsg), "%s disk image "
		    "%s: %s", doing, tb_disk_image(tb_guest_disk(tb->guest)),
		    strerror(error));
	return (error);
}

/* The guest's one disk is the registry's disk 0 (tb_disk.c adds it). */
static int
tb_disk_start_op(void *arg, uint32_t disk)
{
	struct tb_backend *tb = arg;

	if (disk_range(arg, disk, 0, 0) == NULL)
		return (EINVAL);
	return (mig_storage_track(disk, tb->mb.errmsg, sizeof(tb->mb.errmsg)));
}

static int
tb_disk_collect_op(void *arg, uint32_t disk, uint64_t first, uint64_t n,
    uint64_t *bitmap)
{
	struct tb_backend *tb = arg;

	if (disk_range(arg, disk, first, n) == NULL)
		return (EINVAL);
	return (mig_storage_collect(disk, first, n, bitmap, tb->mb.errmsg,
	    sizeof(tb->mb.errmsg)));
}

static int
tb_disk_allocated_op(void *arg, uint32_t disk, uint64_t first, uint64_t n,
    uint64_t *bitmap)
{
	struct tb_disk *d;

	if ((d = disk_range(arg, disk, first, n)) == NULL)
		return (EINVAL);
	return (disk_error(arg, tb_disk_allocated(d, first, n, bitmap),
	    "finding the data of"));
}

enum disk_io {
	DISK_READ,
	DISK_WRITE,
	DISK_ZERO
};

/* Blocks [first, first + n) of the guest's disk: read, written, zeroed. */
static int
disk_io(void *arg, enum disk_io io, uint32_t disk, uint64_t first,
    uint64_t n, void *rbuf, const void *wbuf)
{
	static const char *const doing[] = {
		[DISK_READ] = "reading",
		[DISK_WRITE] = "writing",
		[DISK_ZERO] = "zeroing blocks of",
	};
	struct tb_disk *d;
	int error;

	if ((d = disk_range(arg, disk, first, n)) == NULL)
		return (EINVAL);
	switch (io) {
	case DISK_READ:
		error = tb_disk_read(d, first, n, rbuf);
		break;
	case DISK_WRITE:
		error = tb_disk_write(d, first, n, wbuf);
		break;
	default:
		error = tb_disk_zero(d, first, n);
		break;
	}
	return (disk_error(arg, error, doing[io]));
}

static int
tb_disk_read_op(void *arg, uint32_t disk, uint64_t first, uint64_t n,
    void *buf)
{

	return (disk_io(arg, DISK_READ, disk, first, n, buf, NULL));
}

static int
tb_disk_write_op(void *arg, uint32_t disk, uint64_t first, uint64_t n,
    const void *buf)
{

	return (disk_io(arg, DISK_WRITE, disk, first, n, NULL, buf));
}

static int
tb_disk_zero_op(void *arg, uint32_t disk, uint64_t first, uint64_t n)
{

	return (disk_io(arg, DISK_ZERO, disk, first, n, NULL, NULL));
}

static void
tb_disk_stop_op(void *arg __attribute__((unused)),
    uint32_t disk __attribute__((unused)))
{
	/* tb-disk marks every write anyway: nothing to disarm. */
}

static int
tb_disk_recv_begin_op(void *arg)
{
	struct tb_disk *d;

	if ((d = disk_range(arg, 0, 0, 0)) == NULL)
		return (EINVAL);
	return (disk_error(arg, tb_disk_mark_incomplete(d), "marking"));
}

static int
tb_disk_recv_done_op(void *arg)
{
	struct tb_disk *d;
	int error;

	if ((d = disk_range(arg, 0, 0, 0)) == NULL)
		return (EINVAL);
	if ((error = disk_error(arg, tb_disk_flush(d), "flushing")) != 0)
		return (error);
	return (disk_error(arg, tb_disk_mark_complete(d), "completing"));
}

static int
tb_pause(void *arg)
{
	struct tb_backend *tb = arg;

	return (tb_guest_pause(tb->guest));
}

static int
tb_resume(void *arg)
{
	struct tb_backend *tb = arg;

	return (tb_guest_resume(tb->guest));
}

static int
tb_throttle(void *arg, uint32_t percent)
{
	struct tb_backend *tb = arg;
	int error;

	error = tb_guest_throttle(tb->guest, percent);
	if (error != 0)
		snprintf(tb->mb.errmsg, sizeof(tb->mb.errmsg),
		    "throttle of %u%%: at most 99%% is possible", percent);
	return (error);
}

static int
tb_state_save_op(void *arg, uint32_t idx, void **buf, size_t *len)
{
	struct tb_backend *tb = arg;

	return (tb_state_save(tb->guest, idx, buf, len, tb->mb.errmsg,
	    sizeof(tb->mb.errmsg)));
}

static int
tb_state_restore_op(void *arg, uint32_t idx, const void *buf, size_t len)
{
	struct tb_backend *tb = arg;
	int error;

	error = tb_state_restore(tb->guest, idx, buf, len, tb->mb.errmsg,
	    sizeof(tb->mb.errmsg));
	if (error == 0 && idx < 64)
		tb->restored |= 1ull << idx;
	return (error);
}

static void
tb_progress(void *arg, const struct mig_progress *p)
{
	struct tb_backend *tb = arg;

	if (tb->progress != NULL)
		tb->progress(tb->progress_arg, p);
}

/* As bhyve -R: the disk image again, as the source left it. */
static int
tb_before_ready(void *arg)
{
	struct tb_backend *b = arg;

	return (mig_storage_reopen(b->mb.errmsg, sizeof(b->mb.errmsg)));
}

static const struct mig_backend_ops tb_ops = {
	.vminfo = tb_vminfo,
	.dirty_start = tb_dirty_start,
	.dirty_collect = tb_dirty_collect_op,
	.dirty_stop = tb_dirty_stop,
	.populated = tb_populated_op,
	.devlog_collect = tb_devlog_collect_op,
	.pause = tb_pause,
	.resume = tb_resume,
	.before_ready = tb_before_ready,
	.throttle = tb_throttle,
	.state_save = tb_state_save_op,
	.state_restore = tb_state_restore_op,
	.disk_start = tb_disk_start_op,
	.disk_collect = tb_disk_collect_op,
	.disk_allocated = tb_disk_allocated_op,
	.disk_read = tb_disk_read_op,
	.disk_stop = tb_disk_stop_op,
	.disk_recv_begin = tb_disk_recv_begin_op,
	.disk_write = tb_disk_write_op,
	.disk_zero = tb_disk_zero_op,
	.disk_recv_done = tb_disk_recv_done_op,
	.progress = tb_progress,
};

void
tb_backend_init(struct tb_backend *tb, struct tb_guest *g,
    tb_progress_fn *progress, void *progress_arg)
{

	memset(tb, 0, sizeof(*tb));
	tb->mb.ops = &tb_ops;
	tb->mb.arg = tb;
	tb->guest = g;
	tb->progress = progress;
	tb->progress_arg = progress_arg;
}

bool
tb_backend_missing_section(const struct tb_backend *tb, char *name,
    size_t namelen)
{
	uint32_t i, n;

	n = tb_state_nsections(tb->guest);
	for (i = 0; i < n; i++) {
		if ((tb->restored & (1ull << i)) == 0) {
			tb_state_name(tb->guest, i, name, namelen);
			return (true);
		}
	}
	return (false);
}
