/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Codec and channel tests for the migration engine: every message type
 * round-trips, and every malformed kind is refused with a reason.  The
 * channel cases run real frames through a socketpair.  Prints one line
 * per case and a closing "N passed, M failed".
 */

#include <sys/socket.h>
#include <sys/stat.h>

#include <stdbool.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migration_backend.h"
#include "migration_chan.h"
#include "migration_disk.h"
#include "migration_owed.h"
#include "migration_policy.h"
#include "migration_streams.h"
#include "migration_wire.h"
#include "test_check.h"

static void
test_hdr(void)
{
	struct mig_hdr h, out;
	uint8_t buf[MIG_HDR_LEN];
	char why[MIG_ERRMSG_MAX];

	h.type = MIG_MSG_PAGES;
	h.flags = 0;
	h.len = 1234;
	mig_hdr_encode(buf, &h);
	check(buf[0] == MIG_MSG_PAGES && buf[1] == 0 && buf[4] == 0xd2 &&
	    buf[5] == 0x04, "header is little-endian", NULL);
	check(mig_hdr_decode(buf, &out, why, sizeof(why)) == 0 &&
	    out.type == h.type && out.len == h.len, "header round trip", NULL);

	h.len = MIG_PAYLOAD_MAX + 1;
	mig_hdr_encode(buf, &h);
	check(mig_hdr_decode(buf, &out, why, sizeof(why)) == EMSGSIZE &&
	    strstr(why, "limit") != NULL, "oversized length refused", why);
	h.len = 0;
	h.type = 999;
	mig_hdr_encode(buf, &h);
	check(mig_hdr_decode(buf, &out, why, sizeof(why)) == EPROTO &&
	    strstr(why, "unknown message type") != NULL,
	    "unknown type refused", why);
	h.type = MIG_MSG_GO;
	h.flags = 4;
	mig_hdr_encode(buf, &h);
	check(mig_hdr_decode(buf, &out, why, sizeof(why)) == EPROTO,
	    "unknown flags refused", why);
}

static void
test_hello(void)
{
	struct mig_hello h, out;
	uint8_t buf[MIG_HELLO_LEN + 4];
	char why[MIG_ERRMSG_MAX];
	size_t n;

	memset(&h, 0, sizeof(h));
	h.role = MIG_ROLE_DEST;
	h.version_min = 1;
	h.version_max = 3;
	h.caps = MIG_CAPS_SUPPORTED | MIG_CAP_WANT_ENCRYPT;
	memset(h.nonce, 0xa5, sizeof(h.nonce));
	n = mig_hello_encode(buf, sizeof(buf), &h);
	check(n == MIG_HELLO_LEN && mig_hello_decode(buf, n, &out, why,
	    sizeof(why)) == 0 && out.role == h.role && out.version_max == 3 &&
	    out.caps == h.caps && memcmp(out.nonce, h.nonce,
	    sizeof(h.nonce)) == 0, "HELLO round trip", NULL);
	check(mig_hello_decode(buf, n - 1, &out, why, sizeof(why)) == EPROTO &&
	    strstr(why, "truncated") != NULL, "truncated HELLO refused", why);
	check(mig_hello_decode(buf, n + 1, &out, why, sizeof(why)) == EPROTO &&
	    strstr(why, "trailing") != NULL, "HELLO with trailing bytes "
	    "refused", why);
	buf[0] = 'X';
	check(mig_hello_decode(buf, n, &out, why, sizeof(why)) == EPROTO &&
	    strstr(why, "not a bhyve migration") != NULL, "bad magic refused",
	    why);
	h.version_min = 4;
	h.version_max = 2;
	n = mig_hello_encode(buf, sizeof(buf), &h);
	check(mig_hello_decode(buf, n, &out, why, sizeof(why)) == EPROTO &&
	    strstr(why, "version range") != NULL, "bad version range refused",
	    why);
	check(mig_hello_encode(buf, MIG_HELLO_LEN - 1, &h) == 0,
	    "HELLO encoder refuses a short buffer", NULL);
}

static void
fill_vminfo(struct mig_vminfo *vi)
{
	memset(vi, 0, sizeof(*vi));
	vi->ncpus = 2;
	vi->page_size = MIG_PAGE_SIZE;
	vi->nsegs = 2;
	vi->segs[0].gpa = 0;
	vi->segs[0].len = 256u << 20;
	vi->segs[1].gpa = 4ull << 30;
	vi->segs[1].len = 64u << 20;
	vi->nsections = 3;
	strcpy(vi->sections[0].name, "cpu0");
	vi->sections[0].version = 1;
	strcpy(vi->sections[1].name, "cpu1");
	vi->sections[1].version = 1;
	strcpy(vi->sections[2].name, "tb-counter");
	vi->sections[2].version = 2;
	strcpy(vi->cpu_features, "sse4.2 avx2");
}

static void
test_vminfo(void)
{
	struct mig_vminfo vi, out, other;
	uint8_t buf[8192];
	char why[MIG_ERRMSG_MAX];
	size_t n;

	fill_vminfo(&vi);
	n = mig_vminfo_encode(buf, sizeof(buf), &vi);
	check(n > 0 && mig_vminfo_decode(buf, n, &out, why, sizeof(why)) == 0 &&
	    mig_vminfo_compare(&vi, &out, why, sizeof(why)) == 0,
	    "VMINFO round trip", NULL);
	check(mig_vminfo_decode(buf, n - 3, &out, why, sizeof(why)) != 0,
	    "truncated VMINFO refused", why);
	/* nsegs lives at offset 8. */
	mig_le32enc(buf + 8, MIG_MAX_SEGS + 1);
	check(mig_vminfo_decode(buf, n, &out, why, sizeof(why)) == EPROTO &&
	    strstr(why, "memory segments") != NULL, "too many segments refused",
	    why);
	mig_le32enc(buf + 8, 2);
	/* Segment 0's length at offset 20: not page aligned. */
	mig_le64enc(buf + 20, 4097);
	check(mig_vminfo_decode(buf, n, &out, why, sizeof(why)) == EPROTO &&
	    strstr(why, "page-aligned") != NULL, "unaligned segment refused",
	    why);

	other = vi;
	other.ncpus = 4;
	check(mig_vminfo_compare(&vi, &other, why, sizeof(why)) == EINVAL &&
	    strstr(why, "vCPUs") != NULL, "vCPU count mismatch named", why);
	other = vi;
	other.segs[1].len = 128u << 20;
	check(mig_vminfo_compare(&vi, &other, why, sizeof(why)) == EINVAL &&
	    strstr(why, "segment 1") != NULL, "memory layout mismatch named",
	    why);
	other = vi;
	other.sections[2].version = 3;
	check(mig_vminfo_compare(&vi, &other, why, sizeof(why)) == EINVAL &&
	    strstr(why, "tb-counter") != NULL, "device version mismatch named",
	    why);
	other = vi;
	strcpy(other.sections[1].name, "virtio-net");
	check(mig_vminfo_compare(&vi, &other, why, sizeof(why)) == EINVAL &&
	    strstr(why, "virtio-net") != NULL, "device list mismatch named",
	    why);
	other = vi;
	strcpy(other.cpu_features, "sse4.2");
	check(mig_vminfo_compare(&vi, &other, why, sizeof(why)) == EINVAL &&
	    strstr(why, "CPU features") != NULL, "CPU feature mismatch named",
	    why);
}

static void
test_small_messages(void)
{
	struct mig_round_begin rb, rbo;
	struct mig_round_end re, reo;
	struct mig_state_hdr sh, sho;
	struct mig_ready rd, rdo;
	struct mig_hold hd, hdo;
	struct mig_errmsg em, emo;
	uint8_t buf[512];
	char why[MIG_ERRMSG_MAX];
	size_t n;

	rb.index = 3;
	rb.final = 1;
	rb.pages = 77;
	n = mig_round_begin_encode(buf, sizeof(buf), &rb);
	check(n == MIG_ROUND_BEGIN_LEN && mig_round_begin_decode(buf, n, &rbo,
	    why, sizeof(why)) == 0 && rbo.index == 3 && rbo.final == 1 &&
	    rbo.pages == 77, "ROUND_BEGIN round trip", NULL);
	buf[4] = 2;
	check(mig_round_begin_decode(buf, n, &rbo, why, sizeof(why)) == EPROTO,
	    "ROUND_BEGIN with a bad final flag refused", why);
	check(mig_round_begin_decode(buf, n - 1, &rbo, why, sizeof(why)) ==
	    EPROTO && strstr(why, "truncated") != NULL,
	    "truncated ROUND_BEGIN refused", why);

	re.index = 9;
	re.pages = 1ull << 40;
	n = mig_round_end_encode(buf, sizeof(buf), &re);
	check(n == MIG_ROUND_END_LEN && mig_round_end_decode(buf, n, &reo, why,
	    sizeof(why)) == 0 && reo.pages == re.pages, "ROUND_END round trip",
	    NULL);

	rd.pages = 5;
	rd.nsections = 7;
	n = mig_ready_encode(buf, sizeof(buf), &rd);
	check(n == MIG_READY_LEN && mig_ready_decode(buf, n, &rdo, why,
	    sizeof(why)) == 0 && rdo.nsections == 7, "READY round trip", NULL);

	hd.hold_ms = 65000;
	n = mig_hold_encode(buf, sizeof(buf), &hd);
	check(n == MIG_HOLD_LEN && mig_hold_decode(buf, n, &hdo, why,
	    sizeof(why)) == 0 && hdo.hold_ms == 65000, "HOLD round trip", NULL);
	check(mig_hold_decode(buf, n - 1, &hdo, why, sizeof(why)) == EPROTO &&
	    strstr(why, "truncated") != NULL, "truncated HOLD refused", why);
	hd.hold_ms = 0;
	(void)mig_hold_encode(buf, sizeof(buf), &hd);
	check(mig_hold_decode(buf, n, &hdo, why, sizeof(why)) == EPROTO,
	    "HOLD of no time refused", why);
	hd.hold_ms = MIG_MAX_HOLD_MS + 1;
	(void)mig_hold_encode(buf, sizeof(buf), &hd);
	check(mig_hold_decode(buf, n, &hdo, why, sizeof(why)) == EPROTO &&
	    strstr(why, "not 1 to") != NULL, "HOLD past an hour refused", why);

	sh.section = 2;
	sh.total = 100;
	sh.offset = 40;
	n = mig_state_hdr_encode(buf, sizeof(buf), &sh);
	check(n == MIG_STATE_HDR_LEN && mig_state_hdr_decode(buf, n + 60, &sho,
	    why, sizeof(why)) == 0 && sho.offset == 40 && sho.total == 100,
	    "STATE header round trip", NULL);
	check(mig_state_hdr_decode(buf, n + 61, &sho, why, sizeof(why)) ==
	    EPROTO && strstr(why, "overruns") != NULL,
	    "STATE chunk overrunning its section refused", why);
	sh.total = (uint64_t)MIG_SECTION_MAX + 1;
	n = mig_state_hdr_encode(buf, sizeof(buf), &sh);
	check(mig_state_hdr_decode(buf, n, &sho, why, sizeof(why)) == EMSGSIZE,
	    "oversized STATE section refused", why);

	memset(&em, 0, sizeof(em));
	em.phase = MIG_PHASE_PRECOPY;
	em.side = MIG_SIDE_DEST;
	em.code = ENOSPC;
	strcpy(em.msg, "disk full\x07");
	n = mig_error_encode(buf, sizeof(buf), &em);
	check(n > 0 && mig_error_decode(buf, n, &emo, why, sizeof(why)) == 0 &&
	    emo.code == ENOSPC && strcmp(emo.msg, "disk full?") == 0,
	    "ERROR round trip, control characters neutralised", emo.msg);
	mig_le16enc(buf, MIG_PHASE_COUNT);
	check(mig_error_decode(buf, n, &emo, why, sizeof(why)) == EPROTO,
	    "ERROR with an unknown phase refused", why);
}

static void
test_pages(void)
{
	struct mig_pages_hdr ph, pho;
	uint64_t idx[3];
	uint8_t buf[16];
	char why[MIG_ERRMSG_MAX];
	uint32_t ndata, len;

	ph.seg = 1;
	ph.count = 3;
	len = MIG_PAGES_HDR_LEN + 3 * 8 + 2 * MIG_PAGE_SIZE;
	(void)mig_pages_hdr_encode(buf, sizeof(buf), &ph);
	check(mig_pages_hdr_decode(buf, MIG_PAGES_HDR_LEN, len, &pho, why,
	    sizeof(why)) == 0 && pho.seg == 1 && pho.count == 3,
	    "PAGES header round trip", NULL);
	ph.count = MIG_PAGES_PER_MSG + 1;
	(void)mig_pages_hdr_encode(buf, sizeof(buf), &ph);
	check(mig_pages_hdr_decode(buf, MIG_PAGES_HDR_LEN, MIG_PAYLOAD_MAX,
	    &pho, why, sizeof(why)) == EPROTO, "too many pages refused", why);
	ph.count = 0;
	(void)mig_pages_hdr_encode(buf, sizeof(buf), &ph);
	check(mig_pages_hdr_decode(buf, MIG_PAGES_HDR_LEN, 8, &pho, why,
	    sizeof(why)) == EPROTO, "empty PAGES refused", why);

	idx[0] = 5;
	idx[1] = 6 | MIG_PAGE_ZERO;
	idx[2] = 99;
	check(mig_pages_index_check(idx, 3, 100, len, &ndata, why,
	    sizeof(why)) == 0 && ndata == 2, "PAGES index list accepted", NULL);
	idx[2] = 100;
	check(mig_pages_index_check(idx, 3, 100, len, &ndata, why,
	    sizeof(why)) == EPROTO && strstr(why, "beyond") != NULL,
	    "bad page index refused", why);
	idx[2] = 99 | MIG_PAGE_ZERO;
	check(mig_pages_index_check(idx, 3, 100, len, &ndata, why,
	    sizeof(why)) == EPROTO && strstr(why, "need") != NULL,
	    "PAGES length not matching zero flags refused", why);
}

/* Encode z, then decode it against two segments of 100 and 10 pages. */
static int
zero_ranges_roundtrip(const struct mig_zero_ranges *z, size_t trim,
    struct mig_zero_ranges *out, char *why, size_t whylen)
{
	static struct mig_vminfo vi;
	uint8_t buf[MIG_ZERO_RANGES_HDR_LEN +
	    MIG_ZERO_RANGES_MAX * MIG_ZERO_RANGE_LEN];
	size_t len;

	vi.nsegs = 2;
	vi.segs[0].len = 100 * MIG_PAGE_SIZE;
	vi.segs[1].len = 10 * MIG_PAGE_SIZE;
	len = mig_zero_ranges_encode(buf, sizeof(buf), z);
	if (len == 0)
		return (-1);
	return (mig_zero_ranges_decode(buf, len - trim, &vi, out, why,
	    whylen));
}

static void
test_zero_ranges(void)
{
	static struct mig_zero_ranges z, out;
	char why[MIG_ERRMSG_MAX];

	z.seg = 0;
	z.count = 2;
	z.r[0].first = 0;
	z.r[0].npages = 10;
	z.r[1].first = 50;
	z.r[1].npages = 50;
	check(zero_ranges_roundtrip(&z, 0, &out, why, sizeof(why)) == 0 &&
	    out.seg == 0 && out.count == 2 && out.r[1].first == 50 &&
	    out.r[1].npages == 50, "ZERO_RANGES round trip", why);
	check(zero_ranges_roundtrip(&z, 1, &out, why, sizeof(why)) ==
	    EPROTO && strstr(why, "need") != NULL,
	    "ZERO_RANGES truncated refused", why);
	z.r[1].npages = 51;
	check(zero_ranges_roundtrip(&z, 0, &out, why, sizeof(why)) ==
	    EPROTO && strstr(why, "beyond") != NULL,
	    "ZERO_RANGES past the segment refused", why);
	z.r[1].first = 5;
	z.r[1].npages = 1;
	check(zero_ranges_roundtrip(&z, 0, &out, why, sizeof(why)) ==
	    EPROTO && strstr(why, "out of order") != NULL,
	    "ZERO_RANGES overlapping refused", why);
	z.r[1].first = 20;
	z.r[1].npages = 0;
	check(zero_ranges_roundtrip(&z, 0, &out, why, sizeof(why)) ==
	    EPROTO, "ZERO_RANGES empty range refused", why);
	z.r[1].first = UINT64_MAX;
	z.r[1].npages = 2;
	check(zero_ranges_roundtrip(&z, 0, &out, why, sizeof(why)) ==
	    EPROTO, "ZERO_RANGES wrapping range refused", why);
	z.seg = 2;
	z.count = 1;
	check(zero_ranges_roundtrip(&z, 0, &out, why, sizeof(why)) ==
	    EPROTO && strstr(why, "segment 2") != NULL,
	    "ZERO_RANGES unknown segment refused", why);
	z.seg = 1;
	z.count = 0;
	check(zero_ranges_roundtrip(&z, 0, &out, why, sizeof(why)) ==
	    EPROTO, "ZERO_RANGES without ranges refused", why);
}

/*
 * Owed pages: a failed and a passed frame of one page in one round leave
 * it owed in either order; a later pass clears it; the OWED list sent
 * names exactly the owed runs and OWED_END counts them.
 */
static void
test_owed(void)
{
	static struct mig_zero_ranges z;
	struct mig_session_keys keys;
	struct mig_round_end end;
	struct mig_vminfo vi;
	struct mig_owed o;
	struct mig_chan a, b;
	struct mig_hdr hdr;
	uint64_t failed[] = { 3, 4 | MIG_PAGE_ZERO, 5, 200 };
	uint64_t passed[] = { 4 };
	uint64_t later[] = { 3, 4 };
	void *payload;
	int sv[2], ok;

	memset(&vi, 0, sizeof(vi));
	vi.nsegs = 2;
	vi.segs[0].len = 1000 * MIG_PAGE_SIZE;
	vi.segs[1].len = 64 * MIG_PAGE_SIZE;
	if (mig_owed_init(&o, &vi) != 0) {
		check(0, "owed: bitmaps", "ENOMEM");
		return;
	}
	mig_owed_pass(&o, 0, passed, 1);
	mig_owed_fail(&o, 0, failed, 4);
	mig_owed_pass(&o, 0, passed, 1);
	check(mig_owed_merge(&o) == 4,
	    "owed: a failed frame's pages stay owed past a pass that round",
	    NULL);
	mig_owed_pass(&o, 0, later, 2);
	check(mig_owed_merge(&o) == 2, "owed: a later pass clears the debt",
	    NULL);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
		check(0, "socketpair", strerror(errno));
		mig_owed_free(&o);
		return;
	}
	memset(&keys, 0x33, sizeof(keys));
	(void)mig_chan_init(&a, sv[0], MIG_ROLE_DEST, 0);
	(void)mig_chan_init(&b, sv[1], MIG_ROLE_SOURCE, 0);
	(void)mig_chan_key(&a, &keys, MIG_SUITE_POLY1305_TAG);
	(void)mig_chan_key(&b, &keys, MIG_SUITE_POLY1305_TAG);
	ok = mig_owed_send(&o, &a, 7) == 0 &&
	    mig_chan_recv(&b, &hdr, &payload) == 0 &&
	    hdr.type == MIG_MSG_OWED &&
	    mig_owed_decode(payload, hdr.len, &vi, &z, b.why,
	    sizeof(b.why)) == 0 && z.seg == 0 && z.count == 2 &&
	    z.r[0].first == 5 && z.r[0].npages == 1 &&
	    z.r[1].first == 200 && z.r[1].npages == 1 &&
	    mig_chan_recv(&b, &hdr, &payload) == 0 &&
	    hdr.type == MIG_MSG_OWED_END &&
	    mig_round_end_decode(payload, hdr.len, &end, b.why,
	    sizeof(b.why)) == 0 && end.index == 7 && end.pages == 2;
	check(ok, "owed: OWED names the runs, OWED_END counts them", b.why);
	z.r[1].first = 1000;
	check(mig_owed_decode(payload, mig_zero_ranges_encode(b.rxbuf,
	    MIG_PAYLOAD_MAX, &z), &vi, &z, b.why, sizeof(b.why)) ==
	    EPROTO && strstr(b.why, "OWED") != NULL,
	    "owed: OWED past the segment refused", b.why);
	mig_chan_destroy(&a);
	mig_chan_destroy(&b);
	close(sv[0]);
	close(sv[1]);
	mig_owed_free(&o);
}

/* Two disks: 10 full blocks of 4096 and a 100-byte one; 64 of 512. */
static void
fill_disks(struct mig_vminfo *vi)
{
	vi->ndisks = 2;
	vi->disks[0].block_size = 4096;
	vi->disks[0].size = 10 * 4096 + 100;
	vi->disks[1].block_size = 512;
	vi->disks[1].size = 64 * 512;
}

/* A backend whose disk operations are never called: only present. */
static int
no_disk_start(void *arg, uint32_t disk)
{

	(void)arg;
	(void)disk;
	return (0);
}

static void
no_disk_stop(void *arg, uint32_t disk)
{

	(void)arg;
	(void)disk;
}

static int
no_disk_bits(void *arg, uint32_t disk, uint64_t first, uint64_t n,
    uint64_t *bits)
{

	(void)arg;
	(void)disk;
	(void)first;
	(void)n;
	(void)bits;
	return (0);
}

static int
no_disk_read(void *arg, uint32_t disk, uint64_t first, uint64_t n, void *buf)
{

	(void)arg;
	(void)disk;
	(void)first;
	(void)n;
	(void)buf;
	return (0);
}

/* Disks the source cannot move are refused by name, never left behind. */
static void
test_disk_describe_refusals(void)
{
	struct mig_backend_ops ops;
	struct mig_backend be;
	struct mig_params p;
	struct mig_vminfo vi;
	char why[MIG_ERRMSG_MAX];

	memset(&ops, 0, sizeof(ops));
	ops.disk_start = no_disk_start;
	ops.disk_stop = no_disk_stop;
	ops.disk_collect = no_disk_bits;
	ops.disk_read = no_disk_read;
	memset(&be, 0, sizeof(be));
	be.ops = &ops;
	memset(&p, 0, sizeof(p));
	p.migrate_disks = true;
	memset(&vi, 0, sizeof(vi));
	fill_disks(&vi);
	check(mig_disk_describe(&vi, &be, &p, why, sizeof(why)) == 0 &&
	    vi.disk_flags == MIG_DISKS_MOVE, "two writable disks move", NULL);
	vi.ndisks_beyond = 3;
	check(mig_disk_describe(&vi, &be, &p, why, sizeof(why)) == E2BIG &&
	    strstr(why, "5 disks") != NULL && vi.disk_flags == 0,
	    "disks beyond the described ones refused", why);
	vi.ndisks_beyond = 0;
	vi.disks[1].flags = MIG_DISK_READONLY;
	check(mig_disk_describe(&vi, &be, &p, why, sizeof(why)) == EROFS &&
	    strstr(why, "disk 1 is open read-only") != NULL,
	    "a read-only disk refused", why);
	p.migrate_disks = false;
	check(mig_disk_describe(&vi, &be, &p, why, sizeof(why)) == 0,
	    "shared storage takes a read-only disk", NULL);
}

static void
test_vminfo_disks(void)
{
	struct mig_vminfo vi, out, other;
	uint8_t buf[8192];
	char why[MIG_ERRMSG_MAX];
	size_t n;

	fill_vminfo(&vi);
	fill_disks(&vi);
	vi.disk_flags = MIG_DISKS_MOVE;
	n = mig_vminfo_encode(buf, sizeof(buf), &vi);
	check(n > 0 && mig_vminfo_decode(buf, n, &out, why, sizeof(why)) == 0 &&
	    out.ndisks == 2 && out.disk_flags == MIG_DISKS_MOVE &&
	    out.disks[0].size == 10 * 4096 + 100 &&
	    mig_vminfo_compare(&vi, &out, why, sizeof(why)) == 0,
	    "VMINFO with disks round trip", why);
	check(mig_vminfo_decode(buf, n - 1, &out, why, sizeof(why)) == EPROTO,
	    "VMINFO with a truncated disk list refused", why);
	/* The trailer: u32 flags, u32 ndisks, then 12 bytes a disk. */
	mig_le32enc(buf + n - 2 * 12 - 8, 0x2);
	check(mig_vminfo_decode(buf, n, &out, why, sizeof(why)) == EPROTO &&
	    strstr(why, "disk flags") != NULL, "unknown disk flags refused",
	    why);
	mig_le32enc(buf + n - 2 * 12 - 8, MIG_DISKS_MOVE);
	mig_le32enc(buf + n - 2 * 12 - 4, MIG_MAX_DISKS + 1);
	check(mig_vminfo_decode(buf, n, &out, why, sizeof(why)) == EPROTO &&
	    strstr(why, "disks") != NULL, "too many disks refused", why);
	mig_le32enc(buf + n - 2 * 12 - 4, 2);
	mig_le32enc(buf + n - 12, 1000);	/* disk 1: not a power of two */
	check(mig_vminfo_decode(buf, n, &out, why, sizeof(why)) == EPROTO &&
	    strstr(why, "disk 1") != NULL, "odd disk block size refused", why);
	mig_le32enc(buf + n - 12, 512);
	mig_le64enc(buf + n - 8, 0);
	check(mig_vminfo_decode(buf, n, &out, why, sizeof(why)) == EPROTO,
	    "empty disk refused", why);
	/* Its block count (size + block_size - 1) / block_size would wrap. */
	mig_le64enc(buf + n - 8, UINT64_MAX);
	check(mig_vminfo_decode(buf, n, &out, why, sizeof(why)) == EPROTO &&
	    strstr(why, "disk 1") != NULL, "disk of 2^64 - 1 bytes refused",
	    why);
	vi.ndisks = 0;
	n = mig_vminfo_encode(buf, sizeof(buf), &vi);
	check(mig_vminfo_decode(buf, n, &out, why, sizeof(why)) == EPROTO &&
	    strstr(why, "lists none") != NULL,
	    "moving disks without a disk refused", why);

	fill_disks(&vi);
	other = vi;
	other.disks[0].size -= 100;
	check(mig_vminfo_compare(&vi, &other, why, sizeof(why)) == EINVAL &&
	    strstr(why, "disk 0 differs") != NULL, "disk size mismatch named",
	    why);
	other = vi;
	other.disks[1].block_size = 4096;
	check(mig_vminfo_compare(&vi, &other, why, sizeof(why)) == EINVAL &&
	    strstr(why, "disk 1 differs") != NULL,
	    "disk block size mismatch named", why);
	other = vi;
	other.ndisks = 1;
	check(mig_vminfo_compare(&vi, &other, why, sizeof(why)) == EINVAL &&
	    strstr(why, "2 disks") != NULL, "disk count mismatch named", why);
}

/*
 * Encode b's header and indices, then datalen bytes of data, and decode
 * the whole frame against fill_disks()'s two disks.
 */
static int
disk_blocks_roundtrip(const struct mig_disk_blocks *b, size_t datalen,
    struct mig_disk_blocks *out, char *why, size_t whylen)
{
	static uint8_t buf[MIG_PAYLOAD_MAX];
	static struct mig_vminfo vi;
	size_t len;

	fill_disks(&vi);
	len = mig_disk_blocks_encode(buf, sizeof(buf), b);
	if (len == 0 || len + datalen > sizeof(buf))
		return (-1);
	memset(buf + len, 0xa5, datalen);
	return (mig_disk_blocks_decode(buf, len + datalen, &vi, out, why,
	    whylen));
}

static void
test_disk_blocks(void)
{
	static struct mig_disk_blocks b, out;
	char why[MIG_ERRMSG_MAX];
	uint8_t hdr[4];

	b.disk = 0;
	b.count = 3;
	b.idx[0] = 0;
	b.idx[1] = 1 | MIG_BLOCK_ZERO;
	b.idx[2] = 10;				/* the short last block */
	check(disk_blocks_roundtrip(&b, 4096 + 100, &out, why, sizeof(why)) ==
	    0 && out.count == 3 && out.ndata == 2 &&
	    out.idx[1] == (1 | MIG_BLOCK_ZERO) && out.data[0] == 0xa5,
	    "DISK_BLOCKS round trip", why);
	check(disk_blocks_roundtrip(&b, 4096 + 99, &out, why, sizeof(why)) ==
	    EPROTO && strstr(why, "need") != NULL,
	    "DISK_BLOCKS with short data refused", why);
	check(disk_blocks_roundtrip(&b, 2 * 4096, &out, why, sizeof(why)) ==
	    EPROTO && strstr(why, "need") != NULL,
	    "DISK_BLOCKS with a full-size last block refused", why);
	b.idx[2] = 11;
	check(disk_blocks_roundtrip(&b, 2 * 4096, &out, why, sizeof(why)) ==
	    EPROTO && strstr(why, "beyond") != NULL,
	    "DISK_BLOCKS block past the disk refused", why);
	b.idx[2] = 1;
	check(disk_blocks_roundtrip(&b, 2 * 4096, &out, why, sizeof(why)) ==
	    EPROTO && strstr(why, "not after") != NULL,
	    "DISK_BLOCKS duplicate block refused", why);
	b.idx[2] = 0;
	check(disk_blocks_roundtrip(&b, 2 * 4096, &out, why, sizeof(why)) ==
	    EPROTO && strstr(why, "not after") != NULL,
	    "DISK_BLOCKS block out of order refused", why);
	b.disk = 2;
	check(disk_blocks_roundtrip(&b, 0, &out, why, sizeof(why)) == EPROTO &&
	    strstr(why, "disk 2") != NULL, "DISK_BLOCKS unknown disk refused",
	    why);
	b.disk = 0;
	b.count = 0;
	check(disk_blocks_roundtrip(&b, 0, &out, why, sizeof(why)) == EPROTO,
	    "DISK_BLOCKS without blocks refused", why);
	/* 512-byte blocks: 256 a frame, as many as PAGES' entries. */
	b.disk = 1;
	b.count = MIG_PAGES_PER_MSG + 1;
	check(mig_disk_blocks_per_msg(512) == MIG_PAGES_PER_MSG &&
	    mig_disk_blocks_per_msg(MIG_DISK_BLOCK_MAX) == 1 &&
	    disk_blocks_roundtrip(&b, 0, &out, why, sizeof(why)) == -1,
	    "DISK_BLOCKS entries bounded by the frame", NULL);
	mig_le32enc(hdr, 0);
	check(mig_disk_blocks_decode(hdr, sizeof(hdr), &(struct mig_vminfo){
	    .ndisks = 1, .disks = { { 4096, 4096 } } }, &out, why,
	    sizeof(why)) == EPROTO && strstr(why, "truncated") != NULL,
	    "DISK_BLOCKS truncated header refused", why);
	{
		static uint8_t big[MIG_DISK_BLOCKS_HDR_LEN + 16];
		static struct mig_vminfo vi;

		fill_disks(&vi);
		mig_le32enc(big, 1);
		mig_le32enc(big + 4, 3);	/* 3 indices, room for 2 */
		check(mig_disk_blocks_decode(big, sizeof(big), &vi, &out, why,
		    sizeof(why)) == EPROTO && strstr(why, "too short") != NULL,
		    "DISK_BLOCKS too short for its indices refused", why);
		mig_le32enc(big + 4, MIG_PAGES_PER_MSG + 1);
		check(mig_disk_blocks_decode(big, sizeof(big), &vi, &out, why,
		    sizeof(why)) == EPROTO && strstr(why, "1 to 256") != NULL,
		    "DISK_BLOCKS announcing too many blocks refused", why);
	}
}

static int
disk_zero_roundtrip(const struct mig_disk_zero *z, size_t trim,
    struct mig_disk_zero *out, char *why, size_t whylen)
{
	static struct mig_vminfo vi;
	uint8_t buf[MIG_ZERO_RANGES_HDR_LEN +
	    MIG_ZERO_RANGES_MAX * MIG_ZERO_RANGE_LEN];
	size_t len;

	fill_disks(&vi);
	len = mig_disk_zero_encode(buf, sizeof(buf), z);
	if (len == 0)
		return (-1);
	return (mig_disk_zero_decode(buf, len - trim, &vi, out, why, whylen));
}

static void
test_disk_zero(void)
{
	static struct mig_disk_zero z, out;
	char why[MIG_ERRMSG_MAX];

	z.disk = 1;
	z.count = 2;
	z.r[0].first = 0;
	z.r[0].npages = 8;
	z.r[1].first = 32;
	z.r[1].npages = 32;
	check(disk_zero_roundtrip(&z, 0, &out, why, sizeof(why)) == 0 &&
	    out.disk == 1 && out.count == 2 && out.r[1].npages == 32,
	    "DISK_ZERO round trip", why);
	check(disk_zero_roundtrip(&z, 1, &out, why, sizeof(why)) == EPROTO,
	    "DISK_ZERO truncated refused", why);
	z.r[1].npages = 33;
	check(disk_zero_roundtrip(&z, 0, &out, why, sizeof(why)) == EPROTO &&
	    strstr(why, "beyond") != NULL, "DISK_ZERO past the disk refused",
	    why);
	z.r[1].first = 4;
	z.r[1].npages = 1;
	check(disk_zero_roundtrip(&z, 0, &out, why, sizeof(why)) == EPROTO,
	    "DISK_ZERO overlapping refused", why);
	z.r[1].first = UINT64_MAX;
	z.r[1].npages = 2;
	check(disk_zero_roundtrip(&z, 0, &out, why, sizeof(why)) == EPROTO,
	    "DISK_ZERO wrapping range refused", why);
	z.disk = 2;
	z.count = 1;
	check(disk_zero_roundtrip(&z, 0, &out, why, sizeof(why)) == EPROTO &&
	    strstr(why, "disk 2") != NULL, "DISK_ZERO unknown disk refused",
	    why);
	z.disk = 0;
	z.count = 0;
	check(disk_zero_roundtrip(&z, 0, &out, why, sizeof(why)) == EPROTO,
	    "DISK_ZERO without ranges refused", why);
}

static void
test_streams(void)
{
	struct mig_join j, out;
	uint8_t buf[MIG_JOIN_LEN + 8];
	char why[MIG_ERRMSG_MAX];
	uint32_t n;
	size_t len;

	why[0] = '\0';
	len = mig_streams_encode(buf, sizeof(buf), 4);
	check(len == MIG_STREAMS_LEN && mig_streams_decode(buf, len, &n, why,
	    sizeof(why)) == 0 && n == 4, "STREAMS round trip", why);
	check(mig_streams_decode(buf, len - 1, &n, why, sizeof(why)) ==
	    EPROTO && strstr(why, "truncated") != NULL,
	    "STREAMS truncated refused", why);
	check(mig_streams_decode(buf, len + 1, &n, why, sizeof(why)) ==
	    EPROTO && strstr(why, "trailing") != NULL,
	    "STREAMS with trailing bytes refused", why);
	(void)mig_streams_encode(buf, sizeof(buf), 1);
	check(mig_streams_decode(buf, len, &n, why, sizeof(why)) == EPROTO &&
	    strstr(why, "not 2 to") != NULL, "STREAMS of one stream refused",
	    why);
	(void)mig_streams_encode(buf, sizeof(buf), MIG_STREAMS_MAX + 1);
	check(mig_streams_decode(buf, len, &n, why, sizeof(why)) == EPROTO,
	    "STREAMS above MIG_STREAMS_MAX refused", why);
	check(mig_streams_encode(buf, MIG_STREAMS_LEN - 1, 2) == 0,
	    "STREAMS encoder refuses a short buffer", NULL);

	memset(&j, 0, sizeof(j));
	j.index = 3;
	j.nstreams = 4;
	memset(j.session, 0xa5, sizeof(j.session));
	memset(j.proof, 0x5a, sizeof(j.proof));
	why[0] = '\0';
	len = mig_join_encode(buf, sizeof(buf), &j);
	check(len == MIG_JOIN_LEN && mig_join_decode(buf, len, &out, why,
	    sizeof(why)) == 0 && out.index == 3 && out.nstreams == 4 &&
	    memcmp(out.session, j.session, sizeof(j.session)) == 0 &&
	    memcmp(out.proof, j.proof, sizeof(j.proof)) == 0,
	    "JOIN round trip", why);
	check(mig_join_decode(buf, len - 1, &out, why, sizeof(why)) ==
	    EPROTO && strstr(why, "truncated") != NULL,
	    "JOIN truncated refused", why);
	check(mig_join_decode(buf, len + 8, &out, why, sizeof(why)) ==
	    EPROTO && strstr(why, "trailing") != NULL,
	    "JOIN with trailing bytes refused", why);
	j.index = 0;
	(void)mig_join_encode(buf, sizeof(buf), &j);
	check(mig_join_decode(buf, len, &out, why, sizeof(why)) == EPROTO &&
	    strstr(why, "stream 0 of 4") != NULL,
	    "JOIN for stream 0 refused (the control stream)", why);
	j.index = 4;
	(void)mig_join_encode(buf, sizeof(buf), &j);
	check(mig_join_decode(buf, len, &out, why, sizeof(why)) == EPROTO,
	    "JOIN for a stream past the count refused", why);
	j.index = 1;
	j.nstreams = MIG_STREAMS_MAX + 1;
	(void)mig_join_encode(buf, sizeof(buf), &j);
	check(mig_join_decode(buf, len, &out, why, sizeof(why)) == EPROTO &&
	    strstr(why, "streams") != NULL,
	    "JOIN counting too many streams refused", why);
	check(mig_join_encode(buf, MIG_JOIN_LEN - 1, &j) == 0,
	    "JOIN encoder refuses a short buffer", NULL);

	/* Every chunk has one owner; consecutive chunks rotate. */
	check(mig_stream_of_word(0, 4) == 0 &&
	    mig_stream_of_word(MIG_STREAM_CHUNK_WORDS - 1, 4) == 0 &&
	    mig_stream_of_word(MIG_STREAM_CHUNK_WORDS, 4) == 1 &&
	    mig_stream_of_word(4 * MIG_STREAM_CHUNK_WORDS, 4) == 0 &&
	    mig_stream_of_word(7 * MIG_STREAM_CHUNK_WORDS + 5, 4) == 3 &&
	    mig_stream_of_word(123456, 1) == 0,
	    "pages are partitioned across streams by chunk", NULL);
}

static void
test_policy(void)
{
	struct mig_params p;
	struct mig_policy pol;
	struct mig_round_stats r;
	struct mig_decision d;

	mig_params_init(&p);
	mig_policy_init(&pol, &p, 0, 0, 0);
	memset(&r, 0, sizeof(r));
	/* Round 1: 1 GiB in 1 s, 1 GB/s. */
	r.pages_sent = 262144;
	r.bytes = 1000000000;
	r.duration_us = 1000000;
	mig_policy_round(&pol, &r);
	mig_policy_decide(&pol, 1000, 1000000, &d);
	check(d.stop && d.reason == MIG_STOP_CONVERGED &&
	    d.est_downtime_us < 300000, "small dirty set converges", NULL);
	mig_policy_decide(&pol, 200000, 1000000, &d);
	check(!d.stop && d.est_downtime_us > 300000,
	    "large dirty set asks for another round", NULL);

	/* A guest dirtying as fast as rounds send gets throttled. */
	mig_policy_init(&pol, &p, 0, 0, 0);
	mig_policy_round(&pol, &r);
	mig_policy_decide(&pol, 200000, 1, &d);
	r.pages_sent = 200000;
	r.bytes = 800000000;
	r.duration_us = 800000;
	mig_policy_round(&pol, &r);
	mig_policy_decide(&pol, 200000, 2, &d);
	mig_policy_round(&pol, &r);
	mig_policy_decide(&pol, 200000, 3, &d);
	check(!d.stop && d.throttle_pct == MIG_THROTTLE_FIRST,
	    "outrun rounds throttle the vCPUs", NULL);

	p.policy = MIG_POLICY_FIXED;
	p.fixed_rounds = 4;
	mig_policy_init(&pol, &p, 0, 0, 0);
	for (int i = 0; i < 3; i++) {
		mig_policy_round(&pol, &r);
		mig_policy_decide(&pol, 1, 0, &d);
		if (d.stop)
			break;
	}
	check(!d.stop, "fixed rounds keep going below the count", NULL);
	mig_policy_round(&pol, &r);
	mig_policy_decide(&pol, 1, 0, &d);
	check(d.stop && d.reason == MIG_STOP_FIXED_ROUNDS,
	    "fixed rounds stop at the count", NULL);

	mig_params_init(&p);
	p.max_rounds = 2;
	mig_policy_init(&pol, &p, 0, 0, 0);
	mig_policy_round(&pol, &r);
	mig_policy_decide(&pol, 200000, 0, &d);
	mig_policy_round(&pol, &r);
	mig_policy_decide(&pol, 200000, 0, &d);
	check(d.stop && d.reason == MIG_STOP_MAX_ROUNDS,
	    "max rounds bounds a guest that never converges", NULL);

	/* Disk blocks owed count: clean memory alone does not converge. */
	mig_params_init(&p);
	mig_policy_init(&pol, &p, 0, 0, 0);
	mig_policy_round(&pol, &r);
	mig_policy_disk(&pol, 1ull << 30);
	mig_policy_decide(&pol, 0, 1, &d);
	check(!d.stop && d.est_downtime_us > 1000000,
	    "owed disk blocks keep pre-copy going", NULL);
	mig_policy_disk(&pol, 4096);
	mig_policy_decide(&pol, 0, 2, &d);
	check(d.stop && d.reason == MIG_STOP_CONVERGED,
	    "a few owed disk blocks converge", NULL);
}

/* The key file as bhyve -R, bhyvectl and the test bed read it. */
static void
test_key(void)
{
	static const char hex[] =
	    "000102030405060708090a0b0c0d0e0f"
	    "101112131415161718191A1B1C1D1E1F\n";
	uint8_t raw[MIG_KEY_LEN], key[MIG_KEY_LEN];
	char bad[sizeof(hex)], path[] = "/tmp/wire_test.XXXXXX";
	char why[MIG_ERRMSG_MAX];
	size_t i;
	int fd, pfd[2];

	why[0] = '\0';
	for (i = 0; i < MIG_KEY_LEN; i++)
		raw[i] = (uint8_t)i;
	memset(key, 0xff, sizeof(key));
	check(mig_key_decode(raw, sizeof(raw), key, why, sizeof(why)) == 0 &&
	    memcmp(key, raw, sizeof(raw)) == 0,
	    "key: 32 raw bytes taken as they are", why);
	memset(key, 0xff, sizeof(key));
	check(mig_key_decode(hex, strlen(hex), key, why, sizeof(why)) == 0 &&
	    memcmp(key, raw, sizeof(raw)) == 0,
	    "key: 64 hex digits and a newline decoded", why);
	check(mig_key_decode(hex, strlen(hex) - 2, key, why, sizeof(why)) ==
	    EINVAL && strstr(why, "must hold") != NULL,
	    "key: wrong length refused", why);
	memcpy(bad, hex, sizeof(hex));
	bad[7] = 'g';
	check(mig_key_decode(bad, strlen(bad), key, why, sizeof(why)) ==
	    EINVAL && strstr(why, "not a hexadecimal digit") != NULL,
	    "key: non-hex digit refused", why);

	fd = mkstemp(path);
	if (fd < 0) {
		check(0, "mkstemp", strerror(errno));
		return;
	}
	(void)unlink(path);
	(void)write(fd, hex, strlen(hex));
	(void)lseek(fd, 0, SEEK_SET);
	why[0] = '\0';
	check(mig_key_read_fd(fd, MIG_KEY_PRIVATE, key, why, sizeof(why)) ==
	    0 && memcmp(key, raw, sizeof(raw)) == 0,
	    "key file: mode 0600 read", why);
	(void)fchmod(fd, 0644);
	check(mig_key_read_fd(fd, MIG_KEY_PRIVATE, key, why, sizeof(why)) ==
	    EPERM && strstr(why, "mode 0600") != NULL,
	    "key file: readable by others refused", why);
	close(fd);
	if (pipe(pfd) != 0) {
		check(0, "pipe", strerror(errno));
		return;
	}
	check(mig_key_read_fd(pfd[0], 0, key, why, sizeof(why)) == EPERM &&
	    strstr(why, "regular file") != NULL,
	    "key file: not a regular file refused", why);
	close(pfd[0]);
	close(pfd[1]);
}

/* Addresses as -R, --migrate and the test bed take them; port 7 if none. */
static void
test_hostport(void)
{
	static const struct {
		const char	*name;
		const char	*spec;
		int		error;
		const char	*host, *port;
	} cases[] = {
		{ "address: [::1]:24981 split", "[::1]:24981", 0, "::1",
		    "24981" },
		{ "address: host:1 split", "host:1", 0, "host", "1" },
		{ "address: host takes the default port", "host", 0, "host",
		    "7" },
		{ "address: a number alone is a port", "24981", 0, "",
		    "24981" },
		{ "address: bare IPv6 is a host", "fe80::1", 0, "fe80::1",
		    "7" },
		{ "address: empty is any host, default port", "", 0, "",
		    "7" },
		{ "address: unterminated [::1 refused", "[::1", EINVAL, NULL,
		    NULL },
		{ "address: empty brackets refused", "[]:1", EINVAL, NULL,
		    NULL },
		{ "address: junk after ] refused", "[::1]x", EINVAL, NULL,
		    NULL },
		{ "address: empty port refused", "host:", EINVAL, NULL, NULL },
		{ "address: overlong host refused", "abcdefghijklmnop:1",
		    ENAMETOOLONG, NULL, NULL },
		{ "address: overlong port refused", "host:123456789",
		    ENAMETOOLONG, NULL, NULL },
	};
	char host[16], port[8], why[MIG_ERRMSG_MAX];
	size_t i;
	int error;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		why[0] = '\0';
		error = mig_hostport_split(cases[i].spec, 7, host,
		    sizeof(host), port, sizeof(port), why, sizeof(why));
		check(error == cases[i].error && (error != 0 ||
		    (strcmp(host, cases[i].host) == 0 &&
		    strcmp(port, cases[i].port) == 0)), cases[i].name, why);
	}
}

/*
 * Frames through a keyed socketpair, captured and re-injected: intact
 * they pass, a flipped bit or a replayed frame fails the tag, and so does
 * a frame read with another suite's tag.
 */
static void
test_channel(enum mig_suite suite, enum mig_suite other)
{
	struct mig_session_keys keys;
	struct mig_chan a, b, c;
	struct mig_hdr hdr;
	uint8_t msg[100], raw1[MIG_HDR_LEN + sizeof(msg) + MIG_TAG_LEN];
	uint8_t raw2[sizeof(raw1)];
	const char *mode;
	void *payload;
	char name[120];
	bool encrypt;
	int sv[2], sv2[2], error;

	mode = mig_suite_name(suite);
	encrypt = suite == MIG_SUITE_GCM_ENCRYPT;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, sv2) != 0) {
		check(0, "socketpair", strerror(errno));
		return;
	}
	memset(&keys, 0x11, sizeof(keys));
	memset(keys.dst_to_src, 0x22, sizeof(keys.dst_to_src));
	(void)mig_chan_init(&a, sv[0], MIG_ROLE_SOURCE, 0);
	(void)mig_chan_init(&b, sv[1], MIG_ROLE_DEST, 0);
	(void)mig_chan_init(&c, sv2[1], MIG_ROLE_DEST, 0);
	(void)mig_chan_key(&a, &keys, suite);
	(void)mig_chan_key(&b, &keys, suite);
	(void)mig_chan_key(&c, &keys, other);
	memset(msg, 0x5a, sizeof(msg));

	(void)mig_chan_send(&a, MIG_MSG_STATE, msg, sizeof(msg));
	(void)recv(sv[1], raw1, sizeof(raw1), MSG_WAITALL);
	snprintf(name, sizeof(name), "%s: payload %s", mode,
	    encrypt ? "is not in clear" : "is in clear");
	check(encrypt == (memmem(raw1, sizeof(raw1), msg, 16) == NULL), name,
	    NULL);
	(void)write(sv[0], raw1, sizeof(raw1));
	error = mig_chan_recv(&b, &hdr, &payload);
	snprintf(name, sizeof(name), "%s: frame round trip", mode);
	check(error == 0 && hdr.len == sizeof(msg) &&
	    memcmp(payload, msg, sizeof(msg)) == 0, name, b.why);

	(void)write(sv2[0], raw1, sizeof(raw1));
	error = mig_chan_recv(&c, &hdr, &payload);
	snprintf(name, sizeof(name), "%s: frame refused as %s", mode,
	    mig_suite_name(other));
	check(error == EBADMSG, name, c.why);

	(void)mig_chan_send(&a, MIG_MSG_STATE, msg, sizeof(msg));
	(void)recv(sv[1], raw2, sizeof(raw2), MSG_WAITALL);
	raw2[MIG_HDR_LEN + 10] ^= 1;
	(void)write(sv[0], raw2, sizeof(raw2));
	error = mig_chan_recv(&b, &hdr, &payload);
	snprintf(name, sizeof(name), "%s: frame with a flipped bit refused",
	    mode);
	check(error == EBADMSG && strstr(b.why, "integrity") != NULL, name,
	    b.why);

	/* An owed frame forgone: the one after it passes. */
	mig_chan_recv_forgo(&b);
	(void)mig_chan_send(&a, MIG_MSG_STATE, msg, sizeof(msg));
	error = mig_chan_recv(&b, &hdr, &payload);
	snprintf(name, sizeof(name), "%s: the frame after a forgone one "
	    "passes", mode);
	check(error == 0, name, b.why);
	/* Out of turn (no frame failed), it fails the next frame. */
	mig_chan_recv_forgo(&b);
	(void)mig_chan_send(&a, MIG_MSG_STATE, msg, sizeof(msg));
	error = mig_chan_recv(&b, &hdr, &payload);
	snprintf(name, sizeof(name), "%s: a forgo out of turn fails the "
	    "next frame", mode);
	check(error == EBADMSG, name, b.why);

	(void)write(sv[0], raw1, sizeof(raw1));
	error = mig_chan_recv(&b, &hdr, &payload);
	snprintf(name, sizeof(name), "%s: replayed frame refused", mode);
	check(error == EBADMSG, name, b.why);

	mig_chan_destroy(&a);
	mig_chan_destroy(&b);
	mig_chan_destroy(&c);
	close(sv[0]);
	close(sv[1]);
	close(sv2[0]);
	close(sv2[1]);
}

int
main(void)
{
	test_hdr();
	test_hello();
	test_vminfo();
	test_small_messages();
	test_pages();
	test_zero_ranges();
	test_owed();
	test_vminfo_disks();
	test_disk_describe_refusals();
	test_disk_blocks();
	test_disk_zero();
	test_streams();
	test_policy();
	test_key();
	test_hostport();
	test_channel(MIG_SUITE_GCM_TAG, MIG_SUITE_POLY1305_TAG);
	test_channel(MIG_SUITE_POLY1305_TAG, MIG_SUITE_GCM_TAG);
	test_channel(MIG_SUITE_GCM_ENCRYPT, MIG_SUITE_GCM_TAG);
	return (check_summary());
}
