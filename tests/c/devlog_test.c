/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * migration_devlog.c: marks by host address and I/O vector, unaligned
 * collections, bounds, and markers racing a collector (no mark lost).
 */

#include <sys/uio.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migration_backend.h"
#include "migration_devlog.h"

#define	PG		4096u
#define	NPAGES		1000u		/* not a multiple of 64 */
#define	WORDS		((NPAGES + 63) / 64)
#define	MARKERS		2
#define	MARKS		200000

static int passed, failed;

static void
check(int ok, const char *what)
{

	printf("%s %s\n", ok ? "ok  " : "FAIL", what);
	if (ok)
		passed++;
	else
		failed++;
}

static int
bit(const uint64_t *bm, uint64_t i)
{

	return ((bm[i / 64] >> (i % 64)) & 1);
}

static struct mig_devlog *
make_log(void)
{
	struct mig_memseg segs[2];
	struct mig_devlog *l;

	/* Segment lengths in pages; the host ranges only need to differ. */
	segs[0].gpa = 0;
	segs[0].len = (uint64_t)NPAGES * PG;
	segs[0].host = (uint8_t *)0x100000000ull;
	segs[1].gpa = 1ull << 32;
	segs[1].len = (uint64_t)NPAGES * PG;
	segs[1].host = (uint8_t *)0x200000000ull;
	if (mig_devlog_create(&l, segs, 2, PG) != 0)
		abort();
	return (l);
}

static void
test_marks(void)
{
	struct mig_devlog *l = make_log();
	uint8_t *h1 = (uint8_t *)0x200000000ull;
	uint64_t bm[WORDS];
	struct iovec iov[2];

	mig_devlog_mark(l, h1 + 5 * PG, 1);
	memset(bm, 0, sizeof(bm));
	(void)mig_devlog_collect(l, 1, 0, NPAGES, bm);
	check(bm[0] == 0, "no marks before arming");

	mig_devlog_arm(l);
	mig_devlog_mark(l, h1 + 5 * PG + 100, 2 * PG);	/* pages 5..7 */
	mig_devlog_mark(l, (uint8_t *)0x300000000ull, PG);	/* not guest */
	memset(bm, 0, sizeof(bm));
	(void)mig_devlog_collect(l, 1, 0, NPAGES, bm);
	check(bit(bm, 4) == 0 && bit(bm, 5) && bit(bm, 6) && bit(bm, 7) &&
	    bit(bm, 8) == 0, "a range marks the pages it touches");
	memset(bm, 0, sizeof(bm));
	(void)mig_devlog_collect(l, 0, 0, NPAGES, bm);
	check(bm[0] == 0, "other segments and addresses stay clear");
	memset(bm, 0, sizeof(bm));
	(void)mig_devlog_collect(l, 1, 0, NPAGES, bm);
	check(bm[0] == 0, "a collection clears what it took");

	iov[0].iov_base = h1 + 10 * PG;
	iov[0].iov_len = PG;
	iov[1].iov_base = h1 + 20 * PG;
	iov[1].iov_len = 3 * PG;
	mig_devlog_mark_iov(l, iov, 2, PG + PG / 2);	/* 10 and 20 */
	memset(bm, 0, sizeof(bm));
	(void)mig_devlog_collect(l, 1, 0, NPAGES, bm);
	check(bit(bm, 10) && bit(bm, 20) && !bit(bm, 21),
	    "an I/O vector marks what it received");

	mig_devlog_mark(l, h1 + 70 * PG, PG);
	mig_devlog_mark(l, h1 + 130 * PG, PG);
	mig_devlog_mark(l, h1 + 200 * PG, PG);
	memset(bm, 0, sizeof(bm));
	(void)mig_devlog_collect(l, 1, 67, 100, bm);	/* pages 67..166 */
	check(bit(bm, 3) && bit(bm, 63) && !bit(bm, 0),
	    "an unaligned collection returns bits from its first page");
	memset(bm, 0, sizeof(bm));
	(void)mig_devlog_collect(l, 1, 0, NPAGES, bm);
	check(bit(bm, 200) && !bit(bm, 70) && !bit(bm, 130),
	    "an unaligned collection leaves pages outside it");

	memset(bm, 0, sizeof(bm));
	check(mig_devlog_collect(l, 2, 0, 1, bm) == EINVAL &&
	    mig_devlog_collect(l, 1, NPAGES - 1, 2, bm) == EINVAL &&
	    mig_devlog_collect(l, 1, NPAGES + 1, 0, bm) == EINVAL,
	    "collections outside the guest refused");

	mig_devlog_disarm(l);
	mig_devlog_mark(l, h1, PG);
	memset(bm, 0, sizeof(bm));
	(void)mig_devlog_collect(l, 1, 0, NPAGES, bm);
	check(bm[0] == 0, "no marks after disarming");
	mig_devlog_destroy(l);
}

struct marker {
	struct mig_devlog *l;
	unsigned	seed;
	uint64_t	marked[WORDS];
};

static void *
marker_main(void *arg)
{
	struct marker *m = arg;
	uint8_t *h0 = (uint8_t *)0x100000000ull;
	uint64_t p;
	int i;

	for (i = 0; i < MARKS; i++) {
		p = (uint64_t)rand_r(&m->seed) % NPAGES;
		mig_devlog_mark(m->l, h0 + p * PG, 1);
		m->marked[p / 64] |= 1ull << (p % 64);
	}
	return (NULL);
}

/* Collect pages [first, first + n) of segment 0 into got (by page). */
static void
collect_into(struct mig_devlog *l, uint64_t first, uint64_t n,
    uint64_t *got)
{
	uint64_t bm[WORDS], p;

	memset(bm, 0, sizeof(bm));
	(void)mig_devlog_collect(l, 0, first, n, bm);
	for (p = 0; p < n; p++)
		if (bit(bm, p))
			got[(first + p) / 64] |= 1ull << ((first + p) % 64);
}

static void
test_race(void)
{
	struct marker m[MARKERS];
	pthread_t t[MARKERS];
	uint64_t got[WORDS], bm[WORDS], want;
	struct mig_devlog *l = make_log();
	int i, w, ok;

	mig_devlog_arm(l);
	memset(got, 0, sizeof(got));
	for (i = 0; i < MARKERS; i++) {
		memset(&m[i], 0, sizeof(m[i]));
		m[i].l = l;
		m[i].seed = (unsigned)i + 1;
		pthread_create(&t[i], NULL, marker_main, &m[i]);
	}
	/* Collect in odd-sized pieces while the markers run. */
	for (i = 0; i < 2000; i++) {
		collect_into(l, 0, 333, got);
		collect_into(l, 333, NPAGES - 333, got);
	}
	for (i = 0; i < MARKERS; i++)
		pthread_join(t[i], NULL);
	memset(bm, 0, sizeof(bm));
	(void)mig_devlog_collect(l, 0, 0, NPAGES, bm);
	ok = 1;
	for (w = 0; w < (int)WORDS; w++) {
		want = 0;
		for (i = 0; i < MARKERS; i++)
			want |= m[i].marked[w];
		if ((got[w] | bm[w]) != want)
			ok = 0;
	}
	check(ok, "markers racing a collector: no mark lost");
	mig_devlog_destroy(l);
}

int
main(void)
{

	test_marks();
	test_race();
	printf("%d passed, %d failed\n", passed, failed);
	return (failed == 0 ? 0 : 1);
}
