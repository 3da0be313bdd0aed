/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "tb_guest.h"
#include "tb_memstat.h"

int
tb_memstat_reset(void)
{
	FILE *f;
	int error;

	if ((f = fopen("/proc/self/clear_refs", "w")) == NULL)
		return (errno);
	error = fputs("5\n", f) < 0 ? errno : 0;
	if (fclose(f) != 0 && error == 0)
		error = errno;
	return (error);
}

/* The kB figure of "name:" in /proc/self/status. */
static int
status_kib(const char *name, uint64_t *kib)
{
	char line[256];
	size_t len;
	FILE *f;
	int error;

	if ((f = fopen("/proc/self/status", "r")) == NULL)
		return (errno);
	len = strlen(name);
	error = ENOENT;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, name, len) == 0 && line[len] == ':' &&
		    sscanf(line + len + 1, "%" SCNu64, kib) == 1) {
			error = 0;
			break;
		}
	}
	fclose(f);
	return (error);
}

static bool
inside(uintptr_t start, uintptr_t end, const uint8_t *base, uint64_t len)
{

	return (base != NULL && start >= (uintptr_t)base &&
	    end <= (uintptr_t)base + len);
}

/* Rss of the mappings that lie in the guest's memory. */
static int
guest_kib(const struct tb_guest *g, uint64_t *kib)
{
	const uint8_t *mem, *alias;
	char line[512];
	uintptr_t start, end;
	uint64_t len, n;
	bool in_guest;
	FILE *f;

	tb_guest_mappings(g, &mem, &alias, &len);
	if ((f = fopen("/proc/self/smaps", "r")) == NULL)
		return (errno);
	*kib = 0;
	in_guest = false;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " ", &start,
		    &end) == 2)
			in_guest = inside(start, end, mem, len) ||
			    inside(start, end, alias, len);
		else if (in_guest && sscanf(line, "Rss: %" SCNu64, &n) == 1)
			*kib += n;
	}
	fclose(f);
	return (0);
}

int
tb_memstat_read(const struct tb_guest *g, struct tb_memstat *ms)
{
	int error;

	if ((error = status_kib("VmHWM", &ms->peak_kib)) != 0 ||
	    (error = status_kib("VmRSS", &ms->resident_kib)) != 0 ||
	    (error = guest_kib(g, &ms->guest_kib)) != 0)
		return (error);
	return (0);
}

void
tb_memstat_print(const struct tb_guest *g)
{
	struct tb_memstat ms;
	int error;

	if ((error = tb_memstat_read(g, &ms)) != 0) {
		fprintf(stderr, "tbvm: engine memory: %s\n", strerror(error));
		return;
	}
	printf("ENGINE_MEMORY {\"peak_kib\":%" PRIu64 ",\"resident_kib\":%"
	    PRIu64 ",\"guest_kib\":%" PRIu64 ",\"guest_size_kib\":%" PRIu64
	    "}\n", ms.peak_kib, ms.resident_kib, ms.guest_kib,
	    tb_guest_config(g)->memory >> 10);
	fflush(stdout);
}
