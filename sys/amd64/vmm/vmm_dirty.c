/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Dirty page tracking for live migration (amd64: it harvests EPT/NPT and
 * host page table dirty bits with pmap_harvest_dirty()).
 *
 * While tracking is on, each memory segment of the VM has a sticky log: a
 * bit per segment page, keyed by page index, never by vm_page (a clean page
 * may be freed and come back as another vm_page).  A bit is set when a
 * write is learned of:
 *
 * - writes by the guest through EPT/NPT, and by bhyve's device emulation
 *   through its own mapping of the segment, are harvested from the dirty
 *   bits of the guest pmap and of the owner's pmap: each dirty leaf has its
 *   bit cleared atomically and moved into the page's dirty field, and the
 *   pmap is invalidated once per chunk;
 * - writes by the kernel through the direct map (vm_gpa_hold()) set no
 *   dirty bit and are marked when the hold is released.
 *
 * Nothing puts bits back: a failed migration ends tracking, and the next
 * attempt, to a new destination, copies all memory first.
 *
 * Why no write is lost without freezing a vCPU: a write after collection k
 * either finds the dirty bit clear in the page table (the hardware sets it,
 * collection k + 1 sees it) or uses a translation cached before k's
 * invalidation; then it happened before k returned, k reported the page,
 * and the copy the caller makes after k holds the write.
 *
 * The only other way a dirty bit leaves a page table is the VM system
 * consuming it (pageout, unmapping).  Tracking therefore wires guest memory
 * for its duration, as "bhyve -S" does, so that this cannot happen.
 *
 * Ownership: the open file that starts tracking owns it (its cdevpriv is
 * the tracking record), together with the address space of the process
 * that started it.  Closing that file, or the owner's exit, ends tracking
 * and unwires; GET or a stop from any other file or process gets EPERM.
 *
 * Locking: TRACK runs with the VM's memory segments exclusively locked, GET
 * shared, the memory teardown hook exclusively: the record's state changes
 * only under the exclusive lock of its own VM.  The list of records (to
 * find a VM's record) is under a mutex held for list updates only; no lock
 * is shared between VMs across wiring or a harvest.
 * Marking needs no lock: it walks the registry under the global epoch and
 * updates the log with atomics.
 */

#include <sys/param.h>
#include <sys/systm.h>
#include <sys/conf.h>
#include <sys/epoch.h>
#include <sys/kernel.h>
#include <sys/lock.h>
#include <sys/malloc.h>
#include <sys/mutex.h>
#include <sys/proc.h>
#include <sys/queue.h>
#include <sys/syslog.h>

#include <vm/vm.h>
#include <vm/vm_param.h>
#include <vm/pmap.h>
#include <vm/vm_map.h>
#include <vm/vm_object.h>
#include <vm/vm_page.h>

#include <machine/vmm.h>
#include <machine/vmm_dev.h>

#include <dev/vmm/vmm_dirty.h>
#include <dev/vmm/vmm_dirty_log.h>
#include <dev/vmm/vmm_mem.h>

#include "io/ppt.h"

static MALLOC_DEFINE(M_VMMDIRTY, "vmmdirty", "vmm dirty page tracking");

struct vmm_dirty_wired {
	vm_paddr_t	gpa;
	size_t		len;
	vm_ooffset_t	segoff;
	int		segid;
};

struct vmm_dirty_vm {
	LIST_ENTRY(vmm_dirty_vm) link;
	struct vm	*vm;
	struct vdl_owner owner;
	enum vdl_state	state;
	bool		listed;		/* on vmm_dirty_vms */
	struct vdl_seg	*segs[VM_MAX_MEMSEGS];
	int		nwired;
	struct vmm_dirty_wired wired[VM_MAX_MEMMAPS];
};

static struct mtx vmm_dirty_mtx;
MTX_SYSINIT(vmm_dirty_mtx, &vmm_dirty_mtx, "vmm dirty records", MTX_DEF);
static LIST_HEAD(, vmm_dirty_vm) vmm_dirty_vms =
    LIST_HEAD_INITIALIZER(vmm_dirty_vms);
static struct vdl_registry vmm_dirty_registry;	/* writers: vmm_dirty_mtx */

static struct vmm_dirty_vm *
vmm_dirty_lookup(struct vm *vm)
{
	struct vmm_dirty_vm *dv;

	mtx_assert(&vmm_dirty_mtx, MA_OWNED);
	LIST_FOREACH(dv, &vmm_dirty_vms, link) {
		if (dv->vm == vm)
			return (dv);
	}
	return (NULL);
}

void
vmm_dirty_page_released(vm_page_t m)
{
	/*
	 * The hold may have been for reading; marking it anyway costs one
	 * extra page in the next round and keeps vm_gpa_release() simple.
	 */
	if (m->object == NULL)
		return;
	epoch_enter(global_epoch);
	(void)vdl_registry_mark(&vmm_dirty_registry, m->object, m->pindex);
	epoch_exit(global_epoch);
}

static void
vmm_dirty_unpublish(struct vmm_dirty_vm *dv)
{
	int i;

	mtx_lock(&vmm_dirty_mtx);
	for (i = 0; i < VM_MAX_MEMSEGS; i++) {
		if (dv->segs[i] != NULL)
			(void)vdl_registry_unpublish(&vmm_dirty_registry,
			    dv->segs[i]);
	}
	mtx_unlock(&vmm_dirty_mtx);
	/* No marker can still see the segments after this. */
	epoch_wait(global_epoch);
	for (i = 0; i < VM_MAX_MEMSEGS; i++) {
		if (dv->segs[i] == NULL)
			continue;
		vm_object_deallocate(__DECONST(vm_object_t,
		    dv->segs[i]->object));
		free(dv->segs[i]->log.bits, M_VMMDIRTY);
		free(dv->segs[i], M_VMMDIRTY);
		dv->segs[i] = NULL;
	}
}

/* Unwire what start wired, if the mapping is still the one it wired. */
static void
vmm_dirty_unwire(struct vmm_dirty_vm *dv)
{
	struct vmm_dirty_wired *w;
	vm_paddr_t gpa;
	vm_ooffset_t segoff;
	size_t len;
	int flags, i, segid;

	for (i = 0; i < dv->nwired; i++) {
		w = &dv->wired[i];
		gpa = w->gpa;
		if (vm_mmap_getnext(dv->vm, &gpa, &segid, &segoff, &len, NULL,
		    &flags) != 0 || gpa != w->gpa || len != w->len ||
		    segid != w->segid || segoff != w->segoff ||
		    (flags & VM_MEMMAP_F_WIRED) != 0)
			continue;
		(void)vm_map_unwire(&vm_vmspace(dv->vm)->vm_map, w->gpa,
		    w->gpa + w->len, VM_MAP_WIRE_USER | VM_MAP_WIRE_NOHOLES);
	}
	dv->nwired = 0;
}

/* Undo the steps vdl_end() named, except freeing the record. */
static void
vmm_dirty_undo(struct vmm_dirty_vm *dv, unsigned int steps)
{
	if ((steps & VDL_UNWIRE) != 0)
		vmm_dirty_unwire(dv);
	if ((steps & VDL_UNPUBLISH) != 0)
		vmm_dirty_unpublish(dv);
	if (dv->listed) {
		mtx_lock(&vmm_dirty_mtx);
		LIST_REMOVE(dv, link);
		mtx_unlock(&vmm_dirty_mtx);
		dv->listed = false;
	}
}

/*
 * End tracking from the ioctl path (stop, failed start): the memory
 * segments are already xlocked, so the record is emptied here and the
 * destructor that devfs_clear_cdevpriv() runs only frees it.
 */
static void
vmm_dirty_end_locked(struct vmm_dirty_vm *dv)
{
	vmm_dirty_undo(dv, vdl_end(&dv->state, VDL_OWNER_DONE) & ~VDL_FREE);
	dv->state = VDL_DETACHED;
	dv->vm = NULL;
	devfs_clear_cdevpriv();
}

/*
 * Destructor of the owner's cdevpriv: its file is closed (or the owner
 * exited, or destroy_dev() runs the destructors before the VM is freed),
 * so the VM, if dv still names one, is alive.
 */
static void
vmm_dirty_owner_gone(void *arg)
{
	struct vmm_dirty_vm *dv;
	struct vm *vm;
	unsigned int steps;

	dv = arg;
	vm = dv->vm;
	if (vm != NULL)
		vm_xlock_memsegs(vm);
	steps = vdl_end(&dv->state, VDL_OWNER_DONE);
	vmm_dirty_undo(dv, steps);
	if (vm != NULL)
		vm_unlock_memsegs(vm);
	if ((steps & VDL_FREE) != 0)
		free(dv, M_VMMDIRTY);
}

/*
 * Wire every guest mapping not already wired, as vm_mmap_memseg() does for
 * VM_MEMMAP_F_WIRED, so that the VM system never consumes a dirty bit
 * that the tracker has not seen.
 */
static int
vmm_dirty_wire(struct vmm_dirty_vm *dv)
{
	struct vmm_dirty_wired *w;
	vm_paddr_t gpa;
	vm_ooffset_t segoff;
	size_t len;
	int error, flags, segid;

	for (gpa = 0; vm_mmap_getnext(dv->vm, &gpa, &segid, &segoff, &len,
	    NULL, &flags) == 0; gpa += len) {
		if ((flags & VM_MEMMAP_F_WIRED) != 0)
			continue;
		KASSERT(dv->nwired < VM_MAX_MEMMAPS, ("%s: too many maps",
		    __func__));
		error = vm_map_wire(&vm_vmspace(dv->vm)->vm_map, gpa,
		    gpa + len, VM_MAP_WIRE_USER | VM_MAP_WIRE_NOHOLES);
		if (error == KERN_RESOURCE_SHORTAGE) {
			log(LOG_WARNING, "vmm: %s: dirty tracking cannot wire "
			    "%zu bytes of guest memory: the vm.max_user_wired "
			    "limit is reached; raise it or free wired memory\n",
			    vm_name(dv->vm), len);
			return (ENOMEM);
		}
		if (error != KERN_SUCCESS)
			return (EFAULT);
		w = &dv->wired[dv->nwired++];
		w->gpa = gpa;
		w->len = len;
		w->segoff = segoff;
		w->segid = segid;
	}
	return (0);
}

static int
vmm_dirty_start(struct vm *vm, struct vm_dirty_track *dt, struct thread *td)
{
	struct vmm_dirty_vm *dv, *other;
	struct vdl_seg *seg;
	vm_object_t object;
	size_t len;
	uint64_t npages;
	int error, i;
	bool sysmem;

	vm_assert_memseg_xlocked(vm);
	/* Passthrough devices write guest memory by DMA: no page table sees it. */
	if (ppt_assigned_devices(vm) != 0)
		return (EOPNOTSUPP);
	dv = malloc(sizeof(*dv), M_VMMDIRTY, M_WAITOK | M_ZERO);
	dv->vm = vm;
	dv->state = VDL_TRACKING;
	dv->owner.vmspace = td->td_proc->p_vmspace;
	error = devfs_set_cdevpriv(dv, vmm_dirty_owner_gone);
	if (error != 0) {
		/* This file already owns tracking (EBUSY) or has no cdev. */
		free(dv, M_VMMDIRTY);
		return (error);
	}
	dv->owner.file = dv;
	for (i = 0; i < VM_MAX_MEMSEGS; i++) {
		error = vm_get_memseg(vm, i, &len, &sysmem, &object);
		if (error != 0 || object == NULL)
			continue;
		npages = len / PAGE_SIZE;
		seg = malloc(sizeof(*seg), M_VMMDIRTY, M_WAITOK | M_ZERO);
		vdl_log_init(&seg->log, malloc(VDL_NWORDS(npages) *
		    sizeof(uint64_t), M_VMMDIRTY, M_WAITOK | M_ZERO), npages);
		vm_object_reference(object);
		seg->object = object;
		dv->segs[i] = seg;
	}

	mtx_lock(&vmm_dirty_mtx);
	other = vmm_dirty_lookup(vm);
	if (other == NULL) {
		LIST_INSERT_HEAD(&vmm_dirty_vms, dv, link);
		dv->listed = true;
		for (i = 0; i < VM_MAX_MEMSEGS; i++) {
			if (dv->segs[i] != NULL)
				vdl_registry_publish(&vmm_dirty_registry,
				    dv->segs[i]);
		}
	}
	mtx_unlock(&vmm_dirty_mtx);
	if (other == NULL)
		error = vmm_dirty_wire(dv);
	else
		error = EBUSY;		/* another file owns this VM's tracking */
	if (error != 0) {
		vmm_dirty_end_locked(dv);
		return (error);
	}
	dt->pagesize = PAGE_SIZE;
	return (0);
}

/* The caller's record, if it owns tracking of vm; EPERM for anyone else. */
static int
vmm_dirty_owned(struct vm *vm, struct thread *td, struct vmm_dirty_vm **dvp)
{
	struct vmm_dirty_vm *dv, *listed;
	int error;

	error = devfs_get_cdevpriv((void **)&dv);
	if (error != 0) {
		mtx_lock(&vmm_dirty_mtx);
		listed = vmm_dirty_lookup(vm);
		mtx_unlock(&vmm_dirty_mtx);
		return (listed != NULL ? EPERM : ENXIO);
	}
	if (dv->vm != vm || dv->state != VDL_TRACKING)
		return (ENXIO);
	error = vdl_owner_check(&dv->owner, dv, td->td_proc->p_vmspace);
	if (error != 0)
		return (error);
	*dvp = dv;
	return (0);
}

int
vmm_dirty_track(struct vm *vm, struct vm_dirty_track *dt, struct thread *td)
{
	struct vmm_dirty_vm *dv;
	int error;

	if (dt->flags != 0 || dt->reserved[0] != 0 || dt->reserved[1] != 0)
		return (EINVAL);
	switch (dt->enable) {
	case 1:
		return (vmm_dirty_start(vm, dt, td));
	case 0:
		error = vmm_dirty_owned(vm, td, &dv);
		if (error != 0)
			return (error);
		vmm_dirty_end_locked(dv);
		return (0);
	default:
		return (EINVAL);
	}
}

void
vmm_dirty_vm_destroy(struct vm *vm)
{
	struct vmm_dirty_vm *dv;

	vm_assert_memseg_xlocked(vm);
	mtx_lock(&vmm_dirty_mtx);
	dv = vmm_dirty_lookup(vm);
	if (dv != NULL) {
		LIST_REMOVE(dv, link);
		dv->listed = false;
	}
	mtx_unlock(&vmm_dirty_mtx);
	if (dv == NULL)
		return;
	/* The mappings go next, unwiring; the owner's record stays. */
	vmm_dirty_undo(dv, vdl_end(&dv->state, VDL_MEMORY_GONE));
	dv->vm = NULL;
}

/*
 * Check a bitmap request's fields and its range against the VM's memory map
 * and find the segment and its first page; shared with VM_POPULATED.
 */
int
vmm_dirty_request_lookup(struct vm *vm, const struct vm_dirty_bitmap *db,
    struct vdl_loc *loc)
{
	struct vdl_map maps[VM_MAX_MEMMAPS];
	vm_paddr_t gpa;
	vm_ooffset_t segoff;
	size_t len;
	int error, nmaps, segid;

	if (db->pagesize != PAGE_SIZE)
		return (EDOM);		/* tracking granularity is PAGE_SIZE */
	if (db->flags != 0 || db->reserved[0] != 0 || db->reserved[1] != 0)
		return (EINVAL);
	error = vdl_check_request(db->gpa, db->npages, VM_DIRTY_MAXPAGES,
	    PAGE_SHIFT);
	if (error != 0)
		return (error);
	nmaps = 0;
	for (gpa = 0; nmaps < VM_MAX_MEMMAPS && vm_mmap_getnext(vm, &gpa,
	    &segid, &segoff, &len, NULL, NULL) == 0; gpa += len) {
		maps[nmaps].gpa = gpa;
		maps[nmaps].len = len;
		maps[nmaps].segoff = segoff;
		maps[nmaps].segid = segid;
		nmaps++;
	}
	return (vdl_lookup(maps, nmaps, db->gpa, db->npages, PAGE_SHIFT, loc));
}

/* Validate a request and find its segment's log. */
static int
vmm_dirty_locate(struct vmm_dirty_vm *dv, const struct vm_dirty_bitmap *db,
    struct vdl_seg **segp, uint64_t *firstp)
{
	struct vdl_loc loc;
	int error;

	error = vmm_dirty_request_lookup(dv->vm, db, &loc);
	if (error != 0)
		return (error);
	if (loc.segid < 0 || loc.segid >= VM_MAX_MEMSEGS ||
	    dv->segs[loc.segid] == NULL)
		return (EINVAL);	/* segment created after start */
	*segp = dv->segs[loc.segid];
	*firstp = loc.first;
	return (0);
}

static void
vmm_dirty_report(void *arg, vm_offset_t va, vm_size_t len)
{
	(void)vdl_harvest_report(arg, va, len);
}

/*
 * Harvest the owner's own mappings of the segment's pages
 * [first, first + npages) into the log; tmp is scratch of npages bits.
 */
static void
vmm_dirty_harvest_owner(struct vmm_dirty_vm *dv, struct vdl_seg *seg,
    uint64_t first, uint64_t npages, uint64_t *tmp)
{
	struct vdl_harvest h;
	struct vmspace *vms;
	vm_map_entry_t entry;
	vm_map_t map;
	vm_ooffset_t hi, lo, olo, ohi;

	vms = __DECONST(struct vmspace *, dv->owner.vmspace);
	map = &vms->vm_map;
	lo = IDX_TO_OFF(first);
	hi = IDX_TO_OFF(first + npages);
	vm_map_lock_read(map);
	VM_MAP_ENTRY_FOREACH(entry, map) {
		if ((entry->eflags & MAP_ENTRY_IS_SUB_MAP) != 0 ||
		    entry->object.vm_object != seg->object)
			continue;
		olo = MAX(lo, entry->offset);
		ohi = MIN(hi, entry->offset + (entry->end - entry->start));
		if (olo >= ohi)
			continue;
		memset(tmp, 0, VDL_NWORDS(OFF_TO_IDX(ohi - olo)) *
		    sizeof(uint64_t));
		h.sva = entry->start + (olo - entry->offset);
		h.eva = entry->start + (ohi - entry->offset);
		h.pageshift = PAGE_SHIFT;
		h.bitmap = tmp;
		if (pmap_harvest_dirty(vmspace_pmap(vms), h.sva, h.eva,
		    vmm_dirty_report, &h) != 0)
			(void)vdl_log_merge(&seg->log, OFF_TO_IDX(olo),
			    OFF_TO_IDX(ohi - olo), tmp);
	}
	vm_map_unlock_read(map);
}

int
vmm_dirty_get(struct vm *vm, const struct vm_dirty_bitmap *db,
    struct thread *td)
{
	struct vmm_dirty_vm *dv;
	struct vdl_harvest h;
	struct vdl_seg *seg;
	uint64_t *out, *tmp;
	uint64_t first, ndirty;
	size_t size;
	int error;

	error = vmm_dirty_owned(vm, td, &dv);
	if (error != 0)
		return (error);
	error = vmm_dirty_locate(dv, db, &seg, &first);
	if (error != 0)
		return (error);
	size = VDL_NWORDS(db->npages) * sizeof(uint64_t);
	out = malloc(size, M_VMMDIRTY, M_WAITOK | M_ZERO);
	tmp = malloc(size, M_VMMDIRTY, M_WAITOK | M_ZERO);

	/* The guest's writes. */
	h.sva = db->gpa;
	h.eva = db->gpa + ptoa(db->npages);
	h.pageshift = PAGE_SHIFT;
	h.bitmap = tmp;
	if (pmap_harvest_dirty(vmspace_pmap(vm_vmspace(vm)), h.sva, h.eva,
	    vmm_dirty_report, &h) != 0)
		(void)vdl_log_merge(&seg->log, first, db->npages, tmp);
	/* bhyve's writes through its own mapping of guest memory. */
	vmm_dirty_harvest_owner(dv, seg, first, db->npages, tmp);

	error = vdl_log_fetch_clear(&seg->log, first, db->npages, out,
	    &ndirty);
	if (error == 0) {
		error = copyout(out, db->bitmap, size);
		if (error != 0) {
			/* Nothing reported may be lost: put it back. */
			(void)vdl_log_merge(&seg->log, first, db->npages,
			    out);
		}
	}
	free(tmp, M_VMMDIRTY);
	free(out, M_VMMDIRTY);
	return (error);
}
