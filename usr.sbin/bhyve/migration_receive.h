/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Destination side of a live migration: "bhyve -R [host:]port ... vmname"
 * (config key migration.listen).  main() calls, in this order:
 *
 *	migration_receive_accept()	after option parsing, before the
 *					topology and memory are set up:
 *					listen, accept, authenticate, read
 *					the guest's shape and adopt it;
 *	migration_receive_run()		after the devices are set up, in
 *					place of the -r restore: receive
 *					memory and state until "go";
 *	bhyve_restore_start(), then
 *	migration_receive_finish()	after capability mode is entered:
 *					release the vCPUs, confirm.
 *
 * Every function but migration_receiving() returns at once when no
 * migration is to be received.  Failures end bhyve with exit status 4
 * and a message naming the side that failed.
 */

#ifndef _MIGRATION_RECEIVE_H_
#define	_MIGRATION_RECEIVE_H_

#include <stdbool.h>

struct vmctx;

bool	migration_receiving(void);
void	migration_receive_accept(void);
void	migration_receive_run(struct vmctx *ctx);
void	migration_receive_finish(void);

#endif /* !_MIGRATION_RECEIVE_H_ */
