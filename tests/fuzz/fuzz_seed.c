/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Writes the fuzz targets' seed corpora, DIR/<target>/<name>, from the
 * engine's own encoders: the frames a real source and controller
 * produce.  The recv seeds spell a whole migration of the fuzz guest
 * (fuzz_guest.h): two rounds, zero ranges and markers, both state
 * sections, READY and GO.
 *
 *	fuzz_seed DIR
 */

#include <sys/stat.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_guest.h"
#include "migration_ctl.h"
#include "migration_wire.h"

#define	SEED_MAX	16384

static const char *dir;

static void
die(const char *what)
{

	fprintf(stderr, "fuzz_seed: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void
seed(const char *target, const char *name, const void *buf, size_t len)
{
	char path[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, target);
	if (mkdir(path, 0755) != 0 && errno != EEXIST)
		die(path);
	snprintf(path, sizeof(path), "%s/%s/%s", dir, target, name);
	if ((f = fopen(path, "w")) == NULL)
		die(path);
	if (fwrite(buf, 1, len, f) != len || fclose(f) != 0)
		die(path);
}

/* A wire seed: the decoder's selector byte, then the message. */
static void
wire(const char *name, uint8_t which, const void *msg, size_t len)
{
	uint8_t buf[SEED_MAX];

	if (len == 0 || len + 1 > sizeof(buf)) {
		fprintf(stderr, "fuzz_seed: %s does not encode\n", name);
		exit(1);
	}
	buf[0] = which;
	memcpy(buf + 1, msg, len);
	seed("wire", name, buf, len + 1);
}

static void
hello_of(struct mig_hello *h, enum mig_role role, uint16_t vmax)
{

	memset(h, 0, sizeof(*h));
	h->role = (uint16_t)role;
	h->version_min = MIG_VERSION_MIN;
	h->version_max = vmax;
	h->caps = MIG_CAPS_SUPPORTED;
	memset(h->nonce, 0x5a, sizeof(h->nonce));
}

static void
error_of(struct mig_errmsg *e)
{

	memset(e, 0, sizeof(*e));
	e->phase = MIG_PHASE_PRECOPY;
	e->side = MIG_SIDE_SOURCE;
	e->code = EIO;
	snprintf(e->msg, sizeof(e->msg), "the source gave up");
}

/* DISK_BLOCKS data: every data block of b, in order. */
static size_t
disk_data(const struct mig_disk *d, const struct mig_disk_blocks *b,
    uint8_t *data)
{
	size_t n;
	uint32_t i, len;

	n = 0;
	for (i = 0; i < b->count; i++) {
		if ((b->idx[i] & MIG_BLOCK_ZERO) != 0)
			continue;
		len = mig_disk_block_len(d, b->idx[i]);
		memset(data + n, 0x30 + (int)i, len);
		n += len;
	}
	return (n);
}

/* fuzz_wire's disk selectors: u8 block size shift | u64 disk size | frame. */
static void
wire_disk(const char *name, uint8_t which, uint8_t shift, uint64_t size,
    const void *msg, size_t len)
{
	uint8_t buf[SEED_MAX];

	buf[0] = shift;
	mig_le64enc(buf + 1, size);
	memcpy(buf + 9, msg, len);
	wire(name, which, buf, len + 9);
}

static void
wire_disk_seeds(void)
{
	static struct mig_disk_blocks b;
	struct mig_disk d = { .block_size = FUZZ_DISK_BLOCK,
	    .size = FUZZ_DISK_SIZE };
	struct mig_disk_zero z;
	uint8_t buf[SEED_MAX];
	size_t n;

	/* Blocks 1 (zero), 2 and the short last one. */
	b.disk = 0;
	b.count = 3;
	b.idx[0] = 1 | MIG_BLOCK_ZERO;
	b.idx[1] = 2;
	b.idx[2] = FUZZ_DISK_BLOCKS - 1;
	n = mig_disk_blocks_encode(buf, sizeof(buf), &b);
	n += disk_data(&d, &b, buf + n);
	wire_disk("disk_blocks", 12, 0, FUZZ_DISK_SIZE, buf, n);
	/* A disk whose block count wrapped to 0 before VMINFO refused it. */
	b.count = 1;
	b.idx[0] = 0 | MIG_BLOCK_ZERO;
	n = mig_disk_blocks_encode(buf, sizeof(buf), &b);
	wire_disk("disk_size_wraps", 12, 0, UINT64_MAX - 100, buf, n);
	memset(&z, 0, sizeof(z));
	z.count = 2;
	z.r[0].first = 0;
	z.r[0].npages = 4;
	z.r[1].first = 8;
	z.r[1].npages = FUZZ_DISK_BLOCKS - 8;
	wire_disk("disk_zero", 13, 0, FUZZ_DISK_SIZE, buf,
	    mig_disk_zero_encode(buf, sizeof(buf), &z));
}

static void
wire_seeds(void)
{
	struct mig_round_begin rb = { 1, 0, 40 };
	struct mig_round_end re = { 1, 40 };
	struct mig_state_hdr sh = { 0, 24, 0 };
	struct mig_ready rd = { 42, 2 };
	struct mig_pages_hdr ph = { 0, 3 };
	struct mig_zero_ranges z;
	struct mig_vminfo vi;
	struct mig_errmsg e;
	struct mig_hello h;
	struct mig_hold ho;
	struct mig_join j;
	struct mig_hdr hdr = { MIG_MSG_PAGES, 0, 1234 };
	uint8_t buf[SEED_MAX];
	size_t n;

	mig_hdr_encode(buf, &hdr);
	wire("hdr", 0, buf, MIG_HDR_LEN);
	hello_of(&h, MIG_ROLE_SOURCE, MIG_VERSION_MAX);
	wire("hello", 1, buf, mig_hello_encode(buf, sizeof(buf), &h));
	error_of(&e);
	wire("error", 2, buf, mig_error_encode(buf, sizeof(buf), &e));
	fuzz_guest_vminfo(&vi);
	wire("vminfo", 3, buf, mig_vminfo_encode(buf, sizeof(buf), &vi));
	wire("round_begin", 4, buf, mig_round_begin_encode(buf, sizeof(buf),
	    &rb));
	wire("round_end", 5, buf, mig_round_end_encode(buf, sizeof(buf), &re));
	n = mig_state_hdr_encode(buf, sizeof(buf), &sh);
	memset(buf + n, 0x11, 24);
	wire("state_hdr", 6, buf, n + 24);
	wire("ready", 7, buf, mig_ready_encode(buf, sizeof(buf), &rd));
	/* u32 payload length | u32 segment pages | PAGES header | indexes */
	mig_le32enc(buf, MIG_PAGES_HDR_LEN + 3 * 8 + 2 * MIG_PAGE_SIZE);
	mig_le32enc(buf + 4, FUZZ_SEG0_PAGES);
	(void)mig_pages_hdr_encode(buf + 8, MIG_PAGES_HDR_LEN, &ph);
	mig_le64enc(buf + 16, 1);
	mig_le64enc(buf + 24, 2 | MIG_PAGE_ZERO);
	mig_le64enc(buf + 32, 7);
	wire("pages", 8, buf, 40);
	memset(&z, 0, sizeof(z));
	z.seg = 0;
	z.count = 2;
	z.r[0].first = 2;
	z.r[0].npages = 3;
	z.r[1].first = 10;
	z.r[1].npages = 22;
	wire("zero_ranges", 9, buf, mig_zero_ranges_encode(buf, sizeof(buf),
	    &z));
	mig_le16enc(buf, MIG_MSG_ZERO_RANGES);
	wire("name", 10, buf, 2);
	ho.hold_ms = 2500;
	wire("hold", 11, buf, mig_hold_encode(buf, sizeof(buf), &ho));
	wire_disk_seeds();
	wire("streams", 14, buf, mig_streams_encode(buf, sizeof(buf), 4));
	memset(&j, 0, sizeof(j));
	j.index = 3;
	j.nstreams = 4;
	memset(j.session, 0x5a, sizeof(j.session));
	memset(j.proof, 0xa5, sizeof(j.proof));
	wire("join", 15, buf, mig_join_encode(buf, sizeof(buf), &j));
}

static void
ctl_seed(const char *name, uint8_t which, const struct mig_event *ev)
{
	uint8_t buf[MIG_EVENT_MAX + 1];
	char *text;

	if ((text = mig_event_encode(ev)) == NULL) {
		fprintf(stderr, "fuzz_seed: event %s does not encode\n", name);
		exit(1);
	}
	buf[0] = which;
	memcpy(buf + 1, text, strlen(text));
	seed("ctl", name, buf, strlen(text) + 1);
	free(text);
}

static void
ctl_seeds(void)
{
	struct mig_round_stats rounds[2];
	struct mig_request req;
	struct mig_event ev;
	struct mig_error err;
	struct mig_stats st;
	uint8_t buf[MIG_REQUEST_MAX + 1];
	char msg[128], *text;

	memset(&ev, 0, sizeof(ev));
	ev.type = MIG_EV_PHASE;
	ev.phase = MIG_PHASE_PRECOPY;
	ctl_seed("phase", 0, &ev);
	ev.type = MIG_EV_ROUND;
	ev.round.index = 2;
	ev.round.dirty_pages = 100;
	ev.round.pages_sent = 90;
	ev.round.zero_pages = 10;
	ev.round.bytes = 90 * 4096;
	ev.round.duration_us = 1500;
	ev.round.est_downtime_us = 4000;
	ctl_seed("round", 0, &ev);
	ev.type = MIG_EV_PROGRESS;
	ev.round_index = 3;
	ev.remaining_pages = 12;
	ev.bytes_sent = 1 << 20;
	ev.rate_bytes_per_s = 1 << 27;
	ctl_seed("progress", 0, &ev);
	ev.type = MIG_EV_ESTIMATE_MISSED;
	ev.phase = MIG_PHASE_SWITCHOVER;
	ev.est_downtime_us = 35000;
	ev.paused_us = 51000;
	ctl_seed("estimate_missed", 0, &ev);

	memset(&st, 0, sizeof(st));
	memset(rounds, 0, sizeof(rounds));
	st.rounds = rounds;
	st.nrounds = 2;
	st.total_time_us = 2000000;
	st.downtime_us = 120000;
	st.rtt_us = 150;
	st.protocol_version = 1;
	st.stop_reason = MIG_STOP_CONVERGED;
	mig_event_result(&ev, MIG_OUT_OK, NULL, &st);
	ctl_seed("result_ok", 0, &ev);
	memset(&err, 0, sizeof(err));
	err.side = MIG_SIDE_DEST;
	err.phase = MIG_PHASE_COMPAT;
	err.code = EINVAL;
	snprintf(err.msg, sizeof(err.msg), "the destination refuses this "
	    "guest: \"vcpu\" count\tdiffers");
	mig_event_result(&ev, MIG_OUT_INCOMPATIBLE, &err, NULL);
	ctl_seed("result_incompatible", 0, &ev);
	err.side = MIG_SIDE_LINK;
	err.phase = MIG_PHASE_SWITCHOVER;
	err.code = ETIMEDOUT;
	mig_event_result(&ev, MIG_OUT_INDETERMINATE, &err, &st);
	ctl_seed("result_indeterminate", 0, &ev);

	memset(&req, 0, sizeof(req));
	if (mig_request_set(&req, MIG_OPT_DOWNTIME_LIMIT, "250", msg,
	    sizeof(msg)) != 0 || mig_request_set(&req, MIG_OPT_BANDWIDTH,
	    "100m", msg, sizeof(msg)) != 0 || mig_request_set(&req,
	    MIG_OPT_ENCRYPT, NULL, msg, sizeof(msg)) != 0 ||
	    (text = mig_request_encode(&req, fuzz_key)) == NULL) {
		fprintf(stderr, "fuzz_seed: the request does not encode\n");
		exit(1);
	}
	buf[0] = 1;
	memcpy(buf + 1, text, strlen(text));
	seed("ctl", "request", buf, strlen(text) + 1);
	free(text);
	text = "\002{\"state\":\"running\",\"guest_runs_here\":true,"
	    "\"a\":{\"b\":[1,\"x\\u0041\",-2.5e3,false,null]}}";
	seed("ctl", "json", text, strlen(text));
	/* fuzz_ctl's first find: a \u escape cut short read past the text. */
	text = "\002{\"a\":{\"b\":[1,\"x\\u00}";
	seed("ctl", "json_short_escape", text, strlen(text));
}

/* Append a record; stop the generator if the seed buffer is too small. */
static size_t
rec(uint8_t *buf, size_t off, uint8_t type, uint8_t npad, const void *bytes,
    size_t len)
{

	if ((off = fuzz_rec_put(buf, SEED_MAX, off, type, npad, bytes,
	    len)) == 0) {
		fprintf(stderr, "fuzz_seed: a recv seed is too large\n");
		exit(1);
	}
	return (off);
}

/* PAGES for seg: pages [first, first + count), the first ndata with data. */
static size_t
rec_pages(uint8_t *buf, size_t off, uint32_t seg, uint64_t first,
    uint32_t count, uint32_t ndata)
{
	struct mig_pages_hdr ph = { seg, count };
	uint8_t meta[MIG_PAGES_HDR_LEN + 8 * 64];
	uint32_t i;

	(void)mig_pages_hdr_encode(meta, MIG_PAGES_HDR_LEN, &ph);
	for (i = 0; i < count; i++)
		mig_le64enc(meta + MIG_PAGES_HDR_LEN + 8 * i, (first + i) |
		    (i < ndata ? 0 : MIG_PAGE_ZERO));
	return (rec(buf, off, MIG_MSG_PAGES, (uint8_t)ndata, meta,
	    MIG_PAGES_HDR_LEN + 8 * (size_t)count));
}

static size_t
rec_round(uint8_t *buf, size_t off, uint8_t type, uint32_t index,
    uint8_t final, uint64_t pages)
{
	struct mig_round_begin rb = { index, final, pages };
	struct mig_round_end re = { index, pages };
	uint8_t m[32];

	if (type == MIG_MSG_ROUND_BEGIN)
		return (rec(buf, off, type, 0, m, mig_round_begin_encode(m,
		    sizeof(m), &rb)));
	return (rec(buf, off, type, 0, m, mig_round_end_encode(m, sizeof(m),
	    &re)));
}

static size_t
rec_state(uint8_t *buf, size_t off, uint32_t section, uint64_t total,
    uint64_t offset, size_t n)
{
	struct mig_state_hdr sh = { section, total, offset };
	uint8_t m[MIG_STATE_HDR_LEN + 256];

	(void)mig_state_hdr_encode(m, MIG_STATE_HDR_LEN, &sh);
	memset(m + MIG_STATE_HDR_LEN, 0x40 + (int)section, n);
	return (rec(buf, off, MIG_MSG_STATE, 0, m, MIG_STATE_HDR_LEN + n));
}

/* The disk's frames of a round: some blocks, then zero runs. */
static size_t
rec_disk(uint8_t *buf, size_t off, uint32_t round)
{
	static struct mig_disk_blocks b;
	static uint8_t m[SEED_MAX];
	struct mig_disk d = { .block_size = FUZZ_DISK_BLOCK,
	    .size = FUZZ_DISK_SIZE };
	struct mig_disk_zero z;
	size_t n;

	b.disk = 0;
	b.count = 0;
	if (round == 1) {
		b.idx[b.count++] = 0;
		b.idx[b.count++] = 1;
		b.idx[b.count++] = 2 | MIG_BLOCK_ZERO;
	}
	b.idx[b.count++] = 5;
	b.idx[b.count++] = FUZZ_DISK_BLOCKS - 1;
	n = mig_disk_blocks_encode(m, sizeof(m), &b);
	n += disk_data(&d, &b, m + n);
	off = rec(buf, off, MIG_MSG_DISK_BLOCKS, 0, m, n);
	if (round != 1)
		return (off);
	memset(&z, 0, sizeof(z));
	z.count = 1;
	z.r[0].first = 6;
	z.r[0].npages = FUZZ_DISK_BLOCKS - 7;
	return (rec(buf, off, MIG_MSG_DISK_ZERO, 0, m,
	    mig_disk_zero_encode(m, sizeof(m), &z)));
}

/*
 * Memory and state of a whole migration, up to READY; with disks, their
 * blocks in both rounds (VMINFO must have said MIG_DISKS_MOVE), with
 * hold, a HOLD before the final round.
 */
static size_t
rec_migration(uint8_t *buf, size_t off, bool disks, bool hold)
{
	struct mig_hold h = { 20 };
	struct mig_zero_ranges z;
	struct mig_ready rd = { 42, 2 };
	uint8_t m[64];

	off = rec_round(buf, off, MIG_MSG_ROUND_BEGIN, 1, 0, 40);
	memset(&z, 0, sizeof(z));
	z.count = 1;
	z.r[0].first = 16;
	z.r[0].npages = 16;
	off = rec(buf, off, MIG_MSG_ZERO_RANGES, 0, m,
	    mig_zero_ranges_encode(m, sizeof(m), &z));
	off = rec_pages(buf, off, 0, 0, 16, 12);
	off = rec_pages(buf, off, 1, 0, FUZZ_SEG1_PAGES, 2);
	if (disks)
		off = rec_disk(buf, off, 1);
	off = rec_round(buf, off, MIG_MSG_ROUND_END, 1, 0, 40);
	if (hold)
		off = rec(buf, off, MIG_MSG_HOLD, 0, m, mig_hold_encode(m,
		    sizeof(m), &h));
	off = rec_round(buf, off, MIG_MSG_ROUND_BEGIN, 2, 1, 2);
	off = rec_pages(buf, off, 0, 3, 2, 1);
	if (disks)
		off = rec_disk(buf, off, 2);
	off = rec_round(buf, off, MIG_MSG_ROUND_END, 2, 1, 2);
	off = rec_state(buf, off, 0, FUZZ_VCPU_STATE_LEN, 0,
	    FUZZ_VCPU_STATE_LEN);
	off = rec_state(buf, off, 1, FUZZ_DEV_STATE_LEN, 0,
	    FUZZ_DEV_STATE_LEN / 2);
	off = rec_state(buf, off, 1, FUZZ_DEV_STATE_LEN,
	    FUZZ_DEV_STATE_LEN / 2, FUZZ_DEV_STATE_LEN / 2);
	return (rec(buf, off, MIG_MSG_READY, 0, m, mig_ready_encode(m,
	    sizeof(m), &rd)));
}

static void
recv_seeds(void)
{
	static uint8_t buf[SEED_MAX];
	struct mig_state_hdr sh;
	struct mig_vminfo vi;
	struct mig_errmsg e;
	struct mig_hdr hdr;
	uint8_t m[8192];
	size_t off;

	off = rec_migration(buf, 0, false, false);
	off = rec(buf, off, MIG_MSG_GO, 0, NULL, 0);
	seed("recv", "migration", buf, off);

	/* The source moves its disk (VMINFO first, saying so). */
	fuzz_guest_vminfo(&vi);
	vi.disk_flags = MIG_DISKS_MOVE;
	off = rec(buf, 0, MIG_MSG_VMINFO, 0, m, mig_vminfo_encode(m,
	    sizeof(m), &vi));
	off = rec_migration(buf, off, true, false);
	off = rec(buf, off, MIG_MSG_GO, 0, NULL, 0);
	seed("recv", "migration_disks", buf, off);

	/* The paused source waits for its switchover hook: HOLD. */
	off = rec_migration(buf, 0, false, true);
	off = rec(buf, off, MIG_MSG_GO, 0, NULL, 0);
	seed("recv", "migration_hold", buf, off);

	/* The source gives up in the middle of round 1. */
	off = rec_round(buf, 0, MIG_MSG_ROUND_BEGIN, 1, 0, 40);
	off = rec_pages(buf, off, 0, 0, 4, 4);
	error_of(&e);
	off = rec(buf, off, MIG_MSG_ERROR, 0, m, mig_error_encode(m,
	    sizeof(m), &e));
	seed("recv", "error", buf, off);

	/* A guest of another shape: refused in the compatibility check. */
	fuzz_guest_vminfo(&vi);
	vi.ncpus = 4;
	vi.segs[1].len *= 2;
	off = rec(buf, 0, MIG_MSG_VMINFO, 0, m, mig_vminfo_encode(m,
	    sizeof(m), &vi));
	off = rec_round(buf, off, MIG_MSG_ROUND_BEGIN, 1, 0, 40);
	seed("recv", "incompatible", buf, off);

	/* A frame whose bytes arrive unsealed: the tag check refuses it. */
	off = rec_round(buf, 0, MIG_MSG_ROUND_BEGIN, 1, 0, 40);
	memset(m, 0, 32);
	mig_le16enc(m, MIG_MSG_ROUND_END);
	mig_le32enc(m + 4, MIG_ROUND_END_LEN);
	off = rec(buf, off, FUZZ_REC_RAW, 0, m, MIG_HDR_LEN +
	    MIG_ROUND_END_LEN + MIG_TAG_LEN);
	seed("recv", "unsealed", buf, off);

	/*
	 * After an empty final round, STATE announcing the largest section
	 * with a tag that does not check: nothing of that size is allocated.
	 */
	off = rec_round(buf, 0, MIG_MSG_ROUND_BEGIN, 1, 1, 0);
	off = rec_round(buf, off, MIG_MSG_ROUND_END, 1, 1, 0);
	sh.section = 0;
	sh.total = MIG_SECTION_MAX;
	sh.offset = 0;
	hdr.type = MIG_MSG_STATE;
	hdr.flags = 0;
	hdr.len = MIG_STATE_HDR_LEN + 16;
	mig_hdr_encode(m, &hdr);
	(void)mig_state_hdr_encode(m + MIG_HDR_LEN, MIG_STATE_HDR_LEN, &sh);
	memset(m + MIG_HDR_LEN + MIG_STATE_HDR_LEN, 0x77, 16 + MIG_TAG_LEN);
	off = rec(buf, off, FUZZ_REC_RAW, 0, m, MIG_HDR_LEN + hdr.len +
	    MIG_TAG_LEN);
	seed("recv", "state_unsealed", buf, off);
}

/* A pre-authentication seed: frames with no tag, as a stranger sends. */
static size_t
frame(uint8_t *buf, size_t off, uint16_t type, const void *p, size_t len)
{
	struct mig_hdr h = { type, 0, (uint32_t)len };

	mig_hdr_encode(buf + off, &h);
	memcpy(buf + off + MIG_HDR_LEN, p, len);
	return (off + MIG_HDR_LEN + len);
}

static void
preauth_seeds(void)
{
	uint8_t buf[SEED_MAX], m[MIG_ERRMSG_MAX + 16], proof[MIG_AUTH_LEN];
	struct mig_errmsg e;
	struct mig_hello h;
	size_t off;

	hello_of(&h, MIG_ROLE_SOURCE, MIG_VERSION_MAX);
	off = frame(buf, 0, MIG_MSG_HELLO, m, mig_hello_encode(m, sizeof(m),
	    &h));
	memset(proof, 0x33, sizeof(proof));
	off = frame(buf, off, MIG_MSG_AUTH, proof, sizeof(proof));
	seed("preauth", "hello_auth", buf, off);

	error_of(&e);
	e.phase = MIG_PHASE_SWITCHOVER;
	off = frame(buf, 0, MIG_MSG_ERROR, m, mig_error_encode(m, sizeof(m),
	    &e));
	seed("preauth", "error", buf, off);

	hello_of(&h, MIG_ROLE_SOURCE, MIG_VERSION_MAX + 1);
	h.version_min = MIG_VERSION_MAX + 1;
	off = frame(buf, 0, MIG_MSG_HELLO, m, mig_hello_encode(m, sizeof(m),
	    &h));
	seed("preauth", "hello_version", buf, off);

	hello_of(&h, MIG_ROLE_DEST, MIG_VERSION_MAX);
	off = frame(buf, 0, MIG_MSG_HELLO, m, mig_hello_encode(m, sizeof(m),
	    &h));
	seed("preauth", "hello_dest", buf, off);
}

int
main(int argc, char **argv)
{

	if (argc != 2) {
		fprintf(stderr, "usage: fuzz_seed DIR\n");
		return (64);
	}
	dir = argv[1];
	if (mkdir(dir, 0755) != 0 && errno != EEXIST)
		die(dir);
	wire_seeds();
	ctl_seeds();
	recv_seeds();
	preauth_seeds();
	return (0);
}
