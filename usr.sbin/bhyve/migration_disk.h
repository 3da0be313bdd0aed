/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Disk migration without shared storage, for the engine's sender and
 * receiver (not for backends).  A disk is tracked like memory: round 1
 * sends every block (unallocated runs as DISK_ZERO ranges, unread),
 * later rounds the blocks written since the previous collection, the
 * final round what was written up to the pause, each round's disk
 * frames after its pages and before ROUND_END.  The source only ever
 * reads its disks; the destination writes its own images and keeps
 * them marked incomplete until GO.
 */

#ifndef _MIGRATION_DISK_H_
#define	_MIGRATION_DISK_H_

#include <stdbool.h>
#include <stdint.h>

#include "migration.h"
#include "migration_backend.h"
#include "migration_chan.h"

struct mig_disk_send;
struct mig_disk_recv;

/* Before each disk frame: the sender's cancel and pause-bound checks. */
typedef int	mig_disk_step_fn(void *arg);

/*
 * Source.  Set vi's disk flags from the parameters; refuse (EINVAL or
 * ENOTSUP, msg saying why) a request the guest or backend cannot serve.
 */
int	mig_disk_describe(struct mig_vminfo *, const struct mig_backend *,
	    const struct mig_params *, char *msg, size_t msglen);
/*
 * With vi moving disks: arm their write bitmaps and mark every block
 * for round 1.  *dsp stays NULL otherwise.  Failures go to err.
 */
int	mig_disk_send_begin(struct mig_disk_send **dsp, struct mig_backend *,
	    const struct mig_vminfo *vi, struct mig_error *err,
	    const enum mig_phase *phase);
/* Take the written blocks; *dirty_bytes: what is now owed. */
int	mig_disk_send_collect(struct mig_disk_send *, uint64_t *dirty_bytes);
/* Send every owed block into round r (its stats count them). */
int	mig_disk_send_round(struct mig_disk_send *, struct mig_chan *,
	    struct mig_round_stats *r, mig_disk_step_fn *step, void *steparg);
/* Stop tracking and free; NULL is fine. */
void	mig_disk_send_end(struct mig_disk_send *);

/*
 * Destination, once the source's description compared equal: check
 * that this backend can take what the source moves and, unless it is
 * a dry run, mark the images incomplete before anything is written.
 */
int	mig_disk_recv_begin(struct mig_disk_recv **drp, struct mig_backend *,
	    const struct mig_vminfo *peer, struct mig_error *err,
	    const enum mig_phase *phase, bool check_only);
/* A whole, verified DISK_BLOCKS or DISK_ZERO frame; round or NULL. */
int	mig_disk_recv_frame(struct mig_disk_recv *, struct mig_chan *,
	    struct mig_round_stats *round, uint16_t type, void *payload,
	    uint32_t len);
/* After GO: the images flushed, drop their marks.  NULL is fine. */
int	mig_disk_recv_done(struct mig_disk_recv *);
void	mig_disk_recv_free(struct mig_disk_recv *);

#endif /* _MIGRATION_DISK_H_ */
