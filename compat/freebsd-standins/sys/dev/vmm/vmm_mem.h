/*
 * Stand-in for sys/dev/vmm/vmm_mem.h of FreeBSD 15.0 (read from freebsd-src
 * commit 09fa9c6f2126e474f65e15380ae777c5c2b41591, blob id 2142784334 as
 * stored: NUMA system memory segments, struct vm_mem).  Project-written for
 * compile checks only: the constants and functions sys/amd64/vmm/vmm_dirty.c
 * uses, with their 15.0 signatures.
 */

#ifndef _DEV_VMM_MEM_H_
#define	_DEV_VMM_MEM_H_

#define	VM_MAXMEMDOM	8
#define	VM_MAXSYSMEM	VM_MAXMEMDOM

enum {
	VM_SYSMEM = 0,
	VM_BOOTROM = VM_MAXSYSMEM,
	VM_FRAMEBUFFER,
	VM_PCIROM,
	VM_MEMSEG_END
};

#define	VM_MAX_MEMSEGS	VM_MEMSEG_END
#define	VM_MAX_MEMMAPS	(VM_MAX_MEMSEGS * 2)

#ifdef _KERNEL
#include <sys/types.h>

struct vm;
struct vm_object;
struct vmspace;

struct vmspace *vm_vmspace(struct vm *vm);
int	vm_mmap_getnext(struct vm *vm, vm_paddr_t *gpa, int *segid,
	    vm_ooffset_t *segoff, size_t *len, int *prot, int *flags);
int	vm_get_memseg(struct vm *vm, int ident, size_t *len, bool *sysmem,
	    struct vm_object **objptr);
void	vm_xlock_memsegs(struct vm *vm);
void	vm_unlock_memsegs(struct vm *vm);
void	vm_assert_memseg_xlocked(struct vm *vm);
#endif /* _KERNEL */

#endif /* !_DEV_VMM_MEM_H_ */
