/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The handshake: both ends send HELLO (magic, version range,
 * capabilities, a fresh nonce) at once, agree on the highest common
 * version, derive session keys from the shared key and a hash of both
 * HELLOs, and prove the key to each other with AUTH.  Nothing about the
 * guest is read or written before both proofs check out; the HELLOs are
 * covered by the proofs, so a downgrade in transit is detected.
 */

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "migration_crypto.h"
#include "migration_internal.h"
#include "migration_net.h"
#include "migration_wire.h"

struct hs_state {
	struct mig_chan	*ch;
	struct mig_error *err;
	uint8_t		mine[MIG_HELLO_LEN];
	uint8_t		theirs[MIG_HELLO_LEN];
	struct mig_hello peer;
};

/* Refuse: tell the peer (in clear, there is no common key) and record. */
static int
hs_refuse(struct hs_state *hs, enum mig_phase phase, int code,
    const char *why)
{
	mig_fail(hs->err, mig_role_side(hs->ch->role), phase, code,
	    "the %s refused the peer: %s", mig_role_name(hs->ch->role), why);
	mig_tell_peer(hs->ch, hs->err);
	return (code);
}

static int
hs_hello(struct hs_state *hs, const struct mig_params *p,
    bool require_encrypt)
{
	struct mig_hello me;
	void *payload;
	uint32_t len;
	int error;

	memset(&me, 0, sizeof(me));
	me.role = (uint16_t)hs->ch->role;
	me.version_min = MIG_VERSION_MIN;
	me.version_max = MIG_VERSION_MAX;
	me.caps = MIG_CAPS_SUPPORTED;
	if (p->encrypt || require_encrypt)
		me.caps |= MIG_CAP_WANT_ENCRYPT;
	if (p->check_only && hs->ch->role == MIG_ROLE_SOURCE)
		me.caps |= MIG_CAP_CHECK_ONLY;
	/* A destination takes streams; a source says it brings some. */
	if (hs->ch->role == MIG_ROLE_DEST ||
	    (p->nstreams > 1 && !p->check_only))
		me.caps |= MIG_CAP_STREAMS;
	if ((error = mig_random(me.nonce, sizeof(me.nonce))) != 0) {
		mig_fail(hs->err, mig_role_side(hs->ch->role),
		    MIG_PHASE_HANDSHAKE, error, "no random numbers for the "
		    "handshake nonce");
		return (error);
	}
	if (mig_hello_encode(hs->mine, sizeof(hs->mine), &me) !=
	    sizeof(hs->mine))
		return (EINVAL);
	if ((error = mig_chan_send(hs->ch, MIG_MSG_HELLO, hs->mine,
	    sizeof(hs->mine))) != 0) {
		mig_fail_chan(hs->err, hs->ch, MIG_PHASE_HANDSHAKE, error,
		    "sending HELLO");
		return (error);
	}
	memcpy(hs->ch->hello, hs->mine, sizeof(hs->ch->hello));
	/* EINPROGRESS: a JOIN for a session (migration_streams.h). */
	if ((error = mig_expect(hs->ch, hs->err, MIG_PHASE_HANDSHAKE,
	    MIG_MSG_HELLO, "waiting for HELLO", &payload, &len)) != 0)
		return (error);
	if ((error = mig_hello_decode(payload, len, &hs->peer, hs->ch->why,
	    sizeof(hs->ch->why))) != 0) {
		mig_fail_chan(hs->err, hs->ch, MIG_PHASE_HANDSHAKE, error,
		    "reading HELLO");
		return (error);
	}
	memcpy(hs->theirs, payload, sizeof(hs->theirs));
	if (hs->peer.role == me.role)
		return (hs_refuse(hs, MIG_PHASE_HANDSHAKE, EPROTO,
		    hs->ch->role == MIG_ROLE_SOURCE ?
		    "both ends are sources" : "both ends are destinations"));
	return (0);
}

static int
hs_negotiate(struct hs_state *hs, uint32_t nstreams, uint32_t *version,
    bool *encrypt)
{
	char why[MIG_ERRMSG_MAX];
	uint32_t lo, hi, common;

	lo = hs->peer.version_min > MIG_VERSION_MIN ? hs->peer.version_min :
	    MIG_VERSION_MIN;
	hi = hs->peer.version_max < MIG_VERSION_MAX ? hs->peer.version_max :
	    MIG_VERSION_MAX;
	if (lo > hi) {
		snprintf(why, sizeof(why), "no common protocol version: "
		    "this side speaks %u..%u, the peer %u..%u",
		    MIG_VERSION_MIN, MIG_VERSION_MAX, hs->peer.version_min,
		    hs->peer.version_max);
		return (hs_refuse(hs, MIG_PHASE_HANDSHAKE, EPROTONOSUPPORT,
		    why));
	}
	common = hs->peer.caps & MIG_CAPS_SUPPORTED;
	if ((common & MIG_CAP_AEAD) == 0)
		return (hs_refuse(hs, MIG_PHASE_HANDSHAKE, EPROTONOSUPPORT,
		    "the peer cannot authenticate the stream (tagged frames)"));
	if ((common & MIG_CAP_ZERO_PAGES) == 0)
		return (hs_refuse(hs, MIG_PHASE_HANDSHAKE, EPROTONOSUPPORT,
		    "the peer does not support zero-page markers"));
	*version = hi;
	*encrypt = (hs->peer.caps & MIG_CAP_WANT_ENCRYPT) != 0;
	hs->ch->zero_ranges = (common & MIG_CAP_ZERO_RANGES) != 0;
	hs->ch->hold = (common & MIG_CAP_HOLD) != 0;
	hs->ch->poly1305 = (common & MIG_CAP_POLY1305) != 0;
	hs->ch->owed = (common & MIG_CAP_OWED) != 0;
	hs->ch->check_only = hs->ch->role == MIG_ROLE_DEST &&
	    (hs->peer.caps & MIG_CAP_CHECK_ONLY) != 0;
	hs->ch->streams = hs->ch->role == MIG_ROLE_DEST &&
	    (hs->peer.caps & MIG_CAP_STREAMS) != 0;
	if (hs->ch->role == MIG_ROLE_SOURCE && nstreams > 1 &&
	    (hs->peer.caps & MIG_CAP_STREAMS) == 0)
		return (hs_refuse(hs, MIG_PHASE_HANDSHAKE, EPROTONOSUPPORT,
		    "the destination takes one stream only; migrate without "
		    "streams"));
	return (0);
}

int
mig_handshake(struct mig_chan *ch, const struct mig_params *p,
    bool require_encrypt, uint32_t *version, uint64_t *rtt_us,
    struct mig_error *err)
{
	struct mig_session_keys keys;
	struct hs_state hs;
	uint8_t transcript[MIG_HASH_LEN];
	const uint8_t *mine_proof, *their_proof;
	uint64_t kernel_rtt;
	void *payload;
	uint32_t len;
	bool encrypt;
	int error;

	encrypt = false;
	memset(&hs, 0, sizeof(hs));
	hs.ch = ch;
	hs.err = err;
	*rtt_us = mig_now_us();
	if ((error = hs_hello(&hs, p, require_encrypt)) != 0 ||
	    (error = hs_negotiate(&hs, p->check_only ? 1 : p->nstreams,
	    version, &encrypt)) != 0)
		return (error);
	encrypt = encrypt || p->encrypt || require_encrypt;
	/* Encryption reads each page once: its tags always match. */
	ch->owed = ch->owed && !encrypt;

	/* The transcript orders the HELLOs source first on both ends. */
	if (ch->role == MIG_ROLE_SOURCE)
		error = mig_sha256(hs.mine, sizeof(hs.mine), hs.theirs,
		    sizeof(hs.theirs), transcript);
	else
		error = mig_sha256(hs.theirs, sizeof(hs.theirs), hs.mine,
		    sizeof(hs.mine), transcript);
	if (error == 0) {
		memcpy(ch->session, transcript, sizeof(ch->session));
		error = mig_derive_keys(p->key, transcript, &keys);
	}
	if (error != 0) {
		mig_fail(err, mig_role_side(ch->role), MIG_PHASE_AUTH, error,
		    "could not derive session keys");
		return (error);
	}
	mine_proof = ch->role == MIG_ROLE_SOURCE ? keys.src_auth :
	    keys.dst_auth;
	their_proof = ch->role == MIG_ROLE_SOURCE ? keys.dst_auth :
	    keys.src_auth;
	if ((error = mig_chan_send(ch, MIG_MSG_AUTH, mine_proof,
	    MIG_AUTH_LEN)) != 0) {
		mig_fail_chan(err, ch, MIG_PHASE_AUTH, error, "sending AUTH");
		goto out;
	}
	if ((error = mig_expect(ch, err, MIG_PHASE_AUTH, MIG_MSG_AUTH,
	    "waiting for AUTH", &payload, &len)) != 0)
		goto out;
	*rtt_us = mig_now_us() - *rtt_us;
	/*
	 * HELLO to AUTH includes however long the peer took to answer,
	 * and a slow AUTH would make the source subtract more than the
	 * real round trip from the downtime it reports.  The kernel's TCP
	 * measure cannot be slowed by the peer's process: take the lower.
	 */
	if (mig_socket_rtt(ch->fd, &kernel_rtt) == 0 && kernel_rtt < *rtt_us)
		*rtt_us = kernel_rtt;
	if (len != MIG_AUTH_LEN || !mig_mac_equal(payload, their_proof,
	    MIG_AUTH_LEN)) {
		error = hs_refuse(&hs, MIG_PHASE_AUTH, EACCES,
		    "authentication failed: the peer does not hold this "
		    "migration's key");
		goto out;
	}
	if ((error = mig_chan_key(ch, &keys, encrypt ? MIG_SUITE_GCM_ENCRYPT :
	    ch->poly1305 ? MIG_SUITE_POLY1305_TAG : MIG_SUITE_GCM_TAG)) != 0)
		mig_fail(err, mig_role_side(ch->role), MIG_PHASE_AUTH, error,
		    "could not set up stream protection");
out:
	mig_wipe(&keys, sizeof(keys));
	return (error);
}
