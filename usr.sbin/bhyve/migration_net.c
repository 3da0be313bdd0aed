/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "migration.h"
#include "migration_net.h"

/* A black-holed link is noticed after about idle + intvl * cnt seconds. */
#define	MIG_KEEPIDLE_S	5
#define	MIG_KEEPINTVL_S	2
#define	MIG_KEEPCNT	3
/* iovecs per call: a whole PAGES frame (MIG_MAX_PARTS and more) in one. */
#define	MIG_IOV_BATCH	IOV_MAX
#define	MIG_RATE_SLACK_US	50000
#define	MIG_PACE_MIN		4096	/* bytes per paced write, at least */

uint64_t
mig_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000);
}

static int
set_int_opt(int fd, int level, int name, int value)
{
	return (setsockopt(fd, level, name, &value, sizeof(value)) == 0 ?
	    0 : errno);
}

/*
 * The kernel's smoothed round-trip time of a TCP connection: timed from
 * the SYN and the data segments to the peer kernel's acknowledgements,
 * which no process on the peer can hold back.
 */
int
mig_socket_rtt(int fd, uint64_t *rtt_us)
{
	struct tcp_info ti;
	socklen_t len;

	len = sizeof(ti);
	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
		return (errno);
	if (ti.tcpi_rtt == 0)
		return (ENOENT);
	*rtt_us = ti.tcpi_rtt;
	return (0);
}

int
mig_socket_timeout(int fd, uint32_t timeout_ms)
{
	struct timeval tv;

	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)
		return (errno);
	return (0);
}

int
mig_socket_setup(int fd, uint32_t io_timeout_ms)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	int error;

	if ((error = mig_socket_timeout(fd, io_timeout_ms)) != 0)
		return (error);
	sslen = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) != 0)
		return (errno);
	if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)
		return (0);	/* a socketpair in tests: no TCP options */
	if ((error = set_int_opt(fd, SOL_SOCKET, SO_KEEPALIVE, 1)) != 0 ||
	    (error = set_int_opt(fd, IPPROTO_TCP, TCP_KEEPIDLE,
	    MIG_KEEPIDLE_S)) != 0 ||
	    (error = set_int_opt(fd, IPPROTO_TCP, TCP_KEEPINTVL,
	    MIG_KEEPINTVL_S)) != 0 ||
	    (error = set_int_opt(fd, IPPROTO_TCP, TCP_KEEPCNT,
	    MIG_KEEPCNT)) != 0 ||
	    (error = set_int_opt(fd, IPPROTO_TCP, TCP_NODELAY, 1)) != 0)
		return (error);
	/*
	 * Buffer sizes are left to the kernel: setting SO_SNDBUF or
	 * SO_RCVBUF turns their auto-tuning off (Linux and FreeBSD), and
	 * a fixed 4 MiB measured slower than auto-tuning on loopback.
	 */
	return (0);
}

/*
 * A non-blocking connect bounded by poll(), so that a black-holed
 * destination fails in timeout_ms rather than after the kernel's
 * minutes of SYN retries.
 */
int
mig_connect(const struct addrinfo *ai, int timeout_ms, int *fdp)
{
	struct pollfd pfd;
	socklen_t len;
	int error, fd, flags, n;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
	    ai->ai_protocol);
	if (fd < 0)
		return (errno);
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		goto fail;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		if (errno != EINPROGRESS)
			goto fail;
		pfd.fd = fd;
		pfd.events = POLLOUT;
		n = poll(&pfd, 1, timeout_ms);
		if (n == 0)
			errno = ETIMEDOUT;
		if (n <= 0)
			goto fail;
		len = sizeof(error);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0)
			goto fail;
		if (error != 0) {
			errno = error;
			goto fail;
		}
	}
	if (fcntl(fd, F_SETFL, flags) < 0)
		goto fail;
	*fdp = fd;
	return (0);
fail:
	error = errno;
	close(fd);
	return (error);
}

static int
io_errno(int error)
{
	if (error == EAGAIN || error == EWOULDBLOCK)
		return (ETIMEDOUT);
	if (error == EPIPE)
		return (ECONNRESET);
	return (error);
}

/*
 * SO_RCVTIMEO and SO_SNDTIMEO bound one call, so a peer that moves a byte
 * now and then would restart them for ever.  A transfer gets the socket's
 * timeout once, as a deadline: before each further call the option is
 * shortened to what is left, and restored when the transfer ends.
 */
struct io_deadline {
	int		opt;
	uint64_t	start_us;
	bool		read;		/* saved holds the socket's timeout */
	bool		shortened;
	struct timeval	saved;
};

static void
io_deadline_start(struct io_deadline *dl, int opt)
{

	dl->opt = opt;
	dl->start_us = mig_now_us();
	dl->read = false;
	dl->shortened = false;
}

/* What is left of the deadline, in us; UINT64_MAX without a timeout. */
static int
io_deadline_left(int fd, struct io_deadline *dl, uint64_t *left_us)
{
	socklen_t len;
	uint64_t limit, spent;

	*left_us = 0;
	if (!dl->read) {
		len = sizeof(dl->saved);
		if (getsockopt(fd, SOL_SOCKET, dl->opt, &dl->saved,
		    &len) != 0)
			return (errno);
		dl->read = true;
	}
	limit = (uint64_t)dl->saved.tv_sec * 1000000 +
	    (uint64_t)dl->saved.tv_usec;
	if (limit == 0) {
		*left_us = UINT64_MAX;	/* no timeout on this socket */
		return (0);
	}
	spent = mig_now_us() - dl->start_us;
	if (spent >= limit)
		return (ETIMEDOUT);
	*left_us = limit - spent;
	return (0);
}

static int
io_deadline_next(int fd, struct io_deadline *dl)
{
	struct timeval tv;
	uint64_t left;
	int error;

	if ((error = io_deadline_left(fd, dl, &left)) != 0)
		return (error);
	if (left == UINT64_MAX)
		return (0);
	tv.tv_sec = (time_t)(left / 1000000);
	tv.tv_usec = (suseconds_t)(left % 1000000);
	if (setsockopt(fd, SOL_SOCKET, dl->opt, &tv, sizeof(tv)) != 0)
		return (errno);
	dl->shortened = true;
	return (0);
}

static int
io_deadline_end(int fd, struct io_deadline *dl, int error)
{

	if (dl->shortened)
		(void)setsockopt(fd, SOL_SOCKET, dl->opt, &dl->saved,
		    sizeof(dl->saved));
	return (error);
}

/* Advance an iovec array past n bytes already transferred. */
static void
iov_advance(struct iovec **iovp, int *iovcnt, size_t n)
{
	struct iovec *iov = *iovp;

	while (*iovcnt > 0 && n >= iov->iov_len) {
		n -= iov->iov_len;
		iov++;
		(*iovcnt)--;
	}
	if (*iovcnt > 0) {
		iov->iov_base = (char *)iov->iov_base + n;
		iov->iov_len -= n;
	}
	*iovp = iov;
}

/*
 * Write all of iov.  With a rate limit, write in pieces of a twentieth of
 * a second's worth and pace each: a whole 1 MiB frame and then a long
 * sleep would starve the reader's timeout at low rates.
 */
int
mig_writev_full(int fd, struct iovec *iov, int iovcnt,
    struct mig_ratelimit *rl)
{
	struct io_deadline dl;
	struct msghdr mh;
	size_t budget, saved, total;
	ssize_t n;
	bool first;
	int cnt, error, k, trimmed;

	budget = 0;
	if (rl != NULL && rl->rate != 0)
		budget = rl->rate / 20 > MIG_PACE_MIN ? rl->rate / 20 :
		    MIG_PACE_MIN;
	io_deadline_start(&dl, SO_SNDTIMEO);
	for (first = true; iovcnt > 0; first = false) {
		if (!first && (error = io_deadline_next(fd, &dl)) != 0)
			return (io_deadline_end(fd, &dl, error));
		cnt = iovcnt < MIG_IOV_BATCH ? iovcnt : MIG_IOV_BATCH;
		trimmed = -1;
		saved = 0;
		if (budget != 0) {
			total = 0;
			for (k = 0; k < cnt; k++) {
				if (total + iov[k].iov_len > budget) {
					trimmed = k;
					saved = iov[k].iov_len;
					iov[k].iov_len = budget - total;
					cnt = k + 1;
					break;
				}
				total += iov[k].iov_len;
			}
		}
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = iov;
		mh.msg_iovlen = cnt;
		n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (trimmed >= 0)
			iov[trimmed].iov_len = saved;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return (io_deadline_end(fd, &dl, io_errno(errno)));
		}
		iov_advance(&iov, &iovcnt, (size_t)n);
		if (budget != 0)
			mig_ratelimit_charge(rl, (size_t)n);
	}
	return (io_deadline_end(fd, &dl, 0));
}

/*
 * A large read waits until MIG_RCVLOWAT_MAX bytes are queued rather than
 * waking per segment the kernel receives: each wakeup of a sleeping
 * reader costs the sender an interprocessor wakeup.  The wait is poll's,
 * before the read takes anything: a blocking read that took part of the
 * queue would then wait for the low-water mark in full, more than a
 * frame's last bytes may come to.  The mark never exceeds what is left.
 */
#define	MIG_RCVLOWAT_MIN	(64 * 1024)
#define	MIG_RCVLOWAT_MAX	(512 * 1024)

/* *asked: the mark last asked for, so an unchanged one costs no call. */
static void
set_rcvlowat(int fd, int want, int *asked)
{
	socklen_t len;
	int mark, rcvbuf;

	if (want == *asked)
		return;
	*asked = want;
	/*
	 * Within half the receive buffer: FreeBSD clamps the mark to the
	 * buffer, which window rules may keep from ever filling.
	 */
	mark = want;
	len = sizeof(rcvbuf);
	if (mark > 1 && getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf,
	    &len) == 0 && mark > rcvbuf / 2)
		mark = rcvbuf / 2 > 1 ? rcvbuf / 2 : 1;
	/* Only a hint: without it, reads wake more often. */
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &mark, sizeof(mark));
}

/* Until lowat bytes are queued (or the peer closed), within the deadline. */
static int
wait_queued(int fd, struct io_deadline *dl)
{
	struct pollfd pfd;
	uint64_t left;
	int error, n;

	if ((error = io_deadline_left(fd, dl, &left)) != 0)
		return (error);
	pfd.fd = fd;
	pfd.events = POLLIN;
	n = poll(&pfd, 1, left == UINT64_MAX ? -1 :
	    (int)(left / 1000 < INT_MAX ? (left + 999) / 1000 : INT_MAX));
	if (n < 0)
		return (errno == EINTR ? 0 : errno);
	return (n == 0 ? ETIMEDOUT : 0);
}

static size_t
iov_total(const struct iovec *iov, int iovcnt)
{
	size_t len;
	int i;

	len = 0;
	for (i = 0; i < iovcnt; i++)
		len += iov[i].iov_len;
	return (len);
}

int
mig_readv_full(int fd, struct iovec *iov, int iovcnt)
{
	struct io_deadline dl;
	struct msghdr mh;
	size_t left;
	ssize_t n;
	bool first, large;
	int error, lowat;

	iov_advance(&iov, &iovcnt, 0);
	io_deadline_start(&dl, SO_RCVTIMEO);
	left = iov_total(iov, iovcnt);
	lowat = 1;
	error = 0;
	for (first = true; iovcnt > 0; first = false) {
		large = left >= MIG_RCVLOWAT_MIN;
		set_rcvlowat(fd, large ? (int)(left < MIG_RCVLOWAT_MAX ? left :
		    MIG_RCVLOWAT_MAX) : 1, &lowat);
		if (large)
			error = wait_queued(fd, &dl);
		else if (!first)
			error = io_deadline_next(fd, &dl);
		if (error != 0)
			break;
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = iov;
		mh.msg_iovlen = iovcnt < MIG_IOV_BATCH ? iovcnt : MIG_IOV_BATCH;
		n = recvmsg(fd, &mh, large ? MSG_DONTWAIT : MSG_WAITALL);
		if (n < 0) {
			if (errno == EINTR || (large && errno == EAGAIN))
				continue;
			error = io_errno(errno);
			break;
		}
		if (n == 0) {
			error = ECONNRESET;
			break;
		}
		iov_advance(&iov, &iovcnt, (size_t)n);
		left -= (size_t)n;
	}
	set_rcvlowat(fd, 1, &lowat);
	return (io_deadline_end(fd, &dl, error));
}

int
mig_read_full(int fd, void *buf, size_t len)
{
	struct iovec iov;

	if (len == 0)
		return (0);
	iov.iov_base = buf;
	iov.iov_len = len;
	return (mig_readv_full(fd, &iov, 1));
}

void
mig_ratelimit_init(struct mig_ratelimit *rl, uint64_t rate)
{
	rl->rate = rate;
	rl->start_us = mig_now_us();
	rl->bytes = 0;
}

void
mig_ratelimit_charge(struct mig_ratelimit *rl, size_t bytes)
{
	struct timespec ts;
	uint64_t due_us, now;

	if (rl->rate == 0)
		return;
	now = mig_now_us();
	due_us = rl->start_us + rl->bytes * 1000000 / rl->rate;
	if (now > due_us + MIG_RATE_SLACK_US) {
		/* Idle time earns no burst beyond the slack. */
		rl->start_us = now - MIG_RATE_SLACK_US;
		rl->bytes = 0;
	}
	rl->bytes += bytes;
	due_us = rl->start_us + rl->bytes * 1000000 / rl->rate;
	if (due_us > now) {
		ts.tv_sec = (due_us - now) / 1000000;
		ts.tv_nsec = ((due_us - now) % 1000000) * 1000;
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
	}
}
