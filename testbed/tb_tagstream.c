/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * tb_tagstream: the benchmark's ceiling for an authenticated stream.  One
 * process writes frames of a 16-byte header, 1 MiB of incompressible
 * data and the engine's tag (mig_aead, as the channel computes it; by
 * default ChaCha20-Poly1305, the suite two current engines agree on) to a
 * loopback TCP connection; a second process reads each frame straight
 * into its memory and checks the tag.  Each side's memory is as large as
 * the stream, up to 1 GiB, so that it comes from and goes to DRAM as a
 * guest's does.  Nothing else runs: no guest, no page scan, no index.
 * With -u the tags are left out, which is raw TCP with the engine's frame
 * size; -x spoils the first frame's tag, which the reader must refuse (a
 * test).  Before the stream, the tag alone is timed on one core over the
 * same data.  Prints one JSON line:
 *
 *	{"stream_mb_s": X, "tag_mb_s": Y, "bytes": N, "tagged": B,
 *	    "suite": "..."}
 *
 * Exit status 0, 1 if the stream failed (a tag did not check out), 64 on
 * a usage error.
 */

#include <sys/types.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include <netinet/in.h>

#include <err.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "migration_crypto.h"
#include "migration_net.h"
#include "migration_wire.h"

#define	FRAME_DATA	(1U << 20)	/* as the engine's PAGES frames */
#define	FRAME_HDR	16
/*
 * Memory each side cycles through: as much as the bench's guest, so the
 * data comes from and goes to DRAM as the engine's does, not a cache.
 */
#define	WINDOW_MAX	(1ULL << 30)
#define	TAG_PASS_BYTES	(256ULL << 20)

struct stream_opts {
	uint64_t	bytes;
	uint64_t	window;		/* bytes, at most WINDOW_MAX */
	enum mig_suite	suite;
	bool		tagged;
	bool		spoil;		/* the first frame's tag */
};

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
}

static uint8_t *
window_map(uint64_t len)
{
	uint8_t *w;

	w = mmap(NULL, len, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (w == MAP_FAILED)
		err(EX_OSERR, "mapping %ju bytes", (uintmax_t)len);
	return (w);
}

/* Incompressible, as the bench's full guest. */
static void
window_fill(uint8_t *w, uint64_t len)
{
	uint64_t x, i;

	x = 0x9e3779b97f4a7c15ULL;
	for (i = 0; i < len / 8; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(w + 8 * i, &x, 8);
	}
}

static void
aead_start(struct mig_aead *a, enum mig_suite suite, bool seal)
{
	uint8_t key[MIG_KEY_LEN];

	memset(key, 0x5a, sizeof(key));
	if (mig_aead_init(a, key, 1, suite, seal) != 0)
		errx(EX_SOFTWARE, "cannot set up %s", mig_suite_name(suite));
}

/*
 * One frame's header and data through the AEAD, which then seals (the
 * writer) or checks (the reader) tag; 0 or an errno.
 */
static int
frame_tag(struct mig_aead *a, const uint8_t *hdr, const uint8_t *data,
    uint8_t tag[MIG_TAG_LEN])
{
	int error;

	if ((error = mig_aead_begin(a, hdr, FRAME_HDR)) != 0 ||
	    (error = mig_aead_update(a, data, NULL, FRAME_DATA)) != 0)
		return (error);
	return (a->seal ? mig_aead_seal(a, tag) : mig_aead_open(a, tag));
}

/* MB/s of the tag alone on this core. */
static double
tag_rate(const uint8_t *w, const struct stream_opts *o)
{
	struct mig_aead a;
	uint8_t hdr[FRAME_HDR], tag[MIG_TAG_LEN];
	uint64_t off;
	double t0;

	memset(hdr, 0, sizeof(hdr));
	aead_start(&a, o->suite, true);
	t0 = now_s();
	for (off = 0; off < TAG_PASS_BYTES; off += FRAME_DATA)
		if (frame_tag(&a, hdr, w + off % o->window, tag) != 0)
			errx(EX_SOFTWARE, "tagging failed");
	mig_aead_free(&a);
	return ((double)TAG_PASS_BYTES / (now_s() - t0) / 1e6);
}

/* The reading process: exit 0 once every frame checked out. */
static void
receive(int fd, const struct stream_opts *o)
{
	struct mig_aead a;
	uint8_t hdr[FRAME_HDR], tag[MIG_TAG_LEN];
	uint8_t *data, *w;
	uint64_t off;
	int error;

	w = window_map(o->window);
	aead_start(&a, o->suite, false);
	/* Mapped and faulted in: the clock may start. */
	if (send(fd, "r", 1, 0) != 1)
		err(1, "telling the writer to start");
	for (off = 0; off < o->bytes; off += FRAME_DATA) {
		data = w + off % o->window;
		if ((error = mig_read_full(fd, hdr, sizeof(hdr))) != 0 ||
		    (error = mig_read_full(fd, data, FRAME_DATA)) != 0 ||
		    (o->tagged &&
		    (error = mig_read_full(fd, tag, sizeof(tag))) != 0))
			errx(1, "reading frame %ju: %s",
			    (uintmax_t)(off / FRAME_DATA), strerror(error));
		if (o->tagged && frame_tag(&a, hdr, data, tag) != 0)
			errx(1, "frame %ju failed its tag check",
			    (uintmax_t)(off / FRAME_DATA));
	}
	mig_aead_free(&a);
	_exit(0);
}

/* The writing process's part; returns once the reader has exited. */
static double
send_stream(int fd, pid_t reader, const uint8_t *w,
    const struct stream_opts *o)
{
	struct mig_aead a;
	struct iovec iov[3];
	uint8_t hdr[FRAME_HDR], tag[MIG_TAG_LEN];
	const uint8_t *data;
	uint64_t off;
	double t0;
	int error, status;
	char ready;

	aead_start(&a, o->suite, true);
	if ((error = mig_read_full(fd, &ready, 1)) != 0)
		errx(1, "waiting for the reader: %s", strerror(error));
	t0 = now_s();
	for (off = 0; off < o->bytes; off += FRAME_DATA) {
		data = w + off % o->window;
		mig_le64enc(hdr, off / FRAME_DATA);
		mig_le64enc(hdr + 8, FRAME_DATA);
		if (o->tagged && frame_tag(&a, hdr, data, tag) != 0)
			errx(EX_SOFTWARE, "tagging failed");
		if (o->spoil && off == 0)
			tag[0] ^= 0x01;
		iov[0].iov_base = hdr;
		iov[0].iov_len = sizeof(hdr);
		iov[1].iov_base = (void *)(uintptr_t)data;
		iov[1].iov_len = FRAME_DATA;
		iov[2].iov_base = tag;
		iov[2].iov_len = sizeof(tag);
		if ((error = mig_writev_full(fd, iov, o->tagged ? 3 : 2,
		    NULL)) != 0)
			errx(1, "writing frame %ju: %s",
			    (uintmax_t)(off / FRAME_DATA), strerror(error));
	}
	if (waitpid(reader, &status, 0) < 0)
		err(EX_OSERR, "waiting for the reader");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		errx(1, "the reader failed");
	mig_aead_free(&a);
	return ((double)o->bytes / (now_s() - t0) / 1e6);
}

static void
connect_pair(int *sender, int *receiver)
{
	struct sockaddr_in sin;
	socklen_t len;
	int ls;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	len = sizeof(sin);
	if ((ls = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
	    bind(ls, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    listen(ls, 1) != 0 ||
	    getsockname(ls, (struct sockaddr *)&sin, &len) != 0 ||
	    (*sender = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
	    connect(*sender, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    (*receiver = accept(ls, NULL, NULL)) < 0)
		err(EX_OSERR, "loopback connection");
	close(ls);
}

static void
usage(void)
{

	fprintf(stderr, "usage: tb_tagstream [-ux] [-s gcm|poly1305] "
	    "[-n MIB]\n");
	exit(EX_USAGE);
}

int
main(int argc, char **argv)
{
	struct stream_opts o;
	uint8_t *w;
	double stream, tags;
	char *end;
	pid_t reader;
	int ch, rfd, sfd;

	o.bytes = 1ULL << 30;
	o.suite = MIG_SUITE_POLY1305_TAG;
	o.tagged = true;
	o.spoil = false;
	while ((ch = getopt(argc, argv, "n:s:ux")) != -1) {
		switch (ch) {
		case 'n':
			errno = 0;
			o.bytes = strtoull(optarg, &end, 10) << 20;
			if (errno != 0 || *end != '\0' || o.bytes == 0 ||
			    o.bytes > (1ULL << 40))
				errx(EX_USAGE, "-n: '%s' is not a size in MiB "
				    "from 1 to 1048576", optarg);
			break;
		case 's':
			if (strcmp(optarg, "gcm") == 0)
				o.suite = MIG_SUITE_GCM_TAG;
			else if (strcmp(optarg, "poly1305") == 0)
				o.suite = MIG_SUITE_POLY1305_TAG;
			else
				errx(EX_USAGE, "-s: '%s' is not gcm or "
				    "poly1305", optarg);
			break;
		case 'u':
			o.tagged = false;
			break;
		case 'x':
			o.spoil = true;
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	if (o.spoil && !o.tagged)
		errx(EX_USAGE, "-x: there is no tag to spoil with -u");
	/* A reader that refused a frame is reported, not a SIGPIPE. */
	signal(SIGPIPE, SIG_IGN);

	o.window = o.bytes < WINDOW_MAX ? o.bytes : WINDOW_MAX;
	w = window_map(o.window);
	window_fill(w, o.window);
	tags = tag_rate(w, &o);
	connect_pair(&sfd, &rfd);
	if ((reader = fork()) < 0)
		err(EX_OSERR, "fork");
	if (reader == 0) {
		close(sfd);
		receive(rfd, &o);
	}
	close(rfd);
	stream = send_stream(sfd, reader, w, &o);
	printf("{\"stream_mb_s\": %.1f, \"tag_mb_s\": %.1f, \"bytes\": %ju, "
	    "\"tagged\": %s, \"suite\": \"%s\"}\n", stream, tags,
	    (uintmax_t)o.bytes, o.tagged ? "true" : "false",
	    mig_suite_name(o.suite));
	return (0);
}
