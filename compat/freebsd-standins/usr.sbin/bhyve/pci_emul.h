/*
 * Stand-in for usr.sbin/bhyve/pci_emul.h of FreeBSD 15.0 (read from the
 * freebsd-src version that declares pci_next() under BHYVE_SNAPSHOT).
 * Project-written for compile checks only: the structures carry just
 * the leading members the migration files read; the real ones have more.
 */

#ifndef _PCI_EMUL_H_
#define	_PCI_EMUL_H_

#include <sys/types.h>

#define	PI_NAMESZ	40

struct vm_snapshot_meta;

struct pci_devemu {
	const char	*pe_emu;	/* name of the device emulation */
	/* the instance, config space and BAR callbacks omitted here */
	int	(*pe_snapshot)(struct vm_snapshot_meta *meta);	/* or NULL */
	/* further members omitted in this stand-in */
};

struct pci_devinst {
	struct pci_devemu *pi_d;
	struct vmctx	*pi_vmctx;
	uint8_t		pi_bus, pi_slot, pi_func;
	char		pi_name[PI_NAMESZ];
	/* further members omitted in this stand-in */
};

#ifdef BHYVE_SNAPSHOT
struct pci_devinst *pci_next(const struct pci_devinst *cursor);
int	pci_snapshot(struct vm_snapshot_meta *meta);
int	pci_pause(struct pci_devinst *pdi);
int	pci_resume(struct pci_devinst *pdi);
#endif

#endif /* !_PCI_EMUL_H_ */
