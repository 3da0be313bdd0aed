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
 * frame after the handshake carries a 16-byte tag over its header and
 * payload (enum mig_suite); with encryption the payload is encrypted too.
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

/*
 * How frames are protected, chosen in the handshake.  Without
 * encryption the payload goes as associated data of an AEAD with no
 * plaintext: ChaCha20-Poly1305's MAC runs at about twice the speed of
 * GHASH with OpenSSL 3.0, so it is used when both ends speak it
 * (MIG_CAP_POLY1305); AES-256-GCM otherwise, and always to encrypt.
 */
enum mig_suite {
	MIG_SUITE_GCM_TAG,		/* AES-256-GCM, payload as AAD */
	MIG_SUITE_POLY1305_TAG,		/* ChaCha20-Poly1305, payload as AAD */
	MIG_SUITE_GCM_ENCRYPT,		/* AES-256-GCM, payload encrypted */
};

struct mig_aead {
	struct evp_cipher_ctx_st *ctx;
	uint32_t	direction;
	uint64_t	seq;
	bool		encrypt;	/* payload encrypted, not only tagged */
	bool		seal;		/* sending side */
};

const char *mig_suite_name(enum mig_suite);

int	mig_random(void *, size_t);
int	mig_sha256(const void *, size_t, const void *, size_t,
	    uint8_t out[MIG_HASH_LEN]);
int	mig_derive_keys(const uint8_t key[MIG_KEY_LEN],
	    const uint8_t transcript[MIG_HASH_LEN], struct mig_session_keys *);
/* Constant-time comparison of two MACs. */
bool	mig_mac_equal(const void *, const void *, size_t);
void	mig_wipe(void *, size_t);

int	mig_aead_init(struct mig_aead *, const uint8_t key[MIG_KEY_LEN],
	    uint32_t direction, enum mig_suite, bool seal);
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
