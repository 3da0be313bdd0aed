/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Migration wire format.  Every integer is little-endian and encoded field
 * by field; no structure is ever sent raw.  A frame is
 *
 *	u16 type | u16 flags | u32 length | payload[length] | tag[16]
 *
 * where the tag (an AEAD's, enum mig_suite) is present on every frame
 * after the handshake.  MIGRATION-PROTOCOL.md, in this directory, describes each
 * type, the handshake, the sequence and the control plane.
 */

#ifndef _MIGRATION_WIRE_H_
#define	_MIGRATION_WIRE_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "migration_backend.h"

#define	MIG_MAGIC		"BHYVEMIG"
#define	MIG_MAGIC_LEN		8
#define	MIG_VERSION_MIN		1
#define	MIG_VERSION_MAX		1

#define	MIG_HDR_LEN		8
#define	MIG_TAG_LEN		16
#define	MIG_NONCE_LEN		32
#define	MIG_AUTH_LEN		32
#define	MIG_PAGE_SIZE		4096u
#define	MIG_PAGES_PER_MSG	256u
#define	MIG_STATE_CHUNK		(1u << 20)
/* Largest payload a peer may announce: one full PAGES frame. */
#define	MIG_PAYLOAD_MAX		(8u + 8u * MIG_PAGES_PER_MSG + \
				    MIG_PAGE_SIZE * MIG_PAGES_PER_MSG)

/* Capability bits in HELLO. */
#define	MIG_CAP_AEAD		0x00000001u	/* tagged frames */
#define	MIG_CAP_ZERO_PAGES	0x00000002u	/* zero-page markers */
#define	MIG_CAP_ZERO_RANGES	0x00000004u	/* ZERO_RANGES frames */
#define	MIG_CAP_HOLD		0x00000010u	/* HOLD frames */
/* Destination: takes several streams; source: STREAMS follows AUTH. */
#define	MIG_CAP_STREAMS		0x00000020u
/* Frames without encryption are tagged with ChaCha20-Poly1305. */
#define	MIG_CAP_POLY1305	0x00000040u
/*
 * Live rounds may be sent straight from the running guest's memory, as
 * PAGES_INDEX and PAGES_DATA pairs: a PAGES_DATA whose tag then fails is
 * owed, not fatal (OWED).
 */
#define	MIG_CAP_OWED		0x00000080u
#define	MIG_CAP_WANT_ENCRYPT	0x80000000u	/* this side asks for it */
#define	MIG_CAP_CHECK_ONLY	0x40000000u	/* source: a dry run */
#define	MIG_CAPS_SUPPORTED	(MIG_CAP_AEAD | MIG_CAP_ZERO_PAGES | \
				    MIG_CAP_ZERO_RANGES | MIG_CAP_HOLD | \
				    MIG_CAP_POLY1305 | MIG_CAP_OWED)

/* In a PAGES index entry: the page is all zero and carries no data. */
#define	MIG_PAGE_ZERO		(1ull << 63)

enum mig_msg_type {
	MIG_MSG_HELLO = 1,	/* both: magic, versions, caps, nonce */
	MIG_MSG_AUTH,		/* both: proof of the key */
	MIG_MSG_ERROR,		/* either: why this side gives up */
	MIG_MSG_VMINFO,		/* source: the guest's shape */
	MIG_MSG_ACCEPT,		/* destination: compatible, go ahead */
	MIG_MSG_ROUND_BEGIN,	/* source: round index, final, pages */
	MIG_MSG_PAGES,		/* source: a batch of pages */
	MIG_MSG_ROUND_END,	/* source: round index, pages sent */
	MIG_MSG_STATE,		/* source: a chunk of one state section */
	MIG_MSG_READY,		/* both: all sent / all restored */
	MIG_MSG_GO,		/* source: run the guest now */
	MIG_MSG_RUNNING,	/* destination: the guest runs here */
	MIG_MSG_ZERO_RANGES,	/* source: runs of never-populated pages */
	MIG_MSG_DISK_BLOCKS = 14, /* source: a batch of disk blocks */
	MIG_MSG_DISK_ZERO = 15,	/* source: runs of zero disk blocks */
	MIG_MSG_HOLD = 16,	/* source: paused, waiting for its hook */
	MIG_MSG_STREAMS = 17,	/* source: how many streams the session has */
	MIG_MSG_JOIN = 18,	/* source: a further stream joins a session */
	MIG_MSG_JOINED = 19,	/* destination: the stream is part of it */
	MIG_MSG_PART_END = 20,	/* source: one stream's part of a round */
	MIG_MSG_OWED = 21,	/* destination: runs of pages to send again */
	MIG_MSG_OWED_END = 22,	/* destination: a live round's debt, all */
	MIG_MSG_PAGES_INDEX = 23, /* source: PAGES' header and index alone */
	MIG_MSG_PAGES_DATA = 24, /* source: the data pages of that index */
	MIG_MSG_TYPE_MAX
};

struct mig_hdr {
	uint16_t	type;
	uint16_t	flags;
	uint32_t	len;
};

struct mig_hello {
	uint16_t	role;
	uint16_t	version_min;
	uint16_t	version_max;
	uint32_t	caps;
	uint8_t		nonce[MIG_NONCE_LEN];
};
#define	MIG_HELLO_LEN	(MIG_MAGIC_LEN + 2 + 2 + 2 + 2 + 4 + MIG_NONCE_LEN)

struct mig_errmsg {
	uint16_t	phase;
	uint16_t	side;
	uint32_t	code;
	char		msg[MIG_ERRMSG_MAX];
};

struct mig_round_begin {
	uint32_t	index;
	uint8_t		final;
	uint64_t	pages;
};
#define	MIG_ROUND_BEGIN_LEN	13

struct mig_round_end {
	uint32_t	index;
	uint64_t	pages;
};
#define	MIG_ROUND_END_LEN	12

struct mig_state_hdr {
	uint32_t	section;
	uint64_t	total;
	uint64_t	offset;
};
#define	MIG_STATE_HDR_LEN	20

struct mig_ready {
	uint64_t	pages;		/* pages sent in all rounds */
	uint32_t	nsections;
};
#define	MIG_READY_LEN		12

/*
 * HOLD: u32 hold_ms.  Once, with MIG_CAP_HOLD, after the last live round
 * and before the final ROUND_BEGIN: the source paused the guest and may
 * wait this long for its switchover hook, so the destination allows the
 * next frame that much longer than its I/O timeout.
 */
struct mig_hold {
	uint32_t	hold_ms;
};
#define	MIG_HOLD_LEN		4

struct mig_pages_hdr {
	uint32_t	seg;
	uint32_t	count;
};
#define	MIG_PAGES_HDR_LEN	8

/*
 * ZERO_RANGES: u32 seg | u32 count | count x (u64 first | u64 npages).
 * Only in round 1, only with MIG_CAP_ZERO_RANGES: the destination's
 * memory is fresh, so the pages are zero there already.  Ranges are
 * non-empty, ascending and disjoint, inside the segment.
 */
/*
 * OWED, with MIG_CAP_OWED, destination to source after each live round's
 * ROUND_END: the same layout, the pages whose PAGES frames failed their
 * tag in this or an earlier round and have not since come in a frame
 * that passed.  The source sends them again next round.  OWED_END (the
 * layout of ROUND_END: round index, pages owed in all) closes the list.
 * None may be owed when the final round ends.
 */
#define	MIG_ZERO_RANGES_MAX	256u
#define	MIG_ZERO_RANGES_HDR_LEN	8
#define	MIG_ZERO_RANGE_LEN	16

struct mig_zero_range {
	uint64_t	first;
	uint64_t	npages;
};

struct mig_zero_ranges {
	uint32_t	seg;
	uint32_t	count;
	struct mig_zero_range r[MIG_ZERO_RANGES_MAX];
};

/*
 * DISK_BLOCKS: u32 disk | u32 count | count x u64 index entries (block
 * number, strictly increasing; bit 63: an all-zero block, no data) |
 * block_size bytes per data block, the disk's last block short.  Only
 * inside a round, only when VMINFO said MIG_DISKS_MOVE.  At most
 * mig_disk_blocks_per_msg() entries, so that a frame's data never
 * exceeds one full PAGES frame's.
 */
#define	MIG_DISK_BLOCKS_HDR_LEN	8
#define	MIG_DISK_DATA_MAX	(MIG_PAGES_PER_MSG * MIG_PAGE_SIZE)
#define	MIG_BLOCK_ZERO		(1ull << 63)

struct mig_disk_blocks {
	uint32_t	disk;
	uint32_t	count;
	uint64_t	idx[MIG_PAGES_PER_MSG];	/* with MIG_BLOCK_ZERO */
	/* Decoding only: the data blocks and how many there are. */
	const uint8_t	*data;
	uint32_t	ndata;
};

/*
 * DISK_ZERO: u32 disk | u32 count | count x (u64 first | u64 nblocks):
 * runs of blocks the source found unallocated, to be zero here too.
 * Ranges non-empty, ascending and disjoint, inside the disk.
 */
struct mig_disk_zero {
	uint32_t	disk;
	uint32_t	count;
	struct mig_zero_range r[MIG_ZERO_RANGES_MAX];
};

/*
 * Several streams (migration_streams.h).  STREAMS: u32 nstreams, on
 * stream 0 between AUTH and VMINFO.  JOIN, in clear as the first frame
 * of streams 1..n-1: u32 index | u32 nstreams | session[32] | proof[32].
 * PART_END has ROUND_END's payload.
 */
#define	MIG_STREAMS_LEN		4
#define	MIG_JOIN_LEN		(4 + 4 + 32 + 32)

struct mig_join {
	uint32_t	index;
	uint32_t	nstreams;
	uint8_t		session[32];
	uint8_t		proof[32];
};

/*
 * A bounded cursor over a byte buffer.  Getters past the end set the
 * overflow flag and return zeros, so a decoder checks once at its end.
 */
struct mig_cursor {
	uint8_t		*p;
	size_t		len;
	size_t		off;
	bool		overflow;
};

void	mig_cursor_init(struct mig_cursor *, void *, size_t);
void	mig_put8(struct mig_cursor *, uint8_t);
void	mig_put16(struct mig_cursor *, uint16_t);
void	mig_put32(struct mig_cursor *, uint32_t);
void	mig_put64(struct mig_cursor *, uint64_t);
void	mig_putbytes(struct mig_cursor *, const void *, size_t);
uint8_t	mig_get8(struct mig_cursor *);
uint16_t mig_get16(struct mig_cursor *);
uint32_t mig_get32(struct mig_cursor *);
uint64_t mig_get64(struct mig_cursor *);
void	mig_getbytes(struct mig_cursor *, void *, size_t);

/* Little-endian helpers for fixed-size fields outside a cursor. */
void	mig_le16enc(void *, uint16_t);
void	mig_le32enc(void *, uint32_t);
void	mig_le64enc(void *, uint64_t);
uint16_t mig_le16dec(const void *);
uint32_t mig_le32dec(const void *);
uint64_t mig_le64dec(const void *);

/*
 * Encoders return the encoded length or 0 if the buffer is too small.
 * Decoders return 0 or EINVAL/EPROTO with a reason in msg.
 */
void	mig_hdr_encode(uint8_t out[MIG_HDR_LEN], const struct mig_hdr *);
int	mig_hdr_decode(const uint8_t in[MIG_HDR_LEN], struct mig_hdr *,
	    char *msg, size_t msglen);

size_t	mig_hello_encode(void *, size_t, const struct mig_hello *);
int	mig_hello_decode(void *, size_t, struct mig_hello *, char *, size_t);

size_t	mig_error_encode(void *, size_t, const struct mig_errmsg *);
int	mig_error_decode(void *, size_t, struct mig_errmsg *, char *, size_t);

size_t	mig_vminfo_encode(void *, size_t, const struct mig_vminfo *);
int	mig_vminfo_decode(void *, size_t, struct mig_vminfo *, char *,
	    size_t);

size_t	mig_round_begin_encode(void *, size_t, const struct mig_round_begin *);
int	mig_round_begin_decode(void *, size_t, struct mig_round_begin *,
	    char *, size_t);
size_t	mig_round_end_encode(void *, size_t, const struct mig_round_end *);
int	mig_round_end_decode(void *, size_t, struct mig_round_end *, char *,
	    size_t);
size_t	mig_state_hdr_encode(void *, size_t, const struct mig_state_hdr *);
int	mig_state_hdr_decode(void *, size_t, struct mig_state_hdr *, char *,
	    size_t);
size_t	mig_ready_encode(void *, size_t, const struct mig_ready *);
int	mig_ready_decode(void *, size_t, struct mig_ready *, char *, size_t);

size_t	mig_hold_encode(void *, size_t, const struct mig_hold *);
int	mig_hold_decode(void *, size_t, struct mig_hold *, char *, size_t);

size_t	mig_pages_hdr_encode(void *, size_t, const struct mig_pages_hdr *);
/* Checks the header against the payload length it arrived in. */
int	mig_pages_hdr_decode(void *, size_t, uint32_t payload_len,
	    struct mig_pages_hdr *, char *, size_t);

/*
 * Validate a PAGES index list for a segment of seg_pages pages: every
 * index in range, the payload length equal to what the zero flags imply.
 * Returns the number of pages carrying data through *ndata.
 */
int	mig_pages_index_check(const uint64_t *idx, uint32_t count,
	    uint64_t seg_pages, uint32_t payload_len, uint32_t *ndata,
	    char *msg, size_t msglen);

size_t	mig_zero_ranges_encode(void *, size_t, const struct mig_zero_ranges *);
/* Checks the segment and the ranges against the guest's memory too. */
int	mig_zero_ranges_decode(void *, size_t, const struct mig_vminfo *,
	    struct mig_zero_ranges *, char *, size_t);
/* OWED: the layout of ZERO_RANGES, encoded by mig_zero_ranges_encode. */
int	mig_owed_decode(void *, size_t, const struct mig_vminfo *,
	    struct mig_zero_ranges *, char *, size_t);

/* A disk's blocks, one block's length, entries per DISK_BLOCKS frame. */
uint64_t mig_disk_nblocks(const struct mig_disk *);
uint32_t mig_disk_block_len(const struct mig_disk *, uint64_t block);
uint32_t mig_disk_blocks_per_msg(uint32_t block_size);

/* The header and index entries; the caller appends the data. */
size_t	mig_disk_blocks_encode(void *, size_t, const struct mig_disk_blocks *);
/* A whole frame: checks the disk, every entry and the data length. */
int	mig_disk_blocks_decode(void *, size_t, const struct mig_vminfo *,
	    struct mig_disk_blocks *, char *, size_t);
size_t	mig_disk_zero_encode(void *, size_t, const struct mig_disk_zero *);
int	mig_disk_zero_decode(void *, size_t, const struct mig_vminfo *,
	    struct mig_disk_zero *, char *, size_t);
size_t	mig_streams_encode(void *, size_t, uint32_t nstreams);
/* nstreams from 2 to MIG_STREAMS_MAX. */
int	mig_streams_decode(void *, size_t, uint32_t *nstreams, char *,
	    size_t);
size_t	mig_join_encode(void *, size_t, const struct mig_join *);
/* index from 1 to nstreams - 1, nstreams from 2 to MIG_STREAMS_MAX. */
int	mig_join_decode(void *, size_t, struct mig_join *, char *, size_t);

const char *mig_msg_name(uint16_t type);

/* Whether a page can travel as a zero marker. */
bool	mig_page_is_zero(const uint8_t *page);

/*
 * Compare the source's description with the destination's own; fill msg
 * with the first difference, in words, and return EINVAL.
 */
int	mig_vminfo_compare(const struct mig_vminfo *src,
	    const struct mig_vminfo *dst, char *msg, size_t msglen);

#endif /* _MIGRATION_WIRE_H_ */
