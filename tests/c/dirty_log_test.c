/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Test driver for sys/dev/vmm/vmm_dirty_log.c, built for the host by
 * tests/test_vmm_dirty_log.py.  "dirty_log_test NAME" runs one case and
 * exits 0 on success; "dirty_log_test list" prints the case names.
 */

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm_dirty_log.h"

#define	PSHIFT		12
#define	PSIZE		(UINT64_C(1) << PSHIFT)
#define	MAXPAGES	(UINT64_C(1) << 18)	/* 1 GiB of 4 KiB pages */

static int failures;

#define	CHECK(cond) do {						\
	if (!(cond)) {							\
		fprintf(stderr, "%s:%d: check failed: %s\n",		\
		    __FILE__, __LINE__, #cond);				\
		failures++;						\
	}								\
} while (0)

#define	CHECK_EQ(a, b) do {						\
	long long _a = (long long)(a), _b = (long long)(b);		\
	if (_a != _b) {							\
		fprintf(stderr, "%s:%d: %s == %lld, expected %lld\n",	\
		    __FILE__, __LINE__, #a, _a, _b);			\
		failures++;						\
	}								\
} while (0)

static bool
bit(const uint64_t *bm, uint64_t i)
{
	return ((bm[i / 64] >> (i % 64)) & 1);
}

static void
setbit(uint64_t *bm, uint64_t i)
{
	bm[i / 64] |= UINT64_C(1) << (i % 64);
}

static uint64_t
rnd(void)
{
	static uint64_t s = 0x9e3779b97f4a7c15ULL;

	s ^= s << 13;
	s ^= s >> 7;
	s ^= s << 17;
	return (s);
}

static void
test_validation(void)
{
	/* Good requests. */
	CHECK_EQ(vdl_check_request(0, 1, MAXPAGES, PSHIFT), 0);
	CHECK_EQ(vdl_check_request(0x100000000ULL, MAXPAGES, MAXPAGES,
	    PSHIFT), 0);
	/* Misaligned gpa. */
	CHECK_EQ(vdl_check_request(1, 1, MAXPAGES, PSHIFT), EINVAL);
	CHECK_EQ(vdl_check_request(PSIZE + 0x800, 4, MAXPAGES, PSHIFT),
	    EINVAL);
	/* Zero pages. */
	CHECK_EQ(vdl_check_request(0, 0, MAXPAGES, PSHIFT), EINVAL);
	/* Over the per-call cap (bitmap of at most 32 KiB). */
	CHECK_EQ(vdl_check_request(0, MAXPAGES + 1, MAXPAGES, PSHIFT), ERANGE);
	CHECK_EQ(vdl_check_request(0, UINT64_MAX, MAXPAGES, PSHIFT), ERANGE);
	/* Wrap-around of the guest-physical range. */
	CHECK_EQ(vdl_check_request(UINT64_MAX & ~(PSIZE - 1), 1, MAXPAGES,
	    PSHIFT), EOVERFLOW);
	CHECK_EQ(vdl_check_request(UINT64_MAX & ~(PSIZE - 1), 2, MAXPAGES,
	    PSHIFT), EOVERFLOW);
	CHECK_EQ(vdl_check_request(0, UINT64_MAX >> 4, UINT64_MAX, PSHIFT),
	    EOVERFLOW);
	CHECK_EQ(vdl_check_request((UINT64_MAX - 3 * PSIZE + 1), 2,
	    MAXPAGES, PSHIFT), 0);
	/* Nonsense page shift. */
	CHECK_EQ(vdl_check_request(0, 1, MAXPAGES, 0), EINVAL);
}

static void
test_lookup(void)
{
	/* Segment 0 split around a hole: low at 0, high at 4 GiB. */
	const struct vdl_map maps[] = {
		{ .gpa = 0x100000000ULL, .len = 0x40000000ULL,
		    .segoff = 0xc0000000ULL, .segid = 0 },
		{ .gpa = 0, .len = 0xc0000000ULL, .segoff = 0, .segid = 0 },
		{ .gpa = 0xfff00000ULL, .len = 0x100000ULL, .segoff = 0,
		    .segid = 4 },
		{ .gpa = 0x200000000ULL, .len = 0, .segoff = 0, .segid = 1 },
	};
	struct vdl_loc loc;

	CHECK_EQ(vdl_lookup(maps, 4, 0, 16, PSHIFT, &loc), 0);
	CHECK_EQ(loc.segid, 0);
	CHECK_EQ(loc.first, 0);
	CHECK_EQ(vdl_lookup(maps, 4, 0x100000000ULL + 8 * PSIZE, 8, PSHIFT,
	    &loc), 0);
	CHECK_EQ(loc.segid, 0);
	CHECK_EQ(loc.first, (0xc0000000ULL >> PSHIFT) + 8);
	CHECK_EQ(vdl_lookup(maps, 4, 0xfff00000ULL, 256, PSHIFT, &loc), 0);
	CHECK_EQ(loc.segid, 4);
	CHECK_EQ(loc.first, 0);
	/* Last page of a mapping, exactly. */
	CHECK_EQ(vdl_lookup(maps, 4, 0xc0000000ULL - PSIZE, 1, PSHIFT, &loc),
	    0);
	CHECK_EQ(loc.first, (0xc0000000ULL >> PSHIFT) - 1);
	/* Out of segment: past the end, in the hole, empty mapping. */
	CHECK_EQ(vdl_lookup(maps, 4, 0xc0000000ULL - PSIZE, 2, PSHIFT, &loc),
	    EFAULT);
	CHECK_EQ(vdl_lookup(maps, 4, 0xd0000000ULL, 1, PSHIFT, &loc), EFAULT);
	CHECK_EQ(vdl_lookup(maps, 4, 0x200000000ULL, 1, PSHIFT, &loc),
	    EFAULT);
	CHECK_EQ(vdl_lookup(maps, 4, 0x140000000ULL, 1, PSHIFT, &loc),
	    EFAULT);
	/* Running from one mapping into the adjacent one is refused too. */
	CHECK_EQ(vdl_lookup(maps, 4, 0xffe00000ULL, 512, PSHIFT, &loc),
	    EFAULT);
	CHECK_EQ(vdl_lookup(maps, 0, 0, 1, PSHIFT, &loc), EFAULT);
}

static void
test_get_and_clear(void)
{
	uint64_t bits[8], out[4], n;
	struct vdl_log log;

	vdl_log_init(&log, bits, 500);
	CHECK_EQ(vdl_log_mark(&log, 0), 0);
	CHECK_EQ(vdl_log_mark(&log, 63), 0);
	CHECK_EQ(vdl_log_mark(&log, 64), 0);
	CHECK_EQ(vdl_log_mark(&log, 499), 0);
	CHECK_EQ(vdl_log_mark(&log, 500), EINVAL);

	/* A get reports the pages and clears them... */
	memset(out, 0xff, sizeof(out));
	CHECK_EQ(vdl_log_fetch_clear(&log, 0, 130, out, &n), 0);
	CHECK_EQ(n, 3);
	CHECK(bit(out, 0) && bit(out, 63) && bit(out, 64));
	CHECK_EQ(vdl_bitmap_count(out, 130), 3);
	/* ...bits past npages are zero in the output... */
	CHECK_EQ(out[2] >> 2, 0);
	/* ...and a second get of the same range reports nothing. */
	CHECK_EQ(vdl_log_fetch_clear(&log, 0, 130, out, &n), 0);
	CHECK_EQ(n, 0);
	/* Pages outside the range were left alone. */
	CHECK_EQ(vdl_log_fetch_clear(&log, 499, 1, out, &n), 0);
	CHECK_EQ(n, 1);
	CHECK_EQ(out[0], 1);
	/* Unaligned first page straddling words. */
	vdl_log_mark(&log, 70);
	vdl_log_mark(&log, 130);
	vdl_log_mark(&log, 131);
	CHECK_EQ(vdl_log_fetch_clear(&log, 69, 62, out, &n), 0);
	CHECK_EQ(n, 2);
	CHECK(bit(out, 1) && bit(out, 61) && !bit(out, 62));
	CHECK_EQ(vdl_log_fetch_clear(&log, 131, 1, out, &n), 0);
	CHECK_EQ(n, 1);
	/* Ranges outside the log. */
	CHECK_EQ(vdl_log_fetch_clear(&log, 0, 501, out, &n), EINVAL);
	CHECK_EQ(vdl_log_fetch_clear(&log, 500, 1, out, &n), EINVAL);
	CHECK_EQ(vdl_log_fetch_clear(&log, UINT64_MAX, 2, out, &n), EINVAL);
	CHECK_EQ(vdl_log_fetch_clear(&log, 0, 0, out, &n), EINVAL);
}

static void
test_merge(void)
{
	uint64_t bits[4], in[2], out[2], n;
	struct vdl_log log;

	vdl_log_init(&log, bits, 200);
	/* A get whose copyout fails merges what it fetched back. */
	vdl_log_mark(&log, 10);
	vdl_log_mark(&log, 75);
	CHECK_EQ(vdl_log_fetch_clear(&log, 0, 100, out, &n), 0);
	CHECK_EQ(n, 2);
	CHECK_EQ(vdl_log_merge(&log, 0, 100, out), 0);
	CHECK_EQ(vdl_log_fetch_clear(&log, 0, 100, in, &n), 0);
	CHECK_EQ(n, 2);
	CHECK(in[0] == out[0] && in[1] == out[1]);
	/* A merge ORs (never clears) and ignores bits past npages. */
	vdl_log_mark(&log, 150);
	in[0] = UINT64_C(1) << 1;
	in[1] = ~UINT64_C(0);		/* only bit 64 (page 164) counts */
	CHECK_EQ(vdl_log_merge(&log, 100, 65, in), 0);
	CHECK_EQ(vdl_log_fetch_clear(&log, 100, 100, out, &n), 0);
	CHECK_EQ(n, 3);
	CHECK(bit(out, 1) && bit(out, 50) && bit(out, 64) && !bit(out, 65));
	/* Unaligned merge (a harvest's range) crossing a word boundary. */
	memset(in, 0, sizeof(in));
	setbit(in, 0);
	setbit(in, 5);
	setbit(in, 6);
	CHECK_EQ(vdl_log_merge(&log, 58, 7, in), 0);
	CHECK(bit(bits, 58) && bit(bits, 63) && bit(bits, 64));
	CHECK_EQ(vdl_log_merge(&log, 190, 11, in), EINVAL);
}

static void
test_sticky(void)
{
	uint64_t bits[2], out[2], n;
	struct vdl_log log;

	vdl_log_init(&log, bits, 128);
	/* Marks accumulate across collections until reported. */
	vdl_log_mark(&log, 3);
	CHECK_EQ(vdl_log_fetch_clear(&log, 64, 64, out, &n), 0);
	CHECK_EQ(n, 0);
	vdl_log_mark(&log, 3);
	vdl_log_mark(&log, 100);
	CHECK_EQ(vdl_log_fetch_clear(&log, 0, 64, out, &n), 0);
	CHECK_EQ(n, 1);
	CHECK_EQ(out[0], UINT64_C(1) << 3);
	CHECK_EQ(vdl_log_fetch_clear(&log, 64, 64, out, &n), 0);
	CHECK_EQ(n, 1);
	CHECK_EQ(out[0], UINT64_C(1) << 36);
	/* A page written again after a collection is reported again. */
	vdl_log_mark(&log, 3);
	CHECK_EQ(vdl_log_fetch_clear(&log, 0, 128, out, &n), 0);
	CHECK_EQ(n, 1);
}

/* Random operations checked against a one-byte-per-page model. */
static void
test_model(void)
{
	enum { NP = 1000 };
	uint64_t bits[VDL_NWORDS(NP)], buf[VDL_NWORDS(NP)], first, n, cnt;
	bool model[NP];
	struct vdl_log log;
	int iter, op;
	uint64_t i;

	vdl_log_init(&log, bits, NP);
	memset(model, 0, sizeof(model));
	for (iter = 0; iter < 20000; iter++) {
		op = (int)(rnd() % 3);
		first = rnd() % NP;
		n = 1 + rnd() % (NP - first);
		if (op == 0) {
			for (i = 0; i < 4; i++) {
				uint64_t p = rnd() % NP;

				vdl_log_mark(&log, p);
				model[p] = true;
			}
		} else if (op == 1) {
			memset(buf, 0, sizeof(buf));
			for (i = 0; i < n; i++) {
				if (rnd() % 7 == 0) {
					setbit(buf, i);
					model[first + i] = true;
				}
			}
			CHECK_EQ(vdl_log_merge(&log, first, n, buf), 0);
		} else {
			memset(buf, 0xa5, sizeof(buf));
			CHECK_EQ(vdl_log_fetch_clear(&log, first, n, buf, &cnt),
			    0);
			for (i = 0; i < VDL_NWORDS(n) * 64; i++) {
				bool want = i < n && model[first + i];

				if (bit(buf, i) != want) {
					fprintf(stderr, "iter %d: page %ju "
					    "(first %ju n %ju) got %d\n", iter,
					    (uintmax_t)(first + i),
					    (uintmax_t)first, (uintmax_t)n,
					    bit(buf, i));
					failures++;
					return;
				}
				if (i < n)
					model[first + i] = false;
			}
			CHECK_EQ(cnt, vdl_bitmap_count(buf, n));
		}
	}
}

/*
 * Markers and a collector race.  Each marker owns the pages p with
 * p % RACE_THREADS == its index and marks one of them again only once the
 * collector has reported its previous mark, so every mark must be reported
 * exactly once: a mark lost between the collector's load and its clearing
 * update would leave the page's counts unequal forever.
 */
#define	RACE_THREADS	4
#define	RACE_PAGES	256
#define	RACE_TARGET	20000		/* marks per marker */
#define	RACE_SPINS	20000000	/* give up after this many tries */

static struct vdl_log race_log;
static uint64_t race_bits[VDL_NWORDS(RACE_PAGES)];
static uint64_t race_marked[RACE_PAGES], race_got[RACE_PAGES];

static void *
race_marker(void *arg)
{
	uint64_t p, s;
	int i, made, t;

	t = (int)(intptr_t)arg;
	s = (uint64_t)t * 0x9e3779b97f4a7c15ULL + 1;
	made = 0;
	for (i = 0; made < RACE_TARGET && i < RACE_SPINS; i++) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		p = (s % (RACE_PAGES / RACE_THREADS)) * RACE_THREADS + t;
		if (__atomic_load_n(&race_got[p], __ATOMIC_ACQUIRE) !=
		    race_marked[p]) {
			if (i % 64 == 0)
				sched_yield();	/* let the collector run */
			continue;
		}
		race_marked[p]++;
		made++;
		vdl_log_mark(&race_log, p);
	}
	return (NULL);
}

static void
race_collect(uint64_t first, uint64_t n)
{
	uint64_t buf[VDL_NWORDS(RACE_PAGES)], i;

	vdl_log_fetch_clear(&race_log, first, n, buf, NULL);
	for (i = 0; i < n; i++)
		if (bit(buf, i))
			__atomic_fetch_add(&race_got[first + i], 1,
			    __ATOMIC_RELEASE);
}

static void
test_race(void)
{
	pthread_t thr[RACE_THREADS];
	bool joined[RACE_THREADS];
	uint64_t first, i, marks;
	int t, busy;

	vdl_log_init(&race_log, race_bits, RACE_PAGES);
	for (t = 0; t < RACE_THREADS; t++) {
		joined[t] = false;
		CHECK_EQ(pthread_create(&thr[t], NULL, race_marker,
		    (void *)(intptr_t)t), 0);
	}
	busy = 1;
	while (busy) {
		first = rnd() % RACE_PAGES;
		race_collect(first, 1 + rnd() % (RACE_PAGES - first));
		busy = 0;
		for (t = 0; t < RACE_THREADS; t++) {
			if (!joined[t] && pthread_tryjoin_np(thr[t], NULL) == 0)
				joined[t] = true;
			if (!joined[t])
				busy = 1;
		}
	}
	race_collect(0, RACE_PAGES);
	marks = 0;
	for (i = 0; i < RACE_PAGES; i++) {
		marks += race_marked[i];
		if (race_got[i] != race_marked[i]) {
			fprintf(stderr, "page %ju marked %ju reported %ju\n",
			    (uintmax_t)i, (uintmax_t)race_marked[i],
			    (uintmax_t)race_got[i]);
			failures++;
			return;
		}
	}
	/* Pages went round many times: the race was really run. */
	CHECK(marks >= 8 * RACE_PAGES);
}

/*
 * The harvest's fallback for a dirty superpage it could not split (failed
 * demotion, 1 GiB leaf) reports the whole superpage: every page of it that
 * lies in the window must be recorded, nothing outside.
 */
static void
test_superpage_report(void)
{
	uint64_t bm[VDL_NWORDS(1024)];
	struct vdl_harvest h;
	uint64_t i, n;

	memset(bm, 0, sizeof(bm));
	/* A 4 MiB window starting 1 MiB into a 2 MiB superpage. */
	h.sva = 0x40100000;
	h.eva = h.sva + 1024 * PSIZE;
	h.pageshift = PSHIFT;
	h.bitmap = bm;
	/* The failed demotion of the superpage at 0x40000000. */
	n = vdl_harvest_report(&h, 0x40000000, 512 * PSIZE);
	CHECK_EQ(n, 256);
	for (i = 0; i < 1024; i++)
		CHECK_EQ(bit(bm, i), i < 256);
	/* A 4 KiB leaf in the middle, and one just outside. */
	CHECK_EQ(vdl_harvest_report(&h, h.sva + 700 * PSIZE, PSIZE), 1);
	CHECK_EQ(vdl_harvest_report(&h, h.eva, PSIZE), 0);
	CHECK(bit(bm, 700));
	CHECK_EQ(vdl_bitmap_count(bm, 1024), 257);
	/* A 1 GiB leaf covering the whole window. */
	memset(bm, 0, sizeof(bm));
	CHECK_EQ(vdl_harvest_report(&h, 0x40000000, UINT64_C(1) << 30), 1024);
	CHECK_EQ(vdl_bitmap_count(bm, 1024), 1024);
	/* A range that wraps the address space ends at the window's end. */
	memset(bm, 0, sizeof(bm));
	CHECK_EQ(vdl_harvest_report(&h, h.eva - PSIZE, UINT64_MAX), 1);
	CHECK(bit(bm, 1023));
}

/* Only the starting file, from the starting address space, may use it. */
static void
test_owner(void)
{
	static int file_a, file_b, vms_a, vms_b;
	struct vdl_owner o;

	o.file = &file_a;
	o.vmspace = &vms_a;
	CHECK_EQ(vdl_owner_check(&o, &file_a, &vms_a), 0);
	/* Another descriptor of the same VM (another bhyvectl, a restart). */
	CHECK_EQ(vdl_owner_check(&o, &file_b, &vms_a), EPERM);
	/* The owner's descriptor used from another process (fork, passing). */
	CHECK_EQ(vdl_owner_check(&o, &file_a, &vms_b), EPERM);
	CHECK_EQ(vdl_owner_check(&o, &file_b, &vms_b), EPERM);
}

/* Owner done and memory gone, in both orders: each step exactly once. */
static void
test_end_order(void)
{
	enum vdl_state st;
	unsigned int a, b;

	st = VDL_TRACKING;
	a = vdl_end(&st, VDL_OWNER_DONE);
	CHECK_EQ(a, VDL_UNPUBLISH | VDL_UNWIRE | VDL_FREE);

	st = VDL_TRACKING;
	a = vdl_end(&st, VDL_MEMORY_GONE);
	CHECK_EQ(a, VDL_UNPUBLISH);		/* no unwire: maps go next */
	CHECK_EQ(st, VDL_DETACHED);
	b = vdl_end(&st, VDL_MEMORY_GONE);
	CHECK_EQ(b, 0);
	b = vdl_end(&st, VDL_OWNER_DONE);
	CHECK_EQ(b, VDL_FREE);			/* no second unpublish */
	CHECK_EQ(a & b, 0);
}

#define	REG_PAGES	4096
#define	REG_ROUNDS	20000

struct reg_ctx {
	struct vdl_registry reg;
	struct vdl_seg	segb;
	int		obj_a, obj_b;
	volatile int	stop;
	uint64_t	marked;
};

/* VM A starts and stops tracking over and over. */
static void *
reg_cycler(void *arg)
{
	static uint64_t bits[VDL_NWORDS(REG_PAGES)];
	struct reg_ctx *c = arg;
	struct vdl_seg *sega;
	int r;

	for (r = 0; r < REG_ROUNDS; r++) {
		/* Never freed: no grace period here, and no reuse. */
		sega = calloc(1, sizeof(*sega));
		if (sega == NULL)
			abort();
		sega->object = &c->obj_a;
		vdl_log_init(&sega->log, bits, REG_PAGES);
		vdl_registry_publish(&c->reg, sega);
		sched_yield();
		CHECK_EQ(vdl_registry_unpublish(&c->reg, sega), 0);
	}
	c->stop = 1;
	return (NULL);
}

/* Kernel writes to VM B's pages, marked while B is tracked throughout. */
static void *
reg_marker(void *arg)
{
	struct reg_ctx *c = arg;
	uint64_t p;

	for (p = 0; !c->stop || p < 4 * REG_PAGES; p++) {
		if (vdl_registry_mark(&c->reg, &c->obj_b, p % REG_PAGES) != 1)
			return ((void *)1);
		c->marked++;
	}
	return (NULL);
}

/*
 * The registry's fast path must never hide a tracked VM because another
 * VM stopped (the race of a "logging on" flag set by attach and cleared by
 * detach): B stays published while A comes and goes, and every mark of a
 * B page must land in B's log.
 */
static void
test_registry_race(void)
{
	static uint64_t bits_b[VDL_NWORDS(REG_PAGES)];
	struct reg_ctx c;
	pthread_t cyc, mk;
	void *lost;

	memset(&c, 0, sizeof(c));
	c.segb.object = &c.obj_b;
	vdl_log_init(&c.segb.log, bits_b, REG_PAGES);
	vdl_registry_publish(&c.reg, &c.segb);
	if (pthread_create(&mk, NULL, reg_marker, &c) != 0 ||
	    pthread_create(&cyc, NULL, reg_cycler, &c) != 0)
		abort();
	pthread_join(cyc, NULL);
	pthread_join(mk, &lost);
	CHECK(lost == NULL);
	CHECK(c.marked >= 4 * REG_PAGES);
	CHECK_EQ(vdl_bitmap_count(bits_b, REG_PAGES), REG_PAGES);
	CHECK_EQ(c.reg.nsegs, 1);
	CHECK_EQ(vdl_registry_unpublish(&c.reg, &c.segb), 0);
	CHECK_EQ(vdl_registry_unpublish(&c.reg, &c.segb), ENOENT);
	CHECK_EQ(vdl_registry_mark(&c.reg, &c.obj_b, 0), 0);
}

static const struct {
	const char *name;
	void (*fn)(void);
} cases[] = {
	{ "validation", test_validation },
	{ "lookup", test_lookup },
	{ "get_and_clear", test_get_and_clear },
	{ "merge", test_merge },
	{ "sticky", test_sticky },
	{ "model", test_model },
	{ "race", test_race },
	{ "superpage_report", test_superpage_report },
	{ "owner", test_owner },
	{ "end_order", test_end_order },
	{ "registry_race", test_registry_race },
};

int
main(int argc, char **argv)
{
	size_t i;

	if (argc != 2) {
		fprintf(stderr, "usage: dirty_log_test list | NAME\n");
		return (2);
	}
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (strcmp(argv[1], "list") == 0)
			printf("%s\n", cases[i].name);
		else if (strcmp(argv[1], cases[i].name) == 0) {
			cases[i].fn();
			if (failures != 0)
				return (1);
			printf("ok %s\n", cases[i].name);
			return (0);
		}
	}
	if (strcmp(argv[1], "list") == 0)
		return (0);
	fprintf(stderr, "no case %s\n", argv[1]);
	return (2);
}
