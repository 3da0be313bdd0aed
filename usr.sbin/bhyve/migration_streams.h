/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Several streams in one migration session.  Stream 0 is the one the
 * handshake ran on: it carries every control message.  Streams 1..n-1
 * join the session after its AUTH: the destination sends HELLO on each
 * connection as it always does, and the source answers with JOIN instead
 * of HELLO.  A stream's keys come from the session's transcript, the
 * stream's index and that connection's destination HELLO (a fresh
 * nonce), so a join replayed on another connection or taken from another
 * session fails its proof, and every stream has its own keys and
 * sequence numbers.  Pages are partitioned by chunk: a page always
 * travels on the same stream, so its versions arrive in order.  Each
 * stream ends its part of a round with PART_END; the destination counts
 * a round complete when stream 0's ROUND_END and every PART_END of that
 * round arrived, and only then lets the streams read on.
 */

#ifndef _MIGRATION_STREAMS_H_
#define	_MIGRATION_STREAMS_H_

#include <stdbool.h>
#include <stdint.h>

#include "migration.h"
#include "migration_chan.h"

struct mig_owed;

/* Words of the page bitmap (64 pages each) per chunk of a stream. */
#define	MIG_STREAM_CHUNK_WORDS	64

/* The stream that sends the pages of bitmap word w. */
static inline uint32_t
mig_stream_of_word(uint64_t w, uint32_t nstreams)
{

	return ((uint32_t)((w / MIG_STREAM_CHUNK_WORDS) % nstreams));
}

/*
 * Source: on the fresh connection ch of stream index, read the
 * destination's HELLO, send JOIN and key ch with the stream's keys.
 * ctl is the keyed stream 0.  Returns 0 or an error recorded in err.
 */
int	mig_stream_join(struct mig_chan *ch, const struct mig_chan *ctl,
	    const uint8_t key[MIG_KEY_LEN], uint32_t index, uint32_t nstreams,
	    struct mig_error *err);

/* Destination: the streams of one session and their receivers. */
struct mig_rxstreams;

int	mig_rxstreams_create(struct mig_rxstreams **, uint32_t nstreams,
	    const struct mig_chan *ctl, const uint8_t key[MIG_KEY_LEN]);
void	mig_rxstreams_free(struct mig_rxstreams *);
uint32_t mig_rxstreams_count(const struct mig_rxstreams *);
bool	mig_rxstreams_complete(const struct mig_rxstreams *);
/*
 * Check the JOIN that arrived on jch (its payload in jch->rxbuf, its
 * length jch->cur.len) against the session; on success key it, answer
 * JOINED and adopt the channel (jch is then empty).  EACCES or EPROTO
 * with msg when the join is refused.
 */
int	mig_rxstreams_join(struct mig_rxstreams *, struct mig_chan *jch,
	    char *msg, size_t msglen);
/*
 * Whether the JOIN on jch is proved with key for the session it names,
 * before that session is known: a stranger's join is refused at once
 * and cannot take the place of a real one waiting for its session.
 */
int	mig_stream_join_proven(const struct mig_chan *jch,
	    const uint8_t key[MIG_KEY_LEN], char *msg, size_t msglen);
/*
 * Start one receiver thread per joined stream, writing pages into the
 * guest memory local describes, owing pages into owed if not NULL.
 * ctlfd is stream 0's socket, shut for reading when a stream fails so
 * that the main loop notices.
 */
int	mig_rxstreams_start(struct mig_rxstreams *,
	    const struct mig_vminfo *local, struct mig_owed *owed, int ctlfd,
	    enum mig_phase phase);
/*
 * Stream 0's ROUND_BEGIN of round index: the streams read their part of
 * it (until then they idle, reading nothing, whatever a HOLD lasts).
 */
void	mig_rxstreams_round_begin(struct mig_rxstreams *, uint32_t index);
/*
 * The round barrier, at stream 0's ROUND_END: wait for every stream's
 * PART_END of round index, add their counts to r and *pages, and let
 * the streams go on (or end, after the final round).  A stream's
 * failure is returned and recorded in err.
 */
int	mig_rxstreams_round_end(struct mig_rxstreams *, uint32_t index,
	    bool final, struct mig_round_stats *r, uint64_t *pages,
	    struct mig_error *err);
/*
 * Before the main loop reads stream 0 inside a round: wait until it is
 * readable, for as long as some other stream delivers a frame every
 * timeout_ms.  ETIMEDOUT when all fall silent.
 */
int	mig_rxstreams_wait(struct mig_rxstreams *, int ctlfd,
	    uint32_t timeout_ms);
/*
 * Stop every receiver and wait for them.  If a stream failed first,
 * its error replaces err's (the main loop's is a consequence); err may
 * be NULL.
 */
void	mig_rxstreams_stop(struct mig_rxstreams *, struct mig_error *err);
/* Bytes moved on streams 1..n-1, both ways. */
uint64_t mig_rxstreams_bytes(const struct mig_rxstreams *);

#endif /* !_MIGRATION_STREAMS_H_ */
