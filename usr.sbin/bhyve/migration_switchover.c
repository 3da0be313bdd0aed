/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The pause-before-switchover hook, for orchestrators that move what
 * the engine does not (a ZFS send of the guest's disks): with the guest
 * paused, its devices drained and the last dirty pages collected, the
 * source tells the destination (HOLD) and its controller (the "paused"
 * event, with the dirty memory still to send) how long it may wait, and
 * waits for the controller's go-ahead (mig_hook_release()).  A timeout,
 * the operator's cancel or the controller hanging up (a cancel, see
 * migration_source_cmd.c) fails the migration before GO: the common
 * path rolls back and the guest resumes on the source.
 */

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "migration.h"
#include "migration_backend.h"
#include "migration_internal.h"
#include "migration_wire.h"

#define	HOOK_POLL_MS	5	/* go-ahead and cancel checks */

enum { HOOK_IDLE = 0, HOOK_WAITING, HOOK_RELEASED };

void
mig_hook_init(struct mig_hook *h)
{

	__atomic_store_n(&h->state, HOOK_IDLE, __ATOMIC_SEQ_CST);
}

bool
mig_hook_release(struct mig_hook *h)
{
	int expected;

	expected = HOOK_WAITING;
	return (__atomic_compare_exchange_n(&h->state, &expected,
	    HOOK_RELEASED, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
}

/* Stop waiting: true if the go-ahead came first. */
static bool
hook_close(struct mig_hook *h)
{
	int expected;

	expected = HOOK_WAITING;
	if (__atomic_compare_exchange_n(&h->state, &expected, HOOK_IDLE,
	    false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
		return (false);
	__atomic_store_n(&h->state, HOOK_IDLE, __ATOMIC_SEQ_CST);
	return (true);
}

/*
 * The destination is not to speak before GO: whatever it sent (ERROR,
 * or the end of the stream) is its failure.
 */
static int
hook_peer(struct mig_chan *ch, struct mig_error *err)
{
	void *payload;

	(void)mig_expect(ch, err, MIG_PHASE_STOPCOPY, MIG_MSG_READY,
	    "waiting for the switchover hook", &payload, NULL);
	if (err->code == 0)
		mig_fail(err, MIG_SIDE_DEST, MIG_PHASE_STOPCOPY, EPROTO,
		    "the destination spoke while the source waited for its "
		    "switchover hook");
	return (err->code);
}

int
mig_switchover_hold(struct mig_chan *ch, struct mig_backend *be,
    const struct mig_params *p, uint32_t round, uint64_t dirty,
    struct mig_error *err, uint64_t *waited_us)
{
	struct mig_error told;
	struct mig_progress ev;
	struct mig_hold hold;
	struct pollfd pfd;
	uint8_t buf[MIG_HOLD_LEN];
	uint64_t t0, now, end;
	int error, ms;

	*waited_us = 0;
	if (!ch->hold) {
		mig_fail(err, MIG_SIDE_DEST, MIG_PHASE_STOPCOPY, ENOTSUP,
		    "the destination cannot wait for a switchover hook "
		    "(it does not speak HOLD)");
		return (ENOTSUP);
	}
	if (p->hook == NULL) {
		mig_fail(err, MIG_SIDE_SOURCE, MIG_PHASE_STOPCOPY, EINVAL,
		    "a switchover hook was asked for, but no controller can "
		    "give its go-ahead");
		return (EINVAL);
	}
	hold.hold_ms = (uint32_t)p->switchover_wait_ms;
	if ((error = mig_chan_send(ch, MIG_MSG_HOLD, buf,
	    mig_hold_encode(buf, sizeof(buf), &hold))) != 0) {
		mig_fail_chan(err, ch, MIG_PHASE_STOPCOPY, error,
		    "announcing the switchover hook");
		return (error);
	}
	__atomic_store_n(&p->hook->state, HOOK_WAITING, __ATOMIC_SEQ_CST);
	t0 = mig_now_us();
	end = t0 + p->switchover_wait_ms * 1000;
	if (be->ops->progress != NULL) {
		memset(&ev, 0, sizeof(ev));
		ev.phase = MIG_PHASE_STOPCOPY;
		ev.round = round;
		ev.remaining_pages = dirty;
		ev.hold_ms = p->switchover_wait_ms;
		be->ops->progress(be->arg, &ev);
	}
	error = 0;
	for (;;) {
		if (__atomic_load_n(&p->hook->state, __ATOMIC_SEQ_CST) ==
		    HOOK_RELEASED)
			break;
		if (mig_cancelled(p->cancel)) {
			error = ECANCELED;
			mig_fail(err, MIG_SIDE_SOURCE, MIG_PHASE_STOPCOPY,
			    error, "cancelled at the switchover hook (by the "
			    "operator, or the controller went away)");
			break;
		}
		if ((now = mig_now_us()) >= end) {
			error = ETIMEDOUT;
			mig_fail(err, MIG_SIDE_SOURCE, MIG_PHASE_STOPCOPY,
			    error, "the switchover hook gave no go-ahead "
			    "within %ju ms", (uintmax_t)p->switchover_wait_ms);
			break;
		}
		ms = (end - now) / 1000 < HOOK_POLL_MS ?
		    (int)((end - now + 999) / 1000) : HOOK_POLL_MS;
		pfd.fd = ch->fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		if (poll(&pfd, 1, ms) > 0) {
			error = hook_peer(ch, err);
			break;
		}
	}
	/* A go-ahead that came with the deadline is taken. */
	if (hook_close(p->hook) && error == ETIMEDOUT) {
		memset(err, 0, sizeof(*err));
		error = 0;
	}
	*waited_us = mig_now_us() - t0;
	if (error == ETIMEDOUT) {
		/*
		 * The link is fine, but mig_tell_peer() keeps quiet after
		 * a timeout: tell the destination now, so it discards at
		 * once rather than after its own wait.
		 */
		told = *err;
		told.code = ECANCELED;
		mig_tell_peer(ch, &told);
	}
	return (error);
}
