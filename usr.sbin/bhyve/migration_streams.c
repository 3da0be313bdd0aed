/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Several streams in one session (migration_streams.h): the join on
 * both sides and the destination's receivers with their round barrier.
 */

#include <sys/types.h>
#include <sys/socket.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migration_crypto.h"
#include "migration_internal.h"
#include "migration_streams.h"
#include "migration_wire.h"

#define	STREAM_LABEL	"bhyve-mig v1 stream"

/*
 * A stream's transcript: SHA-256(session || label || u32 index ||
 * the destination's HELLO on this connection); its keys and proofs
 * derive from it as the session's do from the session transcript.
 */
static int
stream_keys(const uint8_t key[MIG_KEY_LEN],
    const uint8_t session[MIG_HASH_LEN], uint32_t index,
    const uint8_t dhello[MIG_HELLO_LEN], struct mig_session_keys *k)
{
	uint8_t in[sizeof(STREAM_LABEL) - 1 + 4 + MIG_HELLO_LEN];
	uint8_t t[MIG_HASH_LEN];
	size_t n;
	int error;

	n = sizeof(STREAM_LABEL) - 1;
	memcpy(in, STREAM_LABEL, n);
	mig_le32enc(in + n, index);
	memcpy(in + n + 4, dhello, MIG_HELLO_LEN);
	if ((error = mig_sha256(session, MIG_HASH_LEN, in, sizeof(in), t)) ==
	    0)
		error = mig_derive_keys(key, t, k);
	mig_wipe(t, sizeof(t));
	return (error);
}

int
mig_stream_join(struct mig_chan *ch, const struct mig_chan *ctl,
    const uint8_t key[MIG_KEY_LEN], uint32_t index, uint32_t nstreams,
    struct mig_error *err)
{
	struct mig_session_keys k;
	struct mig_hello h;
	struct mig_join j;
	uint8_t buf[MIG_JOIN_LEN];
	char doing[64];
	void *payload;
	uint32_t len;
	int error;

	snprintf(doing, sizeof(doing), "joining stream %u to the session",
	    index);
	if ((error = mig_expect(ch, err, MIG_PHASE_HANDSHAKE, MIG_MSG_HELLO,
	    doing, &payload, &len)) != 0)
		return (error);
	if ((error = mig_hello_decode(payload, len, &h, ch->why,
	    sizeof(ch->why))) != 0 || h.role != MIG_ROLE_DEST) {
		if (error == 0)
			snprintf(ch->why, sizeof(ch->why), "the peer of stream "
			    "%u is no destination", index);
		mig_fail_chan(err, ch, MIG_PHASE_HANDSHAKE, EPROTO, doing);
		return (EPROTO);
	}
	if ((error = stream_keys(key, ctl->session, index, payload, &k)) !=
	    0) {
		mig_fail(err, MIG_SIDE_SOURCE, MIG_PHASE_AUTH, error,
		    "could not derive the keys of stream %u", index);
		return (error);
	}
	j.index = index;
	j.nstreams = nstreams;
	memcpy(j.session, ctl->session, sizeof(j.session));
	memcpy(j.proof, k.src_auth, sizeof(j.proof));
	if ((error = mig_chan_send(ch, MIG_MSG_JOIN, buf,
	    mig_join_encode(buf, sizeof(buf), &j))) != 0)
		mig_fail_chan(err, ch, MIG_PHASE_AUTH, error, doing);
	else if ((error = mig_chan_key(ch, &k, ctl->suite)) != 0)
		mig_fail(err, MIG_SIDE_SOURCE, MIG_PHASE_AUTH, error,
		    "could not set up the protection of stream %u", index);
	mig_wipe(&k, sizeof(k));
	return (error);
}

/* One further stream on the destination. */
struct rxstream {
	struct mig_rxstreams *rs;
	struct mig_chan	ch;
	uint32_t	index;
	bool		joined;
	bool		started;
	pthread_t	tid;
	uint32_t	round;		/* the round being received */
	uint32_t	done;		/* the last round it completed */
	struct mig_round_stats part;	/* this round's counts */
	uint64_t	pages;
	struct mig_error err;
	char		doing[48];
};

struct mig_rxstreams {
	uint32_t	n;
	uint32_t	njoined;
	uint8_t		key[MIG_KEY_LEN];
	uint8_t		session[MIG_HASH_LEN];
	enum mig_suite	suite;
	const struct mig_vminfo *local;
	struct mig_owed	*owed;		/* with MIG_CAP_OWED, or NULL */
	int		ctlfd;
	enum mig_phase	phase;
	pthread_mutex_t	mtx;
	pthread_cond_t	cv;
	uint32_t	begun;		/* the last round stream 0 began */
	uint32_t	released;	/* rounds the main loop counted */
	bool		final;		/* the last of them was the final one */
	bool		stopping;
	bool		failed;		/* err holds the first failure */
	uint64_t	frames;		/* __atomic: PAGES received */
	struct mig_error err;
	struct rxstream	s[MIG_STREAMS_MAX];
};

int
mig_rxstreams_create(struct mig_rxstreams **rsp, uint32_t nstreams,
    const struct mig_chan *ctl, const uint8_t key[MIG_KEY_LEN])
{
	struct mig_rxstreams *rs;
	uint32_t i;

	if (nstreams < 2 || nstreams > MIG_STREAMS_MAX)
		return (EINVAL);
	if ((rs = calloc(1, sizeof(*rs))) == NULL)
		return (ENOMEM);
	if (pthread_mutex_init(&rs->mtx, NULL) != 0) {
		free(rs);
		return (ENOMEM);
	}
	if (pthread_cond_init(&rs->cv, NULL) != 0) {
		pthread_mutex_destroy(&rs->mtx);
		free(rs);
		return (ENOMEM);
	}
	rs->n = nstreams;
	memcpy(rs->key, key, sizeof(rs->key));
	memcpy(rs->session, ctl->session, sizeof(rs->session));
	rs->suite = ctl->suite;
	rs->ctlfd = -1;
	for (i = 0; i < MIG_STREAMS_MAX; i++) {
		rs->s[i].rs = rs;
		rs->s[i].index = i;
		rs->s[i].ch.fd = -1;
	}
	*rsp = rs;
	return (0);
}

void
mig_rxstreams_free(struct mig_rxstreams *rs)
{
	uint32_t i;

	if (rs == NULL)
		return;
	mig_rxstreams_stop(rs, NULL);
	for (i = 1; i < rs->n; i++) {
		if (!rs->s[i].joined)
			continue;
		mig_chan_destroy(&rs->s[i].ch);
		close(rs->s[i].ch.fd);
	}
	pthread_cond_destroy(&rs->cv);
	pthread_mutex_destroy(&rs->mtx);
	mig_wipe(rs->key, sizeof(rs->key));
	free(rs);
}

uint32_t
mig_rxstreams_count(const struct mig_rxstreams *rs)
{

	return (rs != NULL ? rs->n : 1);
}

bool
mig_rxstreams_complete(const struct mig_rxstreams *rs)
{

	return (rs == NULL || rs->njoined + 1 == rs->n);
}

/*
 * Decode the JOIN on jch and check its proof for the session it names:
 * only a peer holding the key makes one, and only for this connection
 * (its HELLO's nonce is in the stream's transcript).  k gets the
 * stream's keys.
 */
static int
join_verify(const uint8_t key[MIG_KEY_LEN], const struct mig_chan *jch,
    struct mig_join *j, struct mig_session_keys *k, char *msg, size_t msglen)
{
	int error;

	if ((error = mig_join_decode(jch->rxbuf, jch->cur.len, j, msg,
	    msglen)) != 0)
		return (error);
	if ((error = stream_keys(key, j->session, j->index, jch->hello,
	    k)) != 0) {
		snprintf(msg, msglen, "could not derive its keys");
		return (error);
	}
	if (!mig_mac_equal(j->proof, k->src_auth, sizeof(j->proof))) {
		mig_wipe(k, sizeof(*k));
		snprintf(msg, msglen, "its proof does not hold for this "
		    "connection (replayed, or made without the key)");
		return (EACCES);
	}
	return (0);
}

int
mig_stream_join_proven(const struct mig_chan *jch,
    const uint8_t key[MIG_KEY_LEN], char *msg, size_t msglen)
{
	struct mig_session_keys k;
	struct mig_join j;
	int error;

	error = join_verify(key, jch, &j, &k, msg, msglen);
	mig_wipe(&k, sizeof(k));
	return (error);
}

int
mig_rxstreams_join(struct mig_rxstreams *rs, struct mig_chan *jch,
    char *msg, size_t msglen)
{
	struct mig_session_keys k;
	struct mig_join j;
	struct rxstream *x;
	int error;

	if ((error = join_verify(rs->key, jch, &j, &k, msg, msglen)) != 0)
		return (error);
	if (memcmp(j.session, rs->session, sizeof(j.session)) != 0) {
		mig_wipe(&k, sizeof(k));
		snprintf(msg, msglen, "it names another migration session");
		return (EACCES);
	}
	if (j.nstreams != rs->n) {
		mig_wipe(&k, sizeof(k));
		snprintf(msg, msglen, "it counts %u streams, the session %u",
		    j.nstreams, rs->n);
		return (EPROTO);
	}
	x = &rs->s[j.index];
	if (x->joined) {
		mig_wipe(&k, sizeof(k));
		snprintf(msg, msglen, "stream %u has joined already", j.index);
		return (EPROTO);
	}
	error = mig_chan_key(jch, &k, rs->suite);
	mig_wipe(&k, sizeof(k));
	if (error != 0 || (error = mig_chan_send(jch, MIG_MSG_JOINED, NULL,
	    0)) != 0) {
		snprintf(msg, msglen, "could not answer it: %s",
		    strerror(error));
		return (error);
	}
	x->ch = *jch;
	memset(jch, 0, sizeof(*jch));
	jch->fd = -1;
	x->joined = true;
	snprintf(x->doing, sizeof(x->doing), "receiving memory on stream %u",
	    x->index);
	rs->njoined++;
	return (0);
}

static int __attribute__((__format__(__printf__, 2, 3)))
stream_proto_fail(struct rxstream *x, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(x->ch.why, sizeof(x->ch.why), fmt, ap);
	va_end(ap);
	mig_fail_chan(&x->err, &x->ch, x->rs->phase, EPROTO, x->doing);
	return (EPROTO);
}

/* PART_END: wait at the barrier.  1 after the final round, else 0. */
static int
part_end(struct rxstream *x, uint32_t len)
{
	struct mig_round_end re;
	struct mig_rxstreams *rs;
	bool final, stop;
	int error;

	rs = x->rs;
	if ((error = mig_round_end_decode(x->ch.rxbuf, len, &re, x->ch.why,
	    sizeof(x->ch.why))) != 0) {
		mig_fail_chan(&x->err, &x->ch, rs->phase, error, x->doing);
		return (error);
	}
	if (re.index != x->round)
		return (stream_proto_fail(x, "stream %u ended round %u while "
		    "in round %u", x->index, re.index, x->round));
	if (re.pages != x->pages)
		return (stream_proto_fail(x, "stream %u counts %ju pages in "
		    "round %u but sent %ju", x->index, (uintmax_t)re.pages,
		    re.index, (uintmax_t)x->pages));
	pthread_mutex_lock(&rs->mtx);
	x->done = x->round;
	pthread_cond_broadcast(&rs->cv);
	while (rs->released < x->round && !rs->stopping && !rs->failed)
		pthread_cond_wait(&rs->cv, &rs->mtx);
	stop = rs->stopping || rs->failed;
	final = rs->final;
	pthread_mutex_unlock(&rs->mtx);
	if (stop)
		return (ECANCELED);
	if (final)
		return (1);
	x->round++;
	memset(&x->part, 0, sizeof(x->part));
	x->pages = 0;
	return (0);
}

/*
 * Idle, reading nothing, until stream 0 began the round x is in: the
 * source may hold the guest paused for its switchover hook between
 * rounds (HOLD), longer than the I/O timeout of a read.  0, or
 * ECANCELED when the receive stops.
 */
static int
round_wait(struct rxstream *x)
{
	struct mig_rxstreams *rs;
	bool stop;

	rs = x->rs;
	pthread_mutex_lock(&rs->mtx);
	while (rs->begun < x->round && !rs->stopping && !rs->failed)
		pthread_cond_wait(&rs->cv, &rs->mtx);
	stop = rs->stopping || rs->failed;
	pthread_mutex_unlock(&rs->mtx);
	return (stop ? ECANCELED : 0);
}

static int
rx_loop(struct rxstream *x)
{
	struct mig_hdr hdr;
	int error;

	if ((error = round_wait(x)) != 0)
		return (error);
	for (;;) {
		if ((error = mig_chan_recv_hdr(&x->ch, &hdr)) != 0) {
			mig_fail_chan(&x->err, &x->ch, x->rs->phase, error,
			    x->doing);
			return (error);
		}
		switch (hdr.type) {
		case MIG_MSG_PAGES:
			error = mig_recv_pages(&x->ch, x->rs->local,
			    x->rs->owed, &x->part, &x->pages, hdr.len, &x->err,
			    x->rs->phase, x->doing);
			(void)__atomic_add_fetch(&x->rs->frames, 1,
			    __ATOMIC_RELAXED);
			break;
		case MIG_MSG_PAGES_INDEX:
		case MIG_MSG_PART_END:
		case MIG_MSG_ERROR:
			if ((error = mig_chan_recv_body(&x->ch, x->ch.rxbuf,
			    hdr.len)) != 0 ||
			    (error = mig_chan_recv_end(&x->ch)) != 0) {
				mig_fail_chan(&x->err, &x->ch, x->rs->phase,
				    error, x->doing);
				break;
			}
			if (hdr.type == MIG_MSG_PAGES_INDEX) {
				error = mig_recv_pages_split(&x->ch,
				    x->rs->local, x->rs->owed, &x->part,
				    &x->pages, hdr.len, &x->err, x->rs->phase,
				    x->doing);
				(void)__atomic_add_fetch(&x->rs->frames, 1,
				    __ATOMIC_RELAXED);
				break;
			}
			if (hdr.type == MIG_MSG_ERROR) {
				mig_fail_peer(&x->err, &x->ch, x->ch.rxbuf,
				    hdr.len);
				error = x->err.code;
				break;
			}
			if ((error = part_end(x, hdr.len)) == 1)
				return (0);
			if (error == 0)
				error = round_wait(x);
			break;
		default:
			error = stream_proto_fail(x, "unexpected %s message on "
			    "stream %u", mig_msg_name(hdr.type), x->index);
			break;
		}
		if (error != 0)
			return (error);
	}
}

static void *
rx_thread(void *arg)
{
	struct mig_rxstreams *rs;
	struct rxstream *x;
	int error;

	x = arg;
	rs = x->rs;
	error = rx_loop(x);
	pthread_mutex_lock(&rs->mtx);
	if (error != 0 && !rs->failed && !rs->stopping) {
		rs->failed = true;
		rs->err = x->err;
		/* Wake the main loop: its next read on stream 0 ends. */
		(void)shutdown(rs->ctlfd, SHUT_RD);
	}
	pthread_cond_broadcast(&rs->cv);
	pthread_mutex_unlock(&rs->mtx);
	return (NULL);
}

int
mig_rxstreams_start(struct mig_rxstreams *rs, const struct mig_vminfo *local,
    struct mig_owed *owed, int ctlfd, enum mig_phase phase)
{
	struct rxstream *x;
	uint32_t i;
	int error;

	rs->local = local;
	rs->owed = owed;
	rs->ctlfd = ctlfd;
	rs->phase = phase;
	for (i = 1; i < rs->n; i++) {
		x = &rs->s[i];
		x->round = 1;
		if ((error = pthread_create(&x->tid, NULL, rx_thread, x)) != 0)
			return (error);
		x->started = true;
	}
	return (0);
}

void
mig_rxstreams_round_begin(struct mig_rxstreams *rs, uint32_t index)
{

	pthread_mutex_lock(&rs->mtx);
	rs->begun = index;
	pthread_cond_broadcast(&rs->cv);
	pthread_mutex_unlock(&rs->mtx);
}

int
mig_rxstreams_round_end(struct mig_rxstreams *rs, uint32_t index,
    bool final, struct mig_round_stats *r, uint64_t *pages,
    struct mig_error *err)
{
	struct rxstream *x;
	uint32_t i;
	bool all;

	pthread_mutex_lock(&rs->mtx);
	for (;;) {
		all = true;
		for (i = 1; i < rs->n; i++)
			if (rs->s[i].done < index)
				all = false;
		if (all || rs->failed)
			break;
		pthread_cond_wait(&rs->cv, &rs->mtx);
	}
	if (rs->failed) {
		*err = rs->err;
		pthread_mutex_unlock(&rs->mtx);
		return (err->code);
	}
	for (i = 1; i < rs->n; i++) {
		x = &rs->s[i];
		r->pages_sent += x->part.pages_sent;
		r->zero_pages += x->part.zero_pages;
		r->bytes += x->part.bytes;
		*pages += x->pages;
	}
	rs->released = index;
	rs->final = final;
	pthread_cond_broadcast(&rs->cv);
	pthread_mutex_unlock(&rs->mtx);
	return (0);
}

int
mig_rxstreams_wait(struct mig_rxstreams *rs, int ctlfd, uint32_t timeout_ms)
{
	struct pollfd pfd;
	uint64_t seen;
	int n;

	seen = __atomic_load_n(&rs->frames, __ATOMIC_RELAXED);
	for (;;) {
		pfd.fd = ctlfd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		n = poll(&pfd, 1, (int)timeout_ms);
		if (n > 0 || (n < 0 && errno != EINTR))
			return (0);	/* the read says what it found */
		if (n < 0)
			continue;
		if (__atomic_load_n(&rs->frames, __ATOMIC_RELAXED) == seen)
			return (ETIMEDOUT);
		seen = __atomic_load_n(&rs->frames, __ATOMIC_RELAXED);
	}
}

void
mig_rxstreams_stop(struct mig_rxstreams *rs, struct mig_error *err)
{
	uint32_t i;

	if (rs == NULL)
		return;
	pthread_mutex_lock(&rs->mtx);
	rs->stopping = true;
	pthread_cond_broadcast(&rs->cv);
	for (i = 1; i < rs->n; i++)
		if (rs->s[i].started)
			(void)shutdown(rs->s[i].ch.fd, SHUT_RDWR);
	pthread_mutex_unlock(&rs->mtx);
	for (i = 1; i < rs->n; i++) {
		if (!rs->s[i].started)
			continue;
		(void)pthread_join(rs->s[i].tid, NULL);
		rs->s[i].started = false;
	}
	if (rs->failed && err != NULL)
		*err = rs->err;
}

uint64_t
mig_rxstreams_bytes(const struct mig_rxstreams *rs)
{
	uint64_t n;
	uint32_t i;

	n = 0;
	for (i = 1; rs != NULL && i < rs->n; i++)
		n += rs->s[i].ch.bytes_tx + rs->s[i].ch.bytes_rx;
	return (n);
}
