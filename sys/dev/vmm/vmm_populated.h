/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#ifndef _DEV_VMM_POPULATED_H_
#define	_DEV_VMM_POPULATED_H_

#ifdef _KERNEL

struct vm;
struct vm_dirty_bitmap;

/* Handler of VM_POPULATED. */
int	vmm_populated(struct vm *vm, const struct vm_dirty_bitmap *db);

#endif /* _KERNEL */

#endif /* !_DEV_VMM_POPULATED_H_ */
