/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * A framed, authenticated migration channel over one stream socket.
 * Frames before the handshake completes carry no tag; mig_chan_key()
 * switches both directions to tagged frames.  Receiving is split into
 * header, body and end so that page data can land straight in guest
 * memory; nothing received counts until mig_chan_recv_end() verified
 * the tag.
 */

#ifndef _MIGRATION_CHAN_H_
#define	_MIGRATION_CHAN_H_

#include <sys/types.h>
#include <sys/uio.h>

#include <stdbool.h>
#include <stdint.h>

#include "migration.h"
#include "migration_crypto.h"
#include "migration_net.h"
#include "migration_wire.h"

/* Payload parts a frame may gather: one PAGES frame's, at most. */
#define	MIG_MAX_PARTS		(2 * MIG_PAGES_PER_MSG + 4)

/* Frames mig_chan_write() takes in one call. */
#define	MIG_WRITE_FRAMES	2

/* One frame ready for the socket: sealed, its tag computed. */
struct mig_frame {
	uint8_t		hdr[MIG_HDR_LEN];
	uint8_t		tag[MIG_TAG_LEN];
	struct iovec	iov[MIG_MAX_PARTS + 2];
	int		iovcnt;
	size_t		wirelen;	/* header, payload and tag */
};

struct mig_chan {
	int		fd;
	enum mig_role	role;
	bool		keyed;
	bool		encrypt;
	bool		poly1305;	/* both sides speak MIG_CAP_POLY1305 */
	bool		owed;		/* both sides speak MIG_CAP_OWED */
	enum mig_suite	suite;		/* once keyed */
	bool		peer_gave_up;	/* it sent ERROR */
	bool		check_only;	/* the source asked for a dry run */
	bool		zero_ranges;	/* both sides speak ZERO_RANGES */
	bool		hold;		/* both sides speak HOLD */
	bool		streams;	/* the source announced STREAMS */
	struct mig_aead	tx;
	struct mig_aead	rx;
	struct mig_ratelimit rl;
	uint64_t	bytes_tx;
	uint64_t	bytes_rx;
	uint8_t		*txbuf;		/* ciphertext when encrypting */
	uint8_t		*rxbuf;		/* whole small messages */
	struct mig_hdr	cur;		/* the frame being received */
	uint32_t	cur_left;	/* its payload bytes not yet read */
	char		why[MIG_ERRMSG_MAX]; /* detail of the last error */
	uint8_t		hello[MIG_HELLO_LEN];	/* ours, as sent */
	uint8_t		session[MIG_HASH_LEN];	/* the handshake's transcript */
};

int	mig_chan_init(struct mig_chan *, int fd, enum mig_role,
	    uint64_t rate_limit);
void	mig_chan_destroy(struct mig_chan *);
int	mig_chan_key(struct mig_chan *, const struct mig_session_keys *,
	    enum mig_suite);

/*
 * Send one frame whose payload is the concatenation of parts: seal it
 * (its tag; with encryption the payload enciphered into cipher, which
 * holds MIG_PAYLOAD_MAX bytes), then write it.  Sealing takes the next
 * sequence number, so frames are written in the order they were sealed;
 * their parts must not change in between.
 */
int	mig_chan_seal(struct mig_chan *, uint16_t type,
	    const struct iovec *parts, int nparts, uint8_t *cipher,
	    struct mig_frame *);
/* Write nframes (1 to MIG_WRITE_FRAMES) sealed frames, in one call. */
int	mig_chan_write(struct mig_chan *, struct mig_frame *, int nframes);
int	mig_chan_sendv(struct mig_chan *, uint16_t type,
	    const struct iovec *parts, int nparts);
int	mig_chan_send(struct mig_chan *, uint16_t type, const void *,
	    size_t);

int	mig_chan_recv_hdr(struct mig_chan *, struct mig_hdr *);
int	mig_chan_recv_body(struct mig_chan *, void *, size_t);
int	mig_chan_recv_bodyv(struct mig_chan *, struct iovec *, int);
int	mig_chan_recv_end(struct mig_chan *);
/*
 * The frame just ended failed its tag (EBADMSG) and its contents count
 * as unverified (an owed frame): the next frame has the next number.
 */
void	mig_chan_recv_forgo(struct mig_chan *);
/* A whole frame into the channel's buffer: *payload, hdr->len bytes. */
int	mig_chan_recv(struct mig_chan *, struct mig_hdr *, void **payload);

#endif /* _MIGRATION_CHAN_H_ */
