/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#ifndef _DEV_VMM_DIRTY_H_
#define	_DEV_VMM_DIRTY_H_

#ifdef _KERNEL

struct thread;
struct vm;
struct vm_dirty_bitmap;
struct vm_dirty_track;
struct vm_page;
struct vdl_loc;

/*
 * Dirty page tracking is amd64-only (sys/amd64/vmm/vmm_dirty.c: it needs
 * pmap_harvest_dirty() and the amd64 ioctl ABI).  The two hooks that the
 * machine-independent vmm_mem.c calls are empty elsewhere, so that arm64
 * and riscv vmm.ko build unchanged.
 */
#ifdef __amd64__
/* Handlers of VM_DIRTY_TRACK and VM_DIRTY_GET. */
int	vmm_dirty_track(struct vm *vm, struct vm_dirty_track *dt,
	    struct thread *td);
int	vmm_dirty_get(struct vm *vm, const struct vm_dirty_bitmap *db,
	    struct thread *td);

/* A bitmap request's segment and first page (VM_POPULATED uses it too). */
int	vmm_dirty_request_lookup(struct vm *vm,
	    const struct vm_dirty_bitmap *db, struct vdl_loc *loc);

/* A kernel hold on the page (vm_gpa_hold()) is being released. */
void	vmm_dirty_page_released(struct vm_page *m);

/* The VM's memory is being destroyed (memory segments xlocked). */
void	vmm_dirty_vm_destroy(struct vm *vm);
#else
static __inline void
vmm_dirty_page_released(struct vm_page *m __unused)
{
}

static __inline void
vmm_dirty_vm_destroy(struct vm *vm __unused)
{
}
#endif /* __amd64__ */

#endif /* _KERNEL */

#endif /* !_DEV_VMM_DIRTY_H_ */
