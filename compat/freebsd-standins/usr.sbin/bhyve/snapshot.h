/*
 * Stand-in for usr.sbin/bhyve/snapshot.h of FreeBSD 15.0 (read from the
 * freebsd-src version whose snapshot.c walks devices with pci_next() and
 * names vm_pause_devices()/vm_resume_devices()), plus the two
 * declarations patch 05 adds (vm_vcpu_pause(), vm_vcpu_resume()).
 * Project-written for compile checks only; the real header also pulls in
 * libucl and libxo, which the migration files do not use.
 */

#ifndef _BHYVE_SNAPSHOT_
#define	_BHYVE_SNAPSHOT_

#include <machine/vmm_snapshot.h>

#define	BHYVE_RUN_DIR	"/var/run/bhyve/"

struct vmctx;

typedef int (*vm_snapshot_dev_cb)(struct vm_snapshot_meta *);

int	vm_pause_devices(void);
int	vm_resume_devices(void);

/* Added by patch 05 (bhyve: export the checkpoint vCPU pause path). */
void	vm_vcpu_pause(struct vmctx *ctx);
void	vm_vcpu_resume(struct vmctx *ctx);

#endif /* !_BHYVE_SNAPSHOT_ */
