/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The migration's memory beyond the guest's, from /proc/self: the peak
 * resident set since tb_memstat_reset() (VmHWM) less the resident part
 * of the guest's own mappings (their Rss in /proc/self/smaps).  What is
 * left is the engine's buffers and bitmaps, the test bed's dirty log,
 * threads and libraries.
 */

#ifndef _TB_MEMSTAT_H_
#define	_TB_MEMSTAT_H_

#include <stdint.h>

struct tb_guest;

struct tb_memstat {
	uint64_t	peak_kib;	/* VmHWM */
	uint64_t	resident_kib;	/* VmRSS */
	uint64_t	guest_kib;	/* resident guest memory, now */
};

/* Start a new peak (Linux: "5" into /proc/self/clear_refs). */
int	tb_memstat_reset(void);
int	tb_memstat_read(const struct tb_guest *, struct tb_memstat *);
/*
 * Print "ENGINE_MEMORY {json}" for the harness.  Guest memory only grows
 * during a migration, so peak less the guest's resident memory at the end
 * is at most the engine's part of the peak.
 */
void	tb_memstat_print(const struct tb_guest *);

#endif /* _TB_MEMSTAT_H_ */
