/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * What the portable control-plane files need from the program they run
 * in.  bhyve implements the source seam in migration_ipc.c (libvmmapi,
 * snapshot.c), bhyvectl the controller seam in bhyvectl_migrate_ipc.c
 * (nvlist over the control socket); the Linux test bed implements both
 * in testbed/.
 *
 *	migration_source_cmd.c	the source's command handler
 *	migration_dest_listen.c	the destination's accept and receive loop
 *	bhyvectl_migrate.c	the controller
 */

#ifndef _MIGRATION_SEAM_H_
#define	_MIGRATION_SEAM_H_

#include <stddef.h>

struct mig_backend;
struct mig_progress;

typedef void mig_progress_cb(void *, const struct mig_progress *);

struct mig_source_seam {
	/* The guest's backend, its progress hook calling cb(cbarg, ...). */
	struct mig_backend *(*backend_create)(void *arg, mig_progress_cb *cb,
		    void *cbarg);
	void	(*backend_destroy)(void *arg, struct mig_backend *);
	/*
	 * The guest runs on the destination now: end this VM so that
	 * nothing restarts it here.  bhyve does not return.
	 */
	void	(*migrated)(void *arg);
	/* One line for the operator's log (bhyve: EPRINTLN). */
	void	(*log)(void *arg, const char *line);
	void	*arg;
};

/*
 * The controller's way to the source: send command cmd with payload
 * (may be NULL), the nsocks connected migration sockets (stream 0
 * first; none for an operator's command) and the reply channel to the
 * VM named vm.  The VM holds its own copies of the descriptors once this
 * returns 0; else msg says why.
 */
int	mig_ctl_send(const char *vm, const char *cmd, const char *payload,
	    const int *socks, int nsocks, int reply_fd, char *msg,
	    size_t msglen);

#endif /* !_MIGRATION_SEAM_H_ */
