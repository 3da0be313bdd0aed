/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * bhyve's backend for the live migration engine, and the one restore
 * path that "bhyve -r" (restore from a checkpoint) and "bhyve -R"
 * (receive a migrating guest) share.
 */

#ifndef _MIGRATION_BHYVE_H_
#define	_MIGRATION_BHYVE_H_

#include <stdbool.h>

struct mig_backend;
struct mig_progress;
struct vmctx;

typedef void mig_bhyve_progress_cb(void *, const struct mig_progress *);

/*
 * Create the backend for the VM behind ctx.  The progress callback, if
 * not NULL, receives the engine's progress events.  Returns NULL with
 * errno set if memory is short.
 */
struct mig_backend *mig_bhyve_backend_create(struct vmctx *ctx,
	    mig_bhyve_progress_cb *cb, void *cbarg);
void	mig_bhyve_backend_destroy(struct mig_backend *);

/*
 * The shared restore path.  bhyve_restore_begin() quiesces the device
 * emulations before any saved state is loaded, bhyve_restore_end()
 * restarts them once it is; both run before capability mode is entered.
 * bhyve_restore_start() then rebases the guest's timers and releases
 * every vCPU.  "bhyve -r" calls them around restore_vm_mem(),
 * vm_restore_devices() and vm_restore_kern_structs() in main();
 * "bhyve -R" calls them around mig_recv_run() (migration_receive.c).
 */
int	bhyve_restore_begin(void);
int	bhyve_restore_end(void);
void	bhyve_restore_start(struct vmctx *ctx, int ncpus);

/*
 * The checkpoint gate (migration_ipc.c): snapshot.c's checkpoint and
 * suspend handler calls begin (non-zero: a migration holds the guest,
 * refuse) and end, so that the two never pause the guest together.
 */
int	migration_checkpoint_begin(void);
void	migration_checkpoint_end(void);

#endif /* !_MIGRATION_BHYVE_H_ */
