/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <stdint.h>

#include "migration_wire.h"

#include "tb_dirty.h"
#include "tb_guest.h"
#include "tb_pattern.h"

#define	GOLDEN		0x9e3779b97f4a7c15ull
#define	BLOB_SALT	0x626c6f6200000000ull	/* keeps blob apart from pages */

/* SplitMix64's finalizer: a cheap, well-mixed 64-bit hash. */
static uint64_t
mix64(uint64_t z)
{

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return (z ^ (z >> 31));
}

/*
 * One multiply per word keeps filling near memory speed; the per-page
 * start h makes the words of different pages differ.
 */
void
tb_pattern_page(uint64_t seed, uint64_t gpa, uint8_t *page)
{
	uint64_t h, j;

	h = mix64(mix64(seed) ^ gpa);
	for (j = TB_PATTERN_OFF / 8; j < TB_PAGE_SIZE / 8; j++)
		mig_le64enc(page + j * 8, (h + j) * GOLDEN);
}

void
tb_pattern_blob(uint64_t seed, uint8_t *blob)
{
	uint64_t h, j;

	h = mix64(mix64(seed) ^ BLOB_SALT);
	for (j = 0; j < TB_BLOB_SIZE / 8; j++)
		mig_le64enc(blob + j * 8, mix64(h + j));
}
