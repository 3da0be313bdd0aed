/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/* Explicit little-endian encoding, so no struct layout leaks out. */

#ifndef _TB_LE_H_
#define	_TB_LE_H_

#include <endian.h>
#include <stdint.h>
#include <string.h>

static inline void
tb_le64enc(void *p, uint64_t v)
{

	v = htole64(v);
	memcpy(p, &v, sizeof(v));
}

static inline uint64_t
tb_le64dec(const void *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return (le64toh(v));
}

static inline void
tb_le32enc(void *p, uint32_t v)
{

	v = htole32(v);
	memcpy(p, &v, sizeof(v));
}

static inline uint32_t
tb_le32dec(const void *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return (le32toh(v));
}

#endif /* _TB_LE_H_ */
