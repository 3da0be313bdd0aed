/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/* Checking a guest's shape and workload before anything is allocated. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tb_guest.h"
#include "tb_parse.h"

int
tb_workload_parse(const char *s, struct tb_workload *wl, char *msg,
    size_t msglen)
{
	char buf[128], *at, *size;

	memset(wl, 0, sizeof(*wl));
	if (strlen(s) >= sizeof(buf)) {
		snprintf(msg, msglen, "workload '%s' is too long", s);
		return (EINVAL);
	}
	strcpy(buf, s);
	at = strchr(buf, '@');
	if (at != NULL) {
		*at++ = '\0';
		if (tb_parse_u64(at, &wl->rate) != 0 || wl->rate == 0) {
			snprintf(msg, msglen, "workload '%s': rate '%s' is "
			    "not a positive number of pages/s", s, at);
			return (EINVAL);
		}
	}
	if (strcmp(buf, "idle") == 0)
		wl->kind = TB_WL_IDLE;
	else if (strcmp(buf, "full") == 0)
		wl->kind = TB_WL_FULL;
	else if (strncmp(buf, "hotset:", 7) == 0) {
		wl->kind = TB_WL_HOTSET;
		size = buf + 7;
		if (tb_parse_size(size, &wl->hot_bytes) != 0 ||
		    wl->hot_bytes == 0) {
			snprintf(msg, msglen, "workload '%s': '%s' is not a "
			    "size such as 64M", s, size);
			return (EINVAL);
		}
	} else {
		snprintf(msg, msglen, "unknown workload '%s' (idle, full or "
		    "hotset:SIZE, each with an optional @PAGES_PER_SEC)", s);
		return (EINVAL);
	}
	return (0);
}

int
tb_guest_config_check(const struct tb_guest_config *c, char *msg,
    size_t msglen)
{
	uint64_t pages, seglen;
	uint32_t ndev;

	if (c->name[0] == '\0') {
		snprintf(msg, msglen, "the guest needs a name");
		return (EINVAL);
	}
	if (c->nvcpus < 1 || c->nvcpus > TB_MAX_VCPUS) {
		snprintf(msg, msglen, "%u vCPUs: between 1 and %u are "
		    "supported", c->nvcpus, TB_MAX_VCPUS);
		return (EINVAL);
	}
	ndev = (c->dma.rate != 0 ? 1 : 0) + (c->disk.size != 0 ? 1 : 0);
	if (c->nvcpus > TB_MAX_VCPUS - ndev) {
		snprintf(msg, msglen, "%u vCPUs with tb-dma or tb-disk: at "
		    "most %u, their state takes sections", c->nvcpus,
		    TB_MAX_VCPUS - ndev);
		return (EINVAL);
	}
	if (c->disk.size != 0 && (c->disk.size % TB_DISK_BLOCK != 0 ||
	    c->disk.hot_bytes < TB_DISK_BLOCK ||
	    c->disk.hot_bytes > c->disk.size)) {
		snprintf(msg, msglen, "disk of %ju bytes with a hot set of "
		    "%ju: the size must be a multiple of %u and the hot set "
		    "between one block and the disk",
		    (uintmax_t)c->disk.size, (uintmax_t)c->disk.hot_bytes,
		    TB_DISK_BLOCK);
		return (EINVAL);
	}
	if (c->dma.rate > 1000000) {
		snprintf(msg, msglen, "tb-dma rate of %ju writes/s: at most "
		    "1000000", (uintmax_t)c->dma.rate);
		return (EINVAL);
	}
	if (c->nsegs < 1 || c->nsegs > TB_MAX_SEGS) {
		snprintf(msg, msglen, "%u segments: between 1 and %u are "
		    "supported", c->nsegs, TB_MAX_SEGS);
		return (EINVAL);
	}
	if (c->memory % ((uint64_t)c->nsegs * TB_PAGE_SIZE) != 0) {
		snprintf(msg, msglen, "memory of %ju bytes does not split "
		    "into whole %u-byte pages%s", (uintmax_t)c->memory,
		    TB_PAGE_SIZE, c->nsegs > 1 ? " for each segment" : "");
		return (EINVAL);
	}
	seglen = c->memory / c->nsegs;
	if (seglen > TB_SEG_STRIDE) {
		snprintf(msg, msglen, "memory of %ju bytes in %u segments: "
		    "a segment may hold at most 4 GiB (use more segments)",
		    (uintmax_t)c->memory, c->nsegs);
		return (EINVAL);
	}
	pages = c->memory / TB_PAGE_SIZE;
	if (pages < c->nvcpus) {
		snprintf(msg, msglen, "memory of %ju bytes gives %u vCPUs "
		    "less than a page each", (uintmax_t)c->memory, c->nvcpus);
		return (EINVAL);
	}
	if (c->workload.kind == TB_WL_HOTSET) {
		if (c->workload.hot_bytes > c->memory) {
			snprintf(msg, msglen, "hot set of %ju bytes is larger "
			    "than the guest's %ju bytes",
			    (uintmax_t)c->workload.hot_bytes,
			    (uintmax_t)c->memory);
			return (EINVAL);
		}
		if (c->workload.hot_bytes / c->nvcpus < TB_PAGE_SIZE) {
			snprintf(msg, msglen, "hot set of %ju bytes is less "
			    "than one page per vCPU",
			    (uintmax_t)c->workload.hot_bytes);
			return (EINVAL);
		}
	}
	return (0);
}
