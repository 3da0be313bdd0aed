/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The registry of open disk images, their write bitmaps and what a
 * migration does with them at the hand-over (migration_storage.h).
 * A block is marked once a write or delete to it completed, before the
 * device's callback, so a collection that cleared the mark and then
 * read the block either saw the new data or finds the mark set again.
 * Marking is always on (an atomic OR per request): collection starts by
 * clearing, and nothing needs arming in the backend's threads.
 * Portable: on FreeBSD the reopened descriptor gets the capability
 * rights of the one it replaces and a disk device's cache is flushed
 * with DIOCGFLUSH.
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
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migration_storage.h"

static pthread_mutex_t storage_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct mig_image disks[MIG_STORAGE_MAX];
static uint32_t unregistered;	/* images opened while the list was full */
static uint32_t ndisks;		/* slots in use or used before */

int
mig_storage_add(int fd, const char *path, int oflags, uint64_t size,
    uint32_t block)
{
	_Atomic uint64_t *written;
	struct stat sb;
	uint64_t nblocks;
	char *copy;
	uint32_t i;

	if (fstat(fd, &sb) != 0)
		return (errno);
	nblocks = (size + block - 1) / block;
	copy = strdup(path);
	/* A word more than needed: never none. */
	written = calloc(nblocks / 64 + 1, sizeof(*written));
	if (copy == NULL || written == NULL) {
		free(copy);
		free(written);
		return (ENOMEM);
	}
	pthread_mutex_lock(&storage_mtx);
	for (i = 0; i < ndisks && disks[i].fd >= 0; i++)
		;
	if (i == MIG_STORAGE_MAX) {
		unregistered++;
		pthread_mutex_unlock(&storage_mtx);
		free(copy);
		free(written);
		return (ENOSPC);
	}
	if (i == ndisks)
		ndisks++;
	disks[i].oflags = oflags & ~(O_CREAT | O_EXCL | O_TRUNC);
	disks[i].ischr = S_ISCHR(sb.st_mode);
	disks[i].block = block;
	disks[i].size = size;
	disks[i].nblocks = nblocks;
	disks[i].written = written;
	disks[i].path = copy;
	disks[i].fd = fd;
	pthread_mutex_unlock(&storage_mtx);
	return (0);
}

void
mig_storage_remove(int fd)
{
	uint32_t i;

	pthread_mutex_lock(&storage_mtx);
	for (i = 0; i < ndisks; i++) {
		if (disks[i].fd != fd)
			continue;
		disks[i].fd = -1;
		free(disks[i].path);
		disks[i].path = NULL;
		free(disks[i].written);
		disks[i].written = NULL;
	}
	pthread_mutex_unlock(&storage_mtx);
}

void
mig_storage_written(int fd, uint64_t offset, uint64_t len)
{
	struct mig_image *d;
	uint64_t b, last;
	uint32_t i;

	/* Images are added and removed at start-up and exit: no lock. */
	for (i = 0; i < ndisks && disks[i].fd != fd; i++)
		;
	if (i == ndisks || len == 0 || offset >= disks[i].size)
		return;
	d = &disks[i];
	last = (offset + len - 1) / d->block;
	if (last >= d->nblocks)
		last = d->nblocks - 1;
	for (b = offset / d->block; b <= last; b++)
		atomic_fetch_or(&d->written[b / 64], 1ull << (b % 64));
}

uint32_t
mig_storage_count(void)
{

	return (ndisks);
}

uint32_t
mig_storage_unregistered(void)
{
	uint32_t n;

	pthread_mutex_lock(&storage_mtx);
	n = unregistered;
	pthread_mutex_unlock(&storage_mtx);
	return (n);
}

const struct mig_image *
mig_storage_image(uint32_t i)
{

	return (i < ndisks && disks[i].fd >= 0 ? &disks[i] : NULL);
}

int
mig_storage_check(uint32_t i, uint64_t first, uint64_t n, char *msg,
    size_t msglen)
{
	const struct mig_image *d;

	if ((d = mig_storage_image(i)) != NULL && first <= d->nblocks &&
	    n <= d->nblocks - first)
		return (0);
	snprintf(msg, msglen, "blocks %ju+%ju of disk %u: the guest has %u "
	    "disks%s", (uintmax_t)first, (uintmax_t)n, i, ndisks,
	    i < ndisks && d == NULL ? ", that one closed" : "");
	return (EINVAL);
}

int
mig_storage_track(uint32_t i, char *msg, size_t msglen)
{
	uint64_t w;
	int error;

	if ((error = mig_storage_check(i, 0, 0, msg, msglen)) != 0)
		return (error);
	for (w = 0; w < (disks[i].nblocks + 63) / 64; w++)
		atomic_store(&disks[i].written[w], 0);
	return (0);
}

int
mig_storage_collect(uint32_t i, uint64_t first, uint64_t n, uint64_t *bitmap,
    char *msg, size_t msglen)
{
	uint64_t w;
	int error;

	if ((error = mig_storage_check(i, first, n, msg, msglen)) != 0)
		return (error);
	if (first % 64 != 0) {
		snprintf(msg, msglen, "blocks %ju+%ju of disk %u: the first "
		    "is not a multiple of 64", (uintmax_t)first, (uintmax_t)n,
		    i);
		return (EINVAL);
	}
	for (w = 0; w < (n + 63) / 64; w++)
		bitmap[w] = atomic_exchange(&disks[i].written[first / 64 + w],
		    0);
	return (0);
}

static int
flush_one(const struct mig_image *d)
{

	if ((d->oflags & O_ACCMODE) == O_RDONLY)
		return (0);
#ifdef DIOCGFLUSH
	/* A disk device: its write cache. */
	if (d->ischr)
		return (ioctl(d->fd, DIOCGFLUSH) == 0 ? 0 : errno);
#endif
	return (fsync(d->fd) == 0 ? 0 : errno);
}

int
mig_storage_flush(char *msg, size_t msglen)
{
	uint32_t i;
	int error;

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
reopen_one(const struct mig_image *d, char *msg, size_t msglen)
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
	uint32_t i;
	int error;

	error = 0;
	pthread_mutex_lock(&storage_mtx);
	for (i = 0; i < ndisks && error == 0; i++)
		if (disks[i].fd >= 0)
			error = reopen_one(&disks[i], msg, msglen);
	pthread_mutex_unlock(&storage_mtx);
	return (error);
}
