/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The migration control plane, shared by bhyve, bhyvectl, tbvm and
 * tbctl: the request (every option in one table), the events the source
 * streams to its controller, and the controllers' exit codes.
 *
 * Request payload: text lines "key=value", one option a line, keys from
 * mig_opts[] plus "key" (the per-migration key in hex).  bhyvectl puts
 * it in the nvlist's "request" string, tbctl sends it as the body of
 * its control message: the same bytes.
 *
 * Events: JSON lines, one object a line, UTF-8 (MIGRATION-PROTOCOL.md,
 * "Control plane"):
 *
 *	{"event":"phase","phase":ID}
 *	{"event":"round","index":N,"final":B,"dirty_pages":N,...}
 *	{"event":"progress","phase":ID,"round":N,"remaining_pages":N,...}
 *	{"event":"estimate-missed","phase":ID,"est_downtime_us":N,
 *	    "paused_us":N}
 *	{"event":"paused","round":N,"dirty_pages":N,"dirty_bytes":N,
 *	    "timeout_ms":N}
 *	{"event":"result","result":R,"guest_runs_on":W,"error":{...},
 *	    "reasons":[...],"stats":{...}}
 *
 * "result" is always the last line.
 */

#ifndef _MIGRATION_CTL_H_
#define	_MIGRATION_CTL_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "migration.h"

/* Exit codes of bhyvectl --migrate* and tbctl. */
#define	MIG_EXIT_OK		0	/* migrated, or compatible */
#define	MIG_EXIT_FAILED		1	/* the guest runs on the source */
#define	MIG_EXIT_INDETERMINATE	3	/* the guest stays paused there */
#define	MIG_EXIT_INCOMPATIBLE	4	/* --migrate-check said no */
#define	MIG_EXIT_USAGE		64	/* EX_USAGE: bad options */

#define	MIG_EVENT_MAX		8192	/* one event line, bytes */
#define	MIG_REQUEST_MAX		2048	/* one request payload, bytes */
#define	MIG_REASONS_MAX		8

enum mig_opt_type {
	MIG_OPT_UINT,		/* decimal number */
	MIG_OPT_SIZE,		/* number with an optional k, m, g suffix */
	MIG_OPT_FLAG,		/* no argument: sets flag_value */
	MIG_OPT_CHOICE		/* one of choices[] (its index) */
};

enum mig_opt_id {
	MIG_OPT_DOWNTIME_LIMIT = 0,
	MIG_OPT_MAX_ROUNDS,
	MIG_OPT_FIXED_ROUNDS,
	MIG_OPT_MAX_TIME,
	MIG_OPT_BANDWIDTH,
	MIG_OPT_ENCRYPT,
	MIG_OPT_NO_THROTTLE,
	MIG_OPT_NO_LIVE,
	MIG_OPT_TIMEOUT,
	MIG_OPT_MAX_PAUSE,
	MIG_OPT_DISKS,
	MIG_OPT_SWITCHOVER_WAIT,
	MIG_OPT_STREAMS,
	MIG_OPT_FAULT,			/* the test bed's; stays last */
	MIG_OPT_COUNT
};

#define	MIG_OPTF_TESTBED	0x1	/* test bed only: not in bhyvectl */

struct mig_opt {
	const char	*name;		/* tbctl --NAME, bhyvectl --migrate-NAME */
	const char	*key;		/* payload key */
	enum mig_opt_type type;
	uint64_t	min, max;	/* bounds of the value */
	uint64_t	def;		/* value when not given */
	uint64_t	flag_value;	/* MIG_OPT_FLAG: the value it sets */
	const char	*const *choices; /* MIG_OPT_CHOICE: NULL-terminated */
	const char	*arg;		/* argument's name in the help */
	const char	*help;
	int		flags;
};

extern const struct mig_opt mig_opts[MIG_OPT_COUNT];

struct mig_request {
	bool		set[MIG_OPT_COUNT];
	uint64_t	val[MIG_OPT_COUNT];
};

/* Find an option by name or payload key; -1 if there is none. */
int	mig_opt_by_name(const char *name);
/*
 * Record option id with its argument (NULL for a flag).  On error msg
 * says what is wrong, for the caller to put after the option's name.
 */
int	mig_request_set(struct mig_request *, int id, const char *arg,
	    char *msg, size_t msglen);
/* Options that exclude each other, live-only options: EINVAL and msg. */
int	mig_request_check(const struct mig_request *, char *msg,
	    size_t msglen);
/* The payload for key and the options set; a malloc'd string or NULL. */
char	*mig_request_encode(const struct mig_request *,
	    const uint8_t key[MIG_KEY_LEN]);
/* Decode a payload into engine parameters; EINVAL with msg if bad. */
int	mig_request_decode(const char *payload, size_t len,
	    struct mig_params *, char *msg, size_t msglen);
/* Print the options' help lines, prefix before each name. */
void	mig_opts_usage(FILE *, const char *prefix, bool testbed);

enum mig_event_type {
	MIG_EV_PHASE = 0,
	MIG_EV_ROUND,
	MIG_EV_PROGRESS,
	MIG_EV_RESULT,
	MIG_EV_ESTIMATE_MISSED,	/* once: paused longer than estimated */
	MIG_EV_PAUSED		/* waiting for the switchover hook */
};

enum mig_outcome {
	MIG_OUT_OK = 0,
	MIG_OUT_FAILED,
	MIG_OUT_INDETERMINATE,
	MIG_OUT_CANCELLED,
	MIG_OUT_COMPATIBLE,
	MIG_OUT_INCOMPATIBLE,
	MIG_OUT_COUNT
};

enum mig_runs_on {
	MIG_RUNS_ON_SOURCE = 0,
	MIG_RUNS_ON_DEST,
	MIG_RUNS_PAUSED_ON_SOURCE,
	MIG_RUNS_COUNT
};

/* A result's totals: struct mig_stats without the rounds. */
struct mig_totals {
	uint64_t	total_time_us;
	uint64_t	downtime_us;
	uint64_t	downtime_memory_us;
	uint64_t	downtime_hook_us;
	uint64_t	downtime_state_us;
	uint64_t	state_bytes;
	uint64_t	bytes_sent;
	uint64_t	memory_bytes;
	uint64_t	rtt_us;
	uint32_t	protocol_version;
	bool		encrypted;
	enum mig_stop_reason stop_reason;
	uint32_t	nrounds;
	uint32_t	nstreams;
};

struct mig_event {
	enum mig_event_type type;
	enum mig_phase	phase;		/* phase, progress */
	struct mig_round_stats round;	/* round */
	/* progress; paused: round_index, remaining_pages, hold_ms */
	uint32_t	round_index;
	uint64_t	remaining_pages;
	uint64_t	hold_ms;
	uint64_t	bytes_sent;
	uint64_t	rate_bytes_per_s;
	uint64_t	est_downtime_us;	/* and estimate-missed */
	uint64_t	paused_us;		/* estimate-missed */
	/* result */
	enum mig_outcome outcome;
	enum mig_runs_on runs_on;
	bool		has_error;
	struct mig_error error;		/* its msg is the message */
	uint32_t	nreasons;
	char		reasons[MIG_REASONS_MAX][MIG_ERRMSG_MAX];
	bool		has_stats;
	struct mig_totals stats;
};

const char *mig_phase_id(enum mig_phase);
const char *mig_outcome_name(enum mig_outcome);
const char *mig_runs_on_name(enum mig_runs_on);
/* The exit code a controller ends with for this outcome. */
int	mig_outcome_exit_code(enum mig_outcome);

/* Fill a result event from an engine outcome. */
void	mig_event_result(struct mig_event *, enum mig_outcome,
	    const struct mig_error *, const struct mig_stats *);
/* One event as a line without its newline: malloc'd, NULL if short. */
char	*mig_event_encode(const struct mig_event *);
/* Decode one line; EINVAL with msg if it is not an event. */
int	mig_event_decode(const char *line, struct mig_event *, char *msg,
	    size_t msglen);
/* The event in words for an operator, one line (none for progress). */
void	mig_event_print(FILE *, const struct mig_event *);

#endif /* !_MIGRATION_CTL_H_ */
