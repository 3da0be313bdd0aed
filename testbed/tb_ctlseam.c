/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The controller's seam on the test bed (migration_seam.h): the request
 * goes to tbvm's control socket as a command line and the payload,
 * with the descriptors in SCM_RIGHTS; bhyvectl sends the same payload
 * in an nvlist (bhyvectl_migrate_ipc.c).
 */

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migration_json.h"
#include "migration_seam.h"

#include "tb_ctlmsg.h"

#define	ACK_MAX		4096

int
mig_ctl_send(const char *control, const char *cmd, const char *payload,
    const int *socks, int nsocks, int reply_fd, char *msg, size_t msglen)
{
	char ack[ACK_MAX], why[512], *text;
	int error, fd, fds[TB_CTL_MAXFDS], i, nfds;
	bool ok;

	if (nsocks < 0 || nsocks >= TB_CTL_MAXFDS) {
		snprintf(msg, msglen, "%d connections are more than the "
		    "control socket passes", nsocks);
		return (EINVAL);
	}

	if (asprintf(&text, "%s\n%s\n", cmd, payload != NULL ? payload :
	    "") < 0) {
		snprintf(msg, msglen, "out of memory");
		return (ENOMEM);
	}
	nfds = 0;
	for (i = 0; i < nsocks; i++)
		fds[nfds++] = socks[i];
	fds[nfds++] = reply_fd;
	error = tb_ctl_connect(control, &fd, msg, msglen);
	if (error == 0) {
		error = tb_ctl_send(fd, text, fds, nfds);
		if (error == 0)
			error = tb_ctl_read_reply(fd, ack, sizeof(ack));
		if (error != 0)
			snprintf(msg, msglen, "control socket %s: %s",
			    control, strerror(error));
		close(fd);
	}
	explicit_bzero(text, strlen(text));
	free(text);
	if (error != 0)
		return (error);
	if (!mig_json_get_bool(ack, "ok", &ok)) {
		snprintf(msg, msglen, "the VM at %s did not take the request",
		    control);
		return (EIO);
	}
	if (!ok) {
		if (!mig_json_get_string(ack, "error", why, sizeof(why)))
			snprintf(why, sizeof(why), "no reason given");
		snprintf(msg, msglen, "the VM refused: %s", why);
		return (EINVAL);
	}
	return (0);
}
