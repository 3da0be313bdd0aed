/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The progress channel to tbctl.  The engine's progress hook must not
 * block, so lines are queued and a thread of their own writes them.
 */

#ifndef _TB_PROGRESS_H_
#define	_TB_PROGRESS_H_

struct tb_progress;

/* Take over fd and start the writer. */
int	tb_progress_open(struct tb_progress **, int fd);
/* Queue a malloc'd line (no newline); the queue owns it.  NULL: none. */
void	tb_progress_post(struct tb_progress *, char *line);
/* Write out what is queued, then close the channel. */
void	tb_progress_close(struct tb_progress *);

#endif /* _TB_PROGRESS_H_ */
