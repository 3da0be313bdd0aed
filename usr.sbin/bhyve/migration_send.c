/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The source side.  Phases in order: handshake and authentication, the
 * guest's description (the destination checks compatibility), pre-copy
 * rounds while the guest runs (round 1 sends all memory, later rounds
 * what was written since the previous collection), stop-and-copy with
 * the guest paused, vCPU and device state, then READY/GO: the guest runs
 * on exactly one side.  Until GO is sent every failure resumes the guest
 * here.  Its dirty log ends with the attempt: a retry goes to a new
 * destination that holds nothing, so round 1 sends all memory again.
 */

#include <sys/types.h>
#include <sys/socket.h>

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "migration.h"
#include "migration_backend.h"
#include "migration_disk.h"
#include "migration_internal.h"
#include "migration_policy.h"
#include "migration_streams.h"
#include "migration_txpipe.h"
#include "migration_wire.h"

/* Live rounds ask the dirty log again before each such share. */
#define	MIG_RECHECK_WORDS	64	/* 4096 pages, 16 MiB */

struct sender;

/* One stream's sending side: its channel and its part of a round. */
struct txstream {
	struct sender	*s;
	struct mig_chan	*ch;		/* stream 0: the sender's own */
	struct mig_chan	own;		/* streams 1..n-1 */
	uint32_t	index;
	struct mig_error *err;		/* stream 0: the sender's */
	struct mig_error own_err;
	int		error;
	pthread_t	tid;
	struct mig_round_stats part;	/* this round's counts */
	uint64_t	sent;		/* pages in this round's part */
	struct mig_txpipe pipe;		/* its PAGES frames to the socket */
	char		doing[48];	/* "sending memory [on stream i]" */
};

struct sender {
	struct mig_chan	ch;
	struct txstream	tx[MIG_STREAMS_MAX];
	uint32_t	nstreams;
	pthread_mutex_t	be_lock;	/* backend calls from the streams */
	bool		be_lock_ready;
	int		abort;		/* __atomic: a stream failed */
	const struct mig_round_stats *round;	/* the one being sent */
	struct mig_backend *be;
	const struct mig_params *p;
	struct mig_stats *st;
	struct mig_error *err;
	struct mig_vminfo vi;
	struct mig_policy pol;
	struct mig_disk_send *disks;		/* or NULL: shared storage */
	enum mig_phase	phase;
	uint64_t	npages[MIG_MAX_SEGS];
	uint64_t	*todo[MIG_MAX_SEGS];	/* pages this round sends */
	uint64_t	*next[MIG_MAX_SEGS];	/* taken early: next round's */
	uint64_t	*chunk;			/* one collection's bitmap */
	uint64_t	pages_total;		/* sent in all rounds */
	uint64_t	pause_us;
	uint64_t	est_us;		/* final downtime estimate, or 0 */
	bool		est_missed;	/* and the pause outlasted it */
	uint64_t	hook_us;	/* the switchover hook's wait */
	bool		tracking;
	bool		paused;
	bool		throttled;
	bool		fault_done;
};

static void
progress(struct sender *s, uint32_t round, uint64_t remaining,
    const struct mig_round_stats *last)
{
	struct mig_progress ev;

	if (s->be->ops->progress == NULL)
		return;
	memset(&ev, 0, sizeof(ev));
	ev.phase = s->phase;
	ev.round = round;
	ev.remaining_pages = remaining;
	ev.last_round = last;
	ev.hold_ms = 0;
	s->be->ops->progress(s->be->arg, &ev);
}

/*
 * Tell the operator, once, that the guest has been paused longer than
 * the policy estimated when it ended the live rounds (the hard bound,
 * max_pause_ms, is pause_check()'s).
 */
static void
estimate_check(struct sender *s, uint64_t paused_us)
{
	struct mig_progress ev;

	if (s->est_us == 0 || s->est_missed || paused_us <= s->est_us ||
	    s->be->ops->progress == NULL)
		return;
	s->est_missed = true;
	memset(&ev, 0, sizeof(ev));
	ev.phase = s->phase;
	ev.round = s->st->nrounds;
	ev.estimate_missed = true;
	ev.est_downtime_us = s->est_us;
	ev.paused_us = paused_us;
	s->be->ops->progress(s->be->arg, &ev);
}

/* A backend operation failed: this is the source's own failure. */
static int
backend_fail_err(struct sender *s, struct mig_error *err, int error,
    const char *what)
{
	mig_fail(err, MIG_SIDE_SOURCE, s->phase, error, "%s: %s", what,
	    s->be->errmsg[0] != '\0' ? s->be->errmsg : strerror(error));
	return (error);
}

static int
backend_fail(struct sender *s, int error, const char *what)
{
	return (backend_fail_err(s, s->err, error, what));
}

static int
chan_fail(struct sender *s, int error, const char *doing)
{
	mig_fail_chan(s->err, &s->ch, s->phase, error, doing);
	return (error);
}

static int
tx_fail(struct txstream *t, int error, const char *doing)
{
	mig_fail_chan(t->err, t->ch, t->s->phase, error, doing);
	return (error);
}

static int
alloc_bitmaps(struct sender *s)
{
	uint32_t i;

	for (i = 0; i < s->vi.nsegs; i++) {
		s->npages[i] = s->vi.segs[i].len / MIG_PAGE_SIZE;
		s->todo[i] = calloc(bitmap_words(s->npages[i]),
		    sizeof(uint64_t));
		s->next[i] = calloc(bitmap_words(s->npages[i]),
		    sizeof(uint64_t));
		if (s->todo[i] == NULL || s->next[i] == NULL)
			return (ENOMEM);
	}
	s->chunk = calloc(bitmap_words(MIG_DIRTY_CHUNK_PAGES),
	    sizeof(uint64_t));
	if (s->chunk == NULL)
		return (ENOMEM);
	for (i = 0; i < s->nstreams; i++)
		if (mig_txpipe_init(&s->tx[i].pipe) != 0)
			return (ENOMEM);
	return (0);
}

static void
free_bitmaps(struct sender *s)
{
	uint32_t i;

	for (i = 0; i < MIG_MAX_SEGS; i++) {
		free(s->todo[i]);
		free(s->next[i]);
	}
	free(s->chunk);
	for (i = 0; i < MIG_STREAMS_MAX; i++)
		mig_txpipe_destroy(&s->tx[i].pipe);
}

typedef int	bits_op_t(void *, uint32_t, uint64_t, uint64_t, uint64_t *);

/* Pages from first to the segment's end, at most max. */
static uint64_t
chunk_pages(const struct sender *s, uint32_t seg, uint64_t first,
    uint64_t max)
{
	uint64_t n;

	n = s->npages[seg] - first;
	return (n > max ? max : n);
}

/* Run a backend bitmap operation over n pages into s->chunk. */
static int
fetch_bits(struct sender *s, struct mig_error *err, bits_op_t *op,
    uint32_t seg, uint64_t first, uint64_t n, const char *what)
{
	uint64_t nw;
	int error;

	nw = bitmap_words(n);
	memset(s->chunk, 0, nw * sizeof(uint64_t));
	if ((error = op(s->be->arg, seg, first, n, s->chunk)) != 0)
		return (backend_fail_err(s, err, error, what));
	/* Chunks are a multiple of 64 pages but the last. */
	if (n % BITS_PER_WORD != 0)
		s->chunk[nw - 1] &= (1ull << (n % BITS_PER_WORD)) - 1;
	return (0);
}

/*
 * Collect the dirty log of all memory, chunk by chunk, into todo.  *count
 * is what todo then holds: pages collected before a decision to stop are
 * still owed to the destination.
 */
static int
collect(struct sender *s, uint64_t *count)
{
	uint64_t first, n, w, nw;
	uint32_t seg;
	int error;

	*count = 0;
	for (seg = 0; seg < s->vi.nsegs; seg++) {
		for (first = 0; first < s->npages[seg]; first += n) {
			n = chunk_pages(s, seg, first, MIG_DIRTY_CHUNK_PAGES);
			nw = bitmap_words(n);
			if ((error = fetch_bits(s, s->err,
			    s->be->ops->dirty_collect, seg, first, n,
			    "could not read the dirty page log")) != 0)
				return (error);
			/* ORs into the chunk; it marks only these n pages. */
			if (s->be->ops->devlog_collect != NULL &&
			    (error = s->be->ops->devlog_collect(s->be->arg,
			    seg, first, n, s->chunk)) != 0)
				return (backend_fail(s, error,
				    "could not read the device write log"));
			for (w = 0; w < nw; w++)
				s->todo[seg][first / BITS_PER_WORD + w] |=
				    s->chunk[w];
		}
		/* What a live round found written again. */
		for (w = 0; w < bitmap_words(s->npages[seg]); w++) {
			s->todo[seg][w] |= s->next[seg][w];
			s->next[seg][w] = 0;
		}
		*count += popcount_words(s->todo[seg],
		    bitmap_words(s->npages[seg]));
	}
	if (s->disks != NULL) {
		if ((error = mig_disk_send_collect(s->disks, &n)) != 0)
			return (error);
		mig_policy_disk(&s->pol, n);
	}
	return (0);
}

/*
 * Round 1 with MIG_CAP_OWED goes uncopied: most of its pages are cold.
 * Each frame is then a PAGES_INDEX, which must pass its tag, and the
 * PAGES_DATA of those entries, which may fail and be owed: an index
 * altered on the way cannot move data to pages it does not name.
 */
static bool
uncopied(const struct sender *s)
{
	return (s->ch.owed && !s->paused && s->round->index == 1);
}

/*
 * A page the running guest writes between its tag and its send fails
 * the tag check: with integrity only, live rounds send a copy, but for
 * an uncopied round 1.  A later round's pages were all written lately,
 * and one failed page costs its frame's 256, so they are copied still.
 * Encryption reads each page once, and a paused guest writes nothing.
 */
static bool
frozen_copy_needed(const struct sender *s)
{
	return (!s->ch.encrypt && !s->paused && !uncopied(s));
}

/*
 * Test only: round 1's first frame with data goes with a spoilt tag on
 * its data (as if the guest had written a page of it on its way) or on
 * its index.
 */
static void
bad_tag_fault(struct txstream *t, struct mig_txslot *slot, uint32_t ndata)
{
	struct sender *s;
	enum mig_fault f;

	s = t->s;
	f = s->p->fault;
	if ((f != MIG_FAULT_BAD_TAG && f != MIG_FAULT_BAD_TAG_IGNORED &&
	    f != MIG_FAULT_BAD_INDEX_TAG) || s->fault_done ||
	    t->index != 0 || s->round->index != 1 || ndata == 0)
		return;
	s->fault_done = true;
	slot->f[f == MIG_FAULT_BAD_INDEX_TAG ? 0 :
	    slot->nframes - 1].tag[0] ^= 0x01;
}

static int	cancel_check(const struct sender *, struct mig_error *);
static void	kill_stream_fault(struct txstream *);

/*
 * The hard bound on the pause.  By default ten times the downtime limit,
 * so a busy link's estimate error does not trip it, and at least 5 s,
 * about what a guest's network peers and watchdogs shrug off.
 */
#define	MIG_MIN_PAUSE_BOUND_MS	5000

static uint64_t
pause_bound_ms(const struct mig_params *p)
{
	uint64_t ms;

	if (p->max_pause_ms != 0)
		return (p->max_pause_ms);
	ms = p->downtime_limit_us / 100;
	return (ms > MIG_MIN_PAUSE_BOUND_MS ? ms : MIG_MIN_PAUSE_BOUND_MS);
}

/*
 * The engine's part of the pause: the switchover hook's wait has its own
 * bound (switchover_wait_ms), so the guest pauses at most max_pause_ms
 * plus that before GO.
 */
static uint64_t
pause_spent_us(const struct sender *s)
{

	return (mig_now_us() - s->pause_us - s->hook_us);
}

/*
 * Before each step of the paused phase: fail once the bound has passed,
 * else let no socket wait outlive it.  Failing here is before GO, so the
 * common path rolls back and the guest resumes on the source.
 */
static int
pause_check(struct txstream *t)
{
	struct sender *s;
	uint64_t bound, spent;
	uint32_t left;
	int error;

	s = t->s;
	bound = pause_bound_ms(s->p) * 1000;
	spent = pause_spent_us(s);
	estimate_check(s, spent);
	if (spent >= bound) {
		mig_fail(t->err, MIG_SIDE_SOURCE, s->phase, ETIMEDOUT,
		    "the downtime bound was missed: the guest was paused "
		    "%ju ms, past max_pause_ms %ju, before GO",
		    (uintmax_t)(spent / 1000), (uintmax_t)(bound / 1000));
		return (ETIMEDOUT);
	}
	left = (uint32_t)((bound - spent + 999) / 1000);
	if (left > s->p->io_timeout_ms)
		left = s->p->io_timeout_ms;
	if ((error = mig_socket_timeout(t->ch->fd, left)) != 0)
		return (tx_fail(t, error, "bounding the pause"));
	return (0);
}

/* A socket wait cut by the bound says so rather than "stopped responding". */
static int
pause_timeout(struct txstream *t, int error)
{
	struct sender *s;
	char note[128];
	uint64_t bound, spent;

	s = t->s;
	bound = pause_bound_ms(s->p) * 1000;
	spent = pause_spent_us(s);
	if (error != 0 && t->err->code == ETIMEDOUT && spent + 1000000 >=
	    bound) {
		snprintf(note, sizeof(note), "; the downtime bound was missed: "
		    "the guest was paused %ju ms, max_pause_ms %ju",
		    (uintmax_t)(spent / 1000), (uintmax_t)(bound / 1000));
		mig_error_append(t->err, note);
	}
	return (error);
}

/* Before each frame of a round: a cancel, the pause's bound. */
static int
send_step(void *arg)
{
	struct txstream *t = arg;
	int error;

	if ((error = cancel_check(t->s, t->err)) != 0 ||
	    (t->s->paused && (error = pause_check(t)) != 0))
		return (error);
	return (0);
}

/* The pipe's writer failed: its error, as this stream's. */
static int
pipe_fail(struct txstream *t, int error)
{
	return (pause_timeout(t, tx_fail(t, error, t->doing)));
}

/*
 * Seal the slot's frame: count entries from its meta, ndata pages from
 * datapages or, as frozen copies, its buffer.  Then the next slot.
 */
static int
flush_pages(struct txstream *t, struct mig_txslot **slotp, uint32_t seg,
    uint32_t count, uint32_t ndata, const uint8_t **datapages)
{
	struct iovec parts[1 + MIG_PAGES_PER_MSG];
	struct mig_pages_hdr ph;
	struct mig_txslot *slot;
	struct sender *s;
	uint32_t i;
	int error, n;

	s = t->s;
	slot = *slotp;
	/* Another stream failed: this one stops too. */
	if (__atomic_load_n(&s->abort, __ATOMIC_SEQ_CST) != 0)
		return (ECANCELED);
	/* A big round must not make an operator's cancel wait. */
	if ((error = send_step(t)) != 0)
		return (error);
	ph.seg = seg;
	ph.count = count;
	(void)mig_pages_hdr_encode(slot->meta, MIG_PAGES_HDR_LEN, &ph);
	n = 0;
	parts[n].iov_base = slot->meta;
	parts[n++].iov_len = MIG_PAGES_HDR_LEN + 8 * (size_t)count;
	if (uncopied(s)) {
		if ((error = mig_txpipe_seal(&t->pipe, slot,
		    MIG_MSG_PAGES_INDEX, parts, 1)) != 0)
			return (tx_fail(t, error, "sealing a frame of memory"));
		/*
		 * PAGES_DATA repeats the header, so that its pages start 16
		 * bytes into what the tag covers: OpenSSL 3.0's Poly1305 ran
		 * at about half speed on pages 8 bytes off its block.
		 */
		parts[0].iov_len = MIG_PAGES_HDR_LEN;
		n = 1;
	}
	if (!frozen_copy_needed(s)) {
		for (i = 0; i < ndata; i++) {
			/* Adjacent pages: one part, one copy for the kernel. */
			if (n > 0 && parts[n - 1].iov_base != slot->meta &&
			    (const uint8_t *)parts[n - 1].iov_base +
			    parts[n - 1].iov_len == datapages[i]) {
				parts[n - 1].iov_len += MIG_PAGE_SIZE;
				continue;
			}
			parts[n].iov_base = (void *)(uintptr_t)datapages[i];
			parts[n++].iov_len = MIG_PAGE_SIZE;
		}
	} else if (ndata > 0) {
		parts[n].iov_base = slot->buf;
		parts[n++].iov_len = (size_t)ndata * MIG_PAGE_SIZE;
	}
	if ((error = mig_txpipe_seal(&t->pipe, slot, uncopied(s) ?
	    MIG_MSG_PAGES_DATA : MIG_MSG_PAGES, parts, n)) != 0)
		return (tx_fail(t, error, "sealing a frame of memory"));
	bad_tag_fault(t, slot, ndata);
	mig_txpipe_queue(&t->pipe);
	for (i = 0; i < (uint32_t)slot->nframes; i++)
		t->part.bytes += slot->f[i].wirelen;
	if ((error = mig_txpipe_slot(&t->pipe, slotp)) != 0)
		return (pipe_fail(t, error));
	return (0);
}

static int
flush_zero_ranges(struct sender *s, struct mig_zero_ranges *z,
    struct mig_round_stats *r)
{
	uint8_t buf[MIG_ZERO_RANGES_HDR_LEN +
	    MIG_ZERO_RANGES_MAX * MIG_ZERO_RANGE_LEN];
	uint64_t before;
	int error;

	if (z->count == 0)
		return (0);
	before = s->ch.bytes_tx;
	if ((error = mig_chan_send(&s->ch, MIG_MSG_ZERO_RANGES, buf,
	    mig_zero_ranges_encode(buf, sizeof(buf), z))) != 0)
		return (chan_fail(s, error, "sending zero ranges"));
	r->bytes += s->ch.bytes_tx - before;
	z->count = 0;
	return (0);
}

static int
add_zero_range(struct sender *s, struct mig_zero_ranges *z, uint64_t page,
    uint64_t n, struct mig_round_stats *r)
{
	struct mig_zero_range *last;
	int error;

	last = z->count > 0 ? &z->r[z->count - 1] : NULL;
	if (last != NULL && last->first + last->npages == page) {
		last->npages += n;
		return (0);
	}
	if (z->count == MIG_ZERO_RANGES_MAX &&
	    (error = flush_zero_ranges(s, z, r)) != 0)
		return (error);
	z->r[z->count].first = page;
	z->r[z->count++].npages = n;
	return (0);
}

/*
 * Round 1 with a fresh destination: pages never populated are zero on
 * both sides.  Send them as ranges and take them out of todo, unread;
 * the dirty log has any page populated since tracking began.
 */
static int
send_unpopulated(struct sender *s, uint32_t seg, struct mig_round_stats *r,
    uint64_t *sent)
{
	struct mig_zero_ranges z;
	uint64_t first, n, nw, w, zero, x, *t;
	int error, b, len;

	z.seg = seg;
	z.count = 0;
	for (first = 0; first < s->npages[seg]; first += n) {
		n = chunk_pages(s, seg, first, MIG_DIRTY_CHUNK_PAGES);
		nw = bitmap_words(n);
		if ((error = fetch_bits(s, s->err, s->be->ops->populated, seg,
		    first, n, "could not tell which pages hold data")) != 0)
			return (error);
		for (w = 0; w < nw; w++) {
			t = &s->todo[seg][first / BITS_PER_WORD + w];
			zero = *t & ~s->chunk[w];
			*t &= ~zero;
			while (zero != 0) {
				b = __builtin_ctzll(zero);
				x = ~(zero >> b);
				len = x == 0 ? BITS_PER_WORD - b :
				    __builtin_ctzll(x);
				zero = len + b >= BITS_PER_WORD ? 0 :
				    zero & ~(((1ull << len) - 1) << b);
				if ((error = add_zero_range(s, &z, first +
				    w * BITS_PER_WORD + (uint64_t)b,
				    (uint64_t)len, r)) != 0)
					return (error);
				r->zero_pages += (uint64_t)len;
				r->unpopulated_pages += (uint64_t)len;
				*sent += (uint64_t)len;
			}
		}
	}
	return (flush_zero_ranges(s, &z, r));
}

/*
 * A live round, before sending the pages of words [w, w + n) of todo:
 * a page written again since this round's collection would only be sent
 * twice.  Take the dirty log of the range now; its pages go next round.
 */
static int
recheck(struct txstream *ts, uint32_t seg, uint64_t w)
{
	struct sender *s;
	uint64_t first, n, nw, i, *t;
	int error;

	s = ts->s;
	nw = bitmap_words(s->npages[seg]) - w;
	if (nw > MIG_RECHECK_WORDS)
		nw = MIG_RECHECK_WORDS;
	t = &s->todo[seg][w];
	if (popcount_words(t, nw) == 0)
		return (0);
	first = w * BITS_PER_WORD;
	n = chunk_pages(s, seg, first, nw * BITS_PER_WORD);
	/* The streams share the backend and the collection buffer. */
	pthread_mutex_lock(&s->be_lock);
	if ((error = fetch_bits(s, ts->err, s->be->ops->dirty_collect, seg,
	    first, n, "could not read the dirty page log")) == 0) {
		for (i = 0; i < nw; i++) {
			ts->part.rewritten_pages +=
			    (uint64_t)__builtin_popcountll(t[i] & s->chunk[i]);
			t[i] &= ~s->chunk[i];
			s->next[seg][w + i] |= s->chunk[i];
		}
	}
	pthread_mutex_unlock(&s->be_lock);
	return (error);
}

/*
 * One stream's part of a round: the pages marked in todo in the chunks
 * of MIG_STREAM_CHUNK_WORDS words this stream owns, clearing todo as it
 * goes, into the frames of its pipe.  Counts into t->part and t->sent.
 */
static int
fill_part(struct txstream *t)
{
	const uint8_t *datapages[MIG_PAGES_PER_MSG];
	struct sender *s;
	struct mig_txslot *slot;
	const struct mig_round_stats *round;
	const uint8_t *page;
	uint64_t bits, c, end, idx, w, nw, step;
	uint32_t seg, count, ndata;
	int error, b;

	s = t->s;
	round = s->round;
	step = (uint64_t)MIG_STREAM_CHUNK_WORDS * s->nstreams;
	if ((error = mig_txpipe_slot(&t->pipe, &slot)) != 0)
		return (pipe_fail(t, error));
	for (seg = 0; seg < s->vi.nsegs; seg++) {
		count = ndata = 0;
		nw = bitmap_words(s->npages[seg]);
		for (c = (uint64_t)t->index * MIG_STREAM_CHUNK_WORDS; c < nw;
		    c += step) {
			if (!round->final && s->tracking &&
			    (error = recheck(t, seg, c)) != 0)
				return (error);
			end = c + MIG_STREAM_CHUNK_WORDS < nw ?
			    c + MIG_STREAM_CHUNK_WORDS : nw;
			for (w = c; w < end; w++) {
				bits = s->todo[seg][w];
				s->todo[seg][w] = 0;
				while (bits != 0) {
					b = __builtin_ctzll(bits);
					bits &= bits - 1;
					idx = w * BITS_PER_WORD + (uint64_t)b;
					if (s->p->fault ==
					    MIG_FAULT_DROP_DIRTY_PAGE &&
					    round->final && t->index == 0 &&
					    !s->fault_done) {
						s->fault_done = true;
						continue;
					}
					page = s->vi.segs[seg].host +
					    idx * MIG_PAGE_SIZE;
					if (mig_page_is_zero(page)) {
						idx |= MIG_PAGE_ZERO;
						t->part.zero_pages++;
					} else {
						if (frozen_copy_needed(s))
							memcpy(slot->buf +
							    (size_t)ndata *
							    MIG_PAGE_SIZE, page,
							    MIG_PAGE_SIZE);
						datapages[ndata++] = page;
						t->part.pages_sent++;
					}
					mig_le64enc(slot->meta +
					    MIG_PAGES_HDR_LEN +
					    8 * (size_t)count, idx);
					t->sent++;
					if (++count < MIG_PAGES_PER_MSG)
						continue;
					if ((error = flush_pages(t, &slot, seg,
					    count, ndata, datapages)) != 0)
						return (error);
					count = ndata = 0;
					kill_stream_fault(t);
				}
			}
		}
		if (count > 0 && (error = flush_pages(t, &slot, seg, count,
		    ndata, datapages)) != 0)
			return (error);
	}
	return (0);
}

/*
 * The part through the stream's pipe, drained before the stream's next
 * frame (PART_END, ROUND_END) goes straight to the socket.  The writer
 * starts with the first round and stays for the later ones.
 */
static int
send_part(struct txstream *t)
{
	int error, werror;

	if (!t->pipe.running &&
	    (error = mig_txpipe_start(&t->pipe, t->ch)) != 0)
		return (tx_fail(t, error, "starting the stream's writer"));
	error = fill_part(t);
	werror = mig_txpipe_drain(&t->pipe);
	if (error == 0 && werror != 0)
		error = pipe_fail(t, werror);
	return (error);
}

/*
 * Test only: the last stream dies after its first frame of round 1, as
 * a connection reset by the network would end it.
 */
static void
kill_stream_fault(struct txstream *t)
{
	struct sender *s;

	s = t->s;
	if (s->p->fault == MIG_FAULT_KILL_STREAM && t->index > 0 &&
	    t->index == s->nstreams - 1 && s->round->index == 1)
		(void)shutdown(t->ch->fd, SHUT_RDWR);
}

/* The first stream to fail stops the others; its error is the one. */
static void
part_failed(struct txstream *t)
{
	int none;

	none = 0;
	(void)__atomic_compare_exchange_n(&t->s->abort, &none,
	    (int)t->index + 1, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* Streams 1..n-1: the part, then PART_END. */
static void *
part_thread(void *arg)
{
	struct mig_round_end re;
	struct txstream *t;
	uint8_t buf[32];
	uint64_t before;

	t = arg;
	if ((t->error = send_part(t)) == 0) {
		re.index = t->s->round->index;
		re.pages = t->sent;
		before = t->ch->bytes_tx;
		if ((t->error = mig_chan_send(t->ch, MIG_MSG_PART_END, buf,
		    mig_round_end_encode(buf, sizeof(buf), &re))) != 0)
			(void)tx_fail(t, t->error, "ending a round's part");
		t->part.bytes += t->ch->bytes_tx - before;
	}
	if (t->error != 0)
		part_failed(t);
	return (NULL);
}

/*
 * All streams' parts of the round: 1..n-1 in threads, 0 in this one.
 * The first failure recorded by any stream becomes the sender's.
 */
static int
send_parts(struct sender *s, struct mig_round_stats *r, uint64_t *sent)
{
	struct txstream *t;
	uint32_t i, started;
	int error, first;

	for (i = 0; i < s->nstreams; i++) {
		t = &s->tx[i];
		memset(&t->part, 0, sizeof(t->part));
		memset(&t->own_err, 0, sizeof(t->own_err));
		t->err = &t->own_err;
		t->sent = 0;
		t->error = 0;
	}
	s->round = r;
	s->abort = 0;
	error = 0;
	for (started = 1; started < s->nstreams; started++) {
		t = &s->tx[started];
		if ((error = pthread_create(&t->tid, NULL, part_thread, t)) !=
		    0) {
			mig_fail(&s->tx[0].own_err, MIG_SIDE_SOURCE, s->phase,
			    error, "could not start the sender of stream %u",
			    started);
			break;
		}
	}
	if (error == 0)
		error = send_part(&s->tx[0]);
	if ((s->tx[0].error = error) != 0)
		part_failed(&s->tx[0]);
	for (i = 1; i < started; i++)
		(void)pthread_join(s->tx[i].tid, NULL);
	s->tx[0].err = s->err;
	for (i = 0; i < s->nstreams; i++) {
		t = &s->tx[i];
		r->pages_sent += t->part.pages_sent;
		r->zero_pages += t->part.zero_pages;
		r->rewritten_pages += t->part.rewritten_pages;
		r->bytes += t->part.bytes;
		*sent += t->sent;
	}
	if ((first = s->abort) == 0)
		return (0);
	/* The others stopped because of it, quietly or not. */
	*s->err = s->tx[first - 1].own_err;
	if (s->err->code == 0)
		mig_fail(s->err, MIG_SIDE_SOURCE, s->phase,
		    s->tx[first - 1].error, "stream %d stopped: %s", first - 1,
		    strerror(s->tx[first - 1].error));
	return (s->err->code);
}

/* The peer broke the protocol in what it answered. */
static int __attribute__((__format__(__printf__, 3, 4)))
answer_fail(struct sender *s, const char *doing, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->ch.why, sizeof(s->ch.why), fmt, ap);
	va_end(ap);
	return (chan_fail(s, EPROTO, doing));
}

/* Set bits [first, first + n) of a bitmap, a word at a time. */
static void
set_bits(uint64_t *bits, uint64_t first, uint64_t n)
{
	uint64_t end, len, w;
	uint32_t b;

	for (end = first + n; first < end; first += len) {
		w = first / BITS_PER_WORD;
		b = (uint32_t)(first % BITS_PER_WORD);
		len = end - first < BITS_PER_WORD - b ? end - first :
		    BITS_PER_WORD - b;
		bits[w] |= len == BITS_PER_WORD ? ~0ull :
		    ((1ull << len) - 1) << b;
	}
}

/*
 * MIG_CAP_OWED, after a live round: the pages whose data failed its tag
 * at the destination, in this round or before, go again next round.  A
 * destination may owe no more than the guest's pages in all, and an
 * operator's cancel is heard between its frames.
 */
static int
recv_owed(struct sender *s, struct mig_round_stats *r)
{
	static const char doing[] = "reading the pages to send again";
	struct mig_zero_ranges z;
	struct mig_round_end end;
	struct mig_hdr hdr;
	void *payload;
	uint64_t guest, n;
	uint32_t i, seg;
	int error;

	guest = 0;
	for (seg = 0; seg < s->vi.nsegs; seg++)
		guest += s->npages[seg];
	n = 0;
	for (;;) {
		if ((error = cancel_check(s, s->err)) != 0)
			return (error);
		if ((error = mig_chan_recv(&s->ch, &hdr, &payload)) != 0)
			return (chan_fail(s, error, doing));
		if (hdr.type == MIG_MSG_ERROR) {
			mig_fail_peer(s->err, &s->ch, payload, hdr.len);
			return (s->err->code);
		}
		if (hdr.type == MIG_MSG_OWED_END)
			break;
		if (hdr.type != MIG_MSG_OWED)
			return (answer_fail(s, doing, "unexpected %s message",
			    mig_msg_name(hdr.type)));
		if ((error = mig_owed_decode(payload, hdr.len, &s->vi, &z,
		    s->ch.why, sizeof(s->ch.why))) != 0)
			return (chan_fail(s, error, doing));
		for (i = 0; i < z.count; i++) {
			/* Each range is inside its segment: no overflow. */
			n += z.r[i].npages;
			if (n > guest)
				return (answer_fail(s, doing, "OWED names more "
				    "than the guest's %ju pages",
				    (uintmax_t)guest));
			/* Test only: a source that ignores its debts. */
			if (s->p->fault != MIG_FAULT_BAD_TAG_IGNORED)
				set_bits(s->next[z.seg], z.r[i].first,
				    z.r[i].npages);
		}
	}
	if ((error = mig_round_end_decode(payload, hdr.len, &end, s->ch.why,
	    sizeof(s->ch.why))) != 0)
		return (chan_fail(s, error, doing));
	if (end.index != r->index || end.pages != n)
		return (answer_fail(s, doing, "OWED_END counts %ju pages of "
		    "round %u, the OWED frames of round %u named %ju",
		    (uintmax_t)end.pages, end.index, r->index, (uintmax_t)n));
	r->owed_pages = n;
	return (0);
}

/* Send every page marked in todo, clearing todo as it goes. */
static int
send_round(struct sender *s, struct mig_round_stats *r)
{
	struct mig_round_begin rb;
	struct mig_round_end re;
	uint8_t buf[32];
	uint64_t sent, t0, before;
	uint32_t seg;
	int error;

	t0 = mig_now_us();
	rb.index = r->index;
	rb.final = r->final ? 1 : 0;
	rb.pages = r->dirty_pages;
	before = s->ch.bytes_tx;
	if ((error = mig_chan_send(&s->ch, MIG_MSG_ROUND_BEGIN, buf,
	    mig_round_begin_encode(buf, sizeof(buf), &rb))) != 0)
		return (chan_fail(s, error, "starting a round"));
	r->bytes += s->ch.bytes_tx - before;
	sent = 0;
	for (seg = 0; seg < s->vi.nsegs; seg++)
		if (r->index == 1 && s->ch.zero_ranges &&
		    s->be->ops->populated != NULL &&
		    (error = send_unpopulated(s, seg, r, &sent)) != 0)
			return (error);
	if ((error = send_parts(s, r, &sent)) != 0)
		return (error);
	if (s->disks != NULL && (error = mig_disk_send_round(s->disks, &s->ch,
	    r, send_step, &s->tx[0])) != 0)
		return (error);
	re.index = r->index;
	re.pages = sent;
	before = s->ch.bytes_tx;
	if ((error = mig_chan_send(&s->ch, MIG_MSG_ROUND_END, buf,
	    mig_round_end_encode(buf, sizeof(buf), &re))) != 0)
		return (chan_fail(s, error, "ending a round"));
	r->bytes += s->ch.bytes_tx - before;
	if (!r->final && s->ch.owed && (error = recv_owed(s, r)) != 0)
		return (error);
	s->pages_total += sent;
	r->duration_us = mig_now_us() - t0;
	return (0);
}

static struct mig_round_stats *
next_round(struct sender *s, uint64_t dirty, bool final)
{
	struct mig_round_stats *r;

	r = &s->st->rounds[s->st->nrounds];
	memset(r, 0, sizeof(*r));
	r->index = ++s->st->nrounds;
	r->final = final;
	r->dirty_pages = dirty;
	r->throttle_pct = s->pol.throttle_pct;
	return (r);
}

static int
describe_and_check(struct sender *s)
{
	uint8_t buf[8192];
	void *payload;
	size_t len;
	uint32_t i;
	int error;

	s->phase = MIG_PHASE_COMPAT;
	progress(s, 0, 0, NULL);
	if ((error = s->be->ops->vminfo(s->be->arg, &s->vi)) != 0)
		return (backend_fail(s, error, "could not describe the guest"));
	if ((error = mig_disk_describe(&s->vi, s->be, s->p, s->be->errmsg,
	    sizeof(s->be->errmsg))) != 0)
		return (backend_fail(s, error, "cannot migrate the disks"));
	if ((len = mig_vminfo_encode(buf, sizeof(buf), &s->vi)) == 0)
		return (backend_fail(s, EINVAL,
		    "the guest's description does not fit a message"));
	if ((error = mig_chan_send(&s->ch, MIG_MSG_VMINFO, buf, len)) != 0)
		return (chan_fail(s, error, "describing the guest"));
	/*
	 * The destination sets the guest's memory and devices up before it
	 * answers; the documented timeout bounds that as any other wait (a
	 * very large wired guest needs a larger one).
	 */
	if ((error = mig_expect(&s->ch, s->err, s->phase, MIG_MSG_ACCEPT,
	    "waiting for the compatibility verdict", &payload, NULL)) != 0)
		return (error);
	s->st->memory_bytes = 0;
	for (i = 0; i < s->vi.nsegs; i++)
		s->st->memory_bytes += s->vi.segs[i].len;
	return (0);
}

static int
send_section(struct sender *s, uint32_t idx, const uint8_t *data, size_t len)
{
	struct mig_state_hdr sh;
	struct iovec parts[2];
	uint8_t hbuf[MIG_STATE_HDR_LEN];
	size_t off, n;
	int error;

	if (len > MIG_SECTION_MAX)
		return (backend_fail(s, EFBIG, "a device's state is too large"));
	off = 0;
	do {
		n = len - off < MIG_STATE_CHUNK ? len - off : MIG_STATE_CHUNK;
		sh.section = idx;
		sh.total = len;
		sh.offset = off;
		(void)mig_state_hdr_encode(hbuf, sizeof(hbuf), &sh);
		parts[0].iov_base = hbuf;
		parts[0].iov_len = sizeof(hbuf);
		parts[1].iov_base = (void *)(uintptr_t)(data + off);
		parts[1].iov_len = n;
		if ((error = mig_chan_sendv(&s->ch, MIG_MSG_STATE, parts,
		    n > 0 ? 2 : 1)) != 0)
			return (chan_fail(s, error, "sending device state"));
		off += n;
	} while (off < len);
	s->st->state_bytes += len;
	return (0);
}

struct saved_state {
	void	*buf[MIG_MAX_SECTIONS];
	size_t	len[MIG_MAX_SECTIONS];
};

/* Save the sections whose vCPU flag equals vcpu. */
static int
save_state(struct sender *s, struct saved_state *ss, bool vcpu)
{
	uint32_t i;
	int error;

	for (i = 0; i < s->vi.nsections; i++) {
		if (((s->vi.sections[i].flags & MIG_SECTION_VCPU) != 0) != vcpu)
			continue;
		error = s->be->ops->state_save(s->be->arg, i, &ss->buf[i],
		    &ss->len[i]);
		if (error != 0) {
			mig_fail(s->err, MIG_SIDE_SOURCE, s->phase, error,
			    "could not save the state of '%s': %s",
			    s->vi.sections[i].name, s->be->errmsg[0] != '\0' ?
			    s->be->errmsg : strerror(error));
			return (error);
		}
	}
	return (0);
}

static void
free_state(struct saved_state *ss)
{
	uint32_t i;

	for (i = 0; i < MIG_MAX_SECTIONS; i++) {
		free(ss->buf[i]);
		ss->buf[i] = NULL;
	}
}

/* Mark every page to be sent; the page count. */
static uint64_t
mark_all(struct sender *s)
{
	uint64_t total;
	uint32_t seg;

	total = 0;
	for (seg = 0; seg < s->vi.nsegs; seg++) {
		memset(s->todo[seg], 0xff, bitmap_words(s->npages[seg]) *
		    sizeof(uint64_t));
		if (s->npages[seg] % BITS_PER_WORD != 0)
			s->todo[seg][bitmap_words(s->npages[seg]) - 1] =
			    (1ull << (s->npages[seg] % BITS_PER_WORD)) - 1;
		total += s->npages[seg];
	}
	return (total);
}

/* The operator cancelled: fail as any error before GO does. */
static int
cancel_check(const struct sender *s, struct mig_error *err)
{

	if (!mig_cancelled(s->p->cancel))
		return (0);
	mig_fail(err, MIG_SIDE_SOURCE, s->phase, ECANCELED,
	    "cancelled by the operator");
	return (ECANCELED);
}

static int
check_cancel(struct sender *s)
{

	return (cancel_check(s, s->err));
}

static int
live_rounds(struct sender *s)
{
	struct mig_round_stats *r;
	struct mig_decision d;
	uint64_t dirty, state_bytes;
	uint32_t i;
	int error;

	s->phase = MIG_PHASE_PRECOPY;
	if ((error = s->be->ops->dirty_start(s->be->arg)) != 0)
		return (backend_fail(s, error, "could not start dirty page "
		    "tracking"));
	s->tracking = true;
	/* The state goes over during the downtime too: count it. */
	state_bytes = 0;
	for (i = 0; i < s->vi.nsections; i++)
		state_bytes += s->vi.sections[i].size_hint;
	mig_policy_init(&s->pol, s->p, mig_now_us(), state_bytes,
	    s->st->rtt_us);

	/* Round 1: all of memory.  Writes from now on are logged. */
	dirty = mark_all(s);
	for (;;) {
		r = next_round(s, dirty, false);
		progress(s, r->index, dirty, NULL);
		if ((error = send_round(s, r)) != 0)
			return (error);
		mig_policy_round(&s->pol, r);
		if ((error = collect(s, &dirty)) != 0)
			return (error);
		mig_policy_decide(&s->pol, dirty, mig_now_us(), &d);
		r->est_downtime_us = d.est_downtime_us;
		progress(s, r->index, dirty, r);
		if ((error = check_cancel(s)) != 0)
			return (error);
		if (d.stop) {
			s->st->stop_reason = d.reason;
			s->est_us = d.est_downtime_us;
			return (0);
		}
		if (d.throttle_pct != r->throttle_pct &&
		    s->be->ops->throttle != NULL) {
			if ((error = s->be->ops->throttle(s->be->arg,
			    d.throttle_pct)) != 0)
				return (backend_fail(s, error,
				    "could not throttle the vCPUs"));
			s->throttled = true;
		}
	}
}

static int
stop_and_copy(struct sender *s)
{
	struct timespec stale_delay;
	struct saved_state ss;
	struct mig_round_stats *r;
	struct mig_ready ready;
	uint8_t buf[32];
	void *payload;
	uint64_t dirty, t0;
	uint32_t i, len;
	int error;

	memset(&ss, 0, sizeof(ss));
	/*
	 * Test-only: device state taken while the vCPUs still run, then
	 * given time to go stale.  The destination's check must notice.
	 */
	if (s->p->fault == MIG_FAULT_STALE_DEVICE_STATE) {
		if ((error = save_state(s, &ss, false)) != 0)
			goto out;
		stale_delay.tv_sec = 0;
		stale_delay.tv_nsec = 100 * 1000 * 1000;
		(void)nanosleep(&stale_delay, NULL);
	}

	s->phase = MIG_PHASE_STOPCOPY;
	/* The downtime begins with the pause: its drain and disk flush too. */
	s->pause_us = mig_now_us();
	if ((error = s->be->ops->pause(s->be->arg)) != 0) {
		error = backend_fail(s, error, "could not pause the guest");
		goto out;
	}
	s->paused = true;
	if (s->p->live)
		error = collect(s, &dirty);
	else
		dirty = mark_all(s);
	if (error != 0 || (error = pause_check(&s->tx[0])) != 0)
		goto out;
	if (s->p->switchover_wait_ms != 0 &&
	    ((error = mig_switchover_hold(&s->ch, s->be, s->p,
	    s->st->nrounds + 1, dirty, s->err, &s->hook_us)) != 0 ||
	    (error = pause_check(&s->tx[0])) != 0))
		goto out;
	r = next_round(s, dirty, true);
	progress(s, r->index, dirty, NULL);
	if ((error = pause_timeout(&s->tx[0], send_round(s, r))) != 0 ||
	    (error = pause_check(&s->tx[0])) != 0)
		goto out;

	s->phase = MIG_PHASE_STATE;
	progress(s, r->index, 0, NULL);
	t0 = mig_now_us();
	s->st->downtime_hook_us = s->hook_us;
	s->st->downtime_memory_us = t0 - s->pause_us - s->hook_us;
	if ((s->p->fault != MIG_FAULT_STALE_DEVICE_STATE &&
	    (error = save_state(s, &ss, false)) != 0) ||
	    (error = save_state(s, &ss, true)) != 0)
		goto out;
	for (i = 0; i < s->vi.nsections; i++) {
		if ((error = pause_timeout(&s->tx[0], send_section(s, i,
		    ss.buf[i], ss.len[i]))) != 0 ||
		    (error = pause_check(&s->tx[0])) != 0)
			goto out;
	}
	r->duration_us += mig_now_us() - t0;
	progress(s, r->index, 0, r);

	s->phase = MIG_PHASE_SWITCHOVER;
	progress(s, r->index, 0, NULL);
	ready.pages = s->pages_total;
	ready.nsections = s->vi.nsections;
	if ((error = mig_chan_send(&s->ch, MIG_MSG_READY, buf,
	    mig_ready_encode(buf, sizeof(buf), &ready))) != 0) {
		error = chan_fail(s, error, "announcing the end of the stream");
		goto out;
	}
	if ((error = pause_timeout(&s->tx[0], mig_expect(&s->ch, s->err,
	    s->phase, MIG_MSG_READY, "waiting for the destination to be ready",
	    &payload, &len))) != 0 || (error = pause_check(&s->tx[0])) != 0)
		goto out;
	/* The destination's READY echoes what it counted: GO only if equal. */
	if ((error = mig_ready_decode(payload, len, &ready, s->ch.why,
	    sizeof(s->ch.why))) != 0) {
		error = chan_fail(s, error, "reading the destination's READY");
		goto out;
	}
	if (ready.pages != s->pages_total ||
	    ready.nsections != s->vi.nsections) {
		mig_fail(s->err, MIG_SIDE_DEST, s->phase, EPROTO,
		    "the destination is ready with %ju pages and %u state "
		    "sections, but %ju and %u were sent",
		    (uintmax_t)ready.pages, ready.nsections,
		    (uintmax_t)s->pages_total, s->vi.nsections);
		error = EPROTO;
		goto out;
	}
	/* GO and RUNNING get the ordinary timeout again. */
	if ((error = mig_socket_timeout(s->ch.fd, s->p->io_timeout_ms)) != 0)
		error = chan_fail(s, error, "restoring the I/O timeout");
out:
	free_state(&ss);
	return (error);
}

/* After GO: the guest must not run here again, whatever happens. */
static enum mig_result
go(struct sender *s)
{
	void *payload;
	uint64_t flight, now, t_go;
	int error;

	/* Past this point an operator's cancel comes too late. */
	if (!mig_cancel_commit(s->p->cancel)) {
		(void)check_cancel(s);
		return (MIG_FAILED);
	}
	t_go = mig_now_us();
	if ((error = mig_chan_send(&s->ch, MIG_MSG_GO, NULL, 0)) != 0) {
		/* GO may or may not have left: nobody can tell. */
		(void)chan_fail(s, error, "sending GO");
		return (MIG_INDETERMINATE);
	}
	error = mig_expect(&s->ch, s->err, s->phase, MIG_MSG_RUNNING,
	    "waiting for the destination to confirm that the guest runs",
	    &payload, NULL);
	now = mig_now_us();
	/*
	 * An authenticated refusal of GO means the guest runs nowhere and
	 * may resume here; silence leaves nobody sure.
	 */
	if (error != 0)
		return (s->ch.peer_gave_up ? MIG_FAILED : MIG_INDETERMINATE);
	/*
	 * State and switchover: the rest of the pause.  RUNNING took half
	 * a round trip to arrive, within this last part; GO to RUNNING is
	 * at least one, so never take off more than half of that.
	 */
	flight = s->st->rtt_us < now - t_go ? s->st->rtt_us : now - t_go;
	s->st->downtime_state_us = now - s->pause_us -
	    s->st->downtime_memory_us - s->st->downtime_hook_us;
	if (s->st->downtime_state_us > flight / 2)
		s->st->downtime_state_us -= flight / 2;
	s->st->downtime_us = s->st->downtime_memory_us +
	    s->st->downtime_hook_us + s->st->downtime_state_us;
	estimate_check(s, s->st->downtime_us - s->st->downtime_hook_us);
	s->phase = MIG_PHASE_DONE;
	progress(s, s->st->nrounds, 0, NULL);
	return (MIG_OK);
}

/* Before GO: leave the guest running here. */
static void
roll_back(struct sender *s)
{
	int error;

	/* The guest first: telling the peer may wait for a timeout. */
	if (s->throttled)
		(void)s->be->ops->throttle(s->be->arg, 0);
	s->err->guest_running_on_source = true;
	if (s->paused) {
		if ((error = s->be->ops->resume(s->be->arg)) != 0) {
			s->err->guest_running_on_source = false;
			mig_error_append(s->err, "; resuming the guest on "
			    "the source failed too");
		}
		s->paused = false;
	}
	mig_tell_peer(&s->ch, s->err);
}

/*
 * Set the streams' channels up over fds, stream 0 the sender's own.  The
 * bandwidth limit is shared out among them.
 */
static int
streams_init(struct sender *s, const int *fds)
{
	struct txstream *t;
	uint64_t rate;
	uint32_t i;
	int error;

	rate = s->p->bandwidth_limit / s->nstreams;
	if ((error = pthread_mutex_init(&s->be_lock, NULL)) != 0)
		return (error);
	s->be_lock_ready = true;
	for (i = 0; i < s->nstreams; i++) {
		t = &s->tx[i];
		t->s = s;
		t->index = i;
		t->ch = i == 0 ? &s->ch : &t->own;
		t->err = i == 0 ? s->err : &t->own_err;
		if (s->nstreams == 1)
			snprintf(t->doing, sizeof(t->doing), "sending memory");
		else
			snprintf(t->doing, sizeof(t->doing),
			    "sending memory on stream %u", i);
		if ((error = mig_chan_init(t->ch, fds[i], MIG_ROLE_SOURCE,
		    rate)) != 0 ||
		    (error = mig_socket_setup(fds[i], s->p->io_timeout_ms)) !=
		    0)
			return (error);
	}
	return (0);
}

/* After AUTH: announce the streams and join 1..n-1 to the session. */
static int
streams_join(struct sender *s)
{
	uint8_t buf[MIG_STREAMS_LEN];
	uint32_t i;
	int error;

	if (s->nstreams == 1)
		return (0);
	if ((error = mig_chan_send(&s->ch, MIG_MSG_STREAMS, buf,
	    mig_streams_encode(buf, sizeof(buf), s->nstreams))) != 0)
		return (chan_fail(s, error, "announcing the streams"));
	for (i = 1; i < s->nstreams; i++)
		if ((error = mig_stream_join(&s->tx[i].own, &s->ch, s->p->key,
		    i, s->nstreams, s->err)) != 0)
			return (error);
	return (0);
}

/* After ACCEPT: the destination took every stream into the session. */
static int
streams_joined(struct sender *s)
{
	char doing[64];
	void *payload;
	uint32_t i;
	int error;

	for (i = 1; i < s->nstreams; i++) {
		snprintf(doing, sizeof(doing), "waiting for stream %u to be "
		    "accepted", i);
		if ((error = mig_expect(&s->tx[i].own, s->err, s->phase,
		    MIG_MSG_JOINED, doing, &payload, NULL)) != 0)
			return (error);
	}
	return (0);
}

static void
streams_destroy(struct sender *s)
{
	uint32_t i;

	for (i = 0; i < s->nstreams; i++) {
		if (s->tx[i].ch == NULL)
			break;
		s->st->bytes_sent += s->tx[i].ch->bytes_tx +
		    s->tx[i].ch->bytes_rx;
		mig_chan_destroy(s->tx[i].ch);
	}
	if (s->be_lock_ready)
		pthread_mutex_destroy(&s->be_lock);
}

enum mig_result
mig_send(const int *fds, struct mig_backend *be, const struct mig_params *p,
    struct mig_stats *st, struct mig_error *err)
{
	struct sender s;
	enum mig_result result;
	uint64_t t0;
	uint32_t version;
	int error;

	memset(err, 0, sizeof(*err));
	memset(&s, 0, sizeof(s));
	s.be = be;
	s.p = p;
	s.st = st;
	s.err = err;
	be->errmsg[0] = '\0';
	t0 = mig_now_us();
	result = MIG_FAILED;
	st->nrounds = 0;
	st->bytes_sent = 0;

	if ((error = mig_params_check(p, err->msg, sizeof(err->msg))) != 0) {
		err->code = error;
		err->side = MIG_SIDE_SOURCE;
		err->guest_running_on_source = true;
		return (MIG_FAILED);
	}
	/* A dry run checks over stream 0 alone. */
	s.nstreams = p->check_only ? 1 : p->nstreams;
	if ((error = streams_init(&s, fds)) != 0) {
		mig_fail(err, MIG_SIDE_SOURCE, MIG_PHASE_CONNECT, error,
		    "could not set up the migration sockets: %s",
		    strerror(error));
		goto done;
	}
	s.phase = MIG_PHASE_HANDSHAKE;
	progress(&s, 0, 0, NULL);
	if (mig_handshake(&s.ch, p, false, &version, &st->rtt_us, err) != 0 ||
	    streams_join(&s) != 0)
		goto done;
	st->protocol_version = version;
	st->nstreams = s.nstreams;
	st->encrypted = s.ch.encrypt;
	if (describe_and_check(&s) != 0)
		goto done;
	/* A dry run ends at the verdict: nothing to roll back. */
	if (p->check_only) {
		result = MIG_OK;
		goto done;
	}
	if ((error = check_cancel(&s)) != 0 || streams_joined(&s) != 0 ||
	    (error = alloc_bitmaps(&s)) != 0) {
		if (err->code == 0)
			mig_fail(err, MIG_SIDE_SOURCE, s.phase, error,
			    "out of memory for dirty page bitmaps");
		goto done;
	}
	if (mig_disk_send_begin(&s.disks, be, &s.vi, err, &s.phase) != 0)
		goto done;
	if ((p->live && live_rounds(&s) != 0) || check_cancel(&s) != 0 ||
	    stop_and_copy(&s) != 0)
		goto done;
	result = go(&s);
	if (result == MIG_INDETERMINATE)
		mig_error_append(err, "; the guest stays paused on the "
		    "source so that it cannot run twice");
done:
	if (result == MIG_FAILED)
		roll_back(&s);
	if (s.tracking)
		be->ops->dirty_stop(be->arg);
	mig_disk_send_end(s.disks);
	st->total_time_us = mig_now_us() - t0;
	free_bitmaps(&s);
	streams_destroy(&s);
	return (result);
}
