/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * libFuzzer target: the wire decoders (migration_wire.c).  The first
 * byte picks a decoder, the rest is its input, in a buffer of exactly
 * that size so that a read past it is caught.  What decodes must encode
 * back to the same message: a decoder that accepts what the encoder
 * would never write, or reads it otherwise, aborts the run.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_guest.h"
#include "migration_wire.h"

enum {
	W_HDR = 0, W_HELLO, W_ERROR, W_VMINFO, W_ROUND_BEGIN, W_ROUND_END,
	W_STATE_HDR, W_READY, W_PAGES, W_ZERO_RANGES, W_NAME, W_HOLD,
	W_DISK_BLOCKS, W_DISK_ZERO, W_STREAMS, W_JOIN, W_COUNT
};

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
require(int cond)
{

	if (!cond)
		abort();
}

/* encode(decode(in)) must be in again, for the fixed-layout messages. */
static void
same_bytes(const void *in, size_t inlen, const void *out, size_t outlen)
{

	require(outlen == inlen && memcmp(in, out, inlen) == 0);
}

static void
fuzz_fixed(int which, uint8_t *buf, size_t len)
{
	struct mig_round_begin rb;
	struct mig_round_end re;
	struct mig_state_hdr sh;
	struct mig_ready rd;
	struct mig_hold ho;
	struct mig_join j;
	uint8_t out[MIG_JOIN_LEN + 16];
	uint32_t n;
	char why[MIG_ERRMSG_MAX];

	switch (which) {
	case W_ROUND_BEGIN:
		if (mig_round_begin_decode(buf, len, &rb, why, sizeof(why)) == 0)
			same_bytes(buf, len, out, mig_round_begin_encode(out,
			    sizeof(out), &rb));
		break;
	case W_ROUND_END:
		if (mig_round_end_decode(buf, len, &re, why, sizeof(why)) == 0)
			same_bytes(buf, len, out, mig_round_end_encode(out,
			    sizeof(out), &re));
		break;
	case W_STATE_HDR:
		/* The length covers the chunk's data too. */
		if (mig_state_hdr_decode(buf, len, &sh, why, sizeof(why)) == 0)
			same_bytes(buf, MIG_STATE_HDR_LEN, out,
			    mig_state_hdr_encode(out, sizeof(out), &sh));
		break;
	case W_READY:
		if (mig_ready_decode(buf, len, &rd, why, sizeof(why)) == 0)
			same_bytes(buf, len, out, mig_ready_encode(out,
			    sizeof(out), &rd));
		break;
	case W_HOLD:
		if (mig_hold_decode(buf, len, &ho, why, sizeof(why)) != 0)
			break;
		require(ho.hold_ms >= 1 && ho.hold_ms <= MIG_MAX_HOLD_MS);
		same_bytes(buf, len, out, mig_hold_encode(out, sizeof(out),
		    &ho));
		break;
	case W_STREAMS:
		if (mig_streams_decode(buf, len, &n, why, sizeof(why)) != 0)
			break;
		require(n >= 2 && n <= MIG_STREAMS_MAX);
		same_bytes(buf, len, out, mig_streams_encode(out, sizeof(out),
		    n));
		break;
	case W_JOIN:
		if (mig_join_decode(buf, len, &j, why, sizeof(why)) != 0)
			break;
		/* It indexes the session's streams: never 0, never past. */
		require(j.nstreams >= 2 && j.nstreams <= MIG_STREAMS_MAX &&
		    j.index >= 1 && j.index < j.nstreams);
		same_bytes(buf, len, out, mig_join_encode(out, sizeof(out),
		    &j));
		break;
	}
}

static void
fuzz_hello_error(int which, uint8_t *buf, size_t len)
{
	struct mig_hello h, h2;
	struct mig_errmsg e, e2;
	uint8_t out[MIG_HELLO_LEN + MIG_ERRMSG_MAX + 16];
	char why[MIG_ERRMSG_MAX];
	size_t n;

	if (which == W_HELLO) {
		memset(&h, 0, sizeof(h));
		memset(&h2, 0, sizeof(h2));
		if (mig_hello_decode(buf, len, &h, why, sizeof(why)) != 0)
			return;
		n = mig_hello_encode(out, sizeof(out), &h);
		require(n == len && mig_hello_decode(out, n, &h2, why,
		    sizeof(why)) == 0 && memcmp(&h, &h2, sizeof(h)) == 0);
		return;
	}
	memset(&e, 0, sizeof(e));
	memset(&e2, 0, sizeof(e2));
	if (mig_error_decode(buf, len, &e, why, sizeof(why)) != 0)
		return;
	require(memchr(e.msg, '\0', sizeof(e.msg)) != NULL);
	n = mig_error_encode(out, sizeof(out), &e);
	require(n > 0 && mig_error_decode(out, n, &e2, why,
	    sizeof(why)) == 0 && e.phase == e2.phase && e.side == e2.side &&
	    e.code == e2.code && strcmp(e.msg, e2.msg) == 0);
}

static void
fuzz_vminfo(uint8_t *buf, size_t len)
{
	static struct mig_vminfo vi, vi2, local;
	static uint8_t out[16384];
	char why[MIG_ERRMSG_MAX];
	size_t n;

	memset(&vi, 0, sizeof(vi));
	memset(&vi2, 0, sizeof(vi2));
	if (mig_vminfo_decode(buf, len, &vi, why, sizeof(why)) != 0)
		return;
	require(vi.nsegs <= MIG_MAX_SEGS && vi.nsections <= MIG_MAX_SECTIONS);
	n = mig_vminfo_encode(out, sizeof(out), &vi);
	require(n > 0 && mig_vminfo_decode(out, n, &vi2, why,
	    sizeof(why)) == 0 && memcmp(&vi, &vi2, sizeof(vi)) == 0);
	fuzz_guest_vminfo(&local);
	(void)mig_vminfo_compare(&vi, &local, why, sizeof(why));
}

static void
fuzz_pages(uint8_t *buf, size_t len)
{
	struct mig_pages_hdr ph;
	uint64_t *idx;
	uint32_t count, ndata, payload_len, seg_pages;
	char why[MIG_ERRMSG_MAX];
	size_t i;

	/* u32 payload length | u32 segment pages | header | indexes. */
	if (len < 8)
		return;
	payload_len = mig_le32dec(buf);
	seg_pages = mig_le32dec(buf + 4);
	if (mig_pages_hdr_decode(buf + 8, len - 8, payload_len, &ph, why,
	    sizeof(why)) != 0)
		return;
	require(ph.count >= 1 && ph.count <= MIG_PAGES_PER_MSG &&
	    payload_len >= MIG_PAGES_HDR_LEN + 8ull * ph.count);
	count = (uint32_t)((len - 8 - MIG_PAGES_HDR_LEN) / 8);
	if (count > ph.count)
		count = ph.count;
	if ((idx = malloc(8 * (size_t)count + 1)) == NULL)
		abort();
	for (i = 0; i < count; i++)
		idx[i] = mig_le64dec(buf + 8 + MIG_PAGES_HDR_LEN + 8 * i);
	if (mig_pages_index_check(idx, count, seg_pages, payload_len, &ndata,
	    why, sizeof(why)) == 0) {
		require(ndata <= count);
		for (i = 0; i < count; i++)
			require((idx[i] & ~MIG_PAGE_ZERO) < seg_pages &&
			    (i == 0 || (idx[i] & ~MIG_PAGE_ZERO) >
			    (idx[i - 1] & ~MIG_PAGE_ZERO)));
	}
	free(idx);
}

static void
fuzz_zero_ranges(uint8_t *buf, size_t len)
{
	static struct mig_zero_ranges z;
	static struct mig_vminfo vi;
	char why[MIG_ERRMSG_MAX];
	uint32_t i;

	fuzz_guest_vminfo(&vi);
	if (mig_zero_ranges_decode(buf, len, &vi, &z, why, sizeof(why)) != 0)
		return;
	for (i = 0; i < z.count; i++)
		require(z.r[i].npages > 0 && z.r[i].first + z.r[i].npages <=
		    vi.segs[z.seg].len / MIG_PAGE_SIZE);
}

/*
 * u8 block size (512 << (b % 12)) | u64 disk size | DISK_BLOCKS or
 * DISK_ZERO: the disk is the guest's only one once VMINFO's decoder
 * takes it, so sizes near 2^64 and short last blocks are reached.
 */
static void
fuzz_disk(int which, uint8_t *buf, size_t len)
{
	static struct mig_disk_blocks b;
	static struct mig_disk_zero z;
	static struct mig_vminfo vi, vi2;
	static uint8_t out[16384];
	const struct mig_disk *d;
	char why[MIG_ERRMSG_MAX];
	uint64_t data, nblocks, block;
	uint32_t i;
	size_t n, idxlen;

	if (len < 9)
		return;
	fuzz_guest_vminfo(&vi);
	vi.disk_flags = MIG_DISKS_MOVE;
	vi.disks[0].block_size = MIG_DISK_BLOCK_MIN << (buf[0] % 12);
	vi.disks[0].size = mig_le64dec(buf + 1);
	n = mig_vminfo_encode(out, sizeof(out), &vi);
	if (n == 0 || mig_vminfo_decode(out, n, &vi2, why, sizeof(why)) != 0)
		return;
	d = &vi2.disks[0];
	nblocks = mig_disk_nblocks(d);
	require(nblocks >= 1 && nblocks * d->block_size >= d->size &&
	    (nblocks - 1) * d->block_size < d->size);
	buf += 9;
	len -= 9;
	if (which == W_DISK_ZERO) {
		if (mig_disk_zero_decode(buf, len, &vi2, &z, why,
		    sizeof(why)) != 0)
			return;
		for (i = 0; i < z.count; i++)
			require(z.r[i].npages > 0 && z.r[i].first < nblocks &&
			    z.r[i].npages <= nblocks - z.r[i].first &&
			    (i == 0 || z.r[i].first >= z.r[i - 1].first +
			    z.r[i - 1].npages));
		same_bytes(buf, len, out, mig_disk_zero_encode(out,
		    sizeof(out), &z));
		return;
	}
	if (mig_disk_blocks_decode(buf, len, &vi2, &b, why, sizeof(why)) != 0)
		return;
	require(b.disk == 0 && b.count >= 1 &&
	    b.count <= mig_disk_blocks_per_msg(d->block_size));
	data = 0;
	for (i = 0; i < b.count; i++) {
		block = b.idx[i] & ~MIG_BLOCK_ZERO;
		require(block < nblocks && (i == 0 || block >
		    (b.idx[i - 1] & ~MIG_BLOCK_ZERO)));
		require(mig_disk_block_len(d, block) >= 1 &&
		    mig_disk_block_len(d, block) <= d->block_size);
		if ((b.idx[i] & MIG_BLOCK_ZERO) == 0)
			data += mig_disk_block_len(d, block);
	}
	/* The data is the rest of the frame, block by block. */
	idxlen = MIG_DISK_BLOCKS_HDR_LEN + 8 * (size_t)b.count;
	require(b.data == buf + idxlen && data == len - idxlen);
	same_bytes(buf, idxlen, out, mig_disk_blocks_encode(out, sizeof(out),
	    &b));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mig_hdr h;
	uint8_t hdr[MIG_HDR_LEN], *buf;
	char why[MIG_ERRMSG_MAX];
	size_t len;
	int which;

	if (size < 1)
		return (0);
	which = data[0] % W_COUNT;
	len = size - 1;
	if ((buf = malloc(len > 0 ? len : 1)) == NULL)
		abort();
	memcpy(buf, data + 1, len);
	switch (which) {
	case W_HDR:
		if (len >= MIG_HDR_LEN) {
			memcpy(hdr, buf, sizeof(hdr));
			if (mig_hdr_decode(hdr, &h, why, sizeof(why)) == 0)
				require(h.len <= MIG_PAYLOAD_MAX &&
				    h.type < MIG_MSG_TYPE_MAX);
		}
		break;
	case W_HELLO:
	case W_ERROR:
		fuzz_hello_error(which, buf, len);
		break;
	case W_VMINFO:
		fuzz_vminfo(buf, len);
		break;
	case W_PAGES:
		fuzz_pages(buf, len);
		break;
	case W_ZERO_RANGES:
		fuzz_zero_ranges(buf, len);
		break;
	case W_NAME:
		if (len >= 2)
			require(mig_msg_name(mig_le16dec(buf)) != NULL);
		break;
	case W_DISK_BLOCKS:
	case W_DISK_ZERO:
		fuzz_disk(which, buf, len);
		break;
	default:
		fuzz_fixed(which, buf, len);
		break;
	}
	free(buf);
	return (0);
}
