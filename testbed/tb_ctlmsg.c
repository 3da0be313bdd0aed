/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tb_ctlmsg.h"

static int
ctl_addr(const char *path, struct sockaddr_un *sun, char *msg,
    size_t msglen)
{

	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun->sun_path)) {
		snprintf(msg, msglen, "control socket path %s is longer "
		    "than %zu bytes", path, sizeof(sun->sun_path) - 1);
		return (ENAMETOOLONG);
	}
	strcpy(sun->sun_path, path);
	return (0);
}

int
tb_ctl_connect(const char *path, int *fdp, char *msg, size_t msglen)
{
	struct sockaddr_un sun;
	int error, fd;

	error = ctl_addr(path, &sun, msg, msglen);
	if (error != 0)
		return (error);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		error = errno;
		snprintf(msg, msglen, "control socket %s: %s%s", path,
		    strerror(error), error == ECONNREFUSED ||
		    error == ENOENT ? " (is tbvm running?)" : "");
		if (fd >= 0)
			close(fd);
		return (error);
	}
	*fdp = fd;
	return (0);
}

int
tb_ctl_listen(const char *path, int *fdp, char *msg, size_t msglen)
{
	struct sockaddr_un sun;
	struct stat st;
	int error, fd;

	error = ctl_addr(path, &sun, msg, msglen);
	if (error != 0)
		return (error);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(msg, msglen, "control socket path %s exists "
			    "and is not a socket", path);
			return (EEXIST);
		}
		if (tb_ctl_connect(path, &fd, msg, msglen) == 0) {
			close(fd);
			snprintf(msg, msglen, "control socket %s is in use by "
			    "another VM", path);
			return (EADDRINUSE);
		}
		(void)unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0 ||
	    listen(fd, 8) != 0) {
		error = errno;
		snprintf(msg, msglen, "control socket %s: %s", path,
		    strerror(error));
		if (fd >= 0)
			close(fd);
		return (error);
	}
	*fdp = fd;
	return (0);
}

int
tb_ctl_send(int fd, const char *text, const int *fds, int nfds)
{
	union {
		struct cmsghdr	hdr;
		char		buf[CMSG_SPACE(TB_CTL_MAXFDS * sizeof(int))];
	} cm;
	struct msghdr mh;
	struct iovec iov;
	size_t off, len;
	ssize_t n;

	if (nfds < 0 || nfds > TB_CTL_MAXFDS)
		return (EINVAL);
	len = strlen(text);
	off = 0;
	while (off < len) {
		memset(&mh, 0, sizeof(mh));
		iov.iov_base = (char *)(uintptr_t)(text + off);
		iov.iov_len = len - off;
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		/* The descriptors ride with the first byte. */
		if (off == 0 && nfds > 0) {
			memset(&cm, 0, sizeof(cm));
			mh.msg_control = cm.buf;
			mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
			cm.hdr.cmsg_level = SOL_SOCKET;
			cm.hdr.cmsg_type = SCM_RIGHTS;
			cm.hdr.cmsg_len = CMSG_LEN(nfds * sizeof(int));
			memcpy(CMSG_DATA(&cm.hdr), fds, nfds * sizeof(int));
		}
		n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return (errno);
		}
		off += (size_t)n;
	}
	return (0);
}

static void
take_rights(struct tb_ctlmsg *m, struct msghdr *mh)
{
	struct cmsghdr *c;
	int fd, i, n;

	for (c = CMSG_FIRSTHDR(mh); c != NULL; c = CMSG_NXTHDR(mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (i = 0; i < n; i++) {
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int),
			    sizeof(fd));
			if (m->nfds < TB_CTL_MAXFDS)
				m->fds[m->nfds++] = fd;
			else
				close(fd);
		}
	}
}

/* The command line, then the body: the request payload, verbatim. */
static int
parse(struct tb_ctlmsg *m, char *msg, size_t msglen)
{
	char *nl, *end;

	end = strstr(m->buf, "\n\n");
	nl = strchr(m->buf, '\n');
	*nl = '\0';
	m->cmd = m->buf;
	m->body = nl + 1;
	m->bodylen = nl == end ? 0 : (size_t)(end + 1 - m->body);
	if (m->cmd[0] == '\0') {
		snprintf(msg, msglen, "empty request");
		return (EINVAL);
	}
	return (0);
}

int
tb_ctl_recv(int fd, struct tb_ctlmsg *m, char *msg, size_t msglen)
{
	union {
		struct cmsghdr	hdr;
		char		buf[CMSG_SPACE(TB_CTL_MAXFDS * sizeof(int))];
	} cm;
	struct msghdr mh;
	struct iovec iov;
	size_t len;
	ssize_t n;

	memset(m, 0, sizeof(*m));
	len = 0;
	for (;;) {
		memset(&mh, 0, sizeof(mh));
		iov.iov_base = m->buf + len;
		iov.iov_len = TB_CTL_MAX - len;
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = cm.buf;
		mh.msg_controllen = sizeof(cm.buf);
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(msg, msglen, "reading the request: %s",
			    strerror(errno));
			return (errno);
		}
		take_rights(m, &mh);
		len += (size_t)n;
		m->buf[len] = '\0';
		if (len >= 2 && strstr(m->buf, "\n\n") != NULL)
			break;
		if (n == 0 || len == TB_CTL_MAX) {
			snprintf(msg, msglen, "%s request", n == 0 ?
			    "incomplete" : "overlong");
			return (EINVAL);
		}
	}
	return (parse(m, msg, msglen));
}

int
tb_ctl_takefd(struct tb_ctlmsg *m, int i)
{
	int fd;

	if (i < 0 || i >= m->nfds)
		return (-1);
	fd = m->fds[i];
	m->fds[i] = -1;
	return (fd);
}

void
tb_ctl_release(struct tb_ctlmsg *m)
{
	int i;

	for (i = 0; i < m->nfds; i++)
		if (m->fds[i] >= 0)
			close(m->fds[i]);
	m->nfds = 0;
}

int
tb_ctl_read_reply(int fd, char *buf, size_t len)
{
	size_t off;
	ssize_t n;

	off = 0;
	while (off + 1 < len) {
		n = read(fd, buf + off, len - 1 - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return (errno);
		if (n == 0)
			break;
		off += (size_t)n;
	}
	buf[off] = '\0';
	return (0);
}
