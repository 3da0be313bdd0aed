/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * One stream's frames of memory, prepared by the caller's thread and
 * written by a writer thread of their own: page copies, zero checks and
 * tags are computed while the previous frames are in the kernel, so the
 * socket's thread spends its core on TCP alone.  Frames leave in the
 * order they were sealed (their sequence numbers).  Only the writer
 * touches the socket while the pipe runs, and only the caller the
 * channel's keys.
 */

#ifndef _MIGRATION_TXPIPE_H_
#define	_MIGRATION_TXPIPE_H_

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "migration.h"
#include "migration_chan.h"
#include "migration_wire.h"

/*
 * Frames in flight: one written while the next is filled.  A third slot
 * gained nothing measurable here and costs 1 MiB per stream.
 */
#define	MIG_TXPIPE_SLOTS	2

/*
 * A slot holds one PAGES frame, or a PAGES_INDEX and its PAGES_DATA
 * (MIG_CAP_OWED), written in the order sealed.
 */
#define	MIG_TXSLOT_FRAMES	MIG_WRITE_FRAMES

struct mig_txslot {
	struct mig_frame f[MIG_TXSLOT_FRAMES];
	int		nframes;
	/* Frozen copies of pages, or the ciphertext when encrypting. */
	uint8_t		*buf;
	uint8_t		meta[MIG_PAGES_HDR_LEN + 8 * MIG_PAGES_PER_MSG];
};

struct mig_txpipe {
	struct mig_chan	*ch;
	struct mig_txslot *slot;	/* MIG_TXPIPE_SLOTS of them */
	pthread_mutex_t	mtx;
	pthread_cond_t	cv;
	pthread_t	writer;
	uint64_t	sealed;		/* frames handed to the writer */
	uint64_t	written;
	int		error;		/* the writer's; it stopped */
	bool		closing;	/* no frame follows */
	bool		running;
};

/* Buffers for the pipe's lifetime; 0 or ENOMEM. */
int	mig_txpipe_init(struct mig_txpipe *);
/* Stops the writer if it runs; it must be drained. */
void	mig_txpipe_destroy(struct mig_txpipe *);
/* Start the writer on ch, for good; 0 or an errno. */
int	mig_txpipe_start(struct mig_txpipe *, struct mig_chan *);
/*
 * The slot to fill next, once the writer has let go of it, empty; or
 * the error that stopped the writer.
 */
int	mig_txpipe_slot(struct mig_txpipe *, struct mig_txslot **);
/*
 * Seal the slot's next frame from parts; its buf and meta stay.  Only
 * the last of a slot's frames may be encrypted into buf.
 */
int	mig_txpipe_seal(struct mig_txpipe *, struct mig_txslot *,
	    uint16_t type, const struct iovec *parts, int nparts);
/* Hand the slot's sealed frames to the writer. */
void	mig_txpipe_queue(struct mig_txpipe *);
/*
 * Wait until every queued frame is written or the writer failed: its
 * error, or 0.  Then the writer is idle and the channel the caller's
 * again.  A failing caller drains the pipe too, since a later keyed
 * frame (ERROR) needs the sequence unbroken.
 */
int	mig_txpipe_drain(struct mig_txpipe *);

#endif /* _MIGRATION_TXPIPE_H_ */
