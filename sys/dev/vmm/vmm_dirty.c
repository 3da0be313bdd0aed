/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Dirty page tracking for live migration.
 *
 * While tracking is on, each memory segment of the VM has a sticky log: a
 * bit per segment page (keyed by page index, never by vm_page, since a
 * clean page may be freed and come back as another vm_page).  A bit is set
 * when a write is learned of:
 *
 * - writes by the guest, through EPT/NPT, and by bhyve's device emulation,
 *   through its own mapping of the segment, are harvested from the modified
 *   bit of the guest pmap and of the calling process's pmap by
 *   pmap_harvest_dirty(): each modified leaf has its bit cleared atomically
 *   and moved into the page's dirty field, and the pmap is invalidated once
 *   per call;
 * - writes by the kernel through the direct map (vm_gpa_hold()) set no
 *   modified bit and are marked when the hold is released;
 * - VM_DIRTY_SET puts bits back (a failed migration returns what it took).
 *
 * VM_DIRTY_GET harvests the range, then moves the range's bits out of the
 * log into the caller's bitmap.  Why no write is lost without freezing any
 * vCPU: a write after collection k either finds the modified bit clear in
 * the page table (the hardware sets it, collection k + 1 sees it) or uses a
 * translation cached before k's invalidation, in which case it happened
 * before that invalidation completed, k reported the page, and the copy the
 * caller makes after k returns holds the write.
 *
 * The only other way a modified bit leaves a page table is the VM system
 * consuming it (pageout, unmapping): it then calls vm_page_dirty().  Without
 * the vm_page_dirty() hook (OBJ_DIRTYLOG), tracking wires guest memory for
 * its duration, as "bhyve -S" does, so that this cannot happen; with the
 * hook, vm_page_dirty() on a tracked object marks the log instead.
 *
 * Locking: the ioctls run with the VM's memory segments shared-locked.
 * vmm_dirty_sx is taken shared by get and set and exclusive by start, stop
 * and destroy.  Marking needs no lock: it finds the segment on a list that
 * is read under the global epoch and updates the log with atomics.
 */

#include <sys/param.h>
#include <sys/systm.h>
#include <sys/epoch.h>
#include <sys/kernel.h>
#include <sys/lock.h>
#include <sys/malloc.h>
#include <sys/proc.h>
#include <sys/queue.h>
#include <sys/sx.h>

#include <vm/vm.h>
#include <vm/vm_param.h>
#include <vm/pmap.h>
#include <vm/vm_map.h>
#include <vm/vm_object.h>
#include <vm/vm_page.h>

#include <machine/atomic.h>
#include <machine/vmm.h>
#include <machine/vmm_dev.h>

#include <dev/vmm/vmm_dirty.h>
#include <dev/vmm/vmm_dirty_log.h>
#include <dev/vmm/vmm_mem.h>

static MALLOC_DEFINE(M_VMMDIRTY, "vmmdirty", "vmm dirty page tracking");

struct vmm_dirty_seg {
	struct vmm_dirty_seg *next;	/* global list, read under epoch */
	vm_object_t	object;		/* referenced while tracked */
	int		segid;
	struct vdl_log	log;
};

struct vmm_dirty_wired {
	vm_paddr_t	gpa;
	size_t		len;
	vm_ooffset_t	segoff;
	int		segid;
};

struct vmm_dirty_vm {
	LIST_ENTRY(vmm_dirty_vm) link;
	struct vm	*vm;
	struct vmm_dirty_seg *segs[VM_MAX_MEMSEGS];
	int		nwired;
	struct vmm_dirty_wired wired[VM_MAX_MEMMAPS];
};

static struct sx vmm_dirty_sx;
SX_SYSINIT(vmm_dirty_sx, &vmm_dirty_sx, "vmm dirty tracking");
static LIST_HEAD(, vmm_dirty_vm) vmm_dirty_vms =
    LIST_HEAD_INITIALIZER(vmm_dirty_vms);
static struct vmm_dirty_seg *vmm_dirty_segs;	/* published, epoch-read */
static u_int vmm_dirty_nsegs;			/* fast "nothing tracked" */

static struct vmm_dirty_vm *
vmm_dirty_lookup(struct vm *vm)
{
	struct vmm_dirty_vm *dv;

	sx_assert(&vmm_dirty_sx, SA_LOCKED);
	LIST_FOREACH(dv, &vmm_dirty_vms, link) {
		if (dv->vm == vm)
			return (dv);
	}
	return (NULL);
}

/* Mark page m in the log of its tracked segment, if any; in the epoch. */
static void
vmm_dirty_mark_page(vm_page_t m)
{
	struct vmm_dirty_seg *seg;
	vm_object_t object;

	object = m->object;
	if (object == NULL)
		return;
	for (seg = (struct vmm_dirty_seg *)atomic_load_acq_ptr(
	    (volatile uintptr_t *)&vmm_dirty_segs); seg != NULL;
	    seg = (struct vmm_dirty_seg *)atomic_load_acq_ptr(
	    (volatile uintptr_t *)&seg->next)) {
		if (seg->object == object)
			(void)vdl_log_mark(&seg->log, m->pindex);
	}
}

void
vmm_dirty_page_released(vm_page_t m)
{
	/*
	 * The hold may have been for reading; marking it anyway costs one
	 * extra page in the next round and keeps vm_gpa_release() unchanged.
	 */
	if (atomic_load_int(&vmm_dirty_nsegs) == 0)
		return;
	epoch_enter(global_epoch);
	vmm_dirty_mark_page(m);
	epoch_exit(global_epoch);
}

#ifdef OBJ_DIRTYLOG
/* vm_page_dirty() hook; vm_page_dirty_log() calls it within the epoch. */
static void
vmm_dirty_page_hook(vm_page_t m)
{
	vmm_dirty_mark_page(m);
}
#endif

static void
vmm_dirty_publish(struct vmm_dirty_seg *seg)
{
	sx_assert(&vmm_dirty_sx, SA_XLOCKED);
	seg->next = vmm_dirty_segs;
	atomic_store_rel_ptr((volatile uintptr_t *)&vmm_dirty_segs,
	    (uintptr_t)seg);
	atomic_add_int(&vmm_dirty_nsegs, 1);
}

static void
vmm_dirty_unpublish(struct vmm_dirty_seg *seg)
{
	struct vmm_dirty_seg **prevp;

	sx_assert(&vmm_dirty_sx, SA_XLOCKED);
	for (prevp = &vmm_dirty_segs; *prevp != NULL;
	    prevp = &(*prevp)->next) {
		if (*prevp == seg) {
			atomic_store_rel_ptr((volatile uintptr_t *)prevp,
			    (uintptr_t)seg->next);
			atomic_subtract_int(&vmm_dirty_nsegs, 1);
			return;
		}
	}
	panic("%s: segment %p not published", __func__, seg);
}

static void
vmm_dirty_free_seg(struct vmm_dirty_seg *seg)
{
#ifdef OBJ_DIRTYLOG
	vm_page_dirty_log_detach(seg->object);
#endif
	vm_object_deallocate(seg->object);
	free(seg->log.bits, M_VMMDIRTY);
	free(seg, M_VMMDIRTY);
}

/*
 * Undo what start did.  The segments are unpublished under the lock; they
 * are freed after an epoch_wait(), when no marker can still see them.
 */
static void
vmm_dirty_teardown(struct vmm_dirty_vm *dv, bool unwire)
{
	struct vmm_dirty_wired *w;
	vm_paddr_t gpa;
	vm_ooffset_t segoff;
	size_t len;
	int flags, i, segid;

	sx_assert(&vmm_dirty_sx, SA_XLOCKED);
	LIST_REMOVE(dv, link);
	for (i = 0; i < VM_MAX_MEMSEGS; i++) {
		if (dv->segs[i] != NULL)
			vmm_dirty_unpublish(dv->segs[i]);
	}
	for (i = 0; unwire && i < dv->nwired; i++) {
		/* Only if the mapping is still the one that was wired. */
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
}

static void
vmm_dirty_free(struct vmm_dirty_vm *dv)
{
	int i;

	epoch_wait(global_epoch);
	for (i = 0; i < VM_MAX_MEMSEGS; i++) {
		if (dv->segs[i] != NULL)
			vmm_dirty_free_seg(dv->segs[i]);
	}
	free(dv, M_VMMDIRTY);
}

#ifndef OBJ_DIRTYLOG
/*
 * Wire every guest mapping not already wired, as vm_mmap_memseg() does for
 * VM_MEMMAP_F_WIRED, so that the VM system never consumes a modified bit
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
		if (error != KERN_SUCCESS)
			return (error == KERN_RESOURCE_SHORTAGE ? ENOMEM :
			    EFAULT);
		w = &dv->wired[dv->nwired++];
		w->gpa = gpa;
		w->len = len;
		w->segoff = segoff;
		w->segid = segid;
	}
	return (0);
}
#endif

static int
vmm_dirty_start(struct vm *vm)
{
	struct vmm_dirty_seg *seg;
	struct vmm_dirty_vm *dv;
	vm_object_t object;
	size_t len;
	uint64_t npages;
	int error, i;
	bool sysmem;

#ifndef __amd64__
	return (EOPNOTSUPP);	/* pmap_harvest_dirty() is amd64-only */
#endif
	dv = malloc(sizeof(*dv), M_VMMDIRTY, M_WAITOK | M_ZERO);
	dv->vm = vm;
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
		seg->segid = i;
		dv->segs[i] = seg;
	}

	sx_xlock(&vmm_dirty_sx);
	if (vmm_dirty_lookup(vm) != NULL) {
		sx_xunlock(&vmm_dirty_sx);
		error = EBUSY;
		goto fail;
	}
	LIST_INSERT_HEAD(&vmm_dirty_vms, dv, link);
	for (i = 0; i < VM_MAX_MEMSEGS; i++) {
		if (dv->segs[i] == NULL)
			continue;
		vmm_dirty_publish(dv->segs[i]);
#ifdef OBJ_DIRTYLOG
		vm_page_dirty_log_attach(dv->segs[i]->object,
		    vmm_dirty_page_hook);
#endif
	}
#ifndef OBJ_DIRTYLOG
	error = vmm_dirty_wire(dv);
	if (error != 0) {
		vmm_dirty_teardown(dv, true);
		sx_xunlock(&vmm_dirty_sx);
		vmm_dirty_free(dv);
		return (error);
	}
#endif
	sx_xunlock(&vmm_dirty_sx);
	return (0);

fail:
	for (i = 0; i < VM_MAX_MEMSEGS; i++) {
		if (dv->segs[i] != NULL) {
			vm_object_deallocate(dv->segs[i]->object);
			free(dv->segs[i]->log.bits, M_VMMDIRTY);
			free(dv->segs[i], M_VMMDIRTY);
		}
	}
	free(dv, M_VMMDIRTY);
	return (error);
}

static int
vmm_dirty_stop(struct vm *vm)
{
	struct vmm_dirty_vm *dv;

	sx_xlock(&vmm_dirty_sx);
	dv = vmm_dirty_lookup(vm);
	if (dv == NULL) {
		sx_xunlock(&vmm_dirty_sx);
		return (ENXIO);
	}
	vmm_dirty_teardown(dv, true);
	sx_xunlock(&vmm_dirty_sx);
	vmm_dirty_free(dv);
	return (0);
}

int
vmm_dirty_track(struct vm *vm, const struct vm_dirty_track *dt)
{
	if (dt->flags != 0)
		return (EINVAL);
	switch (dt->enable) {
	case 1:
		return (vmm_dirty_start(vm));
	case 0:
		return (vmm_dirty_stop(vm));
	default:
		return (EINVAL);
	}
}

void
vmm_dirty_vm_destroy(struct vm *vm)
{
	struct vmm_dirty_vm *dv;

	sx_xlock(&vmm_dirty_sx);
	dv = vmm_dirty_lookup(vm);
	if (dv != NULL)
		vmm_dirty_teardown(dv, false);	/* the maps go away next */
	sx_xunlock(&vmm_dirty_sx);
	if (dv != NULL)
		vmm_dirty_free(dv);
}

/*
 * Validate a request and find its segment's log.  Called with vmm_dirty_sx
 * held; the memory map is stable (memory segments are locked).
 */
static int
vmm_dirty_locate(struct vm *vm, const struct vm_dirty_bitmap *db,
    struct vmm_dirty_seg **segp, uint64_t *firstp)
{
	struct vdl_map maps[VM_MAX_MEMMAPS];
	struct vmm_dirty_vm *dv;
	struct vdl_loc loc;
	vm_paddr_t gpa;
	vm_ooffset_t segoff;
	size_t len;
	int error, nmaps, segid;

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
	error = vdl_lookup(maps, nmaps, db->gpa, db->npages, PAGE_SHIFT, &loc);
	if (error != 0)
		return (error);
	dv = vmm_dirty_lookup(vm);
	if (dv == NULL)
		return (ENXIO);
	if (loc.segid < 0 || loc.segid >= VM_MAX_MEMSEGS ||
	    dv->segs[loc.segid] == NULL)
		return (EINVAL);	/* segment created after start */
	*segp = dv->segs[loc.segid];
	*firstp = loc.first;
	return (0);
}

/*
 * Harvest the calling process's own mappings of the segment's pages
 * [first, first + npages) into the log; tmp is scratch of npages bits.
 */
static void
vmm_dirty_harvest_user(struct vmm_dirty_seg *seg, struct thread *td,
    uint64_t first, uint64_t npages, uint64_t *tmp)
{
	vm_map_entry_t entry;
	vm_map_t map;
	vm_ooffset_t hi, lo, olo, ohi;

	map = &td->td_proc->p_vmspace->vm_map;
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
#ifdef __amd64__
		if (pmap_harvest_dirty(vmspace_pmap(td->td_proc->p_vmspace),
		    entry->start + (olo - entry->offset),
		    entry->start + (ohi - entry->offset), tmp) != 0)
			(void)vdl_log_merge(&seg->log, OFF_TO_IDX(olo),
			    OFF_TO_IDX(ohi - olo), tmp);
#endif
	}
	vm_map_unlock_read(map);
}

int
vmm_dirty_get(struct vm *vm, const struct vm_dirty_bitmap *db,
    struct thread *td)
{
	struct vmm_dirty_seg *seg;
	uint64_t *out, *tmp;
	uint64_t first, ndirty;
	size_t size;
	int error;

	if (db->npages == 0 || db->npages > VM_DIRTY_MAXPAGES)
		return (db->npages == 0 ? EINVAL : ERANGE);
	size = VDL_NWORDS(db->npages) * sizeof(uint64_t);
	out = malloc(size, M_VMMDIRTY, M_WAITOK | M_ZERO);
	tmp = malloc(size, M_VMMDIRTY, M_WAITOK | M_ZERO);

	sx_slock(&vmm_dirty_sx);
	error = vmm_dirty_locate(vm, db, &seg, &first);
	if (error != 0)
		goto out;
#ifdef __amd64__
	/* The guest's writes: one EPT/NPT invalidation for the range. */
	if (pmap_harvest_dirty(vmspace_pmap(vm_vmspace(vm)), db->gpa,
	    db->gpa + ptoa(db->npages), tmp) != 0)
		(void)vdl_log_merge(&seg->log, first, db->npages, tmp);
#endif
	/* bhyve's writes through its own mapping of guest memory. */
	vmm_dirty_harvest_user(seg, td, first, db->npages, tmp);

	error = vdl_log_fetch_clear(&seg->log, first, db->npages, out,
	    &ndirty);
	if (error != 0)
		goto out;
	error = copyout(out, db->bitmap, size);
	if (error != 0) {
		/* Nothing reported may be lost: put it back. */
		(void)vdl_log_merge(&seg->log, first, db->npages, out);
	}
out:
	sx_sunlock(&vmm_dirty_sx);
	free(tmp, M_VMMDIRTY);
	free(out, M_VMMDIRTY);
	return (error);
}

int
vmm_dirty_set(struct vm *vm, const struct vm_dirty_bitmap *db)
{
	struct vmm_dirty_seg *seg;
	uint64_t *in;
	uint64_t first;
	size_t size;
	int error;

	if (db->npages == 0 || db->npages > VM_DIRTY_MAXPAGES)
		return (db->npages == 0 ? EINVAL : ERANGE);
	size = VDL_NWORDS(db->npages) * sizeof(uint64_t);
	in = malloc(size, M_VMMDIRTY, M_WAITOK);
	error = copyin(db->bitmap, in, size);
	if (error != 0) {
		free(in, M_VMMDIRTY);
		return (error);
	}
	sx_slock(&vmm_dirty_sx);
	error = vmm_dirty_locate(vm, db, &seg, &first);
	if (error == 0)
		error = vdl_log_merge(&seg->log, first, db->npages, in);
	sx_sunlock(&vmm_dirty_sx);
	free(in, M_VMMDIRTY);
	return (error);
}
