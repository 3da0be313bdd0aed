/*
 * Stand-in for sys/amd64/vmm/io/ppt.h of FreeBSD 15.0.  Project-written for
 * compile checks only: the one function sys/amd64/vmm/vmm_dirty.c calls,
 * with its 15.0 signature.
 */

#ifndef _IO_PPT_H_
#define	_IO_PPT_H_

struct vm;

int	ppt_assigned_devices(struct vm *vm);

#endif /* !_IO_PPT_H_ */
