/*
 * Stand-in for lib/libvmmapi/vmmapi.h of FreeBSD 15.0 (signatures read
 * from the freebsd-src version with __BEGIN_DECLS and VM_PCIROM, the
 * vcpu-handle API of 14.0 and later), plus the dirty-tracking wrappers
 * the series adds to libvmmapi (vm_dirty_track/get/set).
 * Project-written for compile checks only: declarations of what the
 * project's userland files call.
 */

#ifndef _VMMAPI_H_
#define	_VMMAPI_H_

#include <sys/param.h>
#include <sys/cpuset.h>
#include <machine/vmm.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vcpu;
struct vmctx;
struct vm_snapshot_meta;

__BEGIN_DECLS
int	vm_get_memseg(struct vmctx *ctx, int ident, size_t *lenp, char *name,
	    size_t namesiz);
int	vm_mmap_getnext(struct vmctx *ctx, vm_paddr_t *gpa, int *segid,
	    vm_ooffset_t *segoff, size_t *len, int *prot, int *flags);
void	*vm_map_gpa(struct vmctx *ctx, vm_paddr_t gaddr, size_t len);
void	vm_destroy(struct vmctx *ctx);
const char *vm_get_name(struct vmctx *ctx);
int	vm_debug_cpus(struct vmctx *ctx, cpuset_t *cpus);
int	vm_suspend_all_cpus(struct vmctx *ctx);
int	vm_suspend_cpu(struct vcpu *vcpu);
int	vm_resume_all_cpus(struct vmctx *ctx);
int	vm_resume_cpu(struct vcpu *vcpu);
int	vm_snapshot_req(struct vmctx *ctx, struct vm_snapshot_meta *meta);
int	vm_restore_time(struct vmctx *ctx);

/* Dirty page tracking, added by this series (0 or -1 with errno). */
int	vm_dirty_track(struct vmctx *ctx, bool enable);
int	vm_dirty_get(struct vmctx *ctx, vm_paddr_t gpa, size_t npages,
	    uint64_t *bitmap);
int	vm_populated(struct vmctx *ctx, vm_paddr_t gpa, size_t npages,
	    uint64_t *bitmap);
__END_DECLS

#endif /* !_VMMAPI_H_ */
