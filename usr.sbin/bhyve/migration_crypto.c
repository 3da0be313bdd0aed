/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <errno.h>
#include <limits.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "migration_crypto.h"
#include "migration_wire.h"

#define	MIG_IV_LEN	12

int
mig_random(void *buf, size_t len)
{
	if (len > INT_MAX || RAND_bytes(buf, (int)len) != 1)
		return (EIO);
	return (0);
}

int
mig_sha256(const void *a, size_t alen, const void *b, size_t blen,
    uint8_t out[MIG_HASH_LEN])
{
	EVP_MD_CTX *md;
	int ok;

	if ((md = EVP_MD_CTX_new()) == NULL)
		return (ENOMEM);
	ok = EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
	    EVP_DigestUpdate(md, a, alen) == 1 &&
	    EVP_DigestUpdate(md, b, blen) == 1 &&
	    EVP_DigestFinal_ex(md, out, NULL) == 1;
	EVP_MD_CTX_free(md);
	return (ok ? 0 : EIO);
}

/* One PRF output: HMAC-SHA256(key, label || transcript). */
static int
prf(const uint8_t key[MIG_KEY_LEN], const char *label,
    const uint8_t transcript[MIG_HASH_LEN], uint8_t out[MIG_HASH_LEN])
{
	uint8_t in[64 + MIG_HASH_LEN];
	size_t llen;
	unsigned int olen;

	llen = strlen(label);
	if (llen > 64)
		return (EINVAL);
	memcpy(in, label, llen);
	memcpy(in + llen, transcript, MIG_HASH_LEN);
	olen = MIG_HASH_LEN;
	if (HMAC(EVP_sha256(), key, MIG_KEY_LEN, in, llen + MIG_HASH_LEN,
	    out, &olen) == NULL || olen != MIG_HASH_LEN)
		return (EIO);
	return (0);
}

int
mig_derive_keys(const uint8_t key[MIG_KEY_LEN],
    const uint8_t transcript[MIG_HASH_LEN], struct mig_session_keys *k)
{
	int error;

	if ((error = prf(key, "bhyve-mig v1 source to destination",
	    transcript, k->src_to_dst)) != 0 ||
	    (error = prf(key, "bhyve-mig v1 destination to source",
	    transcript, k->dst_to_src)) != 0 ||
	    (error = prf(key, "bhyve-mig v1 source proof", transcript,
	    k->src_auth)) != 0 ||
	    (error = prf(key, "bhyve-mig v1 destination proof", transcript,
	    k->dst_auth)) != 0)
		mig_wipe(k, sizeof(*k));
	return (error);
}

bool
mig_mac_equal(const void *a, const void *b, size_t len)
{
	return (CRYPTO_memcmp(a, b, len) == 0);
}

void
mig_wipe(void *buf, size_t len)
{
	OPENSSL_cleanse(buf, len);
}

const char *
mig_suite_name(enum mig_suite suite)
{
	switch (suite) {
	case MIG_SUITE_GCM_TAG:
		return ("AES-256-GCM tags");
	case MIG_SUITE_POLY1305_TAG:
		return ("ChaCha20-Poly1305 tags");
	case MIG_SUITE_GCM_ENCRYPT:
		return ("AES-256-GCM encryption");
	}
	return ("an unknown protection");
}

int
mig_aead_init(struct mig_aead *a, const uint8_t key[MIG_KEY_LEN],
    uint32_t direction, enum mig_suite suite, bool seal)
{
	const EVP_CIPHER *cipher;

	memset(a, 0, sizeof(*a));
	cipher = suite == MIG_SUITE_POLY1305_TAG ? EVP_chacha20_poly1305() :
	    EVP_aes_256_gcm();
	if ((a->ctx = EVP_CIPHER_CTX_new()) == NULL)
		return (ENOMEM);
	if (EVP_CipherInit_ex(a->ctx, cipher, NULL, key, NULL,
	    seal ? 1 : 0) != 1) {
		mig_aead_free(a);
		return (EIO);
	}
	a->direction = direction;
	a->encrypt = suite == MIG_SUITE_GCM_ENCRYPT;
	a->seal = seal;
	return (0);
}

void
mig_aead_free(struct mig_aead *a)
{
	if (a->ctx != NULL)
		EVP_CIPHER_CTX_free(a->ctx);
	a->ctx = NULL;
}

int
mig_aead_begin(struct mig_aead *a, const uint8_t *hdr, size_t hdrlen)
{
	uint8_t iv[MIG_IV_LEN];
	int outl;

	mig_le32enc(iv, a->direction);
	mig_le64enc(iv + 4, a->seq);
	if (EVP_CipherInit_ex(a->ctx, NULL, NULL, NULL, iv, -1) != 1)
		return (EIO);
	if (EVP_CipherUpdate(a->ctx, NULL, &outl, hdr, (int)hdrlen) != 1)
		return (EIO);
	return (0);
}

int
mig_aead_update(struct mig_aead *a, const uint8_t *in, uint8_t *out,
    size_t len)
{
	int outl;

	if (len > INT_MAX)
		return (EINVAL);
	if (EVP_CipherUpdate(a->ctx, a->encrypt ? out : NULL, &outl, in,
	    (int)len) != 1)
		return (EIO);
	return (0);
}

int
mig_aead_seal(struct mig_aead *a, uint8_t tag[MIG_TAG_LEN])
{
	uint8_t scratch[16];
	int outl;

	if (EVP_CipherFinal_ex(a->ctx, scratch, &outl) != 1 ||
	    EVP_CIPHER_CTX_ctrl(a->ctx, EVP_CTRL_AEAD_GET_TAG, MIG_TAG_LEN,
	    tag) != 1)
		return (EIO);
	a->seq++;
	return (0);
}

int
mig_aead_open(struct mig_aead *a, const uint8_t tag[MIG_TAG_LEN])
{
	uint8_t scratch[16];
	int outl;

	if (EVP_CIPHER_CTX_ctrl(a->ctx, EVP_CTRL_AEAD_SET_TAG, MIG_TAG_LEN,
	    (void *)(uintptr_t)tag) != 1)
		return (EIO);
	if (EVP_CipherFinal_ex(a->ctx, scratch, &outl) != 1)
		return (EBADMSG);
	a->seq++;
	return (0);
}
