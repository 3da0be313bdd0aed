/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The test guest: anonymous memory in bhyve-like segments, vCPU threads
 * running a checkable workload, and two devices ("tb-counter", which the
 * vCPUs bump, and "tb-blob", fixed data checked by hash).
 */

#ifndef _TB_GUEST_H_
#define	_TB_GUEST_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tb_dirty.h"
#include "tb_disk.h"
#include "tb_dma.h"

#define	TB_NAME_MAX		64	/* guest name, with its NUL */
#define	TB_MAX_VCPUS		62	/* leaves two state sections */
#define	TB_MAX_SEGS		16
#define	TB_SEG_STRIDE		(1ull << 32)	/* gpa distance of segments */
#define	TB_BLOB_SIZE		(64u << 10)
#define	TB_COUNTER_EVERY	256	/* vCPU iterations per counter bump */
#define	TB_VERIFY_MAX_REPORT	10

enum tb_workload_kind {
	TB_WL_IDLE = 0,
	TB_WL_FULL,
	TB_WL_HOTSET
};

struct tb_workload {
	enum tb_workload_kind kind;
	uint64_t	hot_bytes;	/* TB_WL_HOTSET: whole guest */
	uint64_t	rate;		/* pages/s per vCPU; 0: unlimited */
};

enum tb_fill {
	TB_FILL_PATTERN = 0,
	TB_FILL_ZERO
};

struct tb_guest_config {
	char		name[TB_NAME_MAX];
	uint64_t	memory;		/* bytes */
	uint32_t	nvcpus;
	uint32_t	nsegs;
	struct tb_workload workload;
	enum tb_fill	fill;
	uint64_t	seed;
	bool		lazy_memory;	/* receive: no fault-in up front */
	struct tb_dma_config dma;
	struct tb_disk_config disk;
};

/* One vCPU's "registers": where its loop is. */
struct tb_vcpu_regs {
	uint64_t	position;	/* next page of the loop */
	uint64_t	pass;		/* completed loops */
	uint64_t	iterations;	/* pages incremented so far */
};

struct tb_guest;

struct tb_verify {
	bool		ok;
	uint64_t	pages_checked;
	uint64_t	nmismatches;
	uint32_t	nreported;
	char		mismatch[TB_VERIFY_MAX_REPORT][160];
};

/* Parse "idle", "full" or "hotset:SIZE", each with an optional "@RATE". */
int	tb_workload_parse(const char *, struct tb_workload *, char *msg,
	    size_t msglen);
/* Check a configuration before anything is allocated. */
int	tb_guest_config_check(const struct tb_guest_config *, char *msg,
	    size_t msglen);

/*
 * Create the guest, its vCPUs held paused.  A guest that will receive
 * its memory and state (fresh == false) is left zeroed instead of being
 * filled and seeded.
 */
int	tb_guest_create(struct tb_guest **, const struct tb_guest_config *,
	    bool fresh, char *msg, size_t msglen);
void	tb_guest_destroy(struct tb_guest *);

const struct tb_guest_config *tb_guest_config(const struct tb_guest *);
uint32_t tb_guest_nsegs(const struct tb_guest *);
void	tb_guest_seg(const struct tb_guest *, uint32_t, uint64_t *gpa,
	    uint64_t *len, uint8_t **host);
struct tb_dirty *tb_guest_dirty(const struct tb_guest *);
/* The guest's memory mapping and tb-dma's (NULL without), len bytes each. */
void	tb_guest_mappings(const struct tb_guest *, const uint8_t **mem,
	    const uint8_t **alias, uint64_t *len);
/* The tb-dma device, or NULL when the guest has none. */
struct tb_dma *tb_guest_dma(const struct tb_guest *);
/* The tb-disk device, or NULL when the guest has none. */
struct tb_disk *tb_guest_disk(const struct tb_guest *);

/* Stop every vCPU between two iterations; resume releases them. */
int	tb_guest_pause(struct tb_guest *);
int	tb_guest_resume(struct tb_guest *);
bool	tb_guest_is_running(const struct tb_guest *);
/* Let vCPUs run (100 - percent)% of the time; percent < 100. */
int	tb_guest_throttle(struct tb_guest *, uint32_t percent);
uint64_t tb_guest_iterations(const struct tb_guest *);

/* vCPU and device state, for a paused guest. */
void	tb_guest_get_regs(const struct tb_guest *, uint32_t vcpu,
	    struct tb_vcpu_regs *);
void	tb_guest_set_regs(struct tb_guest *, uint32_t vcpu,
	    const struct tb_vcpu_regs *);
/* vCPU's pages [first, first + npages); it loops over the first loop. */
void	tb_guest_region(const struct tb_guest *, uint32_t vcpu,
	    uint64_t *first, uint64_t *npages, uint64_t *loop);
/* Host address and gpa of page idx of all segments in gpa order. */
uint8_t	*tb_guest_page(const struct tb_guest *, uint64_t idx, uint64_t *gpa);
uint64_t tb_guest_counter(const struct tb_guest *);
void	tb_guest_set_counter(struct tb_guest *, uint64_t);
uint8_t	*tb_guest_blob(struct tb_guest *);

/* Record a mismatch a device's own check found. */
void	tb_verify_add(struct tb_verify *, const char *line);
/* Check memory, vCPU positions and devices against the workload. */
int	tb_guest_verify(struct tb_guest *, struct tb_verify *, char *msg,
	    size_t msglen);

#endif /* _TB_GUEST_H_ */
