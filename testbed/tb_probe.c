/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <sys/socket.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migration_wire.h"

#include "tb_net.h"
#include "tb_probe.h"

#define	POLL_MS	100	/* how soon tb_probe_stop() is noticed */

struct tb_probe {
	int		fd;
	pthread_t	thread;
	tb_probe_fn	*fn;
	void		*arg;
	atomic_bool	stop;
};

static void *
probe_main(void *arg)
{
	struct tb_probe *pr = arg;
	struct sockaddr_storage from;
	uint8_t req[512], reply[TB_PROBE_REPLY_LEN];
	struct pollfd pfd;
	socklen_t fromlen;
	uint64_t iterations;
	uint8_t state;
	ssize_t n;

	pfd.fd = pr->fd;
	pfd.events = POLLIN;
	while (!atomic_load(&pr->stop)) {
		if (poll(&pfd, 1, POLL_MS) <= 0)
			continue;
		fromlen = sizeof(from);
		n = recvfrom(pr->fd, req, sizeof(req), 0,
		    (struct sockaddr *)&from, &fromlen);
		/* A paused guest drops what arrives, as its NIC would. */
		if (n < 0 || !pr->fn(pr->arg, &iterations, &state))
			continue;
		memset(reply, 0, sizeof(reply));
		memcpy(reply, req, n < 8 ? (size_t)n : 8);
		mig_le64enc(reply + 8, iterations);
		reply[16] = state;
		(void)sendto(pr->fd, reply, sizeof(reply), MSG_NOSIGNAL,
		    (struct sockaddr *)&from, fromlen);
	}
	return (NULL);
}

int
tb_probe_start(struct tb_probe **prp, const char *addr, tb_probe_fn *fn,
    void *arg, char *host, char *port, char *msg, size_t msglen)
{
	struct tb_probe *pr;
	int error;

	pr = calloc(1, sizeof(*pr));
	if (pr == NULL)
		return (ENOMEM);
	pr->fn = fn;
	pr->arg = arg;
	error = tb_net_bind_udp(addr, &pr->fd, host, port, msg, msglen);
	if (error != 0) {
		free(pr);
		return (error);
	}
	error = pthread_create(&pr->thread, NULL, probe_main, pr);
	if (error != 0) {
		snprintf(msg, msglen, "cannot start the probe: %s",
		    strerror(error));
		close(pr->fd);
		free(pr);
		return (error);
	}
	*prp = pr;
	return (0);
}

void
tb_probe_stop(struct tb_probe *pr)
{

	if (pr == NULL)
		return;
	atomic_store(&pr->stop, true);
	pthread_join(pr->thread, NULL);
	close(pr->fd);
	free(pr);
}
