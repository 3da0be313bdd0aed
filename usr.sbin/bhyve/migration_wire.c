/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Encoding and decoding of migration messages.  Pure functions: no I/O,
 * no allocation.  Every length and index a peer sends is checked here
 * before anything uses it.
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "migration_wire.h"

static int
reject(char *msg, size_t msglen, int error, const char *fmt, ...)
{
	va_list ap;

	if (msg != NULL && msglen > 0) {
		va_start(ap, fmt);
		vsnprintf(msg, msglen, fmt, ap);
		va_end(ap);
	}
	return (error);
}

void
mig_le16enc(void *buf, uint16_t v)
{
	uint8_t *p = buf;

	p[0] = v & 0xff;
	p[1] = v >> 8;
}

void
mig_le32enc(void *buf, uint32_t v)
{
	uint8_t *p = buf;

	p[0] = v & 0xff;
	p[1] = (v >> 8) & 0xff;
	p[2] = (v >> 16) & 0xff;
	p[3] = v >> 24;
}

void
mig_le64enc(void *buf, uint64_t v)
{
	uint8_t *p = buf;

	mig_le32enc(p, (uint32_t)v);
	mig_le32enc(p + 4, (uint32_t)(v >> 32));
}

uint16_t
mig_le16dec(const void *buf)
{
	const uint8_t *p = buf;

	return ((uint16_t)(p[0] | (p[1] << 8)));
}

uint32_t
mig_le32dec(const void *buf)
{
	const uint8_t *p = buf;

	return ((uint32_t)p[0] | ((uint32_t)p[1] << 8) |
	    ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24));
}

uint64_t
mig_le64dec(const void *buf)
{
	const uint8_t *p = buf;

	return ((uint64_t)mig_le32dec(p) |
	    ((uint64_t)mig_le32dec(p + 4) << 32));
}

void
mig_cursor_init(struct mig_cursor *c, void *buf, size_t len)
{
	c->p = buf;
	c->len = len;
	c->off = 0;
	c->overflow = false;
}

static uint8_t *
cursor_take(struct mig_cursor *c, size_t n)
{
	uint8_t *p;

	if (c->overflow || n > c->len - c->off) {
		c->overflow = true;
		return (NULL);
	}
	p = c->p + c->off;
	c->off += n;
	return (p);
}

void
mig_put8(struct mig_cursor *c, uint8_t v)
{
	uint8_t *p;

	if ((p = cursor_take(c, 1)) != NULL)
		*p = v;
}

void
mig_put16(struct mig_cursor *c, uint16_t v)
{
	uint8_t *p;

	if ((p = cursor_take(c, 2)) != NULL)
		mig_le16enc(p, v);
}

void
mig_put32(struct mig_cursor *c, uint32_t v)
{
	uint8_t *p;

	if ((p = cursor_take(c, 4)) != NULL)
		mig_le32enc(p, v);
}

void
mig_put64(struct mig_cursor *c, uint64_t v)
{
	uint8_t *p;

	if ((p = cursor_take(c, 8)) != NULL)
		mig_le64enc(p, v);
}

void
mig_putbytes(struct mig_cursor *c, const void *src, size_t n)
{
	uint8_t *p;

	if ((p = cursor_take(c, n)) != NULL && n > 0)
		memcpy(p, src, n);
}

uint8_t
mig_get8(struct mig_cursor *c)
{
	uint8_t *p;

	return ((p = cursor_take(c, 1)) != NULL ? *p : 0);
}

uint16_t
mig_get16(struct mig_cursor *c)
{
	uint8_t *p;

	return ((p = cursor_take(c, 2)) != NULL ? mig_le16dec(p) : 0);
}

uint32_t
mig_get32(struct mig_cursor *c)
{
	uint8_t *p;

	return ((p = cursor_take(c, 4)) != NULL ? mig_le32dec(p) : 0);
}

uint64_t
mig_get64(struct mig_cursor *c)
{
	uint8_t *p;

	return ((p = cursor_take(c, 8)) != NULL ? mig_le64dec(p) : 0);
}

void
mig_getbytes(struct mig_cursor *c, void *dst, size_t n)
{
	uint8_t *p;

	if ((p = cursor_take(c, n)) != NULL)
		memcpy(dst, p, n);
	else
		memset(dst, 0, n);
}

/* A decoder's last check: consumed exactly what arrived. */
static int
cursor_done(const struct mig_cursor *c, const char *what, char *msg,
    size_t msglen)
{
	if (c->overflow)
		return (reject(msg, msglen, EPROTO,
		    "%s message is truncated (%zu bytes)", what, c->len));
	if (c->off != c->len)
		return (reject(msg, msglen, EPROTO,
		    "%s message has %zu trailing bytes", what,
		    c->len - c->off));
	return (0);
}

static size_t
cursor_result(const struct mig_cursor *c)
{
	return (c->overflow ? 0 : c->off);
}

static const char *const msg_names[MIG_MSG_TYPE_MAX] = {
	[MIG_MSG_HELLO] = "HELLO",
	[MIG_MSG_AUTH] = "AUTH",
	[MIG_MSG_ERROR] = "ERROR",
	[MIG_MSG_VMINFO] = "VMINFO",
	[MIG_MSG_ACCEPT] = "ACCEPT",
	[MIG_MSG_ROUND_BEGIN] = "ROUND_BEGIN",
	[MIG_MSG_PAGES] = "PAGES",
	[MIG_MSG_ROUND_END] = "ROUND_END",
	[MIG_MSG_STATE] = "STATE",
	[MIG_MSG_READY] = "READY",
	[MIG_MSG_GO] = "GO",
	[MIG_MSG_RUNNING] = "RUNNING",
	[MIG_MSG_ZERO_RANGES] = "ZERO_RANGES",
	[MIG_MSG_DISK_BLOCKS] = "DISK_BLOCKS",
	[MIG_MSG_DISK_ZERO] = "DISK_ZERO",
	[MIG_MSG_HOLD] = "HOLD",
	[MIG_MSG_STREAMS] = "STREAMS",
	[MIG_MSG_JOIN] = "JOIN",
	[MIG_MSG_JOINED] = "JOINED",
	[MIG_MSG_PART_END] = "PART_END",
	[MIG_MSG_OWED] = "OWED",
	[MIG_MSG_OWED_END] = "OWED_END",
	[MIG_MSG_PAGES_INDEX] = "PAGES_INDEX",
	[MIG_MSG_PAGES_DATA] = "PAGES_DATA",
};

const char *
mig_msg_name(uint16_t type)
{
	/* Numbers other changes take leave gaps. */
	if (type == 0 || type >= MIG_MSG_TYPE_MAX || msg_names[type] == NULL)
		return ("unknown");
	return (msg_names[type]);
}

bool
mig_page_is_zero(const uint8_t *page)
{
	const uint64_t *w = (const uint64_t *)(const void *)page;
	size_t i;

	/* Eight words a step: most non-zero pages fail on the first. */
	for (i = 0; i < MIG_PAGE_SIZE / 8; i += 8)
		if ((w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] |
		    w[i + 5] | w[i + 6] | w[i + 7]) != 0)
			return (false);
	return (true);
}

void
mig_hdr_encode(uint8_t out[MIG_HDR_LEN], const struct mig_hdr *h)
{
	mig_le16enc(out, h->type);
	mig_le16enc(out + 2, h->flags);
	mig_le32enc(out + 4, h->len);
}

int
mig_hdr_decode(const uint8_t in[MIG_HDR_LEN], struct mig_hdr *h, char *msg,
    size_t msglen)
{
	h->type = mig_le16dec(in);
	h->flags = mig_le16dec(in + 2);
	h->len = mig_le32dec(in + 4);
	if (h->type == 0 || h->type >= MIG_MSG_TYPE_MAX ||
	    msg_names[h->type] == NULL)
		return (reject(msg, msglen, EPROTO,
		    "unknown message type %u", h->type));
	if (h->flags != 0)
		return (reject(msg, msglen, EPROTO,
		    "%s message has unknown flags 0x%x",
		    mig_msg_name(h->type), h->flags));
	if (h->len > MIG_PAYLOAD_MAX)
		return (reject(msg, msglen, EMSGSIZE,
		    "%s message announces %u bytes, more than the limit %u",
		    mig_msg_name(h->type), h->len, MIG_PAYLOAD_MAX));
	return (0);
}

size_t
mig_hello_encode(void *buf, size_t len, const struct mig_hello *h)
{
	struct mig_cursor c;

	mig_cursor_init(&c, buf, len);
	mig_putbytes(&c, MIG_MAGIC, MIG_MAGIC_LEN);
	mig_put16(&c, h->role);
	mig_put16(&c, h->version_min);
	mig_put16(&c, h->version_max);
	mig_put16(&c, 0);
	mig_put32(&c, h->caps);
	mig_putbytes(&c, h->nonce, MIG_NONCE_LEN);
	return (cursor_result(&c));
}

int
mig_hello_decode(void *buf, size_t len, struct mig_hello *h, char *msg,
    size_t msglen)
{
	struct mig_cursor c;
	char magic[MIG_MAGIC_LEN];
	int error;

	mig_cursor_init(&c, buf, len);
	mig_getbytes(&c, magic, sizeof(magic));
	h->role = mig_get16(&c);
	h->version_min = mig_get16(&c);
	h->version_max = mig_get16(&c);
	(void)mig_get16(&c);
	h->caps = mig_get32(&c);
	mig_getbytes(&c, h->nonce, MIG_NONCE_LEN);
	if ((error = cursor_done(&c, "HELLO", msg, msglen)) != 0)
		return (error);
	if (memcmp(magic, MIG_MAGIC, MIG_MAGIC_LEN) != 0)
		return (reject(msg, msglen, EPROTO,
		    "the peer is not a bhyve migration endpoint"));
	if (h->role > MIG_ROLE_DEST)
		return (reject(msg, msglen, EPROTO, "unknown peer role %u",
		    h->role));
	if (h->version_min == 0 || h->version_min > h->version_max)
		return (reject(msg, msglen, EPROTO,
		    "invalid protocol version range %u..%u", h->version_min,
		    h->version_max));
	return (0);
}

size_t
mig_error_encode(void *buf, size_t len, const struct mig_errmsg *e)
{
	struct mig_cursor c;
	size_t n;

	n = strnlen(e->msg, sizeof(e->msg) - 1);
	mig_cursor_init(&c, buf, len);
	mig_put16(&c, e->phase);
	mig_put16(&c, e->side);
	mig_put32(&c, e->code);
	mig_put16(&c, (uint16_t)n);
	mig_putbytes(&c, e->msg, n);
	return (cursor_result(&c));
}

int
mig_error_decode(void *buf, size_t len, struct mig_errmsg *e, char *msg,
    size_t msglen)
{
	struct mig_cursor c;
	uint16_t n;
	size_t i;

	mig_cursor_init(&c, buf, len);
	e->phase = mig_get16(&c);
	e->side = mig_get16(&c);
	e->code = mig_get32(&c);
	n = mig_get16(&c);
	if (n >= sizeof(e->msg))
		return (reject(msg, msglen, EPROTO,
		    "ERROR message text of %u bytes is too long", n));
	mig_getbytes(&c, e->msg, n);
	e->msg[n] = '\0';
	if (cursor_done(&c, "ERROR", msg, msglen) != 0)
		return (EPROTO);
	if (e->phase >= MIG_PHASE_COUNT || e->side > MIG_SIDE_LINK)
		return (reject(msg, msglen, EPROTO,
		    "ERROR message names unknown phase %u or side %u",
		    e->phase, e->side));
	/* The peer's words reach a terminal: keep them printable. */
	for (i = 0; i < n; i++)
		if (e->msg[i] < 0x20 || e->msg[i] > 0x7e)
			e->msg[i] = '?';
	return (0);
}

static void
put_string8(struct mig_cursor *c, const char *s, size_t max)
{
	size_t n;

	n = strnlen(s, max - 1);
	mig_put8(c, (uint8_t)n);
	mig_putbytes(c, s, n);
}

static int
get_string8(struct mig_cursor *c, char *s, size_t max)
{
	uint8_t n;

	n = mig_get8(c);
	if (n >= max) {
		s[0] = '\0';
		return (EPROTO);
	}
	mig_getbytes(c, s, n);
	s[n] = '\0';
	if (strlen(s) != n)
		return (EPROTO);	/* embedded NUL */
	return (0);
}

size_t
mig_vminfo_encode(void *buf, size_t len, const struct mig_vminfo *vi)
{
	struct mig_cursor c;
	uint32_t i;

	mig_cursor_init(&c, buf, len);
	mig_put32(&c, vi->ncpus);
	mig_put32(&c, vi->page_size);
	mig_put32(&c, vi->nsegs);
	for (i = 0; i < vi->nsegs && i < MIG_MAX_SEGS; i++) {
		mig_put64(&c, vi->segs[i].gpa);
		mig_put64(&c, vi->segs[i].len);
	}
	mig_put32(&c, vi->nsections);
	for (i = 0; i < vi->nsections && i < MIG_MAX_SECTIONS; i++) {
		put_string8(&c, vi->sections[i].name, MIG_NAME_MAX);
		mig_put32(&c, vi->sections[i].version);
	}
	put_string8(&c, vi->cpu_features, MIG_FEATURES_MAX);
	mig_put32(&c, vi->disk_flags);
	mig_put32(&c, vi->ndisks);
	for (i = 0; i < vi->ndisks && i < MIG_MAX_DISKS; i++) {
		mig_put32(&c, vi->disks[i].block_size);
		mig_put64(&c, vi->disks[i].size);
	}
	return (cursor_result(&c));
}

static bool
disk_valid(const struct mig_disk *d)
{
	uint32_t bs = d->block_size;

	/* Its block count and block offsets must not wrap around. */
	return (bs >= MIG_DISK_BLOCK_MIN && bs <= MIG_DISK_BLOCK_MAX &&
	    (bs & (bs - 1)) == 0 && d->size > 0 &&
	    d->size <= UINT64_MAX - MIG_DISK_BLOCK_MAX);
}

int
mig_vminfo_decode(void *buf, size_t len, struct mig_vminfo *vi, char *msg,
    size_t msglen)
{
	struct mig_cursor c;
	uint32_t i;

	memset(vi, 0, sizeof(*vi));
	mig_cursor_init(&c, buf, len);
	vi->ncpus = mig_get32(&c);
	vi->page_size = mig_get32(&c);
	vi->nsegs = mig_get32(&c);
	if (vi->nsegs == 0 || vi->nsegs > MIG_MAX_SEGS)
		return (reject(msg, msglen, EPROTO,
		    "VMINFO lists %u memory segments (1 to %u allowed)",
		    vi->nsegs, MIG_MAX_SEGS));
	if (vi->page_size != MIG_PAGE_SIZE)
		return (reject(msg, msglen, EPROTO,
		    "VMINFO page size %u is not %u", vi->page_size,
		    MIG_PAGE_SIZE));
	for (i = 0; i < vi->nsegs; i++) {
		vi->segs[i].gpa = mig_get64(&c);
		vi->segs[i].len = mig_get64(&c);
		vi->segs[i].host = NULL;
		if (vi->segs[i].len == 0 ||
		    vi->segs[i].len % MIG_PAGE_SIZE != 0 ||
		    vi->segs[i].gpa % MIG_PAGE_SIZE != 0 ||
		    vi->segs[i].gpa + vi->segs[i].len < vi->segs[i].gpa)
			return (reject(msg, msglen, EPROTO,
			    "VMINFO segment %u (gpa 0x%jx, %ju bytes) is not "
			    "a page-aligned range", i,
			    (uintmax_t)vi->segs[i].gpa,
			    (uintmax_t)vi->segs[i].len));
	}
	vi->nsections = mig_get32(&c);
	if (vi->nsections > MIG_MAX_SECTIONS)
		return (reject(msg, msglen, EPROTO,
		    "VMINFO lists %u state sections (at most %u)",
		    vi->nsections, MIG_MAX_SECTIONS));
	for (i = 0; i < vi->nsections; i++) {
		if (get_string8(&c, vi->sections[i].name, MIG_NAME_MAX) != 0)
			return (reject(msg, msglen, EPROTO,
			    "VMINFO section %u has an invalid name", i));
		vi->sections[i].version = mig_get32(&c);
	}
	if (get_string8(&c, vi->cpu_features, MIG_FEATURES_MAX) != 0)
		return (reject(msg, msglen, EPROTO,
		    "VMINFO has an invalid CPU feature summary"));
	vi->disk_flags = mig_get32(&c);
	vi->ndisks = mig_get32(&c);
	if ((vi->disk_flags & ~MIG_DISKS_MOVE) != 0)
		return (reject(msg, msglen, EPROTO,
		    "VMINFO has unknown disk flags 0x%x", vi->disk_flags));
	if (vi->ndisks > MIG_MAX_DISKS)
		return (reject(msg, msglen, EPROTO,
		    "VMINFO lists %u disks (at most %u)", vi->ndisks,
		    MIG_MAX_DISKS));
	for (i = 0; i < vi->ndisks; i++) {
		vi->disks[i].block_size = mig_get32(&c);
		vi->disks[i].size = mig_get64(&c);
		if (!c.overflow && !disk_valid(&vi->disks[i]))
			return (reject(msg, msglen, EPROTO,
			    "VMINFO disk %u (%ju bytes in blocks of %u) is "
			    "not a non-empty disk below 2^64 - %u bytes with "
			    "a power-of-two block size from %u to %u", i,
			    (uintmax_t)vi->disks[i].size,
			    vi->disks[i].block_size, MIG_DISK_BLOCK_MAX,
			    MIG_DISK_BLOCK_MIN, MIG_DISK_BLOCK_MAX));
	}
	if ((vi->disk_flags & MIG_DISKS_MOVE) != 0 && vi->ndisks == 0)
		return (reject(msg, msglen, EPROTO,
		    "VMINFO moves disks but lists none"));
	if (vi->ncpus == 0)
		return (reject(msg, msglen, EPROTO, "VMINFO has no vCPUs"));
	return (cursor_done(&c, "VMINFO", msg, msglen));
}

int
mig_vminfo_compare(const struct mig_vminfo *src, const struct mig_vminfo *dst,
    char *msg, size_t msglen)
{
	uint32_t i;

	if (src->ncpus != dst->ncpus)
		return (reject(msg, msglen, EINVAL,
		    "the source guest has %u vCPUs, the destination is "
		    "configured with %u", src->ncpus, dst->ncpus));
	if (src->page_size != dst->page_size)
		return (reject(msg, msglen, EINVAL,
		    "page size differs: source %u, destination %u",
		    src->page_size, dst->page_size));
	if (src->nsegs != dst->nsegs)
		return (reject(msg, msglen, EINVAL,
		    "the source has %u memory segments, the destination %u",
		    src->nsegs, dst->nsegs));
	for (i = 0; i < src->nsegs; i++)
		if (src->segs[i].gpa != dst->segs[i].gpa ||
		    src->segs[i].len != dst->segs[i].len)
			return (reject(msg, msglen, EINVAL,
			    "memory segment %u differs: source gpa 0x%jx "
			    "%ju MiB, destination gpa 0x%jx %ju MiB", i,
			    (uintmax_t)src->segs[i].gpa,
			    (uintmax_t)(src->segs[i].len >> 20),
			    (uintmax_t)dst->segs[i].gpa,
			    (uintmax_t)(dst->segs[i].len >> 20)));
	if (src->nsections != dst->nsections)
		return (reject(msg, msglen, EINVAL,
		    "the source has %u devices and vCPU state sections, the "
		    "destination %u", src->nsections, dst->nsections));
	for (i = 0; i < src->nsections; i++) {
		if (strcmp(src->sections[i].name, dst->sections[i].name) != 0)
			return (reject(msg, msglen, EINVAL,
			    "state section %u is '%s' on the source but '%s' "
			    "on the destination", i, src->sections[i].name,
			    dst->sections[i].name));
		if (src->sections[i].version != dst->sections[i].version)
			return (reject(msg, msglen, EINVAL,
			    "device '%s' has state version %u on the source "
			    "and %u on the destination",
			    src->sections[i].name, src->sections[i].version,
			    dst->sections[i].version));
	}
	if (strcmp(src->cpu_features, dst->cpu_features) != 0)
		return (reject(msg, msglen, EINVAL,
		    "CPU features differ: source '%s', destination '%s'",
		    src->cpu_features, dst->cpu_features));
	if (src->ndisks != dst->ndisks)
		return (reject(msg, msglen, EINVAL,
		    "the source guest has %u disks, the destination is "
		    "configured with %u", src->ndisks, dst->ndisks));
	for (i = 0; i < src->ndisks; i++)
		if (src->disks[i].size != dst->disks[i].size ||
		    src->disks[i].block_size != dst->disks[i].block_size)
			return (reject(msg, msglen, EINVAL,
			    "disk %u differs: source %ju bytes in blocks of "
			    "%u, destination %ju bytes in blocks of %u", i,
			    (uintmax_t)src->disks[i].size,
			    src->disks[i].block_size,
			    (uintmax_t)dst->disks[i].size,
			    dst->disks[i].block_size));
	return (0);
}

size_t
mig_round_begin_encode(void *buf, size_t len, const struct mig_round_begin *r)
{
	struct mig_cursor c;

	mig_cursor_init(&c, buf, len);
	mig_put32(&c, r->index);
	mig_put8(&c, r->final);
	mig_put64(&c, r->pages);
	return (cursor_result(&c));
}

int
mig_round_begin_decode(void *buf, size_t len, struct mig_round_begin *r,
    char *msg, size_t msglen)
{
	struct mig_cursor c;
	int error;

	mig_cursor_init(&c, buf, len);
	r->index = mig_get32(&c);
	r->final = mig_get8(&c);
	r->pages = mig_get64(&c);
	if ((error = cursor_done(&c, "ROUND_BEGIN", msg, msglen)) != 0)
		return (error);
	if (r->final > 1 || r->index == 0 || r->index > MIG_STATS_MAX_ROUNDS)
		return (reject(msg, msglen, EPROTO,
		    "ROUND_BEGIN has invalid round %u (final %u)", r->index,
		    r->final));
	return (0);
}

size_t
mig_round_end_encode(void *buf, size_t len, const struct mig_round_end *r)
{
	struct mig_cursor c;

	mig_cursor_init(&c, buf, len);
	mig_put32(&c, r->index);
	mig_put64(&c, r->pages);
	return (cursor_result(&c));
}

int
mig_round_end_decode(void *buf, size_t len, struct mig_round_end *r,
    char *msg, size_t msglen)
{
	struct mig_cursor c;

	mig_cursor_init(&c, buf, len);
	r->index = mig_get32(&c);
	r->pages = mig_get64(&c);
	return (cursor_done(&c, "ROUND_END", msg, msglen));
}

size_t
mig_state_hdr_encode(void *buf, size_t len, const struct mig_state_hdr *s)
{
	struct mig_cursor c;

	mig_cursor_init(&c, buf, len);
	mig_put32(&c, s->section);
	mig_put64(&c, s->total);
	mig_put64(&c, s->offset);
	return (cursor_result(&c));
}

int
mig_state_hdr_decode(void *buf, size_t len, struct mig_state_hdr *s,
    char *msg, size_t msglen)
{
	struct mig_cursor c;

	mig_cursor_init(&c, buf, len);
	s->section = mig_get32(&c);
	s->total = mig_get64(&c);
	s->offset = mig_get64(&c);
	if (c.overflow)
		return (reject(msg, msglen, EPROTO,
		    "STATE message is truncated (%zu bytes)", len));
	if (s->total > MIG_SECTION_MAX)
		return (reject(msg, msglen, EMSGSIZE,
		    "STATE section %u announces %ju bytes, more than the "
		    "limit %u", s->section, (uintmax_t)s->total,
		    MIG_SECTION_MAX));
	if (s->offset > s->total || len - c.off > s->total - s->offset)
		return (reject(msg, msglen, EPROTO,
		    "STATE chunk at offset %ju (%zu bytes) overruns section "
		    "%u of %ju bytes", (uintmax_t)s->offset, len - c.off,
		    s->section, (uintmax_t)s->total));
	return (0);
}

size_t
mig_ready_encode(void *buf, size_t len, const struct mig_ready *r)
{
	struct mig_cursor c;

	mig_cursor_init(&c, buf, len);
	mig_put64(&c, r->pages);
	mig_put32(&c, r->nsections);
	return (cursor_result(&c));
}

int
mig_ready_decode(void *buf, size_t len, struct mig_ready *r, char *msg,
    size_t msglen)
{
	struct mig_cursor c;

	mig_cursor_init(&c, buf, len);
	r->pages = mig_get64(&c);
	r->nsections = mig_get32(&c);
	return (cursor_done(&c, "READY", msg, msglen));
}

size_t
mig_hold_encode(void *buf, size_t len, const struct mig_hold *h)
{
	struct mig_cursor c;

	mig_cursor_init(&c, buf, len);
	mig_put32(&c, h->hold_ms);
	return (cursor_result(&c));
}

int
mig_hold_decode(void *buf, size_t len, struct mig_hold *h, char *msg,
    size_t msglen)
{
	struct mig_cursor c;

	mig_cursor_init(&c, buf, len);
	h->hold_ms = mig_get32(&c);
	if (cursor_done(&c, "HOLD", msg, msglen) != 0)
		return (EPROTO);
	if (h->hold_ms == 0 || h->hold_ms > MIG_MAX_HOLD_MS)
		return (reject(msg, msglen, EPROTO, "HOLD asks for %u ms, "
		    "not 1 to %u", h->hold_ms, MIG_MAX_HOLD_MS));
	return (0);
}

size_t
mig_pages_hdr_encode(void *buf, size_t len, const struct mig_pages_hdr *p)
{
	struct mig_cursor c;

	mig_cursor_init(&c, buf, len);
	mig_put32(&c, p->seg);
	mig_put32(&c, p->count);
	return (cursor_result(&c));
}

int
mig_pages_hdr_decode(void *buf, size_t len, uint32_t payload_len,
    struct mig_pages_hdr *p, char *msg, size_t msglen)
{
	struct mig_cursor c;

	mig_cursor_init(&c, buf, len);
	p->seg = mig_get32(&c);
	p->count = mig_get32(&c);
	if (c.overflow || payload_len < MIG_PAGES_HDR_LEN)
		return (reject(msg, msglen, EPROTO,
		    "PAGES message is truncated (%u bytes)", payload_len));
	if (p->count == 0 || p->count > MIG_PAGES_PER_MSG)
		return (reject(msg, msglen, EPROTO,
		    "PAGES message carries %u pages (1 to %u allowed)",
		    p->count, MIG_PAGES_PER_MSG));
	if ((uint64_t)payload_len < MIG_PAGES_HDR_LEN + 8ull * p->count)
		return (reject(msg, msglen, EPROTO,
		    "PAGES message of %u bytes is too short for %u indices",
		    payload_len, p->count));
	return (0);
}

int
mig_pages_index_check(const uint64_t *idx, uint32_t count, uint64_t seg_pages,
    uint32_t payload_len, uint32_t *ndata, char *msg, size_t msglen)
{
	uint64_t expect, page;
	uint32_t i, n;

	n = 0;
	for (i = 0; i < count; i++) {
		page = idx[i] & ~MIG_PAGE_ZERO;
		if (page >= seg_pages)
			return (reject(msg, msglen, EPROTO,
			    "PAGES entry %u names page %ju, beyond the "
			    "segment's %ju pages", i, (uintmax_t)page,
			    (uintmax_t)seg_pages));
		/*
		 * Strictly increasing, as the source walks its bitmap: a
		 * page named twice would be written twice from one tagged
		 * frame, and only the last copy is what the tag covered.
		 */
		if (i > 0 && page <= (idx[i - 1] & ~MIG_PAGE_ZERO))
			return (reject(msg, msglen, EPROTO,
			    "PAGES entry %u names page %ju, not after the "
			    "previous entry's page %ju", i, (uintmax_t)page,
			    (uintmax_t)(idx[i - 1] & ~MIG_PAGE_ZERO)));
		if ((idx[i] & MIG_PAGE_ZERO) == 0)
			n++;
	}
	expect = MIG_PAGES_HDR_LEN + 8ull * count + (uint64_t)n * MIG_PAGE_SIZE;
	if (expect != payload_len)
		return (reject(msg, msglen, EPROTO,
		    "PAGES message is %u bytes but its %u data pages need %ju",
		    payload_len, n, (uintmax_t)expect));
	*ndata = n;
	return (0);
}

/*
 * ZERO_RANGES and DISK_ZERO share a layout: u32 id (a memory segment, a
 * disk) | u32 count | count x (u64 first | u64 n), ranges non-empty,
 * ascending and disjoint, inside the id's units.
 */
static size_t
ranges_encode(void *buf, size_t len, uint32_t id, uint32_t count,
    const struct mig_zero_range *r)
{
	struct mig_cursor c;
	uint32_t i;

	if (count > MIG_ZERO_RANGES_MAX)
		return (0);
	mig_cursor_init(&c, buf, len);
	mig_put32(&c, id);
	mig_put32(&c, count);
	for (i = 0; i < count; i++) {
		mig_put64(&c, r[i].first);
		mig_put64(&c, r[i].npages);
	}
	return (cursor_result(&c));
}

/* The units of each id: a segment's pages, a disk's blocks. */
typedef uint64_t	ranges_units_t(const struct mig_vminfo *, uint32_t);

static int
ranges_decode(void *buf, size_t len, const char *what, const char *owner,
    const char *unit, uint32_t nids, ranges_units_t *units,
    const struct mig_vminfo *vi, uint32_t *id, uint32_t *count,
    struct mig_zero_range *r, char *msg, size_t msglen)
{
	struct mig_cursor c;
	uint64_t next, n;
	uint32_t i;

	mig_cursor_init(&c, buf, len);
	*id = mig_get32(&c);
	*count = mig_get32(&c);
	if (c.overflow)
		return (reject(msg, msglen, EPROTO,
		    "%s message is truncated (%zu bytes)", what, len));
	if (*count == 0 || *count > MIG_ZERO_RANGES_MAX)
		return (reject(msg, msglen, EPROTO,
		    "%s message carries %u ranges (1 to %u allowed)", what,
		    *count, MIG_ZERO_RANGES_MAX));
	if (len != MIG_ZERO_RANGES_HDR_LEN +
	    (size_t)*count * MIG_ZERO_RANGE_LEN)
		return (reject(msg, msglen, EPROTO,
		    "%s message is %zu bytes but its %u ranges need %zu", what,
		    len, *count, MIG_ZERO_RANGES_HDR_LEN +
		    (size_t)*count * MIG_ZERO_RANGE_LEN));
	if (*id >= nids)
		return (reject(msg, msglen, EPROTO, "%s names %s %u of %u",
		    what, owner, *id, nids));
	n = units(vi, *id);
	next = 0;
	for (i = 0; i < *count; i++) {
		r[i].first = mig_get64(&c);
		r[i].npages = mig_get64(&c);
		if (r[i].npages == 0 || r[i].first < next || r[i].first > n ||
		    r[i].npages > n - r[i].first)
			return (reject(msg, msglen, EPROTO,
			    "%s entry %u (%s %ju+%ju) is empty, out of order "
			    "or beyond the %s's %ju %s", what, i, unit,
			    (uintmax_t)r[i].first, (uintmax_t)r[i].npages,
			    owner, (uintmax_t)n, unit));
		next = r[i].first + r[i].npages;
	}
	return (0);
}

static uint64_t
seg_pages(const struct mig_vminfo *vi, uint32_t seg)
{

	return (vi->segs[seg].len / MIG_PAGE_SIZE);
}

static uint64_t
disk_blocks(const struct mig_vminfo *vi, uint32_t disk)
{

	return (mig_disk_nblocks(&vi->disks[disk]));
}

size_t
mig_zero_ranges_encode(void *buf, size_t len, const struct mig_zero_ranges *z)
{

	return (ranges_encode(buf, len, z->seg, z->count, z->r));
}

int
mig_zero_ranges_decode(void *buf, size_t len, const struct mig_vminfo *vi,
    struct mig_zero_ranges *z, char *msg, size_t msglen)
{

	return (ranges_decode(buf, len, "ZERO_RANGES", "memory segment",
	    "pages", vi->nsegs, seg_pages, vi, &z->seg, &z->count, z->r, msg,
	    msglen));
}

int
mig_owed_decode(void *buf, size_t len, const struct mig_vminfo *vi,
    struct mig_zero_ranges *z, char *msg, size_t msglen)
{

	return (ranges_decode(buf, len, "OWED", "memory segment", "pages",
	    vi->nsegs, seg_pages, vi, &z->seg, &z->count, z->r, msg, msglen));
}

uint64_t
mig_disk_nblocks(const struct mig_disk *d)
{

	return ((d->size + d->block_size - 1) / d->block_size);
}

uint32_t
mig_disk_block_len(const struct mig_disk *d, uint64_t block)
{
	uint64_t end;

	end = (block + 1) * d->block_size;
	return (end <= d->size ? d->block_size :
	    (uint32_t)(d->size - block * d->block_size));
}

uint32_t
mig_disk_blocks_per_msg(uint32_t block_size)
{
	uint32_t n;

	n = MIG_DISK_DATA_MAX / block_size;
	return (n < MIG_PAGES_PER_MSG ? n : MIG_PAGES_PER_MSG);
}

size_t
mig_disk_blocks_encode(void *buf, size_t len, const struct mig_disk_blocks *b)
{
	struct mig_cursor c;
	uint32_t i;

	if (b->count > MIG_PAGES_PER_MSG)
		return (0);
	mig_cursor_init(&c, buf, len);
	mig_put32(&c, b->disk);
	mig_put32(&c, b->count);
	for (i = 0; i < b->count; i++)
		mig_put64(&c, b->idx[i]);
	return (cursor_result(&c));
}

int
mig_disk_blocks_decode(void *buf, size_t len, const struct mig_vminfo *vi,
    struct mig_disk_blocks *b, char *msg, size_t msglen)
{
	const struct mig_disk *d;
	struct mig_cursor c;
	uint64_t block, data, nblocks, prev;
	uint32_t i, max;

	mig_cursor_init(&c, buf, len);
	b->disk = mig_get32(&c);
	b->count = mig_get32(&c);
	if (c.overflow)
		return (reject(msg, msglen, EPROTO,
		    "DISK_BLOCKS message is truncated (%zu bytes)", len));
	if (b->disk >= vi->ndisks)
		return (reject(msg, msglen, EPROTO,
		    "DISK_BLOCKS names disk %u of %u", b->disk, vi->ndisks));
	d = &vi->disks[b->disk];
	max = mig_disk_blocks_per_msg(d->block_size);
	if (b->count == 0 || b->count > max)
		return (reject(msg, msglen, EPROTO,
		    "DISK_BLOCKS message carries %u blocks (1 to %u allowed)",
		    b->count, max));
	if (len < MIG_DISK_BLOCKS_HDR_LEN + 8 * (size_t)b->count)
		return (reject(msg, msglen, EPROTO,
		    "DISK_BLOCKS message of %zu bytes is too short for %u "
		    "indices", len, b->count));
	nblocks = mig_disk_nblocks(d);
	data = 0;
	prev = 0;
	b->ndata = 0;
	for (i = 0; i < b->count; i++) {
		b->idx[i] = mig_get64(&c);
		block = b->idx[i] & ~MIG_BLOCK_ZERO;
		if (block >= nblocks)
			return (reject(msg, msglen, EPROTO,
			    "DISK_BLOCKS entry %u names block %ju, beyond the "
			    "disk's %ju blocks", i, (uintmax_t)block,
			    (uintmax_t)nblocks));
		/* As PAGES: one tagged frame writes a block once. */
		if (i > 0 && block <= prev)
			return (reject(msg, msglen, EPROTO,
			    "DISK_BLOCKS entry %u names block %ju, not after "
			    "the previous entry's block %ju", i,
			    (uintmax_t)block, (uintmax_t)prev));
		prev = block;
		if ((b->idx[i] & MIG_BLOCK_ZERO) == 0) {
			data += mig_disk_block_len(d, block);
			b->ndata++;
		}
	}
	if (data != len - c.off)
		return (reject(msg, msglen, EPROTO,
		    "DISK_BLOCKS message has %zu data bytes but its %u data "
		    "blocks need %ju", len - c.off, b->ndata,
		    (uintmax_t)data));
	b->data = c.p + c.off;
	return (0);
}

size_t
mig_disk_zero_encode(void *buf, size_t len, const struct mig_disk_zero *z)
{

	return (ranges_encode(buf, len, z->disk, z->count, z->r));
}

int
mig_disk_zero_decode(void *buf, size_t len, const struct mig_vminfo *vi,
    struct mig_disk_zero *z, char *msg, size_t msglen)
{

	return (ranges_decode(buf, len, "DISK_ZERO", "disk", "blocks",
	    vi->ndisks, disk_blocks, vi, &z->disk, &z->count, z->r, msg,
	    msglen));
}

size_t
mig_streams_encode(void *buf, size_t len, uint32_t nstreams)
{
	struct mig_cursor c;

	mig_cursor_init(&c, buf, len);
	mig_put32(&c, nstreams);
	return (cursor_result(&c));
}

int
mig_streams_decode(void *buf, size_t len, uint32_t *nstreams, char *msg,
    size_t msglen)
{
	struct mig_cursor c;
	int error;

	mig_cursor_init(&c, buf, len);
	*nstreams = mig_get32(&c);
	if ((error = cursor_done(&c, "STREAMS", msg, msglen)) != 0)
		return (error);
	if (*nstreams < 2 || *nstreams > MIG_STREAMS_MAX)
		return (reject(msg, msglen, EPROTO, "STREAMS announces %u "
		    "streams, not 2 to %d", *nstreams, MIG_STREAMS_MAX));
	return (0);
}

size_t
mig_join_encode(void *buf, size_t len, const struct mig_join *j)
{
	struct mig_cursor c;

	mig_cursor_init(&c, buf, len);
	mig_put32(&c, j->index);
	mig_put32(&c, j->nstreams);
	mig_putbytes(&c, j->session, sizeof(j->session));
	mig_putbytes(&c, j->proof, sizeof(j->proof));
	return (cursor_result(&c));
}

int
mig_join_decode(void *buf, size_t len, struct mig_join *j, char *msg,
    size_t msglen)
{
	struct mig_cursor c;
	int error;

	mig_cursor_init(&c, buf, len);
	j->index = mig_get32(&c);
	j->nstreams = mig_get32(&c);
	mig_getbytes(&c, j->session, sizeof(j->session));
	mig_getbytes(&c, j->proof, sizeof(j->proof));
	if ((error = cursor_done(&c, "JOIN", msg, msglen)) != 0)
		return (error);
	if (j->nstreams < 2 || j->nstreams > MIG_STREAMS_MAX)
		return (reject(msg, msglen, EPROTO, "JOIN names %u streams, "
		    "not 2 to %d", j->nstreams, MIG_STREAMS_MAX));
	if (j->index == 0 || j->index >= j->nstreams)
		return (reject(msg, msglen, EPROTO, "JOIN names stream %u of "
		    "%u", j->index, j->nstreams));
	return (0);
}
