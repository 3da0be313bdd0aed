/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The I/O thread of a test-bed device: one request always in flight,
 * each taking 1/rate seconds, as a disk's; pausing waits for the
 * request in flight to complete, as bhyve's vm_pause_devices() drains
 * block_if.
 */

#ifndef _TB_DEVTHREAD_H_
#define	_TB_DEVTHREAD_H_

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* Complete one request; draining: a pause is waiting for it. */
typedef void tb_devthread_io(void *arg, bool draining);

struct tb_devthread {
	tb_devthread_io	*io;
	void		*arg;
	uint64_t	period_ns;
	pthread_mutex_t	mtx;
	pthread_cond_t	cv;
	bool		hold;
	bool		parked;
	bool		stop;
	bool		started;
	pthread_t	thread;
};

/* Start the thread, paused; rate: requests per second, at least 1. */
int	tb_devthread_start(struct tb_devthread *, uint64_t rate,
	    tb_devthread_io *, void *arg);
void	tb_devthread_stop(struct tb_devthread *);
void	tb_devthread_pause(struct tb_devthread *);
void	tb_devthread_resume(struct tb_devthread *);

#endif /* _TB_DEVTHREAD_H_ */
