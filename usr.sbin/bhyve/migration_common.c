/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migration.h"
#include "migration_internal.h"

#define	MIG_DEFAULT_DOWNTIME_US	300000	/* QEMU's default, too */
#define	MIG_DEFAULT_MAX_ROUNDS	30
#define	MIG_DEFAULT_TIMEOUT_MS	10000
#define	MIG_SEED_ROUNDS		4	/* what review D30954 hard-coded */
#define	MIG_MAX_TIME_LIMIT_MS	(24ull * 3600 * 1000)

static const char *const phase_names[MIG_PHASE_COUNT] = {
	[MIG_PHASE_CONNECT] = "connect",
	[MIG_PHASE_HANDSHAKE] = "handshake",
	[MIG_PHASE_AUTH] = "authentication",
	[MIG_PHASE_COMPAT] = "compatibility check",
	[MIG_PHASE_PRECOPY] = "pre-copy",
	[MIG_PHASE_STOPCOPY] = "stop-and-copy",
	[MIG_PHASE_STATE] = "device state",
	[MIG_PHASE_SWITCHOVER] = "switchover",
	[MIG_PHASE_DONE] = "done",
};

const char *
mig_phase_name(enum mig_phase phase)
{
	if ((unsigned)phase >= MIG_PHASE_COUNT)
		return ("unknown");
	return (phase_names[phase]);
}

const char *
mig_side_name(enum mig_side side)
{
	switch (side) {
	case MIG_SIDE_SOURCE:
		return ("source");
	case MIG_SIDE_DEST:
		return ("destination");
	case MIG_SIDE_LINK:
		return ("link");
	}
	return ("unknown");
}

const char *
mig_stop_reason_name(enum mig_stop_reason reason)
{
	switch (reason) {
	case MIG_STOP_NONE:
		return ("none");
	case MIG_STOP_CONVERGED:
		return ("converged");
	case MIG_STOP_FIXED_ROUNDS:
		return ("fixed-rounds");
	case MIG_STOP_MAX_ROUNDS:
		return ("max-rounds");
	case MIG_STOP_MAX_TIME:
		return ("max-time");
	case MIG_STOP_NO_PROGRESS:
		return ("no-progress");
	}
	return ("unknown");
}

enum mig_side
mig_role_side(enum mig_role role)
{
	return (role == MIG_ROLE_SOURCE ? MIG_SIDE_SOURCE : MIG_SIDE_DEST);
}

const char *
mig_role_name(enum mig_role role)
{
	return (mig_side_name(mig_role_side(role)));
}

void
mig_params_init(struct mig_params *p)
{
	memset(p, 0, sizeof(*p));
	p->live = true;
	p->policy = MIG_POLICY_CONVERGE;
	p->fixed_rounds = MIG_SEED_ROUNDS;
	p->max_rounds = MIG_DEFAULT_MAX_ROUNDS;
	p->downtime_limit_us = MIG_DEFAULT_DOWNTIME_US;
	p->auto_throttle = true;
	p->io_timeout_ms = MIG_DEFAULT_TIMEOUT_MS;
	p->nstreams = 1;
}

int
mig_params_check(const struct mig_params *p, char *msg, size_t msglen)
{
	const char *why;

	why = NULL;
	if (p->max_rounds == 0 || p->max_rounds > MIG_MAX_ROUNDS_LIMIT)
		why = "max rounds must be between 1 and 1000";
	else if (p->policy == MIG_POLICY_FIXED &&
	    (p->fixed_rounds == 0 || p->fixed_rounds > MIG_MAX_ROUNDS_LIMIT))
		why = "fixed rounds must be between 1 and 1000";
	else if (p->policy != MIG_POLICY_CONVERGE &&
	    p->policy != MIG_POLICY_FIXED)
		why = "unknown round policy";
	else if (p->downtime_limit_us == 0)
		why = "the downtime limit must be positive";
	else if (p->io_timeout_ms < 100 || p->io_timeout_ms > 3600000)
		why = "the I/O timeout must be between 100 ms and 1 hour";
	else if (p->bandwidth_limit != 0 && p->bandwidth_limit < 65536)
		why = "a bandwidth limit below 64 KiB/s cannot work";
	else if (p->max_time_ms > MIG_MAX_TIME_LIMIT_MS)
		why = "the live phase may last at most 24 hours";
	else if (p->switchover_wait_ms > MIG_MAX_HOLD_MS)
		why = "the switchover hook may hold the guest at most 1 hour";
	else if (p->nstreams == 0 || p->nstreams > MIG_STREAMS_MAX)
		why = "the number of streams must be between 1 and 8";
	if (why == NULL)
		return (0);
	snprintf(msg, msglen, "%s", why);
	return (EINVAL);
}

int
mig_stats_init(struct mig_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->rounds = calloc(MIG_STATS_MAX_ROUNDS, sizeof(*st->rounds));
	return (st->rounds == NULL ? ENOMEM : 0);
}

void
mig_stats_free(struct mig_stats *st)
{
	free(st->rounds);
	st->rounds = NULL;
}

void
mig_fail(struct mig_error *err, enum mig_side side, enum mig_phase phase,
    int code, const char *fmt, ...)
{
	va_list ap;

	if (err->code != 0)
		return;
	err->side = side;
	err->phase = phase;
	err->code = code != 0 ? code : EIO;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

void
mig_error_append(struct mig_error *err, const char *more)
{
	size_t used;

	used = strnlen(err->msg, sizeof(err->msg));
	if (used < sizeof(err->msg) - 1)
		snprintf(err->msg + used, sizeof(err->msg) - used, "%s", more);
}

void
mig_fail_chan(struct mig_error *err, const struct mig_chan *ch,
    enum mig_phase phase, int error, const char *doing)
{
	enum mig_side peer;
	const char *peername;

	peer = mig_role_side(ch->role == MIG_ROLE_SOURCE ? MIG_ROLE_DEST :
	    MIG_ROLE_SOURCE);
	peername = mig_side_name(peer);
	switch (error) {
	case ECONNRESET:
		mig_fail(err, peer, phase, error,
		    "the %s closed the connection while %s (it exited or "
		    "was killed)", peername, doing);
		break;
	case ETIMEDOUT:
		mig_fail(err, MIG_SIDE_LINK, phase, error,
		    "no progress with the %s for a timeout while %s: the "
		    "link or the %s stopped responding", peername, doing,
		    peername);
		break;
	case EBADMSG:
		/* Altered in transit, or a peer with another key. */
		mig_fail(err, MIG_SIDE_LINK, phase, error,
		    "the stream from the %s failed its integrity check while "
		    "%s: %s", peername, doing, ch->why[0] != '\0' ? ch->why :
		    strerror(error));
		break;
	case EPROTO:
	case EMSGSIZE:
		mig_fail(err, peer, phase, error,
		    "the %s sent an invalid stream while %s: %s", peername,
		    doing, ch->why[0] != '\0' ? ch->why : strerror(error));
		break;
	default:
		mig_fail(err, MIG_SIDE_LINK, phase, error,
		    "connection to the %s failed while %s: %s", peername,
		    doing, strerror(error));
		break;
	}
}

void
mig_fail_peer(struct mig_error *err, struct mig_chan *ch,
    const void *payload, size_t len)
{
	struct mig_errmsg em;
	char why[MIG_ERRMSG_MAX];
	enum mig_side peer;

	ch->peer_gave_up = true;
	peer = ch->role == MIG_ROLE_SOURCE ? MIG_SIDE_DEST : MIG_SIDE_SOURCE;
	if (mig_error_decode((void *)(uintptr_t)payload, len, &em, why,
	    sizeof(why)) != 0) {
		mig_fail(err, peer, MIG_PHASE_HANDSHAKE, EPROTO,
		    "the %s gave up with an unreadable ERROR message: %s",
		    mig_side_name(peer), why);
		return;
	}
	/*
	 * Before both proofs check anybody can send ERROR: its side and
	 * phase are not believed (a phase past AUTH would end a listener
	 * and say where the guest runs) and its text is labelled.
	 */
	if (!ch->keyed) {
		mig_fail(err, MIG_SIDE_LINK, MIG_PHASE_HANDSHAKE, EPROTO,
		    "an unauthenticated peer sent ERROR before proving the "
		    "key; its unverified text: \"%s\"", em.msg);
		return;
	}
	mig_fail(err, (enum mig_side)em.side, (enum mig_phase)em.phase,
	    em.code != 0 ? (int)em.code : EIO, "%s", em.msg);
}

int
mig_expect(struct mig_chan *ch, struct mig_error *err, enum mig_phase phase,
    uint16_t want, const char *doing, void **payload, uint32_t *len)
{
	struct mig_hdr hdr;
	int error;

	if ((error = mig_chan_recv(ch, &hdr, payload)) != 0) {
		mig_fail_chan(err, ch, phase, error, doing);
		return (error);
	}
	if (hdr.type == MIG_MSG_ERROR) {
		mig_fail_peer(err, ch, *payload, hdr.len);
		return (err->code);
	}
	/* A further stream of a session answers HELLO with JOIN. */
	if (hdr.type == MIG_MSG_JOIN && want == MIG_MSG_HELLO &&
	    ch->role == MIG_ROLE_DEST && len != NULL) {
		*len = hdr.len;
		return (EINPROGRESS);
	}
	if (hdr.type != want || (len == NULL && hdr.len != 0)) {
		snprintf(ch->why, sizeof(ch->why), "expected %s%s, got %s",
		    len == NULL ? "an empty " : "", mig_msg_name(want),
		    mig_msg_name(hdr.type));
		mig_fail_chan(err, ch, phase, EPROTO, doing);
		return (EPROTO);
	}
	if (len != NULL)
		*len = hdr.len;
	return (0);
}

void
mig_tell_peer(struct mig_chan *ch, const struct mig_error *err)
{
	struct mig_errmsg em;
	uint8_t buf[16 + MIG_ERRMSG_MAX];
	size_t len;

	/* The peer knows why it gave up; a dead link carries nothing. */
	if (ch->peer_gave_up || err->code == ETIMEDOUT ||
	    err->code == ECONNRESET)
		return;
	memset(&em, 0, sizeof(em));
	em.phase = (uint16_t)err->phase;
	em.side = (uint16_t)err->side;
	em.code = (uint32_t)err->code;
	snprintf(em.msg, sizeof(em.msg), "%s", err->msg);
	len = mig_error_encode(buf, sizeof(buf), &em);
	if (len > 0)
		(void)mig_chan_send(ch, MIG_MSG_ERROR, buf, len);
}

enum { CANCEL_OPEN = 0, CANCEL_REQUESTED, CANCEL_COMMITTED };

void
mig_cancel_init(struct mig_cancel *c)
{

	__atomic_store_n(&c->state, CANCEL_OPEN, __ATOMIC_SEQ_CST);
}

static bool
cancel_move(struct mig_cancel *c, int to)
{
	int expected;

	expected = CANCEL_OPEN;
	return (__atomic_compare_exchange_n(&c->state, &expected, to, false,
	    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST) || expected == to);
}

bool
mig_cancel_request(struct mig_cancel *c)
{

	return (cancel_move(c, CANCEL_REQUESTED));
}

bool
mig_cancel_commit(struct mig_cancel *c)
{

	return (c == NULL || cancel_move(c, CANCEL_COMMITTED));
}

bool
mig_cancelled(const struct mig_cancel *c)
{

	return (c != NULL &&
	    __atomic_load_n(&c->state, __ATOMIC_SEQ_CST) == CANCEL_REQUESTED);
}
