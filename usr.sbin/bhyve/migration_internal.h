/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/* Shared between the engine's sender and receiver; not for backends. */

#ifndef _MIGRATION_INTERNAL_H_
#define	_MIGRATION_INTERNAL_H_

#include <stddef.h>
#include <stdint.h>

#include "migration.h"
#include "migration_chan.h"

struct mig_owed;

/* Dirty bitmaps, memory's and disks': 64 pages or blocks a word. */
#define	BITS_PER_WORD	64

static inline size_t
bitmap_words(uint64_t nbits)
{

	return ((nbits + BITS_PER_WORD - 1) / BITS_PER_WORD);
}

static inline uint64_t
popcount_words(const uint64_t *w, size_t n)
{
	uint64_t c;
	size_t i;

	c = 0;
	for (i = 0; i < n; i++)
		c += (uint64_t)__builtin_popcountll(w[i]);
	return (c);
}

/* Record the first failure; later ones are consequences of it. */
void	mig_fail(struct mig_error *, enum mig_side, enum mig_phase, int code,
	    const char *fmt, ...) __attribute__((__format__(__printf__, 5, 6)));
/* Add a consequence to the recorded failure's message. */
void	mig_error_append(struct mig_error *, const char *);
/* Record a failure of the channel: peer gone, timeout, bad frame. */
void	mig_fail_chan(struct mig_error *, const struct mig_chan *,
	    enum mig_phase, int error, const char *doing);
/* Record the peer's own ERROR message. */
void	mig_fail_peer(struct mig_error *, struct mig_chan *,
	    const void *payload, size_t len);
/*
 * Receive one whole frame that must be of type want.  A peer's ERROR is
 * recorded as its failure, any other type as a protocol error.  With a
 * NULL len the frame must be empty.  Returns 0 or the recorded error.
 */
int	mig_expect(struct mig_chan *, struct mig_error *, enum mig_phase,
	    uint16_t want, const char *doing, void **payload, uint32_t *len);
/*
 * Destination: the rest of a PAGES frame of len bytes, straight into
 * the guest memory local describes; counts into r and *pages.  Every
 * frame must pass its tag; with owed (MIG_CAP_OWED) its pages are owed
 * no longer.
 */
int	mig_recv_pages(struct mig_chan *, const struct mig_vminfo *local,
	    struct mig_owed *owed, struct mig_round_stats *r, uint64_t *pages,
	    uint32_t len, struct mig_error *, enum mig_phase,
	    const char *doing);
/*
 * The same for a PAGES_INDEX of len bytes, read whole and verified into
 * the channel's buffer, and the PAGES_DATA that must follow it.  In a
 * live round, a PAGES_DATA that fails its tag owes exactly the pages of
 * that verified index.
 */
int	mig_recv_pages_split(struct mig_chan *, const struct mig_vminfo *local,
	    struct mig_owed *owed, struct mig_round_stats *r, uint64_t *pages,
	    uint32_t len, struct mig_error *, enum mig_phase,
	    const char *doing);
/* Tell the peer why this side gives up; best effort. */
void	mig_tell_peer(struct mig_chan *, const struct mig_error *);
/* The side a role stands for, and its name in messages. */
enum mig_side mig_role_side(enum mig_role);
const char *mig_role_name(enum mig_role);

/*
 * Version and capability negotiation and proof of the key.  On success
 * the channel is keyed, *version holds the agreed protocol version and
 * *rtt_us a round trip: the time from sending HELLO to the peer's AUTH or
 * the kernel's TCP measure, whichever is lower (a slow peer cannot raise
 * it).
 */
int	mig_handshake(struct mig_chan *, const struct mig_params *,
	    bool require_encrypt, uint32_t *version, uint64_t *rtt_us,
	    struct mig_error *);

/*
 * The source's switchover hook (migration_switchover.c): the guest is
 * paused and dirty pages still to send in round.  Send HOLD, report the
 * wait through the backend's progress hook (hold_ms), wait for the
 * go-ahead.  0 once given; else the failure, recorded in err: timeout,
 * cancel, or the destination's.  *waited_us: the time it waited.
 */
struct mig_backend;
int	mig_switchover_hold(struct mig_chan *, struct mig_backend *,
	    const struct mig_params *, uint32_t round, uint64_t dirty,
	    struct mig_error *, uint64_t *waited_us);

#endif /* _MIGRATION_INTERNAL_H_ */
