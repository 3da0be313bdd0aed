/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * One fuzzed migration: the engine's destination (mig_recv_accept(),
 * mig_recv_run(), mig_recv_finish()) over one end of a socketpair, a
 * source on the other end in a thread.  The source either completes a
 * real handshake with the shared key and then sends the input's records
 * as sealed frames (so they pass the tag check and reach the receive
 * loop), or sends the input as it is, before any authentication.
 *
 * The targets link with --wrap=malloc: the largest block the destination
 * asked for is part of the outcome, so a test can see that a frame which
 * fails its tag check made it allocate nothing of the size it announced.
 */

#ifndef _FUZZ_PEER_H_
#define	_FUZZ_PEER_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "migration.h"

struct fuzz_outcome {
	int		accept_error;	/* mig_recv_accept() */
	int		run_error;	/* mig_recv_run(), if accepted */
	int		finish_error;	/* mig_recv_finish(), after GO */
	bool		running;	/* the guest would run here */
	size_t		largest_malloc;	/* by the destination, bytes */
	struct mig_error err;		/* the first failure */
};

void	fuzz_session(const uint8_t *data, size_t len, bool authenticated,
	    struct fuzz_outcome *);
/* With FUZZ_VERBOSE set in the environment: the outcome, one line. */
void	fuzz_session_report(const char *target, const struct fuzz_outcome *);

#endif /* !_FUZZ_PEER_H_ */
