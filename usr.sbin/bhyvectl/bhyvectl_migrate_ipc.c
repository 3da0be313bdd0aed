/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * bhyvectl's side of the controller's seam (migration_seam.h): the
 * request travels to bhyve's control socket in an nvlist, the payload in
 * its "request" string, the descriptors duplicated into it (the caller
 * closes its own), as bhyvectl's --checkpoint sends its directory.
 */

#include <sys/param.h>
#include <sys/nv.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "migration_seam.h"
#include "snapshot.h"

int
mig_ctl_send(const char *vm, const char *cmd, const char *payload,
    const int *socks, int nsocks, int reply_fd, char *msg, size_t msglen)
{
	struct sockaddr_un addr;
	nvlist_t *nvl;
	int error, fd;

	nvl = nvlist_create(0);
	nvlist_add_string(nvl, "cmd", cmd);
	if (payload != NULL)
		nvlist_add_string(nvl, "request", payload);
	if (nsocks > 0)
		nvlist_add_descriptor(nvl, "socket", socks[0]);
	if (nsocks > 1)
		nvlist_add_descriptor_array(nvl, "streams", socks + 1,
		    (size_t)nsocks - 1);
	nvlist_add_descriptor(nvl, "progress", reply_fd);
	if ((error = nvlist_error(nvl)) != 0) {
		snprintf(msg, msglen, "cannot build the request: %s",
		    strerror(error));
		nvlist_destroy(nvl);
		return (error);
	}
	if ((fd = socket(PF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
		error = errno;
		snprintf(msg, msglen, "cannot create a socket: %s",
		    strerror(error));
		nvlist_destroy(nvl);
		return (error);
	}
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s%s", BHYVE_RUN_DIR,
	    vm);
	addr.sun_len = SUN_LEN(&addr);
	if (connect(fd, (struct sockaddr *)&addr, addr.sun_len) != 0) {
		error = errno;
		snprintf(msg, msglen, "cannot reach bhyve for %s at %s: %s",
		    vm, addr.sun_path, strerror(error));
	} else if (nvlist_send(fd, nvl) != 0) {
		error = errno;
		snprintf(msg, msglen, "cannot send the request to bhyve: %s",
		    strerror(error));
	}
	close(fd);
	nvlist_destroy(nvl);
	return (error);
}
