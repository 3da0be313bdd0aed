/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Keys and frame protection for the migration stream (OpenSSL libcrypto).
 *
 * Both ends hold the same per-migration key.  Session keys are derived
 * from it and a hash of both HELLO messages (fresh nonces on each side),
 * so a recorded stream cannot be replayed into another migration.  Every
 * frame after the handshake carries an AES-256-GCM tag over its header and
 * payload; the payload is also encrypted when encryption was negotiated.
 * The IV is a direction constant and the frame's sequence number, so
 * frames cannot be dropped, reordered or reflected unnoticed.
 */

#ifndef _MIGRATION_CRYPTO_H_
#define	_MIGRATION_CRYPTO_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "migration.h"

#define	MIG_HASH_LEN	32

struct evp_cipher_ctx_st;

struct mig_session_keys {
	uint8_t		src_to_dst[MIG_KEY_LEN];
	uint8_t		dst_to_src[MIG_KEY_LEN];
	uint8_t		src_auth[MIG_HASH_LEN];
	uint8_t		dst_auth[MIG_HASH_LEN];
};

struct mig_aead {
	struct evp_cipher_ctx_st *ctx;
	uint32_t	direction;
	uint64_t	seq;
	bool		encrypt;	/* payload encrypted, not only tagged */
	bool		seal;		/* sending side */
};

int	mig_random(void *, size_t);
int	mig_sha256(const void *, size_t, const void *, size_t,
	    uint8_t out[MIG_HASH_LEN]);
int	mig_derive_keys(const uint8_t key[MIG_KEY_LEN],
	    const uint8_t transcript[MIG_HASH_LEN], struct mig_session_keys *);
/* Constant-time comparison of two MACs. */
bool	mig_mac_equal(const void *, const void *, size_t);
void	mig_wipe(void *, size_t);

int	mig_aead_init(struct mig_aead *, const uint8_t key[MIG_KEY_LEN],
	    uint32_t direction, bool encrypt, bool seal);
void	mig_aead_free(struct mig_aead *);
/* Start a frame: its IV from the sequence number, its header as AAD. */
int	mig_aead_begin(struct mig_aead *, const uint8_t *hdr, size_t hdrlen);
/*
 * Process payload bytes: encrypt or decrypt from in to out (which may be
 * in), or, without encryption, authenticate in (out unused).
 */
int	mig_aead_update(struct mig_aead *, const uint8_t *in, uint8_t *out,
	    size_t len);
int	mig_aead_seal(struct mig_aead *, uint8_t tag[16]);
/* EBADMSG when the tag does not match. */
int	mig_aead_open(struct mig_aead *, const uint8_t tag[16]);

#endif /* _MIGRATION_CRYPTO_H_ */
