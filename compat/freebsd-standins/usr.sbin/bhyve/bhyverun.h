/*
 * Stand-in for usr.sbin/bhyve/bhyverun.h of FreeBSD 15.0 (signatures read
 * from freebsd-src main of 2024-2025, the version whose bhyverun.c has
 * bhyve_optparse() and vm_setup_memory_domains()).  Project-written for
 * compile checks only: it declares just what the migration files use.
 */

#ifndef _BHYVERUN_H_
#define	_BHYVERUN_H_

#include <sys/types.h>

struct vcpu;
struct vmctx;

extern int guest_ncpus;
#ifdef BHYVE_SNAPSHOT
extern char *restore_file;
#endif

struct vcpu *fbsdrun_vcpu(int vcpuid);

#endif /* !_BHYVERUN_H_ */
