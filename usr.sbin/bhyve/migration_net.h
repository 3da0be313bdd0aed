/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Socket I/O for the migration stream: whole reads and writes with the
 * socket's timeouts, and the optional bandwidth limit.  Errors are errno
 * values: ETIMEDOUT when the peer stopped answering, ECONNRESET when it
 * closed the connection.
 */

#ifndef _MIGRATION_NET_H_
#define	_MIGRATION_NET_H_

#include <sys/types.h>
#include <sys/uio.h>

#include <stddef.h>
#include <stdint.h>

struct mig_ratelimit {
	uint64_t	rate;		/* bytes/s; 0: unlimited */
	uint64_t	start_us;
	uint64_t	bytes;
};

uint64_t mig_now_us(void);
/*
 * The kernel's measure of a TCP connection's round trip; ENOPROTOOPT
 * (or another errno value) on a socket that is not TCP, ENOENT before a
 * measure exists.
 */
int	mig_socket_rtt(int fd, uint64_t *rtt_us);
/* Set both directions' socket timeouts. */
int	mig_socket_timeout(int fd, uint32_t timeout_ms);

/* Paced by rl when it has a rate; rl may be NULL. */
int	mig_writev_full(int fd, struct iovec *iov, int iovcnt,
	    struct mig_ratelimit *rl);
int	mig_readv_full(int fd, struct iovec *iov, int iovcnt);
int	mig_read_full(int fd, void *buf, size_t len);

void	mig_ratelimit_init(struct mig_ratelimit *, uint64_t rate);
/* Account for bytes just sent; sleep to keep under the rate. */
void	mig_ratelimit_charge(struct mig_ratelimit *, size_t bytes);

#endif /* _MIGRATION_NET_H_ */
