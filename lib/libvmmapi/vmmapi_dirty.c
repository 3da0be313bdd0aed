/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Dirty page tracking for live migration: wrappers of VM_DIRTY_TRACK,
 * VM_DIRTY_GET and VM_POPULATED.  Like the rest of libvmmapi they return 0,
 * or -1 with errno set.
 */

#include <sys/param.h>
#include <sys/ioctl.h>

#include <machine/vmm.h>
#include <machine/vmm_dev.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "vmmapi.h"
#include "internal.h"

/*
 * Start (enable) or stop dirty page tracking for the whole VM.  The
 * descriptor that starts it owns it: only that descriptor, in this process,
 * may fetch bits or stop it, and closing the descriptor stops it too.
 * Fails with EOPNOTSUPP when a passthrough device is attached, ENOMEM when
 * guest memory cannot be wired (vm.max_user_wired), EBUSY when another
 * descriptor already tracks the VM.
 */
int
vm_dirty_track(struct vmctx *ctx, bool enable)
{
	struct vm_dirty_track dt;

	memset(&dt, 0, sizeof(dt));
	dt.enable = enable ? 1 : 0;
	return (ioctl(ctx->fd, VM_DIRTY_TRACK, &dt));
}

static int
vm_dirty_bitmap(struct vmctx *ctx, u_long cmd, vm_paddr_t gpa, size_t npages,
    uint64_t *bitmap)
{
	struct vm_dirty_bitmap db;

	if (npages == 0 || npages > VM_DIRTY_MAXPAGES || bitmap == NULL) {
		errno = npages > VM_DIRTY_MAXPAGES ? ERANGE : EINVAL;
		return (-1);
	}
	memset(&db, 0, sizeof(db));
	db.gpa = gpa;
	db.npages = npages;
	db.bitmap = bitmap;
	db.pagesize = (uint32_t)getpagesize();
	return (ioctl(ctx->fd, cmd, &db));
}

/*
 * Fetch and clear the dirty bits of the npages pages at gpa (one memory
 * mapping, at most VM_DIRTY_MAXPAGES pages) into bitmap, which holds
 * howmany(npages, 64) words; bit i stands for page gpa + i * getpagesize().
 * Only the owner of tracking may call it (EPERM otherwise); its own writes
 * to guest memory, through its mapping of it, are collected too.
 */
int
vm_dirty_get(struct vmctx *ctx, vm_paddr_t gpa, size_t npages,
    uint64_t *bitmap)
{
	return (vm_dirty_bitmap(ctx, VM_DIRTY_GET, gpa, npages, bitmap));
}

/*
 * Which of the npages pages at gpa hold data (resident or in swap) into
 * bitmap, laid out as for vm_dirty_get(); the others were never written.
 */
int
vm_populated(struct vmctx *ctx, vm_paddr_t gpa, size_t npages,
    uint64_t *bitmap)
{
	return (vm_dirty_bitmap(ctx, VM_POPULATED, gpa, npages, bitmap));
}
