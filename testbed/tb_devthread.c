/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "tb_devthread.h"

#define	NSEC	1000000000ull

static void *
devthread_main(void *arg)
{
	struct tb_devthread *t = arg;
	struct timespec ts;

	pthread_mutex_lock(&t->mtx);
	for (;;) {
		while (t->hold && !t->stop) {
			t->parked = true;
			pthread_cond_broadcast(&t->cv);
			pthread_cond_wait(&t->cv, &t->mtx);
		}
		t->parked = false;
		if (t->stop)
			break;
		pthread_mutex_unlock(&t->mtx);
		/* The request is in flight: a pause waits for it. */
		ts.tv_sec = (time_t)(t->period_ns / NSEC);
		ts.tv_nsec = (long)(t->period_ns % NSEC);
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
		pthread_mutex_lock(&t->mtx);
		t->io(t->arg, t->hold);
	}
	t->parked = true;
	pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mtx);
	return (NULL);
}

int
tb_devthread_start(struct tb_devthread *t, uint64_t rate,
    tb_devthread_io *io, void *arg)
{
	int error;

	memset(t, 0, sizeof(*t));
	t->io = io;
	t->arg = arg;
	t->period_ns = NSEC / (rate != 0 ? rate : 1);
	t->hold = true;
	pthread_mutex_init(&t->mtx, NULL);
	pthread_cond_init(&t->cv, NULL);
	error = pthread_create(&t->thread, NULL, devthread_main, t);
	if (error != 0) {
		pthread_cond_destroy(&t->cv);
		pthread_mutex_destroy(&t->mtx);
		return (error);
	}
	t->started = true;
	return (0);
}

void
tb_devthread_stop(struct tb_devthread *t)
{

	if (!t->started)
		return;
	pthread_mutex_lock(&t->mtx);
	t->stop = true;
	pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mtx);
	pthread_join(t->thread, NULL);
	pthread_cond_destroy(&t->cv);
	pthread_mutex_destroy(&t->mtx);
	t->started = false;
}

void
tb_devthread_pause(struct tb_devthread *t)
{

	pthread_mutex_lock(&t->mtx);
	t->hold = true;
	pthread_cond_broadcast(&t->cv);
	while (!t->parked)
		pthread_cond_wait(&t->cv, &t->mtx);
	pthread_mutex_unlock(&t->mtx);
}

void
tb_devthread_resume(struct tb_devthread *t)
{

	pthread_mutex_lock(&t->mtx);
	t->hold = false;
	pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mtx);
}
