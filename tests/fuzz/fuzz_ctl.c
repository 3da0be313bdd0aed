/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * libFuzzer target: the control plane's codec (migration_ctl.c,
 * migration_json.c).  The first byte picks the decoder: an event line,
 * a request payload, or member lookups in JSON text.  An event that
 * decodes must encode, and its encoding must decode to the same
 * encoding again.
 */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migration.h"
#include "migration_ctl.h"
#include "migration_json.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
require(bool cond)
{

	if (!cond)
		abort();
}

static void
fuzz_event(const char *line)
{
	static struct mig_event ev, ev2;
	static FILE *null;
	char msg[256], *text, *text2;

	if (mig_event_decode(line, &ev, msg, sizeof(msg)) != 0)
		return;
	if (null == NULL && (null = fopen("/dev/null", "w")) == NULL)
		abort();
	mig_event_print(null, &ev);
	/* Only an over-long line may fail to encode. */
	if ((text = mig_event_encode(&ev)) == NULL)
		return;
	require(mig_event_decode(text, &ev2, msg, sizeof(msg)) == 0);
	text2 = mig_event_encode(&ev2);
	require(text2 != NULL && strcmp(text, text2) == 0);
	free(text);
	free(text2);
}

static void
fuzz_request(const char *payload, size_t len)
{
	struct mig_params p;
	char msg[256];

	if (mig_request_decode(payload, len, &p, msg, sizeof(msg)) == 0)
		require(mig_params_check(&p, msg, sizeof(msg)) == 0);
}

static void
fuzz_json(const char *text)
{
	static const char *const paths[] = {
		"event", "result", "error", "error.message", "stats",
		"stats.rtt_us", "reasons", "a.b", "state", "guest_runs_here",
	};
	const char *v;
	char buf[64];
	uint64_t u;
	bool b;
	size_t i;
	unsigned int k;

	for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		if ((v = mig_json_find(text, paths[i])) != NULL)
			for (k = 0; k < 4 && mig_json_index(v, k) != NULL; k++)
				(void)mig_json_string_at(mig_json_index(v, k),
				    buf, sizeof(buf));
		(void)mig_json_get_string(text, paths[i], buf, sizeof(buf));
		(void)mig_json_get_u64(text, paths[i], &u);
		(void)mig_json_get_bool(text, paths[i], &b);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text;
	size_t len;

	if (size < 1)
		return (0);
	len = size - 1;
	/* The decoders take NUL-terminated text, as a line reader gives. */
	if ((text = malloc(len + 1)) == NULL)
		abort();
	memcpy(text, data + 1, len);
	text[len] = '\0';
	switch (data[0] % 3) {
	case 0:
		fuzz_event(text);
		break;
	case 1:
		fuzz_request(text, len);
		break;
	default:
		fuzz_json(text);
		break;
	}
	free(text);
	return (0);
}
