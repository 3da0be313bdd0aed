/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <sys/types.h>
#include <sys/uio.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migration_chan.h"

#define	MIG_DIR_SRC_TO_DST	0x53324400u	/* "S2D" */
#define	MIG_DIR_DST_TO_SRC	0x44325300u	/* "D2S" */

int
mig_chan_init(struct mig_chan *ch, int fd, enum mig_role role,
    uint64_t rate_limit)
{
	memset(ch, 0, sizeof(*ch));
	ch->fd = fd;
	ch->role = role;
	mig_ratelimit_init(&ch->rl, rate_limit);
	ch->rxbuf = malloc(MIG_PAYLOAD_MAX);
	if (ch->rxbuf == NULL)
		return (ENOMEM);
	return (0);
}

void
mig_chan_destroy(struct mig_chan *ch)
{
	mig_aead_free(&ch->tx);
	mig_aead_free(&ch->rx);
	free(ch->txbuf);
	free(ch->rxbuf);
	ch->txbuf = ch->rxbuf = NULL;
}

int
mig_chan_key(struct mig_chan *ch, const struct mig_session_keys *k,
    enum mig_suite suite)
{
	bool encrypt;

	const uint8_t *txkey, *rxkey;
	uint32_t txdir, rxdir;
	int error;

	if (ch->role == MIG_ROLE_SOURCE) {
		txkey = k->src_to_dst;
		rxkey = k->dst_to_src;
		txdir = MIG_DIR_SRC_TO_DST;
		rxdir = MIG_DIR_DST_TO_SRC;
	} else {
		txkey = k->dst_to_src;
		rxkey = k->src_to_dst;
		txdir = MIG_DIR_DST_TO_SRC;
		rxdir = MIG_DIR_SRC_TO_DST;
	}
	encrypt = suite == MIG_SUITE_GCM_ENCRYPT;
	if (encrypt && (ch->txbuf = malloc(MIG_PAYLOAD_MAX)) == NULL)
		return (ENOMEM);
	if ((error = mig_aead_init(&ch->tx, txkey, txdir, suite,
	    true)) != 0 ||
	    (error = mig_aead_init(&ch->rx, rxkey, rxdir, suite,
	    false)) != 0)
		return (error);
	ch->encrypt = encrypt;
	ch->suite = suite;
	ch->keyed = true;
	return (0);
}

int
mig_chan_seal(struct mig_chan *ch, uint16_t type, const struct iovec *parts,
    int nparts, uint8_t *cipher, struct mig_frame *f)
{
	struct mig_hdr hdr;
	size_t len, off;
	int error, i;

	if (nparts < 0 || nparts > (int)MIG_MAX_PARTS)
		return (EINVAL);
	len = 0;
	for (i = 0; i < nparts; i++)
		len += parts[i].iov_len;
	if (len > MIG_PAYLOAD_MAX)
		return (EMSGSIZE);
	hdr.type = type;
	hdr.flags = 0;
	hdr.len = (uint32_t)len;
	mig_hdr_encode(f->hdr, &hdr);
	f->iovcnt = 0;
	f->iov[f->iovcnt].iov_base = f->hdr;
	f->iov[f->iovcnt++].iov_len = sizeof(f->hdr);
	f->wirelen = len + MIG_HDR_LEN;
	if (ch->keyed && (error = mig_aead_begin(&ch->tx, f->hdr,
	    sizeof(f->hdr))) != 0)
		return (error);
	if (ch->keyed && ch->encrypt) {
		off = 0;
		for (i = 0; i < nparts; i++) {
			error = mig_aead_update(&ch->tx, parts[i].iov_base,
			    cipher + off, parts[i].iov_len);
			if (error != 0)
				return (error);
			off += parts[i].iov_len;
		}
		f->iov[f->iovcnt].iov_base = cipher;
		f->iov[f->iovcnt++].iov_len = len;
	} else {
		for (i = 0; i < nparts; i++) {
			if (ch->keyed && (error = mig_aead_update(&ch->tx,
			    parts[i].iov_base, NULL, parts[i].iov_len)) != 0)
				return (error);
			f->iov[f->iovcnt++] = parts[i];
		}
	}
	if (ch->keyed) {
		if ((error = mig_aead_seal(&ch->tx, f->tag)) != 0)
			return (error);
		f->iov[f->iovcnt].iov_base = f->tag;
		f->iov[f->iovcnt++].iov_len = sizeof(f->tag);
		f->wirelen += MIG_TAG_LEN;
	}
	return (0);
}

int
mig_chan_write(struct mig_chan *ch, struct mig_frame *f, int nframes)
{
	struct iovec iov[MIG_WRITE_FRAMES * (MIG_MAX_PARTS + 2)];
	size_t wirelen;
	int error, i, n;

	if (nframes < 1 || nframes > MIG_WRITE_FRAMES)
		return (EINVAL);
	if (nframes == 1) {
		error = mig_writev_full(ch->fd, f->iov, f->iovcnt, &ch->rl);
		wirelen = f->wirelen;
	} else {
		/* One call for all: a small frame alone is a wakeup alone. */
		n = 0;
		wirelen = 0;
		for (i = 0; i < nframes; i++) {
			memcpy(&iov[n], f[i].iov, sizeof(*iov) * f[i].iovcnt);
			n += f[i].iovcnt;
			wirelen += f[i].wirelen;
		}
		error = mig_writev_full(ch->fd, iov, n, &ch->rl);
	}
	if (error != 0)
		return (error);
	ch->bytes_tx += wirelen;
	return (0);
}

int
mig_chan_sendv(struct mig_chan *ch, uint16_t type, const struct iovec *parts,
    int nparts)
{
	struct mig_frame f;
	int error;

	if ((error = mig_chan_seal(ch, type, parts, nparts, ch->txbuf,
	    &f)) != 0)
		return (error);
	return (mig_chan_write(ch, &f, 1));
}

int
mig_chan_send(struct mig_chan *ch, uint16_t type, const void *buf, size_t len)
{
	struct iovec iov;

	iov.iov_base = (void *)(uintptr_t)buf;
	iov.iov_len = len;
	return (mig_chan_sendv(ch, type, &iov, len > 0 ? 1 : 0));
}

int
mig_chan_recv_hdr(struct mig_chan *ch, struct mig_hdr *hdr)
{
	uint8_t hdrbuf[MIG_HDR_LEN];
	int error;

	ch->why[0] = '\0';
	if ((error = mig_read_full(ch->fd, hdrbuf, sizeof(hdrbuf))) != 0)
		return (error);
	ch->bytes_rx += sizeof(hdrbuf);
	if ((error = mig_hdr_decode(hdrbuf, hdr, ch->why,
	    sizeof(ch->why))) != 0)
		return (error);
	if (ch->keyed && (error = mig_aead_begin(&ch->rx, hdrbuf,
	    sizeof(hdrbuf))) != 0)
		return (error);
	ch->cur = *hdr;
	ch->cur_left = hdr->len;
	return (0);
}

int
mig_chan_recv_bodyv(struct mig_chan *ch, struct iovec *iov, int iovcnt)
{
	struct iovec work[MIG_MAX_PARTS];
	size_t len;
	int error, i;

	len = 0;
	for (i = 0; i < iovcnt; i++)
		len += iov[i].iov_len;
	if (len > ch->cur_left) {
		snprintf(ch->why, sizeof(ch->why),
		    "%s message is shorter than its contents need",
		    mig_msg_name(ch->cur.type));
		return (EPROTO);
	}
	/* readv advances a copy: keep iov for the tag pass below. */
	if (iovcnt < 0 || iovcnt > (int)MIG_MAX_PARTS)
		return (EINVAL);
	memcpy(work, iov, sizeof(*iov) * iovcnt);
	if ((error = mig_readv_full(ch->fd, work, iovcnt)) != 0)
		return (error);
	ch->cur_left -= (uint32_t)len;
	ch->bytes_rx += len;
	if (!ch->keyed)
		return (0);
	for (i = 0; i < iovcnt; i++)
		if ((error = mig_aead_update(&ch->rx, iov[i].iov_base,
		    iov[i].iov_base, iov[i].iov_len)) != 0)
			return (error);
	return (0);
}

int
mig_chan_recv_body(struct mig_chan *ch, void *buf, size_t len)
{
	struct iovec iov;

	iov.iov_base = buf;
	iov.iov_len = len;
	return (mig_chan_recv_bodyv(ch, &iov, 1));
}

int
mig_chan_recv_end(struct mig_chan *ch)
{
	uint8_t tag[MIG_TAG_LEN];
	int error;

	if (ch->cur_left != 0) {
		snprintf(ch->why, sizeof(ch->why),
		    "%s message has %u bytes its contents do not account for",
		    mig_msg_name(ch->cur.type), ch->cur_left);
		return (EPROTO);
	}
	if (!ch->keyed)
		return (0);
	if ((error = mig_read_full(ch->fd, tag, sizeof(tag))) != 0)
		return (error);
	ch->bytes_rx += sizeof(tag);
	if ((error = mig_aead_open(&ch->rx, tag)) != 0) {
		snprintf(ch->why, sizeof(ch->why),
		    "%s message %ju failed its integrity check (altered, "
		    "replayed or sent with another key)",
		    mig_msg_name(ch->cur.type), (uintmax_t)ch->rx.seq);
		return (EBADMSG);
	}
	return (0);
}

void
mig_chan_recv_forgo(struct mig_chan *ch)
{

	ch->rx.seq++;
}

int
mig_chan_recv(struct mig_chan *ch, struct mig_hdr *hdr, void **payload)
{
	int error;

	if ((error = mig_chan_recv_hdr(ch, hdr)) != 0 ||
	    (error = mig_chan_recv_body(ch, ch->rxbuf, hdr->len)) != 0 ||
	    (error = mig_chan_recv_end(ch)) != 0)
		return (error);
	*payload = ch->rxbuf;
	return (0);
}
