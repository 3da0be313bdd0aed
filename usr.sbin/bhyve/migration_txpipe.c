/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "migration_txpipe.h"

static void
stop(struct mig_txpipe *tp)
{
	pthread_mutex_lock(&tp->mtx);
	tp->closing = true;
	pthread_cond_broadcast(&tp->cv);
	pthread_mutex_unlock(&tp->mtx);
	(void)pthread_join(tp->writer, NULL);
	pthread_cond_destroy(&tp->cv);
	pthread_mutex_destroy(&tp->mtx);
	tp->running = false;
}

int
mig_txpipe_init(struct mig_txpipe *tp)
{
	int i;

	memset(tp, 0, sizeof(*tp));
	if ((tp->slot = calloc(MIG_TXPIPE_SLOTS, sizeof(*tp->slot))) == NULL)
		return (ENOMEM);
	for (i = 0; i < MIG_TXPIPE_SLOTS; i++)
		if ((tp->slot[i].buf = malloc(MIG_PAYLOAD_MAX)) == NULL) {
			mig_txpipe_destroy(tp);
			return (ENOMEM);
		}
	return (0);
}

void
mig_txpipe_destroy(struct mig_txpipe *tp)
{
	int i;

	if (tp->running)
		stop(tp);
	if (tp->slot == NULL)
		return;
	for (i = 0; i < MIG_TXPIPE_SLOTS; i++)
		free(tp->slot[i].buf);
	free(tp->slot);
	tp->slot = NULL;
}

static void *
writer_main(void *arg)
{
	struct mig_txpipe *tp = arg;
	struct mig_txslot *slot;
	int error;

	pthread_mutex_lock(&tp->mtx);
	for (;;) {
		while (tp->written == tp->sealed && !tp->closing)
			pthread_cond_wait(&tp->cv, &tp->mtx);
		if (tp->written == tp->sealed)
			break;
		slot = &tp->slot[tp->written % MIG_TXPIPE_SLOTS];
		pthread_mutex_unlock(&tp->mtx);
		error = mig_chan_write(tp->ch, slot->f, slot->nframes);
		pthread_mutex_lock(&tp->mtx);
		if (error != 0) {
			tp->error = error;
			break;
		}
		tp->written++;
		pthread_cond_broadcast(&tp->cv);
	}
	pthread_cond_broadcast(&tp->cv);
	pthread_mutex_unlock(&tp->mtx);
	return (NULL);
}

int
mig_txpipe_start(struct mig_txpipe *tp, struct mig_chan *ch)
{
	int error;

	tp->ch = ch;
	tp->sealed = tp->written = 0;
	tp->error = 0;
	tp->closing = false;
	if ((error = pthread_mutex_init(&tp->mtx, NULL)) != 0)
		return (error);
	if ((error = pthread_cond_init(&tp->cv, NULL)) != 0) {
		pthread_mutex_destroy(&tp->mtx);
		return (error);
	}
	if ((error = pthread_create(&tp->writer, NULL, writer_main, tp)) !=
	    0) {
		pthread_cond_destroy(&tp->cv);
		pthread_mutex_destroy(&tp->mtx);
		return (error);
	}
	tp->running = true;
	return (0);
}

int
mig_txpipe_slot(struct mig_txpipe *tp, struct mig_txslot **slotp)
{
	int error;

	pthread_mutex_lock(&tp->mtx);
	while (tp->error == 0 &&
	    tp->sealed - tp->written == MIG_TXPIPE_SLOTS)
		pthread_cond_wait(&tp->cv, &tp->mtx);
	*slotp = &tp->slot[tp->sealed % MIG_TXPIPE_SLOTS];
	(*slotp)->nframes = 0;
	error = tp->error;
	pthread_mutex_unlock(&tp->mtx);
	return (error);
}

int
mig_txpipe_seal(struct mig_txpipe *tp, struct mig_txslot *slot,
    uint16_t type, const struct iovec *parts, int nparts)
{
	int error;

	if (slot->nframes == MIG_TXSLOT_FRAMES)
		return (EINVAL);
	if ((error = mig_chan_seal(tp->ch, type, parts, nparts, slot->buf,
	    &slot->f[slot->nframes])) != 0)
		return (error);
	slot->nframes++;
	return (0);
}

void
mig_txpipe_queue(struct mig_txpipe *tp)
{

	pthread_mutex_lock(&tp->mtx);
	tp->sealed++;
	pthread_cond_broadcast(&tp->cv);
	pthread_mutex_unlock(&tp->mtx);
}

int
mig_txpipe_drain(struct mig_txpipe *tp)
{
	int error;

	pthread_mutex_lock(&tp->mtx);
	while (tp->error == 0 && tp->written != tp->sealed)
		pthread_cond_wait(&tp->cv, &tp->mtx);
	error = tp->error;
	pthread_mutex_unlock(&tp->mtx);
	return (error);
}
