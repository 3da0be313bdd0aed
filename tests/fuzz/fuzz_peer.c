/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <sys/socket.h>
#include <sys/uio.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_guest.h"
#include "fuzz_peer.h"
#include "migration_internal.h"
#include "migration_wire.h"

void	*__real_malloc(size_t);
void	*__wrap_malloc(size_t);

/* Set in the destination's thread while it runs. */
static _Thread_local bool tracking;
static size_t largest;

void *
__wrap_malloc(size_t size)
{

	if (tracking && size > largest)
		largest = size;
	return (__real_malloc(size));
}

struct source {
	int		fd;
	const uint8_t	*data;
	size_t		len;
	bool		authenticated;
};

static int
write_raw(int fd, const struct iovec *parts, int nparts)
{
	struct iovec iov[2];

	memcpy(iov, parts, sizeof(*parts) * nparts);
	return (mig_writev_full(fd, iov, nparts, NULL));
}

/* One record as a frame, sealed by the channel, or raw. */
static int
send_record(struct mig_chan *ch, const struct fuzz_rec *r, uint8_t *fill)
{
	struct iovec parts[2];
	int n;

	n = 0;
	if (r->len > 0) {
		parts[n].iov_base = (void *)(uintptr_t)r->bytes;
		parts[n++].iov_len = r->len;
	}
	if (r->npad > 0) {
		parts[n].iov_base = fill;
		parts[n++].iov_len = (size_t)r->npad * MIG_PAGE_SIZE;
	}
	if ((r->type & FUZZ_REC_RAW) != 0)
		return (n > 0 ? write_raw(ch->fd, parts, n) : 0);
	return (mig_chan_sendv(ch, r->type, parts, n));
}

static void *
source_main(void *arg)
{
	struct source *s = arg;
	struct mig_chan ch;
	struct mig_error err;
	struct mig_params p;
	struct mig_vminfo vi;
	struct fuzz_rec r;
	const uint8_t *in;
	uint8_t *fill, buf[8192];
	uint64_t rtt;
	uint32_t version;
	size_t left, len;
	bool first;
	int error;

	in = s->data;
	left = s->len;
	fill = malloc((size_t)UINT8_MAX * MIG_PAGE_SIZE);
	if (fill == NULL || mig_chan_init(&ch, s->fd, MIG_ROLE_SOURCE, 0) != 0)
		abort();
	memset(fill, FUZZ_FILL, (size_t)UINT8_MAX * MIG_PAGE_SIZE);
	if (!s->authenticated) {
		if (left > 0)
			(void)mig_writev_full(s->fd, &(struct iovec){
			    (void *)(uintptr_t)in, left }, 1, NULL);
		goto out;
	}
	fuzz_guest_params(&p);
	memset(&err, 0, sizeof(err));
	if (mig_handshake(&ch, &p, false, &version, &rtt, &err) != 0) {
		fprintf(stderr, "fuzz: the harness's handshake failed: %s\n",
		    err.msg);
		abort();
	}
	/* The guest's description first, unless the input gives its own. */
	first = true;
	while (fuzz_rec_next(&in, &left, &r)) {
		if (first && r.type != MIG_MSG_VMINFO) {
			fuzz_guest_vminfo(&vi);
			len = mig_vminfo_encode(buf, sizeof(buf), &vi);
			if (len == 0 || mig_chan_send(&ch, MIG_MSG_VMINFO, buf,
			    len) != 0)
				break;
		}
		first = false;
		/* A frame too large to send is skipped; a closed peer ends. */
		error = send_record(&ch, &r, fill);
		if (error != 0 && error != EMSGSIZE)
			break;
	}
out:
	(void)shutdown(s->fd, SHUT_WR);
	mig_chan_destroy(&ch);
	free(fill);
	return (NULL);
}

void
fuzz_session(const uint8_t *data, size_t len, bool authenticated,
    struct fuzz_outcome *o)
{
	static struct mig_stats st;
	struct mig_params p;
	struct mig_vminfo vi;
	struct mig_conn *c;
	struct mig_error err;
	struct source s;
	pthread_t tid;
	int fds[2];

	memset(o, 0, sizeof(*o));
	if (st.rounds == NULL && mig_stats_init(&st) != 0)
		abort();
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
		abort();
	s.fd = fds[1];
	s.data = data;
	s.len = len;
	s.authenticated = authenticated;
	if (pthread_create(&tid, NULL, source_main, &s) != 0)
		abort();
	fuzz_guest_params(&p);
	largest = 0;
	tracking = true;
	o->accept_error = mig_recv_accept(fds[0], &p, NULL, &c, &vi, &o->err);
	if (o->accept_error == 0) {
		o->run_error = mig_recv_run(c, fuzz_guest_backend(), &st,
		    &o->err);
		if (o->run_error == 0 && !mig_conn_check_only(c)) {
			o->finish_error = mig_recv_finish(c, &err);
			o->running = o->finish_error == 0;
		}
		mig_conn_free(c);
	}
	tracking = false;
	o->largest_malloc = largest;
	/* The source's writes fail now rather than wait for a reader. */
	(void)close(fds[0]);
	(void)pthread_join(tid, NULL);
	(void)close(fds[1]);
}

void
fuzz_session_report(const char *target, const struct fuzz_outcome *o)
{

	if (getenv("FUZZ_VERBOSE") == NULL)
		return;
	fprintf(stderr, "%s: accept %d run %d finish %d running %s largest "
	    "malloc %zu: %s\n", target, o->accept_error, o->run_error,
	    o->finish_error, o->running ? "yes" : "no", o->largest_malloc,
	    o->err.msg);
}
