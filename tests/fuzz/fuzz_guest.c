/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_guest.h"
#include "migration_wire.h"

const uint8_t fuzz_key[MIG_KEY_LEN] = {
	0x66, 0x75, 0x7a, 0x7a, 0x2d, 0x6b, 0x65, 0x79,
	0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
	0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
	0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
};

static uint8_t seg0[FUZZ_SEG0_PAGES * MIG_PAGE_SIZE]
    __attribute__((__aligned__(4096)));
static uint8_t seg1[FUZZ_SEG1_PAGES * MIG_PAGE_SIZE]
    __attribute__((__aligned__(4096)));
static uint8_t restored[FUZZ_VCPU_STATE_LEN];
static uint8_t disk0[FUZZ_DISK_SIZE];

void
fuzz_guest_vminfo(struct mig_vminfo *vi)
{

	memset(vi, 0, sizeof(*vi));
	vi->ncpus = 1;
	vi->page_size = MIG_PAGE_SIZE;
	vi->nsegs = 2;
	vi->segs[0].gpa = 0;
	vi->segs[0].len = sizeof(seg0);
	vi->segs[0].host = seg0;
	vi->segs[1].gpa = 1ull << 32;
	vi->segs[1].len = sizeof(seg1);
	vi->segs[1].host = seg1;
	vi->nsections = 2;
	snprintf(vi->sections[0].name, sizeof(vi->sections[0].name), "vcpu0");
	vi->sections[0].version = 1;
	vi->sections[0].flags = MIG_SECTION_VCPU;
	vi->sections[0].size_hint = FUZZ_VCPU_STATE_LEN;
	snprintf(vi->sections[1].name, sizeof(vi->sections[1].name), "dev0");
	vi->sections[1].version = 2;
	vi->sections[1].size_hint = FUZZ_DEV_STATE_LEN;
	snprintf(vi->cpu_features, sizeof(vi->cpu_features), "fuzz-cpu");
	vi->ndisks = 1;
	vi->disks[0].block_size = FUZZ_DISK_BLOCK;
	vi->disks[0].size = FUZZ_DISK_SIZE;
}

static int
guest_vminfo(void *arg, struct mig_vminfo *vi)
{

	(void)arg;
	fuzz_guest_vminfo(vi);
	return (0);
}

/* As a real device would: a section of another size is refused. */
static int
guest_state_restore(void *arg, uint32_t idx, const void *buf, size_t len)
{
	struct mig_backend *be = arg;
	size_t want;

	want = idx == 0 ? FUZZ_VCPU_STATE_LEN : FUZZ_DEV_STATE_LEN;
	if (len != want) {
		snprintf(be->errmsg, sizeof(be->errmsg), "section %u has %zu "
		    "bytes, not %zu", idx, len, want);
		return (EINVAL);
	}
	memcpy(restored, buf, len);
	return (0);
}

/*
 * The engine checks every block against the disk before it writes: a
 * block beyond it here is the engine's bug, and aborts the run.
 */
static uint8_t *
disk_span(uint32_t disk, uint64_t first, uint64_t n, size_t *len)
{
	uint64_t end;

	if (disk != 0 || n == 0 || first >= FUZZ_DISK_BLOCKS ||
	    n > FUZZ_DISK_BLOCKS - first)
		abort();
	end = (first + n) * FUZZ_DISK_BLOCK;
	*len = (end < FUZZ_DISK_SIZE ? end : FUZZ_DISK_SIZE) -
	    first * FUZZ_DISK_BLOCK;
	return (disk0 + first * FUZZ_DISK_BLOCK);
}

static int
guest_disk_write(void *arg, uint32_t disk, uint64_t first, uint64_t n,
    const void *buf)
{
	uint8_t *p;
	size_t len;

	(void)arg;
	p = disk_span(disk, first, n, &len);
	memcpy(p, buf, len);
	return (0);
}

static int
guest_disk_zero(void *arg, uint32_t disk, uint64_t first, uint64_t n)
{
	uint8_t *p;
	size_t len;

	(void)arg;
	p = disk_span(disk, first, n, &len);
	memset(p, 0, len);
	return (0);
}

static int
guest_disk_mark(void *arg)
{

	(void)arg;
	return (0);
}

static void
guest_progress(void *arg, const struct mig_progress *p)
{

	(void)arg;
	(void)p;
}

static const struct mig_backend_ops guest_ops = {
	.vminfo = guest_vminfo,
	.state_restore = guest_state_restore,
	.disk_recv_begin = guest_disk_mark,
	.disk_write = guest_disk_write,
	.disk_zero = guest_disk_zero,
	.disk_recv_done = guest_disk_mark,
	.progress = guest_progress,
};

struct mig_backend *
fuzz_guest_backend(void)
{
	static struct mig_backend be;

	memset(&be, 0, sizeof(be));
	be.ops = &guest_ops;
	be.arg = &be;
	return (&be);
}

void
fuzz_guest_params(struct mig_params *p)
{

	mig_params_init(p);
	memcpy(p->key, fuzz_key, sizeof(p->key));
	p->io_timeout_ms = 2000;
}

int
fuzz_rec_next(const uint8_t **in, size_t *left, struct fuzz_rec *r)
{
	size_t len;

	if (*left < FUZZ_REC_HDR_LEN)
		return (0);
	r->type = (*in)[0];
	r->npad = (*in)[1];
	len = mig_le16dec(*in + 2);
	*in += FUZZ_REC_HDR_LEN;
	*left -= FUZZ_REC_HDR_LEN;
	r->len = len < *left ? len : *left;
	r->bytes = *in;
	*in += r->len;
	*left -= r->len;
	return (1);
}

size_t
fuzz_rec_put(uint8_t *buf, size_t buflen, size_t off, uint8_t type,
    uint8_t npad, const void *bytes, size_t len)
{

	if (len > UINT16_MAX || off + FUZZ_REC_HDR_LEN + len > buflen)
		return (0);
	buf[off] = type;
	buf[off + 1] = npad;
	mig_le16enc(buf + off + 2, (uint16_t)len);
	if (len > 0)
		memcpy(buf + off + FUZZ_REC_HDR_LEN, bytes, len);
	return (off + FUZZ_REC_HDR_LEN + len);
}
