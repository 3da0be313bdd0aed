/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Which guest pages hold data, for live migration: VM_POPULATED sets bit
 * i of the caller's bitmap if page gpa + i * PAGE_SIZE (npages pages in
 * one memory mapping, at most VM_DIRTY_MAXPAGES) is resident in the
 * segment's VM object or has a block in swap.  The other pages were never
 * written (or were freed as zero): the source sends them as zero ranges
 * without reading them, which for a large idle guest saves reading, and
 * so faulting in, all of its memory.
 *
 * The answer is a snapshot: a page populated right after the walk is
 * reported by dirty tracking, which the caller starts first.  Resident
 * pages and swap blocks are found with "least index at or after"
 * searches, so the cost grows with the populated pages, not the range.
 */

#include <sys/param.h>
#include <sys/systm.h>
#include <sys/kernel.h>
#include <sys/lock.h>
#include <sys/malloc.h>
#include <sys/rwlock.h>

#include <vm/vm.h>
#include <vm/vm_param.h>
#include <vm/vm_object.h>
#include <vm/vm_page.h>
#include <vm/vm_radix.h>
#include <vm/swap_pager.h>

#include <machine/vmm.h>
#include <machine/vmm_dev.h>

#include <dev/vmm/vmm_dirty.h>
#include <dev/vmm/vmm_dirty_log.h>
#include <dev/vmm/vmm_mem.h>
#include <dev/vmm/vmm_populated.h>

static MALLOC_DEFINE(M_VMMPOPULATED, "vmmpopulated",
    "vmm populated page bitmaps");

/* Find the segment and its first page that the request covers. */
static int
vmm_populated_locate(struct vm *vm, const struct vm_dirty_bitmap *db,
    vm_object_t *objp, uint64_t *firstp)
{
	struct vdl_loc loc;
	vm_object_t object;
	size_t len;
	bool sysmem;
	int error;

	error = vmm_dirty_request_lookup(vm, db, &loc);
	if (error != 0)
		return (error);
	error = vm_get_memseg(vm, loc.segid, &len, &sysmem, &object);
	if (error != 0)
		return (error);
	if (object == NULL || !sysmem)
		return (EINVAL);	/* device memory is not guest RAM */
	*objp = object;
	*firstp = loc.first;
	return (0);
}

static void
vmm_populated_set(uint64_t *bits, uint64_t i)
{

	bits[i / VDL_WORD_BITS] |= 1ull << (i % VDL_WORD_BITS);
}

/* Mark pages [first, end) of object that are resident or in swap. */
static void
vmm_populated_walk(vm_object_t object, uint64_t first, uint64_t end,
    uint64_t *bits)
{
	vm_page_t m;
	vm_pindex_t next, swap;

	VM_OBJECT_ASSERT_LOCKED(object);
	for (next = first; next < end; next = m->pindex + 1) {
		m = vm_radix_lookup_ge(&object->rtree, next);
		if (m == NULL || m->pindex >= end)
			break;
		vmm_populated_set(bits, m->pindex - first);
	}
	if ((object->flags & OBJ_SWAP) == 0)
		return;
	for (next = first; next < end; next = swap + 1) {
		swap = swap_pager_seek_data(object, next);
		if (swap >= end)
			break;
		vmm_populated_set(bits, swap - first);
	}
}

int
vmm_populated(struct vm *vm, const struct vm_dirty_bitmap *db)
{
	vm_object_t object;
	uint64_t *out;
	uint64_t first;
	size_t size;
	int error;

	if (db->npages == 0 || db->npages > VM_DIRTY_MAXPAGES)
		return (db->npages == 0 ? EINVAL : ERANGE);
	/* The bitmap is in base pages; the fields for growth must be 0. */
	if (db->pagesize != PAGE_SIZE || db->flags != 0 ||
	    db->reserved[0] != 0 || db->reserved[1] != 0)
		return (EINVAL);
	error = vmm_populated_locate(vm, db, &object, &first);
	if (error != 0)
		return (error);
	size = VDL_NWORDS(db->npages) * sizeof(uint64_t);
	out = malloc(size, M_VMMPOPULATED, M_WAITOK | M_ZERO);
	VM_OBJECT_RLOCK(object);
	vmm_populated_walk(object, first, first + db->npages, out);
	VM_OBJECT_RUNLOCK(object);
	error = copyout(out, db->bitmap, size);
	free(out, M_VMMPOPULATED);
	return (error);
}
