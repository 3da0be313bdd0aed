/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The registry of open disk images and what a migration does with them
 * at the hand-over (migration_storage.h).  Portable: on FreeBSD the
 * reopened descriptor gets the capability rights of the one it
 * replaces and a disk device's cache is flushed with DIOCGFLUSH.
 */

#include <sys/param.h>
#ifdef __FreeBSD__
#ifndef WITHOUT_CAPSICUM
#include <sys/capsicum.h>
#endif
#include <sys/disk.h>
#endif
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migration_storage.h"

struct disk {
	int	fd;		/* -1: a free slot */
	int	oflags;
	char	*path;
};

static pthread_mutex_t storage_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct disk disks[MIG_STORAGE_MAX];
static int ndisks;		/* slots in use or used before */

int
mig_storage_add(int fd, const char *path, int oflags)
{
	char *copy;
	int i;

	if ((copy = strdup(path)) == NULL)
		return (ENOMEM);
	pthread_mutex_lock(&storage_mtx);
	for (i = 0; i < ndisks && disks[i].fd >= 0; i++)
		;
	if (i == MIG_STORAGE_MAX) {
		pthread_mutex_unlock(&storage_mtx);
		free(copy);
		return (ENOSPC);
	}
	if (i == ndisks)
		ndisks++;
	disks[i].fd = fd;
	disks[i].oflags = oflags & ~(O_CREAT | O_EXCL | O_TRUNC);
	disks[i].path = copy;
	pthread_mutex_unlock(&storage_mtx);
	return (0);
}

void
mig_storage_remove(int fd)
{
	int i;

	pthread_mutex_lock(&storage_mtx);
	for (i = 0; i < ndisks; i++) {
		if (disks[i].fd != fd)
			continue;
		free(disks[i].path);
		disks[i].path = NULL;
		disks[i].fd = -1;
	}
	pthread_mutex_unlock(&storage_mtx);
}

static int
flush_one(const struct disk *d)
{
#ifdef DIOCGFLUSH
	struct stat sb;
#endif

	if ((d->oflags & O_ACCMODE) == O_RDONLY)
		return (0);
#ifdef DIOCGFLUSH
	/* A disk device: its write cache. */
	if (fstat(d->fd, &sb) == 0 && S_ISCHR(sb.st_mode))
		return (ioctl(d->fd, DIOCGFLUSH) == 0 ? 0 : errno);
#endif
	return (fsync(d->fd) == 0 ? 0 : errno);
}

int
mig_storage_flush(char *msg, size_t msglen)
{
	int error, i;

	error = 0;
	pthread_mutex_lock(&storage_mtx);
	for (i = 0; i < ndisks && error == 0; i++) {
		if (disks[i].fd < 0 || (error = flush_one(&disks[i])) == 0)
			continue;
		snprintf(msg, msglen, "cannot flush the disk %s to stable "
		    "storage: %s", disks[i].path, strerror(error));
	}
	pthread_mutex_unlock(&storage_mtx);
	return (error);
}

/* Give fd the capability rights of model; nothing without Capsicum. */
static int
copy_rights(int model, int fd)
{
#if defined(__FreeBSD__) && !defined(WITHOUT_CAPSICUM)
	cap_ioctl_t cmds[16];
	cap_rights_t rights;
	ssize_t n;

	if (cap_rights_get(model, &rights) != 0 ||
	    cap_rights_limit(fd, &rights) != 0)
		return (errno);
	n = cap_ioctls_get(model, cmds, nitems(cmds));
	if (n < 0)
		return (errno);
	if (n != CAP_IOCTLS_ALL &&
	    (n > (ssize_t)nitems(cmds) || cap_ioctls_limit(fd, cmds, n) != 0))
		return (n > (ssize_t)nitems(cmds) ? E2BIG : errno);
#else
	(void)model;
	(void)fd;
#endif
	return (0);
}

/*
 * The path may name another file by now (an orchestrator that copied
 * the image renamed its copy into place): that one is the disk, as long
 * as it is a file of the size the guest knows.
 */
static int
reopen_one(const struct disk *d, char *msg, size_t msglen)
{
	struct stat was, now;
	int error, fd, fdflags;

	if (fstat(d->fd, &was) != 0) {
		error = errno;
		snprintf(msg, msglen, "cannot stat the disk %s: %s", d->path,
		    strerror(error));
		return (error);
	}
	if (!S_ISREG(was.st_mode))
		return (0);
	if ((fd = open(d->path, d->oflags | O_CLOEXEC)) < 0) {
		error = errno;
		snprintf(msg, msglen, "cannot open the disk %s again: %s",
		    d->path, strerror(error));
		return (error);
	}
	error = 0;
	if (fstat(fd, &now) != 0 || (fdflags = fcntl(d->fd, F_GETFD)) < 0)
		error = errno;
	else if (!S_ISREG(now.st_mode) || now.st_size != was.st_size)
		error = ESTALE;
	else if ((error = copy_rights(d->fd, fd)) == 0 &&
	    (dup2(fd, d->fd) < 0 || fcntl(d->fd, F_SETFD, fdflags) < 0))
		error = errno;
	close(fd);
	if (error == ESTALE)
		snprintf(msg, msglen, "the disk %s is no longer a file of the "
		    "%jd bytes opened at start-up", d->path,
		    (intmax_t)was.st_size);
	else if (error != 0)
		snprintf(msg, msglen, "cannot open the disk %s again: %s",
		    d->path, strerror(error));
	return (error);
}

int
mig_storage_reopen(char *msg, size_t msglen)
{
	int error, i;

	error = 0;
	pthread_mutex_lock(&storage_mtx);
	for (i = 0; i < ndisks && error == 0; i++)
		if (disks[i].fd >= 0)
			error = reopen_one(&disks[i], msg, msglen);
	pthread_mutex_unlock(&storage_mtx);
	return (error);
}
