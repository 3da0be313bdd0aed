/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Disk migration without shared storage (migration_disk.h).
 *
 * Why no put-back: a failed attempt drops its disk bitmaps, and the next
 * attempt's round 1 sends every block again, as memory's mark-all does;
 * the source's disks are only read, so nothing there needs undoing.
 *
 * Why the destination's "incomplete" mark goes once GO arrived, and not
 * only if RUNNING reached the source: after GO the guest runs here and
 * nowhere else (the source committed before sending it), whether or
 * not RUNNING arrives; an image it runs on must not look unfinished.
 * Before GO every failure leaves the mark, which the backend made
 * durable before the first block was written, so a crash at any point
 * is caught too.  The images are flushed once, after RUNNING, outside
 * the downtime (flushing at each round's end held the next round's
 * frames, the final one's among them, behind the write-back), and only
 * then is the mark dropped: a crash before that leaves it.
 */

#include <sys/types.h>
#include <sys/uio.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migration.h"
#include "migration_backend.h"
#include "migration_chan.h"
#include "migration_disk.h"
#include "migration_internal.h"
#include "migration_wire.h"

struct mig_disk_send {
	struct mig_backend *be;
	struct mig_error *err;
	const enum mig_phase *phase;
	const struct mig_vminfo *vi;
	uint64_t	nblocks[MIG_MAX_DISKS];
	uint64_t	*todo[MIG_MAX_DISKS];	/* blocks next round sends */
	bool		started[MIG_MAX_DISKS];
	bool		first;			/* round 1 still to come */
	uint64_t	*chunk;
	uint8_t		*buf;			/* one frame's data */
	struct mig_disk_blocks blocks;
	uint8_t		meta[MIG_DISK_BLOCKS_HDR_LEN + 8 * MIG_PAGES_PER_MSG];
};

struct mig_disk_recv {
	struct mig_backend *be;
	struct mig_error *err;
	const enum mig_phase *phase;
	struct mig_vminfo vi;
	bool		moving;
	bool		done;
};

static int
backend_fail(struct mig_backend *be, struct mig_error *err,
    enum mig_side side, enum mig_phase phase, int error, const char *what)
{

	mig_fail(err, side, phase, error, "%s: %s", what,
	    be->errmsg[0] != '\0' ? be->errmsg : strerror(error));
	return (error);
}

static int
send_fail(struct mig_disk_send *ds, int error, const char *what)
{

	return (backend_fail(ds->be, ds->err, MIG_SIDE_SOURCE, *ds->phase,
	    error, what));
}

int
mig_disk_describe(struct mig_vminfo *vi, const struct mig_backend *be,
    const struct mig_params *p, char *msg, size_t msglen)
{
	const struct mig_backend_ops *o = be->ops;
	uint32_t i;

	vi->disk_flags = 0;
	if (!p->migrate_disks)
		return (0);
	if (vi->ndisks == 0) {
		snprintf(msg, msglen, "disk migration was asked for, but the "
		    "guest has no disk");
		return (EINVAL);
	}
	/* Never move some disks and silently leave the rest behind. */
	if (vi->ndisks_beyond != 0) {
		snprintf(msg, msglen, "disk migration was asked for, but the "
		    "guest has %u disks, more than the %d a migration moves",
		    vi->ndisks + vi->ndisks_beyond, MIG_MAX_DISKS);
		return (E2BIG);
	}
	for (i = 0; i < vi->ndisks; i++) {
		if ((vi->disks[i].flags & MIG_DISK_READONLY) != 0) {
			snprintf(msg, msglen, "disk migration was asked for, "
			    "but disk %u is open read-only (a CD image, say) "
			    "and the destination could not write its copy: "
			    "give the destination its own copy of that image "
			    "and detach it here, or use shared storage", i);
			return (EROFS);
		}
	}
	if (o->disk_start == NULL || o->disk_collect == NULL ||
	    o->disk_read == NULL || o->disk_stop == NULL) {
		snprintf(msg, msglen, "this hypervisor cannot track its "
		    "guest's disk writes, so it cannot migrate disks");
		return (ENOTSUP);
	}
	vi->disk_flags = MIG_DISKS_MOVE;
	return (0);
}

/* Every block of disk i owed: round 1. */
static void
mark_all(struct mig_disk_send *ds, uint32_t i)
{
	uint64_t n;

	n = ds->nblocks[i];
	memset(ds->todo[i], 0xff, bitmap_words(n) * sizeof(uint64_t));
	if (n % BITS_PER_WORD != 0)
		ds->todo[i][bitmap_words(n) - 1] =
		    (1ull << (n % BITS_PER_WORD)) - 1;
}

int
mig_disk_send_begin(struct mig_disk_send **dsp, struct mig_backend *be,
    const struct mig_vminfo *vi, struct mig_error *err,
    const enum mig_phase *phase)
{
	struct mig_disk_send *ds;
	uint32_t i;
	int error;

	*dsp = NULL;
	if ((vi->disk_flags & MIG_DISKS_MOVE) == 0)
		return (0);
	if ((ds = calloc(1, sizeof(*ds))) == NULL ||
	    (ds->chunk = calloc(bitmap_words(MIG_DIRTY_CHUNK_PAGES),
	    sizeof(uint64_t))) == NULL ||
	    (ds->buf = malloc(MIG_DISK_DATA_MAX)) == NULL)
		goto nomem;
	ds->be = be;
	ds->err = err;
	ds->phase = phase;
	ds->vi = vi;
	ds->first = true;
	*dsp = ds;
	for (i = 0; i < vi->ndisks; i++) {
		ds->nblocks[i] = mig_disk_nblocks(&vi->disks[i]);
		if ((ds->todo[i] = calloc(bitmap_words(ds->nblocks[i]),
		    sizeof(uint64_t))) == NULL)
			goto nomem;
		mark_all(ds, i);
	}
	/* Armed before round 1 reads: a write from now on is marked. */
	for (i = 0; i < vi->ndisks; i++) {
		if ((error = be->ops->disk_start(be->arg, i)) != 0)
			return (send_fail(ds, error,
			    "could not start tracking disk writes"));
		ds->started[i] = true;
	}
	return (0);
nomem:
	mig_fail(err, MIG_SIDE_SOURCE, *phase, ENOMEM,
	    "out of memory for disk bitmaps");
	if (ds != NULL && *dsp == NULL) {
		free(ds->chunk);
		free(ds->buf);
		free(ds);
	}
	return (ENOMEM);
}

void
mig_disk_send_end(struct mig_disk_send *ds)
{
	uint32_t i;

	if (ds == NULL)
		return;
	for (i = 0; i < MIG_MAX_DISKS; i++) {
		if (ds->started[i])
			ds->be->ops->disk_stop(ds->be->arg, i);
		free(ds->todo[i]);
	}
	free(ds->chunk);
	free(ds->buf);
	free(ds);
}

typedef int	disk_bits_op_t(void *, uint32_t, uint64_t, uint64_t,
		    uint64_t *);

/* A backend bitmap operation over blocks [first, first + n) of disk. */
static int
fetch_bits(struct mig_disk_send *ds, disk_bits_op_t *op, uint32_t disk,
    uint64_t first, uint64_t n, const char *what)
{
	uint64_t nw;
	int error;

	nw = bitmap_words(n);
	memset(ds->chunk, 0, nw * sizeof(uint64_t));
	if ((error = op(ds->be->arg, disk, first, n, ds->chunk)) != 0)
		return (send_fail(ds, error, what));
	if (n % BITS_PER_WORD != 0)
		ds->chunk[nw - 1] &= (1ull << (n % BITS_PER_WORD)) - 1;
	return (0);
}

static uint64_t
chunk_len(uint64_t nblocks, uint64_t first)
{
	uint64_t n;

	n = nblocks - first;
	return (n > MIG_DIRTY_CHUNK_PAGES ? MIG_DIRTY_CHUNK_PAGES : n);
}

int
mig_disk_send_collect(struct mig_disk_send *ds, uint64_t *dirty_bytes)
{
	uint64_t first, n, w, blocks;
	uint32_t i;
	int error;

	*dirty_bytes = 0;
	for (i = 0; i < ds->vi->ndisks; i++) {
		for (first = 0; first < ds->nblocks[i]; first += n) {
			n = chunk_len(ds->nblocks[i], first);
			if ((error = fetch_bits(ds, ds->be->ops->disk_collect,
			    i, first, n, "could not read a disk's write "
			    "bitmap")) != 0)
				return (error);
			for (w = 0; w < bitmap_words(n); w++)
				ds->todo[i][first / BITS_PER_WORD + w] |=
				    ds->chunk[w];
		}
		blocks = popcount_words(ds->todo[i],
		    bitmap_words(ds->nblocks[i]));
		*dirty_bytes += blocks * (ds->vi->disks[i].block_size + 8);
	}
	return (0);
}

static int
send_frame(struct mig_chan *ch, uint16_t type, const struct iovec *parts,
    int nparts, struct mig_round_stats *r)
{
	uint64_t before;
	int error;

	before = ch->bytes_tx;
	error = mig_chan_sendv(ch, type, parts, nparts);
	r->bytes += ch->bytes_tx - before;
	r->disk_bytes += ch->bytes_tx - before;
	return (error);
}

static bool
block_is_zero(const uint8_t *p, size_t len)
{

	return (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

/*
 * Read the frame's blocks (runs of consecutive ones at once), turn the
 * all-zero ones into markers and send.
 */
static int
flush_blocks(struct mig_disk_send *ds, struct mig_chan *ch,
    struct mig_round_stats *r, mig_disk_step_fn *step, void *steparg)
{
	struct iovec parts[1 + MIG_PAGES_PER_MSG];
	const struct mig_disk *d;
	struct mig_disk_blocks *b = &ds->blocks;
	size_t off[MIG_PAGES_PER_MSG], pos, runpos;
	uint64_t block, run;
	uint32_t i, j, len, n;
	int error;

	if ((error = step(steparg)) != 0)
		return (error);
	d = &ds->vi->disks[b->disk];
	pos = 0;
	for (i = 0; i < b->count; i = j) {
		run = b->idx[i];
		runpos = pos;
		for (j = i; j < b->count && b->idx[j] == run + (j - i); j++) {
			off[j] = pos;
			pos += mig_disk_block_len(d, b->idx[j]);
		}
		if ((error = ds->be->ops->disk_read(ds->be->arg, b->disk, run,
		    j - i, ds->buf + runpos)) != 0)
			return (send_fail(ds, error, "could not read a disk"));
	}
	n = 1;
	for (i = 0; i < b->count; i++) {
		block = b->idx[i];
		len = mig_disk_block_len(d, block);
		if (block_is_zero(ds->buf + off[i], len)) {
			b->idx[i] |= MIG_BLOCK_ZERO;
			r->disk_zero_blocks++;
			continue;
		}
		parts[n].iov_base = ds->buf + off[i];
		parts[n++].iov_len = len;
		r->disk_blocks_sent++;
	}
	parts[0].iov_base = ds->meta;
	parts[0].iov_len = mig_disk_blocks_encode(ds->meta, sizeof(ds->meta),
	    b);
	if ((error = send_frame(ch, MIG_MSG_DISK_BLOCKS, parts, (int)n, r))
	    != 0) {
		mig_fail_chan(ds->err, ch, *ds->phase, error,
		    "sending disk blocks");
		return (error);
	}
	b->count = 0;
	return (0);
}

static int
flush_zero(struct mig_disk_send *ds, struct mig_chan *ch,
    struct mig_disk_zero *z, struct mig_round_stats *r)
{
	uint8_t buf[MIG_ZERO_RANGES_HDR_LEN +
	    MIG_ZERO_RANGES_MAX * MIG_ZERO_RANGE_LEN];
	struct iovec part;
	int error;

	if (z->count == 0)
		return (0);
	part.iov_base = buf;
	part.iov_len = mig_disk_zero_encode(buf, sizeof(buf), z);
	if ((error = send_frame(ch, MIG_MSG_DISK_ZERO, &part, 1, r)) != 0) {
		mig_fail_chan(ds->err, ch, *ds->phase, error,
		    "sending zero disk ranges");
		return (error);
	}
	z->count = 0;
	return (0);
}

/*
 * Round 1: blocks the backend says hold no data go as DISK_ZERO runs,
 * unread; a block written since tracking began is in the bitmap.
 */
static int
send_unallocated(struct mig_disk_send *ds, struct mig_chan *ch, uint32_t i,
    struct mig_round_stats *r)
{
	struct mig_disk_zero z;
	struct mig_zero_range *last;
	uint64_t first, n, w, zero, *t, block;
	int b, error;

	z.disk = i;
	z.count = 0;
	for (first = 0; first < ds->nblocks[i]; first += n) {
		n = chunk_len(ds->nblocks[i], first);
		if ((error = fetch_bits(ds, ds->be->ops->disk_allocated, i,
		    first, n, "could not tell which disk blocks hold data"))
		    != 0)
			return (error);
		for (w = 0; w < bitmap_words(n); w++) {
			t = &ds->todo[i][first / BITS_PER_WORD + w];
			zero = *t & ~ds->chunk[w];
			*t &= ~zero;
			r->disk_zero_blocks += (uint64_t)__builtin_popcountll(
			    zero);
			while (zero != 0) {
				b = __builtin_ctzll(zero);
				zero &= zero - 1;
				block = first + w * BITS_PER_WORD + (uint64_t)b;
				last = z.count > 0 ? &z.r[z.count - 1] : NULL;
				if (last != NULL &&
				    last->first + last->npages == block) {
					last->npages++;
					continue;
				}
				if (z.count == MIG_ZERO_RANGES_MAX &&
				    (error = flush_zero(ds, ch, &z, r)) != 0)
					return (error);
				z.r[z.count].first = block;
				z.r[z.count++].npages = 1;
			}
		}
	}
	return (flush_zero(ds, ch, &z, r));
}

int
mig_disk_send_round(struct mig_disk_send *ds, struct mig_chan *ch,
    struct mig_round_stats *r, mig_disk_step_fn *step, void *steparg)
{
	struct mig_disk_blocks *b = &ds->blocks;
	uint64_t bits, w;
	uint32_t i, max;
	int bit, error;

	for (i = 0; i < ds->vi->ndisks; i++)
		r->disk_dirty_blocks += popcount_words(ds->todo[i],
		    bitmap_words(ds->nblocks[i]));
	for (i = 0; i < ds->vi->ndisks; i++) {
		if (ds->first && ds->be->ops->disk_allocated != NULL &&
		    (error = send_unallocated(ds, ch, i, r)) != 0)
			return (error);
		max = mig_disk_blocks_per_msg(ds->vi->disks[i].block_size);
		b->disk = i;
		b->count = 0;
		for (w = 0; w < bitmap_words(ds->nblocks[i]); w++) {
			bits = ds->todo[i][w];
			ds->todo[i][w] = 0;
			while (bits != 0) {
				bit = __builtin_ctzll(bits);
				bits &= bits - 1;
				b->idx[b->count++] = w * BITS_PER_WORD +
				    (uint64_t)bit;
				if (b->count == max && (error = flush_blocks(ds,
				    ch, r, step, steparg)) != 0)
					return (error);
			}
		}
		if (b->count > 0 && (error = flush_blocks(ds, ch, r, step,
		    steparg)) != 0)
			return (error);
	}
	ds->first = false;
	return (0);
}

static int
recv_fail(struct mig_disk_recv *dr, int error, const char *what)
{

	return (backend_fail(dr->be, dr->err, MIG_SIDE_DEST, *dr->phase, error,
	    what));
}

/* The source broke the protocol. */
static int
proto_fail(struct mig_disk_recv *dr, const char *why)
{

	mig_fail(dr->err, MIG_SIDE_SOURCE, *dr->phase, EPROTO,
	    "the source sent an invalid stream: %s", why);
	return (EPROTO);
}

int
mig_disk_recv_begin(struct mig_disk_recv **drp, struct mig_backend *be,
    const struct mig_vminfo *peer, struct mig_error *err,
    const enum mig_phase *phase, bool check_only)
{
	const struct mig_backend_ops *o = be->ops;
	struct mig_disk_recv *dr;
	int error;

	*drp = NULL;
	if ((dr = calloc(1, sizeof(*dr))) == NULL) {
		mig_fail(err, MIG_SIDE_DEST, *phase, ENOMEM, "out of memory");
		return (ENOMEM);
	}
	dr->be = be;
	dr->err = err;
	dr->phase = phase;
	dr->vi = *peer;
	dr->moving = (peer->disk_flags & MIG_DISKS_MOVE) != 0;
	*drp = dr;
	if (!dr->moving)
		return (0);
	if (o->disk_write == NULL || o->disk_zero == NULL ||
	    o->disk_recv_begin == NULL || o->disk_recv_done == NULL) {
		mig_fail(err, MIG_SIDE_DEST, *phase, ENOTSUP,
		    "the source moves its disks, but this destination cannot "
		    "write disk images");
		return (ENOTSUP);
	}
	if (check_only)
		return (0);
	if ((error = o->disk_recv_begin(be->arg)) != 0)
		return (recv_fail(dr, error, "could not mark the disk images "
		    "incomplete"));
	return (0);
}

/* Write the frame's runs of data blocks and of zero blocks. */
static int
write_blocks(struct mig_disk_recv *dr, const struct mig_disk_blocks *b,
    struct mig_round_stats *r)
{
	const struct mig_disk *d = &dr->vi.disks[b->disk];
	uint64_t first, zero;
	size_t off, runlen;
	uint32_t i, j;
	int error;

	off = 0;
	for (i = 0; i < b->count; i = j) {
		first = b->idx[i] & ~MIG_BLOCK_ZERO;
		zero = b->idx[i] & MIG_BLOCK_ZERO;
		runlen = 0;
		for (j = i; j < b->count && b->idx[j] == ((first + (j - i)) |
		    zero); j++)
			runlen += mig_disk_block_len(d, first + (j - i));
		if (zero != 0) {
			error = dr->be->ops->disk_zero(dr->be->arg, b->disk,
			    first, j - i);
			r->disk_zero_blocks += j - i;
		} else {
			error = dr->be->ops->disk_write(dr->be->arg, b->disk,
			    first, j - i, b->data + off);
			off += runlen;
			r->disk_blocks_sent += j - i;
		}
		if (error != 0)
			return (recv_fail(dr, error, "could not write a disk "
			    "image"));
	}
	return (0);
}

int
mig_disk_recv_frame(struct mig_disk_recv *dr, struct mig_chan *ch,
    struct mig_round_stats *round, uint16_t type, void *payload,
    uint32_t len)
{
	struct mig_disk_blocks b;
	struct mig_disk_zero z;
	uint32_t i;
	int error;

	if (!dr->moving)
		return (proto_fail(dr, "disk blocks arrived, but the source "
		    "said it does not move its disks"));
	if (round == NULL)
		return (proto_fail(dr, "disk blocks arrived outside a round"));
	round->bytes += MIG_HDR_LEN + len + MIG_TAG_LEN;
	round->disk_bytes += MIG_HDR_LEN + len + MIG_TAG_LEN;
	if (type == MIG_MSG_DISK_ZERO) {
		if ((error = mig_disk_zero_decode(payload, len, &dr->vi, &z,
		    ch->why, sizeof(ch->why))) != 0) {
			mig_fail_chan(dr->err, ch, *dr->phase, error,
			    "receiving zero disk ranges");
			return (error);
		}
		for (i = 0; i < z.count; i++) {
			if ((error = dr->be->ops->disk_zero(dr->be->arg,
			    z.disk, z.r[i].first, z.r[i].npages)) != 0)
				return (recv_fail(dr, error, "could not zero "
				    "a disk image's blocks"));
			round->disk_zero_blocks += z.r[i].npages;
		}
		return (0);
	}
	if ((error = mig_disk_blocks_decode(payload, len, &dr->vi, &b,
	    ch->why, sizeof(ch->why))) != 0) {
		mig_fail_chan(dr->err, ch, *dr->phase, error,
		    "receiving disk blocks");
		return (error);
	}
	return (write_blocks(dr, &b, round));
}

int
mig_disk_recv_done(struct mig_disk_recv *dr)
{
	int error;

	if (dr == NULL || !dr->moving || dr->done)
		return (0);
	dr->done = true;
	if ((error = dr->be->ops->disk_recv_done(dr->be->arg)) != 0)
		return (recv_fail(dr, error, "could not complete the disk "
		    "images (flush, then clear their incomplete marks)"));
	return (0);
}

void
mig_disk_recv_free(struct mig_disk_recv *dr)
{

	free(dr);
}
