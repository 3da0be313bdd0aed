/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * What the receive-loop fuzz targets share: a small in-memory guest for
 * the destination (two memory segments, a vCPU and a device section, a
 * disk),
 * the key both ends hold, and the record format in which a fuzz input
 * spells the source's frames.
 *
 * A record is
 *
 *	u8 type | u8 npad | u16 len (little-endian) | bytes[len]
 *
 * and stands for one frame of type (type & 0x7f) whose payload is the
 * bytes followed by npad pages of filler, sealed with the session keys
 * like any frame the real source sends.  With bit 0x80 set the bytes
 * and filler go out raw instead: no header, no tag.  A record cut short
 * by the end of the input keeps what is there.
 */

#ifndef _FUZZ_GUEST_H_
#define	_FUZZ_GUEST_H_

#include <stddef.h>
#include <stdint.h>

#include "migration.h"
#include "migration_backend.h"

#define	FUZZ_REC_HDR_LEN	4
#define	FUZZ_REC_RAW		0x80
#define	FUZZ_FILL		0xa5	/* every filler byte */
#define	FUZZ_SEG0_PAGES		32
#define	FUZZ_SEG1_PAGES		8
#define	FUZZ_VCPU_STATE_LEN	64
#define	FUZZ_DEV_STATE_LEN	16
/* One disk, its last block short; moved only when VMINFO says so. */
#define	FUZZ_DISK_BLOCK		512
#define	FUZZ_DISK_BLOCKS	17
#define	FUZZ_DISK_SIZE		(16 * FUZZ_DISK_BLOCK + 100)

struct fuzz_rec {
	uint8_t		type;
	uint8_t		npad;
	const uint8_t	*bytes;
	size_t		len;
};

extern const uint8_t fuzz_key[MIG_KEY_LEN];

/* The guest's description, as the source and the destination give it. */
void	fuzz_guest_vminfo(struct mig_vminfo *);
/* The destination's backend over that guest; its memory is static. */
struct mig_backend *fuzz_guest_backend(void);
/* The parameters both ends run with: the key, a short I/O timeout. */
void	fuzz_guest_params(struct mig_params *);

/* Take the next record off *in; 0 at the end of the input. */
int	fuzz_rec_next(const uint8_t **in, size_t *left, struct fuzz_rec *);
/* Append a record to buf at *off (the seed generator's side). */
size_t	fuzz_rec_put(uint8_t *buf, size_t buflen, size_t off, uint8_t type,
	    uint8_t npad, const void *bytes, size_t len);

#endif /* !_FUZZ_GUEST_H_ */
