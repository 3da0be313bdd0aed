/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The migration control plane's request table and event codec
 * (migration_ctl.h).  Portable: no FreeBSD- or Linux-only calls.
 */

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migration.h"
#include "migration_ctl.h"
#include "migration_json.h"
#include "migration_wire.h"

#define	MS(v)		((v) * 1000)
#define	NITEMS(a)	(sizeof(a) / sizeof((a)[0]))

static const char *const fault_choices[] = {
	"none", "drop-page", "stale-device", "kill-stream", "bad-tag",
	"bad-tag-ignored", "bad-index-tag", NULL
};

const struct mig_opt mig_opts[MIG_OPT_COUNT] = {
	[MIG_OPT_DOWNTIME_LIMIT] = { "downtime-limit", "downtime_limit_ms",
	    MIG_OPT_UINT, 1, 3600 * 1000, 300, 0, NULL, "ms",
	    "stop pre-copy once the estimated downtime fits this limit", 0 },
	[MIG_OPT_MAX_ROUNDS] = { "max-rounds", "max_rounds", MIG_OPT_UINT, 1,
	    MIG_MAX_ROUNDS_LIMIT, 30, 0, NULL, "n",
	    "at most this many pre-copy rounds", 0 },
	[MIG_OPT_FIXED_ROUNDS] = { "fixed-rounds", "fixed_rounds",
	    MIG_OPT_UINT, 1, MIG_MAX_ROUNDS_LIMIT, 4, 0, NULL, "n",
	    "fixed rounds (as in D30954) instead of the downtime policy", 0 },
	[MIG_OPT_MAX_TIME] = { "max-time", "max_time_ms", MIG_OPT_UINT, 0,
	    24ull * 3600 * 1000, 0, 0, NULL, "ms",
	    "bound the pre-copy phase (0: no bound)", 0 },
	[MIG_OPT_BANDWIDTH] = { "bandwidth", "bandwidth", MIG_OPT_SIZE, 0,
	    UINT64_MAX, 0, 0, NULL, "bytes/s",
	    "limit the stream (suffixes k, m, g; 0: unlimited)", 0 },
	[MIG_OPT_ENCRYPT] = { "encrypt", "encrypt", MIG_OPT_FLAG, 0, 1, 0, 1,
	    NULL, NULL, "encrypt guest memory and state on the wire", 0 },
	[MIG_OPT_NO_THROTTLE] = { "no-throttle", "throttle", MIG_OPT_FLAG, 0,
	    1, 1, 0, NULL, NULL,
	    "never slow the vCPUs down to converge", 0 },
	[MIG_OPT_NO_LIVE] = { "no-live", "live", MIG_OPT_FLAG, 0, 1, 1, 0,
	    NULL, NULL, "pause the guest first, send memory once", 0 },
	[MIG_OPT_TIMEOUT] = { "timeout", "timeout_ms", MIG_OPT_UINT, 1,
	    INT32_MAX, 10000, 0, NULL, "ms",
	    "give up on a silent peer after this long", 0 },
	[MIG_OPT_MAX_PAUSE] = { "max-pause", "max_pause_ms", MIG_OPT_UINT, 0,
	    3600 * 1000, 0, 0, NULL, "ms",
	    "resume the guest here if it stays paused longer, before GO "
	    "(0: 10 x downtime-limit, at least 5000; the switchover "
	    "hook's wait not counted)", 0 },
	[MIG_OPT_DISKS] = { "disks", "disks", MIG_OPT_FLAG, 0, 1, 0, 1, NULL,
	    NULL, "move the guest's disks too (no shared storage): the "
	    "destination writes its own images", 0 },
	[MIG_OPT_SWITCHOVER_WAIT] = { "switchover-wait", "switchover_wait_ms",
	    MIG_OPT_UINT, 0, MIG_MAX_HOLD_MS, 0, 0, NULL, "ms",
	    "once paused, wait this long at most for a switchover hook's "
	    "go-ahead, else resume the guest here (0: no hook)", 0 },
	[MIG_OPT_STREAMS] = { "streams", "streams", MIG_OPT_UINT, 1,
	    MIG_STREAMS_MAX, 1, 0, NULL, "n",
	    "move memory over this many connections at once", 0 },
	[MIG_OPT_FAULT] = { "fault", "fault", MIG_OPT_CHOICE, 0, 6, 0, 0,
	    fault_choices,
	    "drop-page|stale-device|kill-stream|bad-tag|bad-tag-ignored|"
	    "bad-index-tag",
	    "inject a fault the destination's check must catch",
	    MIG_OPTF_TESTBED },
};

static const char *const phase_ids[MIG_PHASE_COUNT] = {
	[MIG_PHASE_CONNECT] = "connect",
	[MIG_PHASE_HANDSHAKE] = "handshake",
	[MIG_PHASE_AUTH] = "auth",
	[MIG_PHASE_COMPAT] = "compat",
	[MIG_PHASE_PRECOPY] = "precopy",
	[MIG_PHASE_STOPCOPY] = "stopcopy",
	[MIG_PHASE_STATE] = "state",
	[MIG_PHASE_SWITCHOVER] = "switchover",
	[MIG_PHASE_DONE] = "done",
};

static const char *const outcome_names[MIG_OUT_COUNT] = {
	[MIG_OUT_OK] = "ok",
	[MIG_OUT_FAILED] = "failed",
	[MIG_OUT_INDETERMINATE] = "indeterminate",
	[MIG_OUT_CANCELLED] = "cancelled",
	[MIG_OUT_COMPATIBLE] = "compatible",
	[MIG_OUT_INCOMPATIBLE] = "incompatible",
};

static const char *const runs_on_names[MIG_RUNS_COUNT] = {
	[MIG_RUNS_ON_SOURCE] = "source",
	[MIG_RUNS_ON_DEST] = "destination",
	[MIG_RUNS_PAUSED_ON_SOURCE] = "paused_on_source",
};

static const char *const stop_names[] = {
	[MIG_STOP_NONE] = "none",
	[MIG_STOP_CONVERGED] = "converged",
	[MIG_STOP_FIXED_ROUNDS] = "fixed-rounds",
	[MIG_STOP_MAX_ROUNDS] = "max-rounds",
	[MIG_STOP_MAX_TIME] = "max-time",
	[MIG_STOP_NO_PROGRESS] = "no-progress",
};

static int
name_index(const char *const *names, int n, const char *s)
{
	int i;

	for (i = 0; i < n; i++)
		if (names[i] != NULL && strcmp(names[i], s) == 0)
			return (i);
	return (-1);
}

const char *
mig_phase_id(enum mig_phase phase)
{

	return ((unsigned)phase < MIG_PHASE_COUNT ? phase_ids[phase] :
	    "unknown");
}

const char *
mig_outcome_name(enum mig_outcome o)
{

	return ((unsigned)o < MIG_OUT_COUNT ? outcome_names[o] : "failed");
}

const char *
mig_runs_on_name(enum mig_runs_on r)
{

	return ((unsigned)r < MIG_RUNS_COUNT ? runs_on_names[r] : "source");
}

int
mig_outcome_exit_code(enum mig_outcome o)
{

	switch (o) {
	case MIG_OUT_OK:
	case MIG_OUT_COMPATIBLE:
		return (MIG_EXIT_OK);
	case MIG_OUT_INDETERMINATE:
		return (MIG_EXIT_INDETERMINATE);
	case MIG_OUT_INCOMPATIBLE:
		return (MIG_EXIT_INCOMPATIBLE);
	default:
		return (MIG_EXIT_FAILED);
	}
}

int
mig_opt_by_name(const char *name)
{
	int i;

	for (i = 0; i < MIG_OPT_COUNT; i++)
		if (strcmp(mig_opts[i].name, name) == 0 ||
		    strcmp(mig_opts[i].key, name) == 0)
			return (i);
	return (-1);
}

/* A decimal number, with a k/m/g (binary) suffix if size is set. */
static int
parse_number(const char *s, bool size, uint64_t *v)
{
	uint64_t mult;
	uintmax_t n;
	char *end;

	if (!isdigit((unsigned char)s[0]))
		return (EINVAL);
	errno = 0;
	n = strtoumax(s, &end, 10);
	if (errno != 0)
		return (EINVAL);
	mult = 1;
	if (size && *end != '\0' && end[1] == '\0') {
		switch (tolower((unsigned char)*end)) {
		case 'k':
			mult = 1ull << 10;
			break;
		case 'm':
			mult = 1ull << 20;
			break;
		case 'g':
			mult = 1ull << 30;
			break;
		default:
			return (EINVAL);
		}
		end++;
	}
	if (*end != '\0' || n > UINT64_MAX / mult)
		return (EINVAL);
	*v = (uint64_t)n * mult;
	return (0);
}

/* Parse one option's value as the table says. */
static int
opt_value(const struct mig_opt *o, const char *arg, bool payload,
    uint64_t *v, char *msg, size_t msglen)
{
	int i;

	switch (o->type) {
	case MIG_OPT_FLAG:
		if (!payload) {
			*v = o->flag_value;
			return (0);
		}
		/* In a payload a flag's key carries its value: 0 or 1. */
		if (strcmp(arg, "0") == 0 || strcmp(arg, "1") == 0) {
			*v = arg[0] == '1';
			return (0);
		}
		snprintf(msg, msglen, "'%s' is neither 0 nor 1", arg);
		return (EINVAL);
	case MIG_OPT_CHOICE:
		i = name_index(o->choices, (int)(o->max + 1), arg);
		if (i < 0) {
			snprintf(msg, msglen, "'%s' is not one of %s", arg,
			    o->arg);
			return (EINVAL);
		}
		*v = (uint64_t)i;
		return (0);
	default:
		if (parse_number(arg, o->type == MIG_OPT_SIZE, v) != 0 ||
		    *v < o->min || *v > o->max) {
			snprintf(msg, msglen, "'%s' is not a number from %ju "
			    "to %ju%s", arg, (uintmax_t)o->min,
			    (uintmax_t)o->max, o->type == MIG_OPT_SIZE ?
			    " (suffixes k, m, g allowed)" : "");
			return (EINVAL);
		}
		return (0);
	}
}

int
mig_request_set(struct mig_request *req, int id, const char *arg, char *msg,
    size_t msglen)
{
	uint64_t v;
	int error;

	if (id < 0 || id >= MIG_OPT_COUNT) {
		snprintf(msg, msglen, "is not a migration option");
		return (EINVAL);
	}
	if ((error = opt_value(&mig_opts[id], arg, false, &v, msg,
	    msglen)) != 0)
		return (error);
	req->set[id] = true;
	req->val[id] = v;
	return (0);
}

int
mig_request_check(const struct mig_request *req, char *msg, size_t msglen)
{

	if (req->set[MIG_OPT_FIXED_ROUNDS] && req->set[MIG_OPT_MAX_ROUNDS]) {
		snprintf(msg, msglen, "%s and %s exclude each other",
		    mig_opts[MIG_OPT_FIXED_ROUNDS].name,
		    mig_opts[MIG_OPT_MAX_ROUNDS].name);
		return (EINVAL);
	}
	if (req->set[MIG_OPT_NO_LIVE] && (req->set[MIG_OPT_FIXED_ROUNDS] ||
	    req->set[MIG_OPT_MAX_ROUNDS] || req->set[MIG_OPT_DOWNTIME_LIMIT] ||
	    req->set[MIG_OPT_MAX_TIME])) {
		snprintf(msg, msglen, "round, time and downtime options apply "
		    "to a live migration only");
		return (EINVAL);
	}
	return (0);
}

char *
mig_request_encode(const struct mig_request *req,
    const uint8_t key[MIG_KEY_LEN])
{
	const struct mig_opt *o;
	char *buf;
	size_t len;
	FILE *f;
	int i;

	if ((f = open_memstream(&buf, &len)) == NULL)
		return (NULL);
	fputs("key=", f);
	for (i = 0; i < MIG_KEY_LEN; i++)
		fprintf(f, "%02x", key[i]);
	fputc('\n', f);
	for (i = 0; i < MIG_OPT_COUNT; i++) {
		if (!req->set[i])
			continue;
		o = &mig_opts[i];
		if (o->type == MIG_OPT_CHOICE)
			fprintf(f, "%s=%s\n", o->key, o->choices[req->val[i]]);
		else
			fprintf(f, "%s=%ju\n", o->key, (uintmax_t)req->val[i]);
	}
	if (fclose(f) != 0) {
		free(buf);
		return (NULL);
	}
	return (buf);
}

/* Apply one decoded option to the engine's parameters. */
static void
apply(struct mig_params *p, int id, uint64_t v)
{

	switch (id) {
	case MIG_OPT_DOWNTIME_LIMIT:
		p->downtime_limit_us = MS(v);
		break;
	case MIG_OPT_MAX_ROUNDS:
		p->max_rounds = (uint32_t)v;
		break;
	case MIG_OPT_FIXED_ROUNDS:
		p->policy = MIG_POLICY_FIXED;
		p->fixed_rounds = (uint32_t)v;
		break;
	case MIG_OPT_MAX_TIME:
		p->max_time_ms = v;
		break;
	case MIG_OPT_BANDWIDTH:
		p->bandwidth_limit = v;
		break;
	case MIG_OPT_ENCRYPT:
		p->encrypt = v != 0;
		break;
	case MIG_OPT_NO_THROTTLE:
		p->auto_throttle = v != 0;
		break;
	case MIG_OPT_NO_LIVE:
		p->live = v != 0;
		break;
	case MIG_OPT_TIMEOUT:
		p->io_timeout_ms = (uint32_t)v;
		break;
	case MIG_OPT_MAX_PAUSE:
		p->max_pause_ms = v;
		break;
	case MIG_OPT_DISKS:
		p->migrate_disks = v != 0;
		break;
	case MIG_OPT_SWITCHOVER_WAIT:
		p->switchover_wait_ms = v;
		break;
	case MIG_OPT_STREAMS:
		p->nstreams = (uint32_t)v;
		break;
	case MIG_OPT_FAULT:
		p->fault = v == 1 ? MIG_FAULT_DROP_DIRTY_PAGE :
		    v == 2 ? MIG_FAULT_STALE_DEVICE_STATE :
		    v == 3 ? MIG_FAULT_KILL_STREAM :
		    v == 4 ? MIG_FAULT_BAD_TAG :
		    v == 5 ? MIG_FAULT_BAD_TAG_IGNORED :
		    v == 6 ? MIG_FAULT_BAD_INDEX_TAG : MIG_FAULT_NONE;
		break;
	}
}

int
mig_request_decode(const char *payload, size_t len, struct mig_params *p,
    char *msg, size_t msglen)
{
	char line[256], why[MIG_ERRMSG_MAX], *eq;
	bool seen[MIG_OPT_COUNT], key;
	const char *s, *end, *nl;
	uint64_t v;
	size_t n;
	int error, i, id;

	mig_params_init(p);
	memset(seen, 0, sizeof(seen));
	key = false;
	if (len > MIG_REQUEST_MAX) {
		snprintf(msg, msglen, "the request is longer than %d bytes",
		    MIG_REQUEST_MAX);
		return (EINVAL);
	}
	for (s = payload, end = payload + len; s < end; s = nl + 1) {
		if ((nl = memchr(s, '\n', (size_t)(end - s))) == NULL)
			nl = end;
		n = (size_t)(nl - s);
		if (n == 0)
			continue;
		if (n >= sizeof(line) || memchr(s, '\0', n) != NULL) {
			snprintf(msg, msglen, "a request line is malformed");
			return (EINVAL);
		}
		memcpy(line, s, n);
		line[n] = '\0';
		if ((eq = strchr(line, '=')) == NULL) {
			snprintf(msg, msglen, "request line '%.64s' is not "
			    "key=value", line);
			return (EINVAL);
		}
		*eq++ = '\0';
		if (strcmp(line, "key") == 0) {
			/* Hex only: 32 raw bytes are no text line. */
			if (key || strlen(eq) != 2 * MIG_KEY_LEN ||
			    mig_key_decode(eq, strlen(eq), p->key, msg,
			    msglen) != 0) {
				snprintf(msg, msglen, "key: expected %d hex "
				    "digits, once", 2 * MIG_KEY_LEN);
				explicit_bzero(line, sizeof(line));
				return (EINVAL);
			}
			explicit_bzero(line, sizeof(line));
			key = true;
			continue;
		}
		id = -1;
		for (i = 0; i < MIG_OPT_COUNT; i++)
			if (strcmp(mig_opts[i].key, line) == 0)
				id = i;
		if (id < 0 || seen[id]) {
			snprintf(msg, msglen, "%s request key '%.64s'",
			    id < 0 ? "unknown" : "repeated", line);
			return (EINVAL);
		}
		if ((error = opt_value(&mig_opts[id], eq, true, &v, msg,
		    msglen)) != 0) {
			/* Name the key before what is wrong with it. */
			snprintf(why, sizeof(why), "%s", msg);
			snprintf(msg, msglen, "%s: %s", mig_opts[id].key, why);
			return (error);
		}
		seen[id] = true;
		apply(p, id, v);
	}
	if (!key) {
		snprintf(msg, msglen, "the request carries no migration key");
		return (EINVAL);
	}
	return (mig_params_check(p, msg, msglen));
}

void
mig_opts_usage(FILE *f, const char *prefix, bool testbed)
{
	const struct mig_opt *o;
	char left[64];
	int i;

	for (i = 0; i < MIG_OPT_COUNT; i++) {
		o = &mig_opts[i];
		if ((o->flags & MIG_OPTF_TESTBED) != 0 && !testbed)
			continue;
		snprintf(left, sizeof(left), "--%s%s%s%s", prefix, o->name,
		    o->arg != NULL ? "=" : "", o->arg != NULL ? o->arg : "");
		fprintf(f, "\t%-32s %s", left, o->help);
		if (o->type == MIG_OPT_UINT || o->type == MIG_OPT_SIZE)
			fprintf(f, " (default %ju)", (uintmax_t)o->def);
		fputc('\n', f);
	}
}

void
mig_event_result(struct mig_event *ev, enum mig_outcome outcome,
    const struct mig_error *err, const struct mig_stats *st)
{

	memset(ev, 0, sizeof(*ev));
	ev->type = MIG_EV_RESULT;
	ev->outcome = outcome;
	switch (outcome) {
	case MIG_OUT_OK:
		ev->runs_on = MIG_RUNS_ON_DEST;
		break;
	case MIG_OUT_INDETERMINATE:
		ev->runs_on = MIG_RUNS_PAUSED_ON_SOURCE;
		break;
	default:
		ev->runs_on = MIG_RUNS_ON_SOURCE;
		break;
	}
	if (err != NULL && outcome != MIG_OUT_OK &&
	    outcome != MIG_OUT_COMPATIBLE) {
		ev->has_error = true;
		ev->error = *err;
		if (ev->error.msg[0] == '\0')
			snprintf(ev->error.msg, sizeof(ev->error.msg), "%s",
			    strerror(err->code));
		if (outcome == MIG_OUT_INCOMPATIBLE) {
			ev->nreasons = 1;
			snprintf(ev->reasons[0], sizeof(ev->reasons[0]), "%s",
			    ev->error.msg);
		}
	}
	if (st != NULL) {
		ev->has_stats = true;
		ev->stats.total_time_us = st->total_time_us;
		ev->stats.downtime_us = st->downtime_us;
		ev->stats.downtime_memory_us = st->downtime_memory_us;
		ev->stats.downtime_hook_us = st->downtime_hook_us;
		ev->stats.downtime_state_us = st->downtime_state_us;
		ev->stats.state_bytes = st->state_bytes;
		ev->stats.bytes_sent = st->bytes_sent;
		ev->stats.memory_bytes = st->memory_bytes;
		ev->stats.rtt_us = st->rtt_us;
		ev->stats.protocol_version = st->protocol_version;
		ev->stats.encrypted = st->encrypted;
		ev->stats.stop_reason = st->stop_reason;
		ev->stats.nrounds = st->nrounds;
		ev->stats.nstreams = st->nstreams;
	}
}

static void
encode_result(FILE *f, const struct mig_event *ev)
{
	const struct mig_totals *t = &ev->stats;
	uint32_t i;

	fprintf(f, "{\"event\":\"result\",\"result\":\"%s\","
	    "\"guest_runs_on\":\"%s\"", mig_outcome_name(ev->outcome),
	    mig_runs_on_name(ev->runs_on));
	if (ev->has_error) {
		fprintf(f, ",\"error\":{\"side\":\"%s\",\"phase\":\"%s\","
		    "\"code\":%d,\"message\":", mig_side_name(ev->error.side),
		    mig_phase_id(ev->error.phase), ev->error.code);
		mig_json_string(f, ev->error.msg);
		fputc('}', f);
	}
	if (ev->outcome == MIG_OUT_COMPATIBLE ||
	    ev->outcome == MIG_OUT_INCOMPATIBLE) {
		fputs(",\"reasons\":[", f);
		for (i = 0; i < ev->nreasons && i < MIG_REASONS_MAX; i++) {
			if (i > 0)
				fputc(',', f);
			mig_json_string(f, ev->reasons[i]);
		}
		fputc(']', f);
	}
	if (ev->has_stats)
		fprintf(f, ",\"stats\":{\"total_time_us\":%" PRIu64
		    ",\"downtime_us\":%" PRIu64 ",\"downtime_memory_us\":%"
		    PRIu64 ",\"downtime_hook_us\":%" PRIu64
		    ",\"downtime_state_us\":%" PRIu64 ",\"state_bytes\":%" PRIu64
		    ",\"bytes_sent\":%" PRIu64 ",\"memory_bytes\":%" PRIu64
		    ",\"rtt_us\":%" PRIu64 ",\"protocol_version\":%" PRIu32
		    ",\"encrypted\":%s,\"stop_reason\":\"%s\",\"nrounds\":%"
		    PRIu32 ",\"streams\":%" PRIu32 "}", t->total_time_us,
		    t->downtime_us, t->downtime_memory_us, t->downtime_hook_us,
		    t->downtime_state_us, t->state_bytes, t->bytes_sent,
		    t->memory_bytes, t->rtt_us, t->protocol_version,
		    t->encrypted ? "true" : "false",
		    (unsigned)t->stop_reason < NITEMS(stop_names) ?
		    stop_names[t->stop_reason] : "none", t->nrounds,
		    t->nstreams);
	fputc('}', f);
}

char *
mig_event_encode(const struct mig_event *ev)
{
	const struct mig_round_stats *r = &ev->round;
	char *buf;
	size_t len;
	FILE *f;

	if ((f = open_memstream(&buf, &len)) == NULL)
		return (NULL);
	switch (ev->type) {
	case MIG_EV_PHASE:
		fprintf(f, "{\"event\":\"phase\",\"phase\":\"%s\"}",
		    mig_phase_id(ev->phase));
		break;
	case MIG_EV_ROUND:
		fprintf(f, "{\"event\":\"round\",\"index\":%" PRIu32
		    ",\"final\":%s,\"dirty_pages\":%" PRIu64 ",\"pages_sent\":%"
		    PRIu64 ",\"zero_pages\":%" PRIu64 ",\"unpopulated_pages\":%"
		    PRIu64 ",\"rewritten_pages\":%" PRIu64 ",\"owed_pages\":%"
		    PRIu64 ",\"bytes\":%" PRIu64 ",\"duration_us\":%" PRIu64
		    ",\"throttle_pct\":%" PRIu32 ",\"est_downtime_us\":%" PRIu64,
		    r->index, r->final ? "true" : "false", r->dirty_pages,
		    r->pages_sent, r->zero_pages, r->unpopulated_pages,
		    r->rewritten_pages, r->owed_pages, r->bytes, r->duration_us,
		    r->throttle_pct,
		    r->est_downtime_us);
		fprintf(f, ",\"disk_dirty_blocks\":%" PRIu64
		    ",\"disk_blocks_sent\":%" PRIu64 ",\"disk_zero_blocks\":%"
		    PRIu64 ",\"disk_bytes\":%" PRIu64 "}", r->disk_dirty_blocks,
		    r->disk_blocks_sent, r->disk_zero_blocks, r->disk_bytes);
		break;
	case MIG_EV_PROGRESS:
		fprintf(f, "{\"event\":\"progress\",\"phase\":\"%s\","
		    "\"round\":%" PRIu32 ",\"remaining_pages\":%" PRIu64
		    ",\"bytes_sent\":%" PRIu64 ",\"rate_bytes_per_s\":%" PRIu64
		    ",\"est_downtime_us\":%" PRIu64 "}",
		    mig_phase_id(ev->phase), ev->round_index,
		    ev->remaining_pages, ev->bytes_sent, ev->rate_bytes_per_s,
		    ev->est_downtime_us);
		break;
	case MIG_EV_RESULT:
		encode_result(f, ev);
		break;
	case MIG_EV_ESTIMATE_MISSED:
		fprintf(f, "{\"event\":\"estimate-missed\",\"phase\":\"%s\","
		    "\"est_downtime_us\":%" PRIu64 ",\"paused_us\":%" PRIu64 "}",
		    mig_phase_id(ev->phase), ev->est_downtime_us,
		    ev->paused_us);
		break;
	case MIG_EV_PAUSED:
		fprintf(f, "{\"event\":\"paused\",\"round\":%" PRIu32
		    ",\"dirty_pages\":%" PRIu64 ",\"dirty_bytes\":%" PRIu64
		    ",\"timeout_ms\":%" PRIu64 "}", ev->round_index,
		    ev->remaining_pages, ev->remaining_pages * MIG_PAGE_SIZE,
		    ev->hold_ms);
		break;
	}
	if (fclose(f) != 0) {
		free(buf);
		return (NULL);
	}
	if (len >= MIG_EVENT_MAX) {
		free(buf);
		return (NULL);
	}
	return (buf);
}

/* Decoding: every member the contract names must be there. */
struct dec {
	const char	*line;
	const char	*missing;
};

static uint64_t
dec_u64(struct dec *d, const char *path)
{
	uint64_t v;

	if (!mig_json_get_u64(d->line, path, &v)) {
		if (d->missing == NULL)
			d->missing = path;
		return (0);
	}
	return (v);
}

static bool
dec_bool(struct dec *d, const char *path)
{
	bool v;

	if (!mig_json_get_bool(d->line, path, &v)) {
		if (d->missing == NULL)
			d->missing = path;
		return (false);
	}
	return (v);
}

static int
dec_name(struct dec *d, const char *path, const char *const *names, int n)
{
	char buf[32];
	int i;

	if (!mig_json_get_string(d->line, path, buf, sizeof(buf)) ||
	    (i = name_index(names, n, buf)) < 0) {
		if (d->missing == NULL)
			d->missing = path;
		return (0);
	}
	return (i);
}

static void
decode_result(struct dec *d, struct mig_event *ev)
{
	static const char *const sides[] = {
		[MIG_SIDE_SOURCE] = "source",
		[MIG_SIDE_DEST] = "destination",
		[MIG_SIDE_LINK] = "link",
	};
	const char *reasons, *r;
	uint64_t code, v;

	ev->outcome = dec_name(d, "result", outcome_names, MIG_OUT_COUNT);
	ev->runs_on = dec_name(d, "guest_runs_on", runs_on_names,
	    MIG_RUNS_COUNT);
	if (mig_json_find(d->line, "error") != NULL) {
		ev->has_error = true;
		ev->error.side = dec_name(d, "error.side", sides, 3);
		ev->error.phase = dec_name(d, "error.phase", phase_ids,
		    MIG_PHASE_COUNT);
		code = dec_u64(d, "error.code");
		ev->error.code = code > INT32_MAX ? EINVAL : (int)code;
		if (!mig_json_get_string(d->line, "error.message",
		    ev->error.msg, sizeof(ev->error.msg)) && d->missing == NULL)
			d->missing = "error.message";
		ev->error.guest_running_on_source =
		    ev->runs_on == MIG_RUNS_ON_SOURCE;
	}
	reasons = mig_json_find(d->line, "reasons");
	while (reasons != NULL && ev->nreasons < MIG_REASONS_MAX &&
	    (r = mig_json_index(reasons, ev->nreasons)) != NULL &&
	    mig_json_string_at(r, ev->reasons[ev->nreasons],
	    sizeof(ev->reasons[0])))
		ev->nreasons++;
	if (mig_json_find(d->line, "stats") != NULL) {
		ev->has_stats = true;
		ev->stats.total_time_us = dec_u64(d, "stats.total_time_us");
		ev->stats.downtime_us = dec_u64(d, "stats.downtime_us");
		/* Newer than the rest: absent from older sources. */
		(void)mig_json_get_u64(d->line, "stats.downtime_memory_us",
		    &ev->stats.downtime_memory_us);
		(void)mig_json_get_u64(d->line, "stats.downtime_hook_us",
		    &ev->stats.downtime_hook_us);
		(void)mig_json_get_u64(d->line, "stats.downtime_state_us",
		    &ev->stats.downtime_state_us);
		ev->stats.state_bytes = dec_u64(d, "stats.state_bytes");
		ev->stats.bytes_sent = dec_u64(d, "stats.bytes_sent");
		ev->stats.memory_bytes = dec_u64(d, "stats.memory_bytes");
		ev->stats.rtt_us = dec_u64(d, "stats.rtt_us");
		ev->stats.protocol_version = (uint32_t)dec_u64(d,
		    "stats.protocol_version");
		ev->stats.encrypted = dec_bool(d, "stats.encrypted");
		ev->stats.stop_reason = dec_name(d, "stats.stop_reason",
		    stop_names, (int)NITEMS(stop_names));
		ev->stats.nrounds = (uint32_t)dec_u64(d, "stats.nrounds");
		/* Optional: a controller older than streams sends none. */
		if (!mig_json_get_u64(d->line, "stats.streams", &v))
			v = 1;
		ev->stats.nstreams = (uint32_t)v;
	}
}

int
mig_event_decode(const char *line, struct mig_event *ev, char *msg,
    size_t msglen)
{
	static const char *const types[] = {
		[MIG_EV_PHASE] = "phase",
		[MIG_EV_ROUND] = "round",
		[MIG_EV_PROGRESS] = "progress",
		[MIG_EV_RESULT] = "result",
		[MIG_EV_ESTIMATE_MISSED] = "estimate-missed",
		[MIG_EV_PAUSED] = "paused",
	};
	struct mig_round_stats *r = &ev->round;
	struct dec d;
	char type[24];
	int t;

	memset(ev, 0, sizeof(*ev));
	d.line = line;
	d.missing = NULL;
	if (strlen(line) >= MIG_EVENT_MAX ||
	    !mig_json_get_string(line, "event", type, sizeof(type)) ||
	    (t = name_index(types, (int)NITEMS(types), type)) < 0) {
		snprintf(msg, msglen, "not a migration event: '%.80s'", line);
		return (EINVAL);
	}
	ev->type = (enum mig_event_type)t;
	switch (ev->type) {
	case MIG_EV_PHASE:
		ev->phase = dec_name(&d, "phase", phase_ids, MIG_PHASE_COUNT);
		break;
	case MIG_EV_ROUND:
		r->index = (uint32_t)dec_u64(&d, "index");
		r->final = dec_bool(&d, "final");
		r->dirty_pages = dec_u64(&d, "dirty_pages");
		r->pages_sent = dec_u64(&d, "pages_sent");
		r->zero_pages = dec_u64(&d, "zero_pages");
		r->unpopulated_pages = dec_u64(&d, "unpopulated_pages");
		r->rewritten_pages = dec_u64(&d, "rewritten_pages");
		r->bytes = dec_u64(&d, "bytes");
		r->duration_us = dec_u64(&d, "duration_us");
		r->throttle_pct = (uint32_t)dec_u64(&d, "throttle_pct");
		r->est_downtime_us = dec_u64(&d, "est_downtime_us");
		/* Absent from controllers older than disk migration. */
		(void)mig_json_get_u64(line, "disk_dirty_blocks",
		    &r->disk_dirty_blocks);
		(void)mig_json_get_u64(line, "disk_blocks_sent",
		    &r->disk_blocks_sent);
		(void)mig_json_get_u64(line, "disk_zero_blocks",
		    &r->disk_zero_blocks);
		(void)mig_json_get_u64(line, "disk_bytes", &r->disk_bytes);
		/* Absent from controllers older than MIG_CAP_OWED. */
		(void)mig_json_get_u64(line, "owed_pages", &r->owed_pages);
		break;
	case MIG_EV_PROGRESS:
		ev->phase = dec_name(&d, "phase", phase_ids, MIG_PHASE_COUNT);
		ev->round_index = (uint32_t)dec_u64(&d, "round");
		ev->remaining_pages = dec_u64(&d, "remaining_pages");
		ev->bytes_sent = dec_u64(&d, "bytes_sent");
		ev->rate_bytes_per_s = dec_u64(&d, "rate_bytes_per_s");
		ev->est_downtime_us = dec_u64(&d, "est_downtime_us");
		break;
	case MIG_EV_RESULT:
		decode_result(&d, ev);
		break;
	case MIG_EV_ESTIMATE_MISSED:
		ev->phase = dec_name(&d, "phase", phase_ids, MIG_PHASE_COUNT);
		ev->est_downtime_us = dec_u64(&d, "est_downtime_us");
		ev->paused_us = dec_u64(&d, "paused_us");
		break;
	case MIG_EV_PAUSED:
		ev->round_index = (uint32_t)dec_u64(&d, "round");
		ev->remaining_pages = dec_u64(&d, "dirty_pages");
		(void)dec_u64(&d, "dirty_bytes");
		ev->hold_ms = dec_u64(&d, "timeout_ms");
		break;
	}
	if (d.missing != NULL) {
		snprintf(msg, msglen, "%s event without a valid \"%s\"",
		    type, d.missing);
		return (EINVAL);
	}
	return (0);
}

static void
print_result(FILE *f, const struct mig_event *ev)
{
	const struct mig_totals *t = &ev->stats;
	uint32_t i;

	switch (ev->outcome) {
	case MIG_OUT_OK:
		fprintf(f, "Migration complete: the guest runs on the "
		    "destination now.\n");
		break;
	case MIG_OUT_COMPATIBLE:
		fprintf(f, "Compatible: the destination would accept this "
		    "guest.\n");
		break;
	case MIG_OUT_INCOMPATIBLE:
		fprintf(f, "Incompatible:\n");
		for (i = 0; i < ev->nreasons; i++)
			fprintf(f, "  %s\n", ev->reasons[i]);
		return;
	case MIG_OUT_CANCELLED:
		fprintf(f, "Migration cancelled: %s; the guest keeps running "
		    "on the source.\n", ev->has_error ? ev->error.msg :
		    "by the operator");
		return;
	case MIG_OUT_INDETERMINATE:
		fprintf(f, "Migration outcome unknown (%s side, during %s): "
		    "%s.\nThe guest stays paused on the source so that it "
		    "never runs twice: ask the destination whether it runs "
		    "there; if not, resume it here (--migrate-resume), if so, "
		    "destroy it here.\n", mig_side_name(ev->error.side),
		    mig_phase_name(ev->error.phase), ev->error.msg);
		return;
	default:
		fprintf(f, "Migration failed on the %s side during %s: %s.\n"
		    "The guest keeps running on the source.\n",
		    ev->has_error ? mig_side_name(ev->error.side) : "source",
		    mig_phase_name(ev->has_error ? ev->error.phase :
		    MIG_PHASE_CONNECT), ev->has_error ? ev->error.msg :
		    "no reason given");
		return;
	}
	if (ev->has_stats && t->nrounds > 0)
		fprintf(f, "Moved %.1f MiB of guest memory in %u rounds, %.1f "
		    "MiB on the wire%s, in %.3f s; guest downtime %.1f ms\n",
		    (double)t->memory_bytes / (1 << 20), t->nrounds,
		    (double)t->bytes_sent / (1 << 20), t->encrypted ?
		    " (encrypted)" : "", (double)t->total_time_us / 1e6,
		    (double)t->downtime_us / 1e3);
	if (ev->has_stats && t->downtime_hook_us > 0)
		fprintf(f, "Downtime: %.1f ms memory, %.1f ms switchover hook, "
		    "%.1f ms state and switchover\n",
		    (double)t->downtime_memory_us / 1e3,
		    (double)t->downtime_hook_us / 1e3,
		    (double)t->downtime_state_us / 1e3);
}

void
mig_event_print(FILE *f, const struct mig_event *ev)
{
	const struct mig_round_stats *r = &ev->round;

	switch (ev->type) {
	case MIG_EV_PHASE:
		fprintf(f, "Migration phase: %s\n", mig_phase_name(ev->phase));
		break;
	case MIG_EV_ROUND:
		if (r->final)
			fprintf(f, "Final round, guest paused: ");
		else
			fprintf(f, "Round %u: ", r->index);
		fprintf(f, "%ju dirty pages, %ju sent, %ju zero; %.1f MiB in "
		    "%.1f ms", (uintmax_t)r->dirty_pages,
		    (uintmax_t)r->pages_sent, (uintmax_t)r->zero_pages,
		    (double)r->bytes / (1 << 20),
		    (double)r->duration_us / 1e3);
		if (r->disk_dirty_blocks != 0)
			fprintf(f, "; disk: %ju blocks, %ju sent, %ju zero, "
			    "%.1f MiB", (uintmax_t)r->disk_dirty_blocks,
			    (uintmax_t)r->disk_blocks_sent,
			    (uintmax_t)r->disk_zero_blocks,
			    (double)r->disk_bytes / (1 << 20));
		if (r->throttle_pct != 0)
			fprintf(f, "; vCPUs slowed by %u%%", r->throttle_pct);
		if (!r->final)
			fprintf(f, "; estimated downtime %.1f ms",
			    (double)r->est_downtime_us / 1e3);
		fputc('\n', f);
		break;
	case MIG_EV_PROGRESS:
		break;
	case MIG_EV_RESULT:
		print_result(f, ev);
		break;
	case MIG_EV_ESTIMATE_MISSED:
		fprintf(f, "Downtime estimate missed: the guest has been paused "
		    "%.1f ms, %.1f ms were estimated (%s)\n",
		    (double)ev->paused_us / 1e3,
		    (double)ev->est_downtime_us / 1e3,
		    mig_phase_name(ev->phase));
		break;
	case MIG_EV_PAUSED:
		fprintf(f, "Guest paused for the switchover hook: %ju dirty "
		    "pages (%.1f MiB) still to send; waiting up to %.1f s for "
		    "its go-ahead (--migrate-continue)\n",
		    (uintmax_t)ev->remaining_pages,
		    (double)ev->remaining_pages * MIG_PAGE_SIZE / (1 << 20),
		    (double)ev->hold_ms / 1e3);
		break;
	}
	fflush(f);
}
