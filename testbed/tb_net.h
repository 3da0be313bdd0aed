/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/* HOST:PORT addresses, IPv4 and IPv6, literals or names. */

#ifndef _TB_NET_H_
#define	_TB_NET_H_

#include <stddef.h>

#define	TB_HOST_MAX	256	/* as MAXHOSTNAMELEN */
#define	TB_PORT_MAX	8

/*
 * Split "host:port", "[v6addr]:port" or "host" (port defport) into its
 * parts, as mig_hostport_split() does but with a host, a numeric port
 * and brackets around an IPv6 address required.  On error msg says what
 * is wrong.
 */
int	tb_net_split(const char *, int defport, char *host, char *port,
	    char *msg, size_t msglen);
/*
 * Bind a UDP socket to the address (the probe's; the migration listener
 * is migration_dest_listen.c's) and return it with the numeric host and
 * port actually bound.
 */
int	tb_net_bind_udp(const char *addr, int *fd, char *host, char *port,
	    char *msg, size_t msglen);
/* Connect a TCP socket, giving up after timeout_ms per address. */
int	tb_net_connect(const char *addr, int timeout_ms, int *fd, char *msg,
	    size_t msglen);

#endif /* _TB_NET_H_ */
