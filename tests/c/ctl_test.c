/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Tests of the control plane's codec (migration_ctl.c): the request
 * table and payload, the events' one encoder and one decoder, hostile
 * lines.  One line per case, PASS or FAIL, then a count.
 */

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migration.h"
#include "migration_ctl.h"
#include "test_check.h"

static const uint8_t key[MIG_KEY_LEN] = { 1, 2, 3, 4, 5, 6, 7, 8 };

static void
test_request_round_trip(void)
{
	struct mig_request req;
	struct mig_params p;
	char msg[MIG_ERRMSG_MAX], *payload;
	int error;

	memset(&req, 0, sizeof(req));
	error = mig_request_set(&req, MIG_OPT_DOWNTIME_LIMIT, "250", msg,
	    sizeof(msg)) |
	    mig_request_set(&req, MIG_OPT_BANDWIDTH, "100m", msg,
	    sizeof(msg)) |
	    mig_request_set(&req, MIG_OPT_ENCRYPT, NULL, msg, sizeof(msg)) |
	    mig_request_set(&req, MIG_OPT_NO_THROTTLE, NULL, msg,
	    sizeof(msg)) |
	    mig_request_set(&req, MIG_OPT_FIXED_ROUNDS, "5", msg,
	    sizeof(msg)) |
	    mig_request_set(&req, MIG_OPT_DISKS, NULL, msg, sizeof(msg)) |
	    mig_request_set(&req, MIG_OPT_FAULT, "drop-page", msg,
	    sizeof(msg));
	check(error == 0, "options set from their table", msg);
	payload = mig_request_encode(&req, key);
	check(payload != NULL && strstr(payload, "downtime_limit_ms=250\n") &&
	    strstr(payload, "bandwidth=104857600\n") &&
	    strstr(payload, "throttle=0\n") && strstr(payload, "disks=1\n") &&
	    strstr(payload, "fault=drop-page"),
	    "payload keys come from the table", payload);
	error = mig_request_decode(payload, strlen(payload), &p, msg,
	    sizeof(msg));
	check(error == 0 && p.downtime_limit_us == 250000 &&
	    p.bandwidth_limit == 100u << 20 && p.encrypt && !p.auto_throttle &&
	    p.policy == MIG_POLICY_FIXED && p.fixed_rounds == 5 &&
	    p.fault == MIG_FAULT_DROP_DIRTY_PAGE && p.migrate_disks &&
	    p.key[0] == 1 &&
	    p.key[7] == 8, "payload decodes to the same parameters", msg);
	free(payload);

	memset(&req, 0, sizeof(req));
	error = mig_request_set(&req, MIG_OPT_SWITCHOVER_WAIT, "45000", msg,
	    sizeof(msg));
	payload = mig_request_encode(&req, key);
	check(error == 0 && payload != NULL &&
	    strstr(payload, "switchover_wait_ms=45000\n") != NULL &&
	    mig_request_decode(payload, strlen(payload), &p, msg,
	    sizeof(msg)) == 0 && p.switchover_wait_ms == 45000,
	    "switchover wait travels in the request", payload);
	free(payload);
	mig_params_init(&p);
	check(p.switchover_wait_ms == 0 && p.hook == NULL,
	    "no switchover hook by default", NULL);
}

/* The go-ahead counts only while the engine waits for it. */
static void
test_hook_gate(void)
{
	struct mig_hook h;

	mig_hook_init(&h);
	check(!mig_hook_release(&h),
	    "a go-ahead with nobody waiting is refused", NULL);
	h.state = 1;		/* what the engine's wait sets */
	check(mig_hook_release(&h) && !mig_hook_release(&h),
	    "the go-ahead releases a waiting hook once", NULL);
}

static void
expect_refused(const char *payload, const char *want, const char *name)
{
	struct mig_params p;
	char msg[MIG_ERRMSG_MAX];
	int error;

	msg[0] = '\0';
	error = mig_request_decode(payload, strlen(payload), &p, msg,
	    sizeof(msg));
	check(error == EINVAL && strstr(msg, want) != NULL, name, msg);
}

static void
test_request_refusals(void)
{
	static const char k[] = "key=0102030405060708000000000000000000000000"
	    "000000000000000000000000\n";
	struct mig_request req;
	char msg[MIG_ERRMSG_MAX], buf[512];

	expect_refused("max_rounds=3\n", "no migration key", "no key refused");
	expect_refused("key=abc\n", "hex digits", "short key refused");
	snprintf(buf, sizeof(buf), "%s%s", k, k);
	expect_refused(buf, "once", "two keys refused");
	snprintf(buf, sizeof(buf), "%sdowntime_ms=3\n", k);
	expect_refused(buf, "unknown request key 'downtime_ms'",
	    "the old spelling is refused by name");
	snprintf(buf, sizeof(buf), "%smax_rounds=3\nmax_rounds=4\n", k);
	expect_refused(buf, "repeated", "repeated key refused");
	snprintf(buf, sizeof(buf), "%smax_rounds=0\n", k);
	expect_refused(buf, "max_rounds: '0' is not a number from 1",
	    "out-of-range value refused with its key");
	snprintf(buf, sizeof(buf), "%sencrypt=yes\n", k);
	expect_refused(buf, "neither 0 nor 1", "flag needs 0 or 1");
	snprintf(buf, sizeof(buf), "%sfault=melt\n", k);
	expect_refused(buf, "not one of", "unknown choice refused");
	snprintf(buf, sizeof(buf), "%sbandwidth=12q\n", k);
	expect_refused(buf, "suffixes", "bad size suffix refused");
	snprintf(buf, sizeof(buf), "%snot a pair\n", k);
	expect_refused(buf, "not key=value", "line without '=' refused");
	memset(buf, 'a', sizeof(buf));
	buf[sizeof(buf) - 1] = '\0';
	expect_refused(buf, "malformed", "overlong line refused");

	memset(&req, 0, sizeof(req));
	check(mig_request_set(&req, MIG_OPT_MAX_ROUNDS, "x", msg,
	    sizeof(msg)) == EINVAL && strstr(msg, "'x'") != NULL,
	    "option value checked where it is given", msg);
	check(mig_request_set(&req, MIG_OPT_COUNT, "1", msg, sizeof(msg)) ==
	    EINVAL, "unknown option id refused", msg);
	(void)mig_request_set(&req, MIG_OPT_FIXED_ROUNDS, "3", msg,
	    sizeof(msg));
	(void)mig_request_set(&req, MIG_OPT_MAX_ROUNDS, "3", msg, sizeof(msg));
	check(mig_request_check(&req, msg, sizeof(msg)) == EINVAL &&
	    strstr(msg, "exclude each other") != NULL,
	    "fixed and max rounds exclude each other", msg);
	snprintf(buf, sizeof(buf), "%sswitchover_wait_ms=3600001\n", k);
	expect_refused(buf, "switchover_wait_ms: '3600001' is not a number",
	    "a switchover wait past an hour is refused");
	check(mig_opt_by_name("downtime-limit") == MIG_OPT_DOWNTIME_LIMIT &&
	    mig_opt_by_name("downtime_limit_ms") == MIG_OPT_DOWNTIME_LIMIT &&
	    mig_opt_by_name("downtime") == -1,
	    "options found by name and by key", NULL);
}

static void
test_event_round_trip(void)
{
	struct mig_event ev, back;
	struct mig_stats st;
	struct mig_error err;
	char msg[MIG_ERRMSG_MAX], *line;

	memset(&ev, 0, sizeof(ev));
	ev.type = MIG_EV_ROUND;
	ev.round.index = 3;
	ev.round.final = true;
	ev.round.dirty_pages = 1ull << 40;
	ev.round.bytes = 12345;
	ev.round.est_downtime_us = 999;
	ev.round.disk_dirty_blocks = 77;
	ev.round.disk_bytes = 4242;
	line = mig_event_encode(&ev);
	check(line != NULL && mig_event_decode(line, &back, msg,
	    sizeof(msg)) == 0 && back.type == MIG_EV_ROUND &&
	    back.round.index == 3 && back.round.final &&
	    back.round.dirty_pages == 1ull << 40 && back.round.bytes == 12345 &&
	    back.round.est_downtime_us == 999 &&
	    back.round.disk_dirty_blocks == 77 && back.round.disk_bytes == 4242,
	    "round event round trip", line);
	free(line);
	/* A controller from before disk migration: no disk members. */
	msg[0] = '\0';
	check(mig_event_decode("{\"event\":\"round\",\"index\":1,"
	    "\"final\":false,\"dirty_pages\":1,\"pages_sent\":1,"
	    "\"zero_pages\":0,\"unpopulated_pages\":0,\"rewritten_pages\":0,"
	    "\"bytes\":4104,\"duration_us\":1,\"throttle_pct\":0,"
	    "\"est_downtime_us\":1}", &back, msg, sizeof(msg)) == 0 &&
	    back.round.disk_bytes == 0,
	    "round event without disk members read", NULL);

	memset(&ev, 0, sizeof(ev));
	ev.type = MIG_EV_PHASE;
	ev.phase = MIG_PHASE_COMPAT;
	line = mig_event_encode(&ev);
	check(line != NULL && strcmp(line,
	    "{\"event\":\"phase\",\"phase\":\"compat\"}") == 0,
	    "phase identifiers have no spaces", line);
	free(line);

	memset(&err, 0, sizeof(err));
	err.side = MIG_SIDE_DEST;
	err.phase = MIG_PHASE_STATE;
	err.code = EINVAL;
	snprintf(err.msg, sizeof(err.msg),
	    "cpu0 \"differs\"\n\tbadly\r \\ \x01 done");
	memset(&st, 0, sizeof(st));
	st.nrounds = 2;
	st.downtime_us = 81500;
	st.stop_reason = MIG_STOP_CONVERGED;
	mig_event_result(&ev, MIG_OUT_FAILED, &err, &st);
	line = mig_event_encode(&ev);
	check(line != NULL && strchr(line, '\n') == NULL &&
	    mig_event_decode(line, &back, msg, sizeof(msg)) == 0 &&
	    back.outcome == MIG_OUT_FAILED &&
	    back.runs_on == MIG_RUNS_ON_SOURCE && back.has_error &&
	    back.error.side == MIG_SIDE_DEST &&
	    back.error.phase == MIG_PHASE_STATE &&
	    back.error.code == EINVAL &&
	    strcmp(back.error.msg, err.msg) == 0 && back.has_stats &&
	    back.stats.nrounds == 2 && back.stats.downtime_us == 81500 &&
	    back.stats.stop_reason == MIG_STOP_CONVERGED,
	    "result event round trip, message escaped", line);
	free(line);

	mig_event_result(&ev, MIG_OUT_INCOMPATIBLE, &err, NULL);
	line = mig_event_encode(&ev);
	check(line != NULL && mig_event_decode(line, &back, msg,
	    sizeof(msg)) == 0 && back.nreasons == 1 &&
	    strcmp(back.reasons[0], err.msg) == 0 &&
	    mig_outcome_exit_code(back.outcome) == MIG_EXIT_INCOMPATIBLE,
	    "incompatible result carries its reasons", line);
	free(line);

	memset(&ev, 0, sizeof(ev));
	ev.type = MIG_EV_PROGRESS;
	ev.phase = MIG_PHASE_PRECOPY;
	ev.round_index = 2;
	ev.rate_bytes_per_s = 1000000;
	line = mig_event_encode(&ev);
	check(line != NULL && mig_event_decode(line, &back, msg,
	    sizeof(msg)) == 0 && back.type == MIG_EV_PROGRESS &&
	    back.round_index == 2 && back.rate_bytes_per_s == 1000000,
	    "progress event round trip", line);
	free(line);

	memset(&ev, 0, sizeof(ev));
	ev.type = MIG_EV_ESTIMATE_MISSED;
	ev.phase = MIG_PHASE_SWITCHOVER;
	ev.est_downtime_us = 35000;
	ev.paused_us = 51000;
	line = mig_event_encode(&ev);
	check(line != NULL && strstr(line, "\"event\":\"estimate-missed\"") !=
	    NULL && mig_event_decode(line, &back, msg, sizeof(msg)) == 0 &&
	    back.type == MIG_EV_ESTIMATE_MISSED &&
	    back.phase == MIG_PHASE_SWITCHOVER &&
	    back.est_downtime_us == 35000 && back.paused_us == 51000,
	    "estimate-missed event round trip", line);
	free(line);

	ev.type = MIG_EV_PAUSED;
	ev.round_index = 7;
	ev.remaining_pages = 3;
	ev.hold_ms = 65000;
	line = mig_event_encode(&ev);
	check(line != NULL && strcmp(line, "{\"event\":\"paused\","
	    "\"round\":7,\"dirty_pages\":3,\"dirty_bytes\":12288,"
	    "\"timeout_ms\":65000}") == 0 && mig_event_decode(line, &back,
	    msg, sizeof(msg)) == 0 && back.type == MIG_EV_PAUSED &&
	    back.round_index == 7 && back.remaining_pages == 3 &&
	    back.hold_ms == 65000, "paused event round trip", line);
	free(line);

	memset(&st, 0, sizeof(st));
	st.nrounds = 3;
	st.downtime_us = 5600;
	st.downtime_memory_us = 1000;
	st.downtime_hook_us = 4000;
	st.downtime_state_us = 600;
	mig_event_result(&ev, MIG_OUT_OK, NULL, &st);
	line = mig_event_encode(&ev);
	check(line != NULL && mig_event_decode(line, &back, msg,
	    sizeof(msg)) == 0 && back.stats.downtime_memory_us == 1000 &&
	    back.stats.downtime_hook_us == 4000 &&
	    back.stats.downtime_state_us == 600,
	    "result carries the downtime's parts", line);
	free(line);
	check(mig_event_decode("{\"event\":\"result\",\"result\":\"ok\","
	    "\"guest_runs_on\":\"destination\",\"stats\":{"
	    "\"total_time_us\":1,\"downtime_us\":2,\"state_bytes\":3,"
	    "\"bytes_sent\":4,\"memory_bytes\":5,\"rtt_us\":6,"
	    "\"protocol_version\":1,\"encrypted\":false,"
	    "\"stop_reason\":\"converged\",\"nrounds\":2}}", &back, msg,
	    sizeof(msg)) == 0 && back.stats.downtime_us == 2 &&
	    back.stats.downtime_hook_us == 0,
	    "a result without the downtime's parts still decodes", NULL);

	check(mig_outcome_exit_code(MIG_OUT_OK) == 0 &&
	    mig_outcome_exit_code(MIG_OUT_COMPATIBLE) == 0 &&
	    mig_outcome_exit_code(MIG_OUT_FAILED) == 1 &&
	    mig_outcome_exit_code(MIG_OUT_CANCELLED) == 1 &&
	    mig_outcome_exit_code(MIG_OUT_INDETERMINATE) == 3,
	    "exit codes", NULL);
}

static void
expect_bad_event(const char *line, const char *want, const char *name)
{
	struct mig_event ev;
	char msg[MIG_ERRMSG_MAX];

	msg[0] = '\0';
	check(mig_event_decode(line, &ev, msg, sizeof(msg)) == EINVAL &&
	    strstr(msg, want) != NULL, name, msg);
}

static void
test_event_refusals(void)
{
	char *big;

	expect_bad_event("", "not a migration event", "empty line refused");
	expect_bad_event("phase name=precopy", "not a migration event",
	    "the old key=value format is refused");
	expect_bad_event("{\"event\":\"reboot\"}", "not a migration event",
	    "unknown event refused");
	expect_bad_event("{\"event\":\"phase\",\"phase\":\"pre-copy\"}",
	    "\"phase\"", "a phase name with a dash is no identifier");
	expect_bad_event("{\"event\":\"round\",\"index\":1}", "final",
	    "a round without its members is refused by name");
	expect_bad_event("{\"event\":\"result\",\"result\":\"ok\"}",
	    "guest_runs_on", "a result without guest_runs_on is refused");
	expect_bad_event("{\"event\":\"result\",\"result\":\"maybe\","
	    "\"guest_runs_on\":\"source\"}", "\"result\"",
	    "an unknown result is refused");
	expect_bad_event("{\"event\":\"result\",\"result\":\"failed\","
	    "\"guest_runs_on\":\"source\",\"error\":{\"side\":\"source\"}}",
	    "error.phase", "an error without its phase is refused");
	expect_bad_event("{\"event\":\"paused\",\"round\":2,"
	    "\"dirty_pages\":1,\"dirty_bytes\":4096}", "timeout_ms",
	    "a paused event without its timeout is refused");
	expect_bad_event("{\"event\":\"phase\",\"phase\":", "\"phase\"",
	    "a truncated line is refused");
	/* Exactly sized, so that ASan sees a read past the end. */
	big = strdup("{\"event\":\"\\u1");
	if (big != NULL) {
		expect_bad_event(big, "not a migration event",
		    "a line ending in a short \\u escape is refused");
		free(big);
	}
	big = malloc(MIG_EVENT_MAX + 16);
	if (big != NULL) {
		memset(big, ' ', MIG_EVENT_MAX + 15);
		memcpy(big, "{\"event\":\"phase\",\"phase\":\"done\"", 31);
		big[MIG_EVENT_MAX + 14] = '}';
		big[MIG_EVENT_MAX + 15] = '\0';
		expect_bad_event(big, "not a migration event",
		    "an overlong line is refused");
		free(big);
	}
}

static void
test_words(void)
{
	struct mig_event ev;
	struct mig_error err;
	char *text;
	size_t len;
	FILE *f;

	memset(&ev, 0, sizeof(ev));
	ev.type = MIG_EV_PHASE;
	ev.phase = MIG_PHASE_COMPAT;
	f = open_memstream(&text, &len);
	mig_event_print(f, &ev);
	memset(&err, 0, sizeof(err));
	err.phase = MIG_PHASE_SWITCHOVER;
	snprintf(err.msg, sizeof(err.msg), "no RUNNING");
	mig_event_result(&ev, MIG_OUT_INDETERMINATE, &err, NULL);
	mig_event_print(f, &ev);
	mig_event_result(&ev, MIG_OUT_CANCELLED, &err, NULL);
	mig_event_print(f, &ev);
	fclose(f);
	check(strstr(text, "Migration phase: compatibility check\n") !=
	    NULL && strstr(text, "--migrate-resume") != NULL &&
	    strstr(text, "cancelled") != NULL,
	    "words name phases whole and say what to do", text);
	free(text);
}

int
main(void)
{

	test_request_round_trip();
	test_request_refusals();
	test_hook_gate();
	test_event_round_trip();
	test_event_refusals();
	test_words();
	return (check_summary());
}
