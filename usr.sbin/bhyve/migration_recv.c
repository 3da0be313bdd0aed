/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The destination side.  It trusts nothing the source sends: frames are
 * authenticated, every index and length is checked before it is used,
 * and messages must come in the protocol's order (rounds numbered in
 * sequence, pages only inside a round, state sections in order and
 * whole, READY only when everything arrived).  Page data is read straight
 * into guest memory; a frame that then fails its tag check ends the
 * migration and the caller discards the guest, so unverified bytes never
 * run.  With MIG_CAP_OWED a live round's frame may fail instead: its
 * pages are owed (migration_owed.h), and the guest runs only once every
 * one came again in a frame that passed.
 */

#include <sys/types.h>
#include <sys/uio.h>

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migration.h"
#include "migration_backend.h"
#include "migration_disk.h"
#include "migration_internal.h"
#include "migration_owed.h"
#include "migration_streams.h"
#include "migration_wire.h"

struct mig_conn {
	struct mig_chan	ch;
	struct mig_params p;
	struct mig_vminfo peer;		/* the source's description */
	struct mig_vminfo local;	/* ours, with host pointers */
	struct mig_error *err;
	struct mig_stats *st;
	struct mig_backend *be;
	struct mig_disk_recv *disks;
	struct mig_owed	owed;		/* with MIG_CAP_OWED */
	enum mig_phase	phase;
	uint32_t	version;
	uint64_t	rtt_us;
	uint64_t	t0;
	uint64_t	final_us;	/* final round began, or HOLD came */
	bool		held;		/* the source sent HOLD */
	bool		hold_wait;	/* the next frame may take longer */
	uint64_t	pages_total;
	/* The round being received. */
	struct mig_round_stats *round;
	uint64_t	round_pages;
	uint64_t	round_t0;
	bool		final_done;
	/* The state section being received. */
	uint32_t	next_section;
	uint8_t		*section;
	uint64_t	section_len;
	uint64_t	section_got;
	bool		go;
	struct mig_rxstreams *streams;	/* streams 1..n-1, or NULL */
};

static int
chan_fail(struct mig_conn *c, int error, const char *doing)
{
	mig_fail_chan(c->err, &c->ch, c->phase, error, doing);
	return (error);
}

/* The source broke the protocol: say how and give up. */
static int __attribute__((__format__(__printf__, 2, 3)))
proto_fail(struct mig_conn *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->ch.why, sizeof(c->ch.why), fmt, ap);
	va_end(ap);
	mig_fail(c->err, MIG_SIDE_SOURCE, c->phase, EPROTO,
	    "the source sent an invalid stream: %s", c->ch.why);
	return (EPROTO);
}

static int
local_fail(struct mig_conn *c, int error, const char *what)
{
	mig_fail(c->err, MIG_SIDE_DEST, c->phase, error, "%s: %s", what,
	    c->be != NULL && c->be->errmsg[0] != '\0' ? c->be->errmsg :
	    strerror(error));
	return (error);
}

/* STREAMS: the session's further streams are to join. */
static int
recv_streams(struct mig_conn *c, const struct mig_params *p)
{
	void *payload;
	uint32_t len, n;
	int error;

	if ((error = mig_expect(&c->ch, c->err, c->phase, MIG_MSG_STREAMS,
	    "waiting for the number of streams", &payload, &len)) != 0)
		return (error);
	if ((error = mig_streams_decode(payload, len, &n, c->ch.why,
	    sizeof(c->ch.why))) != 0) {
		chan_fail(c, error, "reading the number of streams");
		mig_tell_peer(&c->ch, c->err);
		return (error);
	}
	if ((error = mig_rxstreams_create(&c->streams, n, &c->ch, p->key)) !=
	    0)
		return (local_fail(c, error, "could not set up the streams"));
	return (0);
}

int
mig_recv_accept(int fd, const struct mig_params *p, int *proven,
    struct mig_conn **cp, struct mig_vminfo *vi, struct mig_error *err)
{
	struct mig_conn *c;
	void *payload;
	uint32_t len;
	int error;

	memset(err, 0, sizeof(*err));
	*cp = NULL;
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		mig_fail(err, MIG_SIDE_DEST, MIG_PHASE_CONNECT, ENOMEM,
		    "out of memory");
		return (ENOMEM);
	}
	c->p = *p;
	c->err = err;
	c->t0 = mig_now_us();
	c->phase = MIG_PHASE_CONNECT;
	if ((error = mig_chan_init(&c->ch, fd, MIG_ROLE_DEST, 0)) != 0 ||
	    (error = mig_socket_setup(fd, p->io_timeout_ms)) != 0) {
		mig_fail(err, MIG_SIDE_DEST, c->phase, error,
		    "could not set up the migration socket: %s",
		    strerror(error));
		goto fail;
	}
	c->phase = MIG_PHASE_HANDSHAKE;
	if ((error = mig_handshake(&c->ch, p, p->encrypt, &c->version,
	    &c->rtt_us, err)) == EINPROGRESS) {
		/*
		 * A further stream: proved here, before it waits for its
		 * session; mig_conn_join() checks it against the session.
		 */
		if ((error = mig_stream_join_proven(&c->ch, p->key, c->ch.why,
		    sizeof(c->ch.why))) != 0) {
			mig_fail(err, MIG_SIDE_DEST, MIG_PHASE_AUTH, error,
			    "refused a stream join: %s", c->ch.why);
			goto fail;
		}
		if (proven != NULL)
			__atomic_store_n(proven, 1, __ATOMIC_SEQ_CST);
		c->err = NULL;
		*cp = c;
		return (EINPROGRESS);
	}
	if (error != 0)
		goto fail;
	if (proven != NULL)
		__atomic_store_n(proven, 1, __ATOMIC_SEQ_CST);
	if (c->ch.streams && (error = recv_streams(c, p)) != 0)
		goto fail;
	c->phase = MIG_PHASE_COMPAT;
	if ((error = mig_expect(&c->ch, err, c->phase, MIG_MSG_VMINFO,
	    "waiting for the guest's description", &payload, &len)) != 0)
		goto fail;
	if ((error = mig_vminfo_decode(payload, len, &c->peer,
	    c->ch.why, sizeof(c->ch.why))) != 0) {
		chan_fail(c, error, "reading the guest's description");
		/* Authenticated by now: the source deserves the reason. */
		mig_tell_peer(&c->ch, err);
		goto fail;
	}
	*vi = c->peer;
	c->err = NULL;
	*cp = c;
	return (0);
fail:
	err->dry_run = c->ch.check_only;
	mig_conn_free(c);
	return (error != 0 ? error : EIO);
}

bool
mig_conn_check_only(const struct mig_conn *c)
{

	return (c->ch.check_only);
}

void
mig_conn_free(struct mig_conn *c)
{
	if (c == NULL)
		return;
	mig_rxstreams_free(c->streams);
	mig_chan_destroy(&c->ch);
	mig_disk_recv_free(c->disks);
	mig_owed_free(&c->owed);
	free(c->section);
	free(c);
}

uint32_t
mig_conn_nstreams(const struct mig_conn *c)
{

	return (mig_rxstreams_count(c->streams));
}

bool
mig_conn_joined_all(const struct mig_conn *c)
{

	return (mig_rxstreams_complete(c->streams));
}

int
mig_conn_join(struct mig_conn *session, struct mig_conn *join, char *msg,
    size_t msglen)
{

	if (session->streams == NULL) {
		snprintf(msg, msglen, "the session has a single stream");
		return (EPROTO);
	}
	return (mig_rxstreams_join(session->streams, &join->ch, msg, msglen));
}

static int
check_compat(struct mig_conn *c)
{
	char why[MIG_ERRMSG_MAX];
	uint32_t i;
	int error;

	if ((error = c->be->ops->vminfo(c->be->arg, &c->local)) != 0)
		return (local_fail(c, error, "could not describe the local "
		    "guest"));
	if (mig_vminfo_compare(&c->peer, &c->local, why, sizeof(why)) != 0) {
		mig_fail(c->err, MIG_SIDE_DEST, MIG_PHASE_COMPAT, EINVAL,
		    "the destination refuses this guest: %s", why);
		return (EINVAL);
	}
	for (i = 0; i < c->local.nsegs; i++)
		c->st->memory_bytes += c->local.segs[i].len;
	if (c->ch.owed && (error = mig_owed_init(&c->owed, &c->local)) != 0)
		return (local_fail(c, error, "could not track owed pages"));
	if ((error = mig_disk_recv_begin(&c->disks, c->be, &c->peer, c->err,
	    &c->phase, c->ch.check_only)) != 0)
		return (error);
	if ((error = mig_chan_send(&c->ch, MIG_MSG_ACCEPT, NULL, 0)) != 0)
		return (chan_fail(c, error, "accepting the guest"));
	return (0);
}

static int
on_round_begin(struct mig_conn *c, void *payload, uint32_t len)
{
	struct mig_round_begin rb;
	int error;

	if ((error = mig_round_begin_decode(payload, len, &rb, c->ch.why,
	    sizeof(c->ch.why))) != 0)
		return (chan_fail(c, error, "starting a round"));
	if (c->round != NULL)
		return (proto_fail(c, "a round began inside a round"));
	if (c->final_done)
		return (proto_fail(c, "a round began after the final "
		    "one"));
	if (rb.index != c->st->nrounds + 1)
		return (proto_fail(c, "rounds are out of sequence"));
	c->round = &c->st->rounds[c->st->nrounds++];
	memset(c->round, 0, sizeof(*c->round));
	c->round->index = rb.index;
	c->round->final = rb.final != 0;
	c->round->dirty_pages = rb.pages;
	c->round_pages = 0;
	c->round_t0 = mig_now_us();
	/* The streams read it once this round began (under their lock). */
	c->owed.live = !c->round->final;
	if (c->streams != NULL)
		mig_rxstreams_round_begin(c->streams, rb.index);
	if (rb.final) {
		c->phase = MIG_PHASE_STOPCOPY;
		if (!c->held)
			c->final_us = c->round_t0;
	}
	return (0);
}

/*
 * The source paused the guest and waits for its switchover hook: allow
 * the next frame the hook's time on top of the I/O timeout.
 */
static int
on_hold(struct mig_conn *c, void *payload, uint32_t len)
{
	struct mig_hold h;
	int error;

	if (!c->ch.hold)
		return (proto_fail(c, "HOLD without the capability"));
	if ((error = mig_hold_decode(payload, len, &h, c->ch.why,
	    sizeof(c->ch.why))) != 0)
		return (chan_fail(c, error, "reading HOLD"));
	if (c->round != NULL || c->final_done || c->held)
		return (proto_fail(c, "HOLD came other than once, between "
		    "rounds, before the final one"));
	c->held = true;
	c->phase = MIG_PHASE_STOPCOPY;
	c->final_us = mig_now_us();
	if ((error = mig_socket_timeout(c->ch.fd, h.hold_ms +
	    c->p.io_timeout_ms)) != 0)
		return (chan_fail(c, error, "waiting for the switchover hook"));
	c->hold_wait = true;
	return (0);
}

/* The source broke the protocol in a PAGES frame. */
static int
pages_fail(struct mig_chan *ch, struct mig_error *err, enum mig_phase phase,
    const char *doing, const char *why)
{
	snprintf(ch->why, sizeof(ch->why), "%s", why);
	mig_fail_chan(err, ch, phase, EPROTO, doing);
	return (EPROTO);
}

/*
 * The index entries after a PAGES or PAGES_INDEX header ph decoded from
 * meta: decoded in place and checked against the segment and against
 * payload_len, the bytes of the whole frame (of both frames, for
 * PAGES_INDEX).
 */
static int
pages_index(struct mig_chan *ch, const struct mig_vminfo *local,
    uint8_t *meta, uint32_t payload_len, const struct mig_pages_hdr *ph,
    uint64_t **idxp, uint32_t *ndata)
{
	uint64_t *idx;
	uint32_t i;

	if (ph->seg >= local->nsegs) {
		snprintf(ch->why, sizeof(ch->why), "PAGES names a memory "
		    "segment that does not exist");
		return (EPROTO);
	}
	idx = (uint64_t *)(void *)(meta + MIG_PAGES_HDR_LEN);
	for (i = 0; i < ph->count; i++)
		idx[i] = mig_le64dec(&idx[i]);
	*idxp = idx;
	return (mig_pages_index_check(idx, ph->count,
	    local->segs[ph->seg].len / MIG_PAGE_SIZE, payload_len, ndata,
	    ch->why, sizeof(ch->why)));
}

/* The entries' pages: zero ones cleared here, data read into the rest. */
static int
pages_land(struct mig_chan *ch, const struct mig_vminfo *local,
    const struct mig_pages_hdr *ph, const uint64_t *idx,
    struct mig_round_stats *r)
{
	struct iovec iov[MIG_PAGES_PER_MSG];
	uint8_t *host, *page;
	uint64_t v;
	uint32_t i, n;

	host = local->segs[ph->seg].host;
	n = 0;
	for (i = 0; i < ph->count; i++) {
		v = idx[i];
		page = host + (v & ~MIG_PAGE_ZERO) * MIG_PAGE_SIZE;
		if ((v & MIG_PAGE_ZERO) != 0) {
			/* Reading an untouched page faults in no memory. */
			if (!mig_page_is_zero(page))
				memset(page, 0, MIG_PAGE_SIZE);
			r->zero_pages++;
		} else if (n > 0 && (uint8_t *)iov[n - 1].iov_base +
		    iov[n - 1].iov_len == page) {
			/* Adjacent pages: one copy for the kernel. */
			iov[n - 1].iov_len += MIG_PAGE_SIZE;
		} else {
			iov[n].iov_base = page;
			iov[n++].iov_len = MIG_PAGE_SIZE;
		}
	}
	return (n > 0 ? mig_chan_recv_bodyv(ch, iov, (int)n) : 0);
}

int
mig_recv_pages(struct mig_chan *ch, const struct mig_vminfo *local,
    struct mig_owed *owed, struct mig_round_stats *r, uint64_t *pages,
    uint32_t len, struct mig_error *err, enum mig_phase phase,
    const char *doing)
{
	struct mig_pages_hdr ph;
	uint8_t *meta;
	uint64_t *idx;
	uint32_t ndata;
	int error;

	/* The index is read before its tag: every entry is checked first. */
	meta = ch->rxbuf;
	if (len < MIG_PAGES_HDR_LEN)
		return (pages_fail(ch, err, phase, doing,
		    "PAGES message is truncated"));
	if ((error = mig_chan_recv_body(ch, meta, MIG_PAGES_HDR_LEN)) != 0 ||
	    (error = mig_pages_hdr_decode(meta, MIG_PAGES_HDR_LEN, len, &ph,
	    ch->why, sizeof(ch->why))) != 0 ||
	    (error = mig_chan_recv_body(ch, meta + MIG_PAGES_HDR_LEN,
	    8 * (size_t)ph.count)) != 0 ||
	    (error = pages_index(ch, local, meta, len, &ph, &idx,
	    &ndata)) != 0 ||
	    (error = pages_land(ch, local, &ph, idx, r)) != 0 ||
	    (error = mig_chan_recv_end(ch)) != 0) {
		mig_fail_chan(err, ch, phase, error, doing);
		return (error);
	}
	if (owed != NULL)
		mig_owed_pass(owed, ph.seg, idx, ph.count);
	r->pages_sent += ndata;
	*pages += ph.count;
	r->bytes += MIG_HDR_LEN + len + MIG_TAG_LEN;
	return (0);
}

int
mig_recv_pages_split(struct mig_chan *ch, const struct mig_vminfo *local,
    struct mig_owed *owed, struct mig_round_stats *r, uint64_t *pages,
    uint32_t len, struct mig_error *err, enum mig_phase phase,
    const char *doing)
{
	struct mig_pages_hdr ph;
	struct mig_hdr data;
	uint8_t hdr[MIG_PAGES_HDR_LEN];
	uint64_t *idx;
	uint32_t ndata;
	int error;

	if (owed == NULL)
		return (pages_fail(ch, err, phase, doing,
		    "PAGES_INDEX without the capability"));
	if ((error = mig_chan_recv_hdr(ch, &data)) != 0)
		goto fail;
	if (data.type != MIG_MSG_PAGES_DATA || data.len < MIG_PAGES_HDR_LEN)
		return (pages_fail(ch, err, phase, doing,
		    "PAGES_INDEX is not followed by its PAGES_DATA"));
	/* Both are at most MIG_PAYLOAD_MAX: the sum fits. */
	if ((error = mig_pages_hdr_decode(ch->rxbuf, MIG_PAGES_HDR_LEN, len +
	    data.len - MIG_PAGES_HDR_LEN, &ph, ch->why, sizeof(ch->why))) != 0 ||
	    (error = pages_index(ch, local, ch->rxbuf, len + data.len -
	    MIG_PAGES_HDR_LEN, &ph, &idx, &ndata)) != 0)
		goto fail;
	if (len != MIG_PAGES_HDR_LEN + 8 * ph.count)
		return (pages_fail(ch, err, phase, doing,
		    "PAGES_INDEX carries bytes past its entries"));
	/* The repeated header: compared once its tag passed. */
	if ((error = mig_chan_recv_body(ch, hdr, sizeof(hdr))) != 0 ||
	    (error = pages_land(ch, local, &ph, idx, r)) != 0)
		goto fail;
	error = mig_chan_recv_end(ch);
	if (error == EBADMSG && owed->live) {
		/* The guest wrote a page while it was on its way. */
		mig_owed_fail(owed, ph.seg, idx, ph.count);
		mig_chan_recv_forgo(ch);
	} else if (error != 0)
		goto fail;
	else if (mig_le32dec(hdr) != ph.seg || mig_le32dec(hdr + 4) != ph.count)
		return (pages_fail(ch, err, phase, doing,
		    "PAGES_DATA does not repeat its PAGES_INDEX's header"));
	else
		mig_owed_pass(owed, ph.seg, idx, ph.count);
	r->pages_sent += ndata;
	*pages += ph.count;
	r->bytes += 2 * (MIG_HDR_LEN + MIG_TAG_LEN) + len + data.len;
	return (0);
fail:
	mig_fail_chan(err, ch, phase, error, doing);
	return (error);
}

static int
on_pages(struct mig_conn *c, uint16_t type, uint32_t len)
{
	struct mig_owed *owed;

	if (c->round == NULL)
		return (proto_fail(c, "pages arrived outside a round"));
	owed = c->ch.owed ? &c->owed : NULL;
	if (type == MIG_MSG_PAGES_INDEX)
		return (mig_recv_pages_split(&c->ch, &c->local, owed, c->round,
		    &c->round_pages, len, c->err, c->phase,
		    "receiving memory"));
	return (mig_recv_pages(&c->ch, &c->local, owed, c->round,
	    &c->round_pages, len, c->err, c->phase, "receiving memory"));
}

/* Round 1 only: the pages are zero here already, left untouched. */
static int
on_zero_ranges(struct mig_conn *c, void *payload, uint32_t len)
{
	struct mig_zero_ranges z;
	uint64_t n;
	uint32_t i;
	int error;

	if (!c->ch.zero_ranges)
		return (proto_fail(c, "ZERO_RANGES without the capability"));
	if (c->round == NULL || c->round->index != 1)
		return (proto_fail(c, "ZERO_RANGES outside the first round"));
	if ((error = mig_zero_ranges_decode(payload, len, &c->local, &z,
	    c->ch.why, sizeof(c->ch.why))) != 0)
		return (chan_fail(c, error, "receiving zero ranges"));
	n = 0;
	for (i = 0; i < z.count; i++)
		n += z.r[i].npages;
	c->round->zero_pages += n;
	c->round->unpopulated_pages += n;
	c->round_pages += n;
	c->round->bytes += MIG_HDR_LEN + len + MIG_TAG_LEN;
	return (0);
}

/* Tell the backend where the stream is: a round's end, or READY sent. */
static void
dest_progress(struct mig_conn *c, uint32_t round,
    const struct mig_round_stats *last)
{
	struct mig_progress ev;

	if (c->be->ops->progress == NULL)
		return;
	memset(&ev, 0, sizeof(ev));
	ev.phase = c->phase;
	ev.round = round;
	ev.remaining_pages = 0;
	ev.last_round = last;
	c->be->ops->progress(c->be->arg, &ev);
}

static int
on_round_end(struct mig_conn *c, void *payload, uint32_t len)
{
	struct mig_round_end re;
	int error;

	if ((error = mig_round_end_decode(payload, len, &re, c->ch.why,
	    sizeof(c->ch.why))) != 0)
		return (chan_fail(c, error, "ending a round"));
	if (c->round == NULL || re.index != c->round->index)
		return (proto_fail(c, "a round ended that had not "
		    "begun"));
	/* The barrier: every stream's part of the round is in. */
	if (c->streams != NULL && (error = mig_rxstreams_round_end(c->streams,
	    re.index, c->round->final, c->round, &c->round_pages, c->err)) !=
	    0)
		return (error);
	if (re.pages != c->round_pages)
		return (proto_fail(c, "a round's page count does not "
		    "match the pages received"));
	c->round->duration_us = mig_now_us() - c->round_t0;
	c->pages_total += c->round_pages;
	if (c->ch.owed) {
		c->round->owed_pages = mig_owed_merge(&c->owed);
		if (c->round->final && c->owed.count > 0) {
			mig_fail(c->err, MIG_SIDE_LINK, c->phase, EBADMSG,
			    "%ju pages of memory came only in frames that "
			    "failed their integrity check (altered on the way, "
			    "or not sent again)", (uintmax_t)c->owed.count);
			return (EBADMSG);
		}
		if (!c->round->final && (error = mig_owed_send(&c->owed,
		    &c->ch, re.index)) != 0)
			return (chan_fail(c, error, "reporting the pages to "
			    "send again"));
	}
	if (c->round->final) {
		c->final_done = true;
		c->phase = MIG_PHASE_STATE;
	}
	dest_progress(c, c->round->index, c->round);
	c->round = NULL;
	return (0);
}

/*
 * STATE is read whole and its tag checked before anything in it counts:
 * the section's size, which sizes the buffer, is the peer's word.
 */
static int
on_state(struct mig_conn *c, void *payload, uint32_t len)
{
	struct mig_state_hdr sh;
	uint32_t n;
	int error;

	if (!c->final_done || c->round != NULL)
		return (proto_fail(c, "device state arrived before the "
		    "final round ended"));
	/* The decoder reads only the header but checks the data length. */
	if ((error = mig_state_hdr_decode(payload, len, &sh, c->ch.why,
	    sizeof(c->ch.why))) != 0)
		return (chan_fail(c, error, "receiving device state"));
	n = len - MIG_STATE_HDR_LEN;
	if (sh.section != c->next_section || sh.section >= c->local.nsections)
		return (proto_fail(c, "state sections are out of order"));
	if (sh.offset != c->section_got ||
	    (c->section != NULL && sh.total != c->section_len))
		return (proto_fail(c, "a state chunk does not continue "
		    "its section"));
	if (c->section == NULL) {
		c->section_len = sh.total;
		c->section_got = 0;
		if ((c->section = malloc(sh.total > 0 ? sh.total : 1)) == NULL)
			return (local_fail(c, ENOMEM, "no memory for device "
			    "state"));
	}
	memcpy(c->section + sh.offset, (uint8_t *)payload + MIG_STATE_HDR_LEN,
	    n);
	c->section_got += n;
	c->st->state_bytes += n;
	if (c->section_got < c->section_len)
		return (0);
	error = c->be->ops->state_restore(c->be->arg, c->next_section,
	    c->section, c->section_len);
	free(c->section);
	c->section = NULL;
	c->section_got = 0;
	if (error != 0) {
		mig_fail(c->err, MIG_SIDE_DEST, c->phase, error,
		    "could not restore the state of '%s': %s",
		    c->local.sections[c->next_section].name,
		    c->be->errmsg[0] != '\0' ? c->be->errmsg :
		    strerror(error));
		return (error);
	}
	c->next_section++;
	return (0);
}

static int
on_ready(struct mig_conn *c, void *payload, uint32_t len)
{
	struct mig_ready ready;
	uint8_t buf[32];
	int error;

	if ((error = mig_ready_decode(payload, len, &ready, c->ch.why,
	    sizeof(c->ch.why))) != 0)
		return (chan_fail(c, error, "switching over"));
	if (!c->final_done || c->section != NULL ||
	    c->next_section != c->local.nsections ||
	    ready.nsections != c->local.nsections)
		return (proto_fail(c, "READY arrived before all memory "
		    "and state"));
	if (ready.pages != c->pages_total)
		return (proto_fail(c, "READY counts other pages than "
		    "were received"));
	c->phase = MIG_PHASE_SWITCHOVER;
	if (c->be->ops->before_ready != NULL &&
	    (error = c->be->ops->before_ready(c->be->arg)) != 0)
		return (local_fail(c, error, "could not take the guest's "
		    "disks over"));
	ready.pages = c->pages_total;
	if ((error = mig_chan_send(&c->ch, MIG_MSG_READY, buf,
	    mig_ready_encode(buf, sizeof(buf), &ready))) != 0)
		return (chan_fail(c, error, "reporting ready"));
	dest_progress(c, c->st->nrounds, NULL);
	if ((error = mig_expect(&c->ch, c->err, c->phase, MIG_MSG_GO,
	    "waiting for GO", &payload, NULL)) != 0)
		return (error);
	c->go = true;
	return (0);
}

int
mig_recv_run(struct mig_conn *c, struct mig_backend *be,
    struct mig_stats *st, struct mig_error *err)
{
	struct mig_hdr hdr;
	void *payload;
	int error;

	memset(err, 0, sizeof(*err));
	c->be = be;
	c->err = err;
	c->st = st;
	c->phase = MIG_PHASE_COMPAT;
	be->errmsg[0] = '\0';
	st->nrounds = 0;
	st->protocol_version = c->version;
	st->nstreams = mig_rxstreams_count(c->streams);
	st->encrypted = c->ch.encrypt;
	st->rtt_us = c->rtt_us;
	if ((error = check_compat(c)) != 0 || c->ch.check_only)
		goto out;
	if (c->streams != NULL && (error = mig_rxstreams_start(c->streams,
	    &c->local, c->ch.owed ? &c->owed : NULL, c->ch.fd,
	    MIG_PHASE_PRECOPY)) != 0) {
		local_fail(c, error, "could not start the stream receivers");
		goto out;
	}
	c->phase = MIG_PHASE_PRECOPY;
	while (!c->go) {
		/* Stream 0 may idle while the others carry a round. */
		if (c->round != NULL && c->streams != NULL &&
		    (error = mig_rxstreams_wait(c->streams, c->ch.fd,
		    c->p.io_timeout_ms)) != 0) {
			chan_fail(c, error, "receiving the migration stream");
			break;
		}
		if ((error = mig_chan_recv_hdr(&c->ch, &hdr)) != 0) {
			chan_fail(c, error, c->hold_wait ? "waiting for the "
			    "source's switchover hook" : "receiving the "
			    "migration stream");
			break;
		}
		if (c->hold_wait) {
			c->hold_wait = false;
			if ((error = mig_socket_timeout(c->ch.fd,
			    c->p.io_timeout_ms)) != 0) {
				chan_fail(c, error, "restoring the I/O timeout");
				break;
			}
		}
		payload = NULL;
		/* All but PAGES are read whole and verified. */
		if (hdr.type != MIG_MSG_PAGES) {
			if ((error = mig_chan_recv_body(&c->ch, c->ch.rxbuf,
			    hdr.len)) != 0 ||
			    (error = mig_chan_recv_end(&c->ch)) != 0) {
				chan_fail(c, error, "receiving the migration "
				    "stream");
				break;
			}
			payload = c->ch.rxbuf;
		}
		switch (hdr.type) {
		case MIG_MSG_ROUND_BEGIN:
			error = on_round_begin(c, payload, hdr.len);
			break;
		case MIG_MSG_PAGES:
		case MIG_MSG_PAGES_INDEX:
			error = on_pages(c, hdr.type, hdr.len);
			break;
		case MIG_MSG_ZERO_RANGES:
			error = on_zero_ranges(c, payload, hdr.len);
			break;
		case MIG_MSG_ROUND_END:
			error = on_round_end(c, payload, hdr.len);
			break;
		case MIG_MSG_STATE:
			error = on_state(c, payload, hdr.len);
			break;
		case MIG_MSG_DISK_BLOCKS:
		case MIG_MSG_DISK_ZERO:
			error = mig_disk_recv_frame(c->disks, &c->ch, c->round,
			    hdr.type, payload, hdr.len);
			break;
		case MIG_MSG_READY:
			error = on_ready(c, payload, hdr.len);
			break;
		case MIG_MSG_HOLD:
			error = on_hold(c, payload, hdr.len);
			break;
		case MIG_MSG_ERROR:
			mig_fail_peer(err, &c->ch, payload, hdr.len);
			error = err->code;
			break;
		default:
			error = proto_fail(c, "unexpected %s message",
			    mig_msg_name(hdr.type));
			break;
		}
		if (error != 0)
			break;
	}
out:
	/* A stream's failure, if first, is the one to report. */
	if (error != 0)
		mig_rxstreams_stop(c->streams, err);
	if (error != 0)
		mig_tell_peer(&c->ch, err);
	st->bytes_sent = c->ch.bytes_tx + c->ch.bytes_rx +
	    mig_rxstreams_bytes(c->streams);
	st->total_time_us = mig_now_us() - c->t0;
	return (error);
}

int
mig_recv_finish(struct mig_conn *c, struct mig_error *err)
{
	int disk_error, error;

	memset(err, 0, sizeof(*err));
	c->err = err;
	if (!c->go) {
		mig_fail(err, MIG_SIDE_DEST, c->phase, EINVAL,
		    "the guest may not run here: no GO was received");
		return (EINVAL);
	}
	if (c->st != NULL) {
		c->st->downtime_us = mig_now_us() - c->final_us;
		c->st->total_time_us = mig_now_us() - c->t0;
	}
	error = mig_chan_send(&c->ch, MIG_MSG_RUNNING, NULL, 0);
	/*
	 * The guest runs here from now on: once its images are flushed,
	 * outside the downtime, they are complete.  A mark left behind is
	 * reported; the guest runs all the same.
	 */
	disk_error = mig_disk_recv_done(c->disks);
	if (error != 0)
		return (chan_fail(c, error, "confirming that the guest runs"));
	c->phase = MIG_PHASE_DONE;
	return (disk_error);
}
