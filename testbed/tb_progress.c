/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tb_progress.h"

/* A reader that stopped reading must not make us hoard memory. */
#define	QUEUE_MAX	(1u << 20)

struct line {
	struct line	*next;
	size_t		len;
	char		text[];
};

struct tb_progress {
	int		fd;
	pthread_t	thread;
	pthread_mutex_t	mtx;
	pthread_cond_t	cv;
	struct line	*head;
	struct line	**tailp;
	size_t		queued;
	bool		closing;
	bool		dead;		/* the reader went away */
};

static bool
write_all(int fd, const char *p, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return (false);
		p += n;
		len -= (size_t)n;
	}
	return (true);
}

static void *
writer_main(void *arg)
{
	struct tb_progress *pr = arg;
	struct line *l;

	pthread_mutex_lock(&pr->mtx);
	for (;;) {
		while (pr->head == NULL && !pr->closing)
			pthread_cond_wait(&pr->cv, &pr->mtx);
		l = pr->head;
		if (l == NULL)
			break;
		pr->head = l->next;
		if (pr->head == NULL)
			pr->tailp = &pr->head;
		pr->queued -= l->len;
		pthread_mutex_unlock(&pr->mtx);
		if (!pr->dead && !write_all(pr->fd, l->text, l->len))
			pr->dead = true;
		free(l);
		pthread_mutex_lock(&pr->mtx);
	}
	pthread_mutex_unlock(&pr->mtx);
	return (NULL);
}

int
tb_progress_open(struct tb_progress **prp, int fd)
{
	struct tb_progress *pr;
	int error;

	pr = calloc(1, sizeof(*pr));
	if (pr == NULL)
		return (ENOMEM);
	pr->fd = fd;
	pr->tailp = &pr->head;
	pthread_mutex_init(&pr->mtx, NULL);
	pthread_cond_init(&pr->cv, NULL);
	error = pthread_create(&pr->thread, NULL, writer_main, pr);
	if (error != 0) {
		pthread_cond_destroy(&pr->cv);
		pthread_mutex_destroy(&pr->mtx);
		free(pr);
		return (error);
	}
	*prp = pr;
	return (0);
}

void
tb_progress_post(struct tb_progress *pr, char *text)
{
	struct line *l;
	size_t len;

	if (text == NULL)
		return;
	len = strlen(text);
	l = malloc(sizeof(*l) + len + 1);
	if (l != NULL) {
		memcpy(l->text, text, len);
		l->text[len] = '\n';
		l->len = len + 1;
		l->next = NULL;
	}
	free(text);
	if (l == NULL)
		return;
	pthread_mutex_lock(&pr->mtx);
	if (pr->queued + l->len > QUEUE_MAX) {
		pthread_mutex_unlock(&pr->mtx);
		free(l);
		return;
	}
	*pr->tailp = l;
	pr->tailp = &l->next;
	pr->queued += l->len;
	pthread_cond_signal(&pr->cv);
	pthread_mutex_unlock(&pr->mtx);
}

void
tb_progress_close(struct tb_progress *pr)
{

	pthread_mutex_lock(&pr->mtx);
	pr->closing = true;
	pthread_cond_signal(&pr->cv);
	pthread_mutex_unlock(&pr->mtx);
	pthread_join(pr->thread, NULL);
	close(pr->fd);
	pthread_cond_destroy(&pr->cv);
	pthread_mutex_destroy(&pr->mtx);
	free(pr);
}
