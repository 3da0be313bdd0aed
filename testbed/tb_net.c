/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <sys/socket.h>

#include <netinet/in.h>

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migration.h"

#include "tb_net.h"

int
tb_net_split(const char *s, int defport, char *host, char *port, char *msg,
    size_t msglen)
{
	char why[128];
	int error;

	/* "::1:5000" could be either; bhyve guesses, the tests must not. */
	if (s[0] != '[' && strchr(s, ':') != strrchr(s, ':')) {
		snprintf(msg, msglen, "'%s': write an IPv6 address as "
		    "[address]:port", s);
		return (EINVAL);
	}
	error = mig_hostport_split(s, defport, host, TB_HOST_MAX, port,
	    TB_PORT_MAX, why, sizeof(why));
	if (error == 0 && host[0] == '\0') {
		snprintf(why, sizeof(why), "missing host name");
		error = EINVAL;
	}
	/* resolve() asks for a numeric port: refuse a service name here. */
	if (error == 0 && (strspn(port, "0123456789") != strlen(port) ||
	    atoi(port) > 65535)) {
		snprintf(why, sizeof(why), "'%s' is not a port number", port);
		error = EINVAL;
	}
	if (error != 0)
		snprintf(msg, msglen, "'%s': %s", s, why);
	return (error);
}

static int
resolve(const char *addr, int type, int flags, struct addrinfo **res,
    char *msg, size_t msglen)
{
	char host[TB_HOST_MAX], port[TB_PORT_MAX];
	struct addrinfo hints;
	int error;

	error = tb_net_split(addr, MIG_DEFAULT_PORT, host, port, msg, msglen);
	if (error != 0)
		return (error);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = type;
	hints.ai_flags = flags | AI_NUMERICSERV;
	error = getaddrinfo(host, port, &hints, res);
	if (error != 0) {
		snprintf(msg, msglen, "%s: %s", host, gai_strerror(error));
		return (EHOSTUNREACH);
	}
	return (0);
}

int
tb_net_bind_udp(const char *addr, int *fdp, char *host, char *port,
    char *msg, size_t msglen)
{
	struct sockaddr_storage ss;
	struct addrinfo *res, *ai;
	socklen_t sslen;
	int error, fd, on;

	error = resolve(addr, SOCK_DGRAM, AI_PASSIVE, &res, msg, msglen);
	if (error != 0)
		return (error);
	fd = -1;
	error = EADDRNOTAVAIL;
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
		    ai->ai_protocol);
		if (fd < 0) {
			error = errno;
			continue;
		}
		on = 1;
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on,
		    sizeof(on));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		error = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(msg, msglen, "cannot bind %s: %s", addr,
		    strerror(error));
		return (error);
	}
	sslen = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) != 0 ||
	    getnameinfo((struct sockaddr *)&ss, sslen, host, TB_HOST_MAX,
	    port, TB_PORT_MAX, NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		error = errno != 0 ? errno : EINVAL;
		snprintf(msg, msglen, "%s: cannot read the bound address",
		    addr);
		close(fd);
		return (error);
	}
	*fdp = fd;
	return (0);
}

int
tb_net_connect(const char *addr, int timeout_ms, int *fdp, char *msg,
    size_t msglen)
{
	struct addrinfo *res, *ai;
	int error;

	error = resolve(addr, SOCK_STREAM, 0, &res, msg, msglen);
	if (error != 0)
		return (error);
	error = EADDRNOTAVAIL;
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		error = mig_connect(ai, timeout_ms, fdp);
		if (error == 0)
			break;
	}
	freeaddrinfo(res);
	if (error != 0)
		snprintf(msg, msglen, "cannot connect to %s: %s", addr,
		    strerror(error));
	return (error);
}
