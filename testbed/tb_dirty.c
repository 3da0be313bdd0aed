/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Dirty tracking with userfaultfd write-protect in asynchronous mode
 * (Linux 6.7 and later).  Arming write-protects the whole range; the
 * first write to a page then lifts the protection in the kernel without
 * a message to us.  PAGEMAP_SCAN with PM_SCAN_WP_MATCHING reports the
 * pages whose protection was lifted and protects them again in the same
 * page-table walk, so no write between the read and the clear is lost.
 *
 * Which pages hold data is taken when tracking is armed, for the engine
 * to skip the rest in round 1 unread.  It cannot be asked later: arming
 * puts a write-protect marker into every empty page table entry, and
 * PAGEMAP_SCAN reports a marker as swapped.
 */

#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include <linux/fs.h>
#include <linux/userfaultfd.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tb_dirty.h"

/*
 * Debian 12's headers predate these; values from the Linux UAPI
 * (include/uapi/linux/userfaultfd.h and fs.h).
 */
#ifndef UFFD_USER_MODE_ONLY
#define	UFFD_USER_MODE_ONLY		1
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define	UFFD_FEATURE_WP_UNPOPULATED	(1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define	UFFD_FEATURE_WP_ASYNC		(1 << 15)
#endif
#ifndef PAGEMAP_SCAN
struct page_region {
	__u64	start;
	__u64	end;
	__u64	categories;
};

struct pm_scan_arg {
	__u64	size;
	__u64	flags;
	__u64	start;
	__u64	end;
	__u64	walk_end;
	__u64	vec;
	__u64	vec_len;
	__u64	max_pages;
	__u64	category_inverted;
	__u64	category_mask;
	__u64	category_anyof_mask;
	__u64	return_mask;
};

#define	PAGEMAP_SCAN		_IOWR('f', 16, struct pm_scan_arg)
#define	PAGE_IS_WRITTEN		(1 << 1)
#define	PAGE_IS_PRESENT		(1 << 3)
#define	PAGE_IS_SWAPPED		(1 << 4)
#define	PAGE_IS_PFNZERO		(1 << 5)
#define	PM_SCAN_WP_MATCHING	(1 << 0)
#define	PM_SCAN_CHECK_WPASYNC	(1 << 1)
#endif

#define	TB_DIRTY_VEC	1024	/* page regions per PAGEMAP_SCAN call */

struct tb_dirty {
	uint8_t		*base;
	uint64_t	npages;
	int		uffd;
	int		pagemap;
	pthread_mutex_t	mtx;		/* vec, populated and armed */
	struct page_region *vec;
	uint64_t	*populated;	/* held data when armed */
	bool		armed;
};

static void
bits_set(uint64_t *map, uint64_t from, uint64_t to)
{

	while (from < to && (from & 63) != 0) {
		map[from >> 6] |= 1ull << (from & 63);
		from++;
	}
	while (from + 64 <= to) {
		map[from >> 6] = ~0ull;
		from += 64;
	}
	while (from < to) {
		map[from >> 6] |= 1ull << (from & 63);
		from++;
	}
}

static bool
bit_isset(const uint64_t *map, uint64_t i)
{

	return ((map[i >> 6] >> (i & 63)) & 1);
}

static int
writeprotect(struct tb_dirty *d, uint64_t mode)
{
	struct uffdio_writeprotect wp;

	memset(&wp, 0, sizeof(wp));
	wp.range.start = (uintptr_t)d->base;
	wp.range.len = d->npages << TB_PAGE_SHIFT;
	wp.mode = mode;
	if (ioctl(d->uffd, UFFDIO_WRITEPROTECT, &wp) != 0)
		return (errno);
	return (0);
}

static int
open_uffd(void)
{
	int fd;

	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	/*
	 * Asynchronous write-protect resolves faults without us, so a
	 * user-mode-only descriptor is enough where policy forbids more.
	 */
	if (fd < 0 && errno == EPERM)
		fd = (int)syscall(SYS_userfaultfd,
		    O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	return (fd);
}

int
tb_dirty_open(struct tb_dirty **dp, void *base, size_t len, char *msg,
    size_t msglen)
{
	struct uffdio_api api;
	struct uffdio_register reg;
	struct tb_dirty *d;
	uint64_t want;
	int error;

	*dp = NULL;
	if (((uintptr_t)base | len) & (TB_PAGE_SIZE - 1) || len == 0) {
		snprintf(msg, msglen, "tracked range is not page-aligned");
		return (EINVAL);
	}
	d = calloc(1, sizeof(*d));
	if (d == NULL) {
		snprintf(msg, msglen, "out of memory");
		return (ENOMEM);
	}
	d->base = base;
	d->npages = len >> TB_PAGE_SHIFT;
	d->pagemap = -1;
	d->vec = calloc(TB_DIRTY_VEC, sizeof(*d->vec));
	d->populated = calloc((d->npages + 63) / 64, sizeof(uint64_t));
	if (d->vec == NULL || d->populated == NULL) {
		snprintf(msg, msglen, "out of memory");
		error = ENOMEM;
		goto fail_mem;
	}
	pthread_mutex_init(&d->mtx, NULL);

	d->uffd = open_uffd();
	if (d->uffd < 0) {
		error = errno;
		snprintf(msg, msglen, "userfaultfd: %s%s", strerror(error),
		    error == EPERM ? " (run as root or set "
		    "vm.unprivileged_userfaultfd=1)" : "");
		goto fail_mem;
	}
	want = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
	memset(&api, 0, sizeof(api));
	api.api = UFFD_API;
	api.features = want;
	if (ioctl(d->uffd, UFFDIO_API, &api) != 0 ||
	    (api.features & want) != want) {
		snprintf(msg, msglen, "this kernel's userfaultfd lacks "
		    "asynchronous write-protect (Linux 6.7 or later needed)");
		error = ENOTSUP;
		goto fail_uffd;
	}
	memset(&reg, 0, sizeof(reg));
	reg.range.start = (uintptr_t)base;
	reg.range.len = len;
	reg.mode = UFFDIO_REGISTER_MODE_WP;
	if (ioctl(d->uffd, UFFDIO_REGISTER, &reg) != 0) {
		error = errno;
		snprintf(msg, msglen, "userfaultfd register of %zu bytes: %s",
		    len, strerror(error));
		goto fail_uffd;
	}
	if ((reg.ioctls & (1ull << _UFFDIO_WRITEPROTECT)) == 0) {
		snprintf(msg, msglen, "userfaultfd cannot write-protect "
		    "this memory");
		error = ENOTSUP;
		goto fail_uffd;
	}
	d->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (d->pagemap < 0) {
		error = errno;
		snprintf(msg, msglen, "/proc/self/pagemap: %s",
		    strerror(error));
		goto fail_uffd;
	}
	*dp = d;
	return (0);

fail_uffd:
	close(d->uffd);
fail_mem:
	free(d->populated);
	free(d->vec);
	free(d);
	return (error);
}

/*
 * Run the PAGEMAP_SCAN described by arg over [first, first + npages),
 * setting the bits of the pages it reports.  Called with mtx held.
 */
static int
scan_regions(struct tb_dirty *d, struct pm_scan_arg *arg, uint64_t first,
    uint64_t npages, uint64_t *bitmap)
{
	uint64_t end, i, s, e;
	long n;

	end = (uintptr_t)d->base + ((first + npages) << TB_PAGE_SHIFT);
	arg->size = sizeof(*arg);
	arg->start = (uintptr_t)d->base + (first << TB_PAGE_SHIFT);
	arg->end = end;
	arg->vec = (uintptr_t)d->vec;
	arg->vec_len = TB_DIRTY_VEC;
	/* A full vector ends the walk early; go on from where it stopped. */
	while (arg->start < end) {
		n = ioctl(d->pagemap, PAGEMAP_SCAN, arg);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return (errno);
		}
		for (i = 0; i < (uint64_t)n; i++) {
			s = (d->vec[i].start - (uintptr_t)d->base) >>
			    TB_PAGE_SHIFT;
			e = (d->vec[i].end - (uintptr_t)d->base) >>
			    TB_PAGE_SHIFT;
			if (s < first || e > first + npages || s > e)
				return (EIO);
			bits_set(bitmap, s - first, e - first);
		}
		if (arg->walk_end <= arg->start)
			return (EIO);
		arg->start = arg->walk_end;
	}
	return (0);
}

/*
 * OR into bitmap the pages of [first, first + npages) that are in any
 * of the categories anyof and not the shared zero page.
 */
static int
scan_populated(struct tb_dirty *d, uint64_t first, uint64_t npages,
    uint64_t anyof, uint64_t *bitmap)
{
	struct pm_scan_arg arg;

	memset(&arg, 0, sizeof(arg));
	arg.category_inverted = PAGE_IS_PFNZERO;
	arg.category_mask = PAGE_IS_PFNZERO;
	arg.category_anyof_mask = anyof;
	arg.return_mask = anyof;
	return (scan_regions(d, &arg, first, npages, bitmap));
}

int
tb_dirty_arm(struct tb_dirty *d)
{
	size_t words;
	int error;

	words = (d->npages + 63) / 64;
	pthread_mutex_lock(&d->mtx);
	memset(d->populated, 0, words * sizeof(uint64_t));
	/*
	 * Before arming: resident or swapped.  After: resident, for a page
	 * first written in between (markers are never resident).
	 */
	error = scan_populated(d, 0, d->npages, PAGE_IS_PRESENT |
	    PAGE_IS_SWAPPED, d->populated);
	if (error == 0)
		error = writeprotect(d, UFFDIO_WRITEPROTECT_MODE_WP);
	if (error == 0)
		error = scan_populated(d, 0, d->npages, PAGE_IS_PRESENT,
		    d->populated);
	d->armed = error == 0;
	pthread_mutex_unlock(&d->mtx);
	return (error);
}

int
tb_dirty_populated(struct tb_dirty *d, uint64_t first, uint64_t npages,
    uint64_t *bitmap)
{
	uint64_t i;
	int error;

	if (first > d->npages || npages > d->npages - first)
		return (EINVAL);
	memset(bitmap, 0, (npages + 63) / 64 * sizeof(uint64_t));
	pthread_mutex_lock(&d->mtx);
	error = 0;
	if (!d->armed) {
		/* No markers yet: the page tables tell. */
		error = scan_populated(d, first, npages, PAGE_IS_PRESENT |
		    PAGE_IS_SWAPPED, bitmap);
	} else if ((first & 63) == 0) {
		memcpy(bitmap, &d->populated[first >> 6],
		    (npages + 63) / 64 * sizeof(uint64_t));
		if ((npages & 63) != 0)
			bitmap[npages >> 6] &= (1ull << (npages & 63)) - 1;
	} else {
		for (i = 0; i < npages; i++)
			if (bit_isset(d->populated, first + i))
				bitmap[i >> 6] |= 1ull << (i & 63);
	}
	pthread_mutex_unlock(&d->mtx);
	return (error);
}

int
tb_dirty_disarm(struct tb_dirty *d)
{

	pthread_mutex_lock(&d->mtx);
	d->armed = false;
	pthread_mutex_unlock(&d->mtx);
	return (writeprotect(d, 0));
}

int
tb_dirty_collect(struct tb_dirty *d, uint64_t first, uint64_t npages,
    uint64_t *bitmap)
{
	struct pm_scan_arg arg;
	int error;

	if (first > d->npages || npages > d->npages - first)
		return (EINVAL);
	memset(bitmap, 0, (npages + 63) / 64 * sizeof(uint64_t));
	if (npages == 0)
		return (0);

	pthread_mutex_lock(&d->mtx);
	memset(&arg, 0, sizeof(arg));
	arg.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC;
	arg.category_mask = PAGE_IS_WRITTEN;
	arg.return_mask = PAGE_IS_WRITTEN;
	error = scan_regions(d, &arg, first, npages, bitmap);
	pthread_mutex_unlock(&d->mtx);
	return (error);
}

void
tb_dirty_close(struct tb_dirty *d)
{

	if (d == NULL)
		return;
	close(d->pagemap);
	close(d->uffd);
	pthread_mutex_destroy(&d->mtx);
	free(d->populated);
	free(d->vec);
	free(d);
}

/*
 * Collect pages [0, npages) of d and check that exactly page want
 * (or none if want is npages) is marked.
 */
static int
selftest_expect(struct tb_dirty *d, uint64_t npages, uint64_t want,
    const char *when, char *msg, size_t msglen)
{
	uint64_t bitmap[1], i;
	int error;

	error = tb_dirty_collect(d, 0, npages, bitmap);
	if (error != 0) {
		snprintf(msg, msglen, "PAGEMAP_SCAN %s: %s", when,
		    strerror(error));
		return (error);
	}
	for (i = 0; i < npages; i++) {
		if (bit_isset(bitmap, i) != (i == want)) {
			snprintf(msg, msglen, "%s, page %ju reads as %s",
			    when, (uintmax_t)i,
			    bit_isset(bitmap, i) ? "written" : "clean");
			return (EIO);
		}
	}
	return (0);
}

/* Check that exactly page want held data when d was armed. */
static int
selftest_populated(struct tb_dirty *d, uint64_t npages, uint64_t want,
    char *msg, size_t msglen)
{
	uint64_t bitmap[1], i;
	int error;

	error = tb_dirty_populated(d, 0, npages, bitmap);
	if (error != 0) {
		snprintf(msg, msglen, "PAGEMAP_SCAN for populated pages: %s",
		    strerror(error));
		return (error);
	}
	for (i = 0; i < npages; i++) {
		if (bit_isset(bitmap, i) != (i == want)) {
			snprintf(msg, msglen, "page %ju reads as %s when "
			    "armed", (uintmax_t)i, bit_isset(bitmap, i) ?
			    "populated" : "never populated");
			return (EIO);
		}
	}
	return (0);
}

int
tb_dirty_selftest(char *msg, size_t msglen)
{
	const uint64_t npages = 16, probe = 5;
	struct tb_dirty *d;
	uint8_t *mem;
	size_t len;
	int error;

	if (sysconf(_SC_PAGESIZE) != TB_PAGE_SIZE) {
		snprintf(msg, msglen, "the host page size is %ld, not %u",
		    sysconf(_SC_PAGESIZE), TB_PAGE_SIZE);
		return (ENOTSUP);
	}
	len = npages << TB_PAGE_SHIFT;
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED) {
		error = errno;
		snprintf(msg, msglen, "probe mapping: %s", strerror(error));
		return (error);
	}
	/* Populate one page so that both pte kinds are exercised. */
	mem[2 << TB_PAGE_SHIFT] = 1;
	error = tb_dirty_open(&d, mem, len, msg, msglen);
	if (error != 0)
		goto out_unmap;
	error = tb_dirty_arm(d);
	if (error != 0) {
		snprintf(msg, msglen, "write-protecting the probe: %s",
		    strerror(error));
		goto out;
	}
	error = selftest_expect(d, npages, npages, "right after arming",
	    msg, msglen);
	if (error != 0)
		goto out;
	/* Page 7 maps the shared zero page: read, but holds no data. */
	(void)((volatile uint8_t *)mem)[7 << TB_PAGE_SHIFT];
	error = selftest_populated(d, npages, 2, msg, msglen);
	if (error != 0)
		goto out;
	((volatile uint8_t *)mem)[(probe << TB_PAGE_SHIFT) + 100] = 0x5a;
	error = selftest_expect(d, npages, probe,
	    "after one write to page 5", msg, msglen);
	if (error != 0)
		goto out;
	error = selftest_expect(d, npages, npages,
	    "on a second collect with no write", msg, msglen);
	if (error != 0)
		goto out;
	/* Page 5 was written after arming: the dirty log has it, not this. */
	error = selftest_populated(d, npages, 2, msg, msglen);
	if (error != 0)
		goto out;
	error = tb_dirty_disarm(d);
	if (error != 0)
		snprintf(msg, msglen, "un-protecting the probe: %s",
		    strerror(error));
out:
	tb_dirty_close(d);
out_unmap:
	munmap(mem, len);
	return (error);
}
