/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The VM's control socket: an AF_UNIX stream carrying one request per
 * connection, a command line and a body (a migration request's payload,
 * migration_ctl.h) ended by an empty line, with descriptors passed in
 * SCM_RIGHTS; the reply is one JSON line.
 */

#ifndef _TB_CTLMSG_H_
#define	_TB_CTLMSG_H_

#include <stddef.h>

#include "migration.h"

#define	TB_CTL_MAX	4096	/* request bytes */
/* The streams, then the event channel. */
#define	TB_CTL_MAXFDS	(MIG_STREAMS_MAX + 1)

struct tb_ctlmsg {
	char		buf[TB_CTL_MAX + 1];
	const char	*cmd;
	const char	*body;		/* the payload, bodylen bytes */
	size_t		bodylen;
	int		nfds;
	int		fds[TB_CTL_MAXFDS];
};

/* Listen at path, replacing a stale socket but not a live one. */
int	tb_ctl_listen(const char *path, int *fd, char *msg, size_t msglen);
int	tb_ctl_connect(const char *path, int *fd, char *msg, size_t msglen);
/* Send the request text (ending in "\n\n") and nfds descriptors. */
int	tb_ctl_send(int fd, const char *text, const int *fds, int nfds);
/* Receive and parse one request; on error msg says why. */
int	tb_ctl_recv(int fd, struct tb_ctlmsg *, char *msg, size_t msglen);
/* Take descriptor i out of the message; -1 if not sent. */
int	tb_ctl_takefd(struct tb_ctlmsg *, int i);
/* Close the descriptors nobody took. */
void	tb_ctl_release(struct tb_ctlmsg *);
/* Read the peer's whole reply, up to len - 1 bytes, NUL-terminated. */
int	tb_ctl_read_reply(int fd, char *buf, size_t len);

#endif /* _TB_CTLMSG_H_ */
