/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <sys/socket.h>

#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migration.h"

#include "tb_net.h"

int
tb_net_split(const char *s, const char *defport, char *host, char *port,
    char *msg, size_t msglen)
{
	const char *colon, *hend, *p;

	if (s[0] == '[') {
		hend = strchr(s, ']');
		if (hend == NULL) {
			snprintf(msg, msglen, "'%s': missing ']'", s);
			return (EINVAL);
		}
		colon = hend[1] == ':' ? hend + 1 : NULL;
		if (hend[1] != '\0' && colon == NULL) {
			snprintf(msg, msglen, "'%s': expected ':' after ']'",
			    s);
			return (EINVAL);
		}
		s++;
	} else {
		colon = strchr(s, ':');
		if (colon != NULL && strchr(colon + 1, ':') != NULL) {
			snprintf(msg, msglen, "'%s': write an IPv6 address "
			    "as [address]:port", s);
			return (EINVAL);
		}
		hend = colon != NULL ? colon : s + strlen(s);
	}
	if (hend == s || (size_t)(hend - s) >= TB_HOST_MAX) {
		snprintf(msg, msglen, "'%s': %s host name", s,
		    hend == s ? "missing" : "overlong");
		return (EINVAL);
	}
	memcpy(host, s, (size_t)(hend - s));
	host[hend - s] = '\0';
	p = colon != NULL ? colon + 1 : defport;
	if (*p == '\0' || strlen(p) >= TB_PORT_MAX ||
	    strspn(p, "0123456789") != strlen(p) || atoi(p) > 65535) {
		snprintf(msg, msglen, "'%s': '%s' is not a port number", s, p);
		return (EINVAL);
	}
	strcpy(port, p);
	return (0);
}

static int
resolve(const char *addr, int type, int flags, struct addrinfo **res,
    char *msg, size_t msglen)
{
	char host[TB_HOST_MAX], port[TB_PORT_MAX], dport[TB_PORT_MAX];
	struct addrinfo hints;
	int error;

	snprintf(dport, sizeof(dport), "%d", MIG_DEFAULT_PORT);
	error = tb_net_split(addr, dport, host, port, msg, msglen);
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
tb_net_bind(const char *addr, int type, int *fdp, char *host, char *port,
    char *msg, size_t msglen)
{
	struct sockaddr_storage ss;
	struct addrinfo *res, *ai;
	socklen_t sslen;
	int error, fd, on;

	error = resolve(addr, type, AI_PASSIVE, &res, msg, msglen);
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
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    (type != SOCK_STREAM || listen(fd, 1) == 0))
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

static int
connect_one(const struct addrinfo *ai, int timeout_ms, int *fdp)
{
	struct pollfd pfd;
	socklen_t len;
	int error, fd, flags;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
	    ai->ai_protocol);
	if (fd < 0)
		return (errno);
	flags = fcntl(fd, F_GETFL);
	(void)fcntl(fd, F_SETFL, flags | O_NONBLOCK);
	error = 0;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		if (errno != EINPROGRESS)
			error = errno;
		else {
			pfd.fd = fd;
			pfd.events = POLLOUT;
			if (poll(&pfd, 1, timeout_ms) == 0)
				error = ETIMEDOUT;
			else {
				len = sizeof(error);
				if (getsockopt(fd, SOL_SOCKET, SO_ERROR,
				    &error, &len) != 0)
					error = errno;
			}
		}
	}
	if (error != 0) {
		close(fd);
		return (error);
	}
	(void)fcntl(fd, F_SETFL, flags);
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
		error = connect_one(ai, timeout_ms, fdp);
		if (error == 0)
			break;
	}
	freeaddrinfo(res);
	if (error != 0)
		snprintf(msg, msglen, "cannot connect to %s: %s", addr,
		    strerror(error));
	return (error);
}
