/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The guest's answer to pings: a UDP socket answered while the vCPUs
 * run, silent while they are paused, so that the harness can measure
 * downtime from outside.  A reply is the request's first 8 bytes (zero
 * padded), the guest's total iterations (le64) and one state byte.
 */

#ifndef _TB_PROBE_H_
#define	_TB_PROBE_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define	TB_PROBE_REPLY_LEN	17

/* Return false while the guest must not answer. */
typedef bool	tb_probe_fn(void *arg, uint64_t *iterations, uint8_t *state);

struct tb_probe;

/* Bind addr and answer from a thread; host and port get the address. */
int	tb_probe_start(struct tb_probe **, const char *addr, tb_probe_fn *,
	    void *arg, char *host, char *port, char *msg, size_t msglen);
void	tb_probe_stop(struct tb_probe *);

#endif /* _TB_PROBE_H_ */
