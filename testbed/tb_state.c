/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migration_wire.h"

#include "tb_guest.h"
#include "tb_state.h"

/*
 * cpuN, 48 bytes: le32 vCPU index, le32 zero, le64 first page of the
 * region, le64 loop length in pages, le64 position, le64 pass, le64
 * iterations.  The region and loop travel so that a destination started
 * with another --vcpus, --memory or --workload is refused instead of
 * continuing a loop it does not have.
 */
#define	CPU_STATE_LEN		48
#define	COUNTER_STATE_LEN	8
#define	DEVICE_STATE_LEN	8	/* tb-dma, tb-disk: le64 writes done */

enum sect {
	SECT_CPU,
	SECT_COUNTER,
	SECT_BLOB,
	SECT_DMA,
	SECT_DISK
};

/* vCPUs, tb-counter, tb-blob, then the devices the guest has. */
static enum sect
section_of(const struct tb_guest *g, uint32_t idx)
{
	uint32_t ncpu = tb_guest_config(g)->nvcpus;

	if (idx < ncpu)
		return (SECT_CPU);
	if (idx == ncpu)
		return (SECT_COUNTER);
	if (idx == ncpu + 1)
		return (SECT_BLOB);
	if (idx == ncpu + 2 && tb_guest_dma(g) != NULL)
		return (SECT_DMA);
	return (SECT_DISK);
}

uint32_t
tb_state_nsections(const struct tb_guest *g)
{

	return (tb_guest_config(g)->nvcpus + 2 +
	    (tb_guest_dma(g) != NULL ? 1 : 0) +
	    (tb_guest_disk(g) != NULL ? 1 : 0));
}

void
tb_state_name(const struct tb_guest *g, uint32_t idx, char *name,
    size_t namelen)
{
	static const char *const names[] = {
		[SECT_COUNTER] = "tb-counter",
		[SECT_BLOB] = "tb-blob",
		[SECT_DMA] = "tb-dma",
		[SECT_DISK] = "tb-disk",
	};
	enum sect k = section_of(g, idx);

	if (k == SECT_CPU)
		snprintf(name, namelen, "cpu%u", idx);
	else
		snprintf(name, namelen, "%s", names[k]);
}

size_t
tb_state_len(const struct tb_guest *g, uint32_t idx)
{
	static const size_t lens[] = {
		[SECT_CPU] = CPU_STATE_LEN,
		[SECT_COUNTER] = COUNTER_STATE_LEN,
		[SECT_BLOB] = TB_BLOB_SIZE,
		[SECT_DMA] = DEVICE_STATE_LEN,
		[SECT_DISK] = DEVICE_STATE_LEN,
	};

	return (lens[section_of(g, idx)]);
}

int
tb_state_save(struct tb_guest *g, uint32_t idx, void **bufp, size_t *lenp,
    char *msg, size_t msglen)
{
	uint32_t ncpu = tb_guest_config(g)->nvcpus;
	uint64_t first, npages, loop;
	struct tb_vcpu_regs r;
	uint8_t *buf;
	size_t len;

	if (idx >= tb_state_nsections(g)) {
		snprintf(msg, msglen, "no state section %u", idx);
		return (EINVAL);
	}
	len = tb_state_len(g, idx);
	buf = malloc(len);
	if (buf == NULL) {
		snprintf(msg, msglen, "out of memory");
		return (ENOMEM);
	}
	if (idx < ncpu) {
		tb_guest_region(g, idx, &first, &npages, &loop);
		tb_guest_get_regs(g, idx, &r);
		mig_le32enc(buf, idx);
		mig_le32enc(buf + 4, 0);
		mig_le64enc(buf + 8, first);
		mig_le64enc(buf + 16, loop);
		mig_le64enc(buf + 24, r.position);
		mig_le64enc(buf + 32, r.pass);
		mig_le64enc(buf + 40, r.iterations);
	} else if (section_of(g, idx) == SECT_COUNTER)
		mig_le64enc(buf, tb_guest_counter(g));
	else if (section_of(g, idx) == SECT_BLOB)
		memcpy(buf, tb_guest_blob(g), TB_BLOB_SIZE);
	else if (section_of(g, idx) == SECT_DMA)
		mig_le64enc(buf, tb_dma_seq(tb_guest_dma(g)));
	else
		mig_le64enc(buf, tb_disk_seq(tb_guest_disk(g)));
	*bufp = buf;
	*lenp = len;
	return (0);
}

static int
restore_cpu(struct tb_guest *g, uint32_t idx, const uint8_t *buf,
    char *msg, size_t msglen)
{
	uint64_t first, npages, loop;
	struct tb_vcpu_regs r;

	tb_guest_region(g, idx, &first, &npages, &loop);
	if (mig_le32dec(buf) != idx || mig_le32dec(buf + 4) != 0) {
		snprintf(msg, msglen, "cpu%u: state belongs to vCPU %u",
		    idx, mig_le32dec(buf));
		return (EINVAL);
	}
	if (mig_le64dec(buf + 8) != first || mig_le64dec(buf + 16) != loop) {
		snprintf(msg, msglen, "cpu%u: the source's vCPU loops over "
		    "%" PRIu64 " pages from page %" PRIu64 ", this one over "
		    "%" PRIu64 " from %" PRIu64 " (start the destination "
		    "with the same --memory, --vcpus and --workload)", idx,
		    mig_le64dec(buf + 16), mig_le64dec(buf + 8), loop, first);
		return (EINVAL);
	}
	r.position = mig_le64dec(buf + 24);
	r.pass = mig_le64dec(buf + 32);
	r.iterations = mig_le64dec(buf + 40);
	if (loop == 0 ? r.position != 0 : r.position >= loop) {
		snprintf(msg, msglen, "cpu%u: position %" PRIu64 " is "
		    "outside the loop of %" PRIu64 " pages", idx, r.position,
		    loop);
		return (EINVAL);
	}
	tb_guest_set_regs(g, idx, &r);
	return (0);
}

int
tb_state_restore(struct tb_guest *g, uint32_t idx, const void *buf,
    size_t len, char *msg, size_t msglen)
{
	uint32_t ncpu = tb_guest_config(g)->nvcpus;
	char name[32];
	size_t want;

	if (idx >= tb_state_nsections(g)) {
		snprintf(msg, msglen, "no state section %u", idx);
		return (EINVAL);
	}
	tb_state_name(g, idx, name, sizeof(name));
	want = tb_state_len(g, idx);
	if (len != want) {
		snprintf(msg, msglen, "%s: state is %zu bytes, expected %zu",
		    name, len, want);
		return (EINVAL);
	}
	if (idx < ncpu)
		return (restore_cpu(g, idx, buf, msg, msglen));
	switch (section_of(g, idx)) {
	case SECT_COUNTER:
		tb_guest_set_counter(g, mig_le64dec(buf));
		break;
	case SECT_BLOB:
		memcpy(tb_guest_blob(g), buf, TB_BLOB_SIZE);
		break;
	case SECT_DMA:
		tb_dma_set_seq(tb_guest_dma(g), mig_le64dec(buf));
		break;
	default:
		tb_disk_set_seq(tb_guest_disk(g), mig_le64dec(buf));
		break;
	}
	return (0);
}
