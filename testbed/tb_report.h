/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * JSON of a migration's outcome and progress, one object per line:
 * the report tbctl and "tbvm receive --report" write, and the events
 * the source streams to tbctl.
 */

#ifndef _TB_REPORT_H_
#define	_TB_REPORT_H_

#include <stdint.h>

#include "migration.h"

struct tb_report {
	const char	*role;		/* "source" or "destination" */
	const char	*status;	/* completed, failed, indeterminate */
	const struct mig_error *error;	/* NULL if none */
	const struct mig_stats *stats;
	const char	*name;
	uint64_t	memory_bytes;
	uint32_t	vcpus;
};

/* Each returns a malloc'd line without its newline, or NULL. */
char	*tb_report_json(const struct tb_report *);
/* The report as a progress event: {"event":"result",...}. */
char	*tb_report_result_event(const struct tb_report *);
char	*tb_report_progress_event(const struct mig_progress *);

#endif /* _TB_REPORT_H_ */
