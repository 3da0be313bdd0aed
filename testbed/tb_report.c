/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "migration.h"

#include "tb_json.h"
#include "tb_report.h"

static double
ms(uint64_t us)
{

	return ((double)us / 1000.0);
}

static void
round_members(FILE *f, const struct mig_round_stats *r)
{

	fprintf(f, "\"index\":%" PRIu32 ",\"dirty_pages\":%" PRIu64
	    ",\"pages_sent\":%" PRIu64 ",\"zero_pages\":%" PRIu64
	    ",\"bytes\":%" PRIu64 ",\"duration_ms\":%.3f,\"final\":%s"
	    ",\"throttle_pct\":%" PRIu32 ",\"est_downtime_ms\":%.3f",
	    r->index, r->dirty_pages, r->pages_sent, r->zero_pages,
	    r->bytes, ms(r->duration_us), r->final ? "true" : "false",
	    r->throttle_pct, ms(r->est_downtime_us));
}

static void
report_members(FILE *f, const struct tb_report *r)
{
	const struct mig_stats *s = r->stats;
	uint32_t i;

	fputs("\"role\":", f);
	tb_json_string(f, r->role);
	fputs(",\"status\":", f);
	tb_json_string(f, r->status);
	fputs(",\"error\":", f);
	if (r->error == NULL)
		fputs("null", f);
	else {
		fputs("{\"side\":", f);
		tb_json_string(f, mig_side_name(r->error->side));
		fputs(",\"phase\":", f);
		tb_json_string(f, mig_phase_name(r->error->phase));
		fputs(",\"message\":", f);
		tb_json_string(f, r->error->msg);
		fputc('}', f);
	}
	fprintf(f, ",\"total_time_ms\":%.3f,\"downtime_ms\":%.3f"
	    ",\"bytes_sent\":%" PRIu64 ",\"state_bytes\":%" PRIu64
	    ",\"rtt_ms\":%.3f,\"protocol_version\":%" PRIu32
	    ",\"encrypted\":%s,\"stop_reason\":\"%s\",\"guest\":{\"name\":",
	    ms(s->total_time_us), ms(s->downtime_us), s->bytes_sent,
	    s->state_bytes, ms(s->rtt_us), s->protocol_version,
	    s->encrypted ? "true" : "false",
	    mig_stop_reason_name(s->stop_reason));
	tb_json_string(f, r->name);
	fprintf(f, ",\"memory_bytes\":%" PRIu64 ",\"vcpus\":%" PRIu32
	    "},\"rounds\":[", r->memory_bytes, r->vcpus);
	for (i = 0; i < s->nrounds && s->rounds != NULL; i++) {
		fputs(i == 0 ? "{" : ",{", f);
		round_members(f, &s->rounds[i]);
		fputc('}', f);
	}
	fputc(']', f);
}

/* open_memstream() sets *bufp only when the stream is closed. */
static char *
finish(FILE *f, char **bufp)
{

	if (fclose(f) != 0) {
		free(*bufp);
		return (NULL);
	}
	return (*bufp);
}

/* The report as one object, its members after the opening text. */
static char *
report_object(const struct tb_report *r, const char *opening)
{
	char *buf;
	size_t len;
	FILE *f;

	f = open_memstream(&buf, &len);
	if (f == NULL)
		return (NULL);
	fputs(opening, f);
	report_members(f, r);
	fputc('}', f);
	return (finish(f, &buf));
}

char *
tb_report_json(const struct tb_report *r)
{

	return (report_object(r, "{"));
}

char *
tb_report_result_event(const struct tb_report *r)
{

	return (report_object(r, "{\"event\":\"result\","));
}

char *
tb_report_progress_event(const struct mig_progress *p)
{
	char *buf;
	size_t len;
	FILE *f;

	f = open_memstream(&buf, &len);
	if (f == NULL)
		return (NULL);
	if (p->last_round != NULL) {
		fputs("{\"event\":\"round\",", f);
		round_members(f, p->last_round);
		fputc('}', f);
	} else {
		fputs("{\"event\":\"phase\",\"phase\":", f);
		tb_json_string(f, mig_phase_name(p->phase));
		fprintf(f, ",\"round\":%" PRIu32 ",\"remaining_pages\":%"
		    PRIu64 "}", p->round, p->remaining_pages);
	}
	return (finish(f, &buf));
}
