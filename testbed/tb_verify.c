/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The guest's self-check.  With the vCPUs paused between iterations,
 * each page of a vCPU's loop has been incremented once per completed
 * pass, plus once more if the loop has gone past it in the current
 * pass; pages outside the loop were never written.  A page that missed
 * a round of the migration holds an older count, a page written to the
 * wrong place breaks the pattern, and vCPU state that did not move with
 * the memory puts the step in the wrong place.
 */

#include <openssl/evp.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tb_dirty.h"
#include "tb_disk.h"
#include "tb_guest.h"
#include "tb_pattern.h"

static void
mismatch(struct tb_verify *v, const char *fmt, ...)
{
	va_list ap;

	v->ok = false;
	if (v->nreported < TB_VERIFY_MAX_REPORT) {
		va_start(ap, fmt);
		vsnprintf(v->mismatch[v->nreported], sizeof(v->mismatch[0]),
		    fmt, ap);
		va_end(ap);
		v->nreported++;
	}
	v->nmismatches++;
}

void
tb_verify_add(struct tb_verify *v, const char *line)
{

	mismatch(v, "%s", line);
}

static void
check_page(struct tb_verify *v, const struct tb_guest_config *cfg,
    uint64_t gpa, const uint8_t *page, uint8_t want, uint64_t want_dma,
    uint8_t *scratch, uint32_t vcpu)
{
	uint64_t dma;
	uint32_t i;

	if (page[0] != want)
		mismatch(v, "gpa 0x%" PRIx64 " (vCPU %u): counter byte "
		    "expected %u, found %u", gpa, vcpu, want, page[0]);
	/* Bytes 1..7: tb-dma's sweeps over the page (zero without it). */
	dma = 0;
	for (i = 1; i < TB_PATTERN_OFF; i++)
		dma |= (uint64_t)page[i] << (8 * (i - 1));
	if (dma != want_dma) {
		mismatch(v, "gpa 0x%" PRIx64 ": tb-dma sweeps expected "
		    "%" PRIu64 ", found %" PRIu64 " (a device write lost)",
		    gpa, want_dma, dma);
		return;
	}
	if (cfg->fill == TB_FILL_PATTERN)
		tb_pattern_page(cfg->seed, gpa, scratch);
	if (memcmp(page + TB_PATTERN_OFF, scratch + TB_PATTERN_OFF,
	    TB_PAGE_SIZE - TB_PATTERN_OFF) == 0)
		return;
	for (i = TB_PATTERN_OFF; page[i] == scratch[i]; i++)
		;
	mismatch(v, "gpa 0x%" PRIx64 ": byte %u expected 0x%02x, found "
	    "0x%02x (%s content)", gpa, i, scratch[i], page[i],
	    cfg->fill == TB_FILL_PATTERN ? "pattern" : "zero");
}

static int
sha256(const uint8_t *buf, size_t len, uint8_t *md)
{

	if (EVP_Digest(buf, len, md, NULL, EVP_sha256(), NULL) != 1)
		return (EIO);
	return (0);
}

int
tb_guest_verify(struct tb_guest *g, struct tb_verify *v, char *msg,
    size_t msglen)
{
	const struct tb_guest_config *cfg = tb_guest_config(g);
	uint8_t want_md[EVP_MAX_MD_SIZE], got_md[EVP_MAX_MD_SIZE];
	uint64_t first, npages, loop, k, gpa, sum, npages_all;
	struct tb_dma *dma = tb_guest_dma(g);
	struct tb_vcpu_regs r;
	uint8_t *scratch, *blob, *page, want;
	bool was_running;
	uint32_t i;
	int error;

	memset(v, 0, sizeof(*v));
	v->ok = true;
	scratch = calloc(1, TB_PAGE_SIZE > TB_BLOB_SIZE ? TB_PAGE_SIZE :
	    TB_BLOB_SIZE);
	if (scratch == NULL) {
		snprintf(msg, msglen, "out of memory");
		return (ENOMEM);
	}
	was_running = tb_guest_is_running(g);
	tb_guest_pause(g);

	/* Devices first, so that their few lines are always reported. */
	sum = 0;
	for (i = 0; i < cfg->nvcpus; i++) {
		tb_guest_get_regs(g, i, &r);
		sum += r.iterations / TB_COUNTER_EVERY;
	}
	if (tb_guest_counter(g) != sum)
		mismatch(v, "tb-counter: expected %" PRIu64 " (the vCPUs' "
		    "iterations / %u), found %" PRIu64, sum, TB_COUNTER_EVERY,
		    tb_guest_counter(g));
	blob = tb_guest_blob(g);
	tb_pattern_blob(cfg->seed, scratch);
	error = sha256(scratch, TB_BLOB_SIZE, want_md);
	if (error == 0)
		error = sha256(blob, TB_BLOB_SIZE, got_md);
	if (error != 0)
		snprintf(msg, msglen, "SHA-256 of tb-blob failed");
	else if (memcmp(want_md, got_md, 32) != 0)
		mismatch(v, "tb-blob: SHA-256 differs from the blob of seed "
		    "%" PRIu64, cfg->seed);

	memset(scratch, 0, TB_PAGE_SIZE);
	npages_all = cfg->memory >> TB_PAGE_SHIFT;
	for (i = 0; i < cfg->nvcpus && error == 0; i++) {
		tb_guest_region(g, i, &first, &npages, &loop);
		tb_guest_get_regs(g, i, &r);
		if ((loop == 0 && r.position != 0) ||
		    (loop != 0 && r.position >= loop)) {
			mismatch(v, "vCPU %u: position %" PRIu64 " is outside "
			    "its loop of %" PRIu64 " pages", i, r.position,
			    loop);
			continue;
		}
		for (k = 0; k < npages; k++) {
			page = tb_guest_page(g, first + k, &gpa);
			want = k >= loop ? 0 :
			    (uint8_t)(r.pass + (k < r.position ? 1 : 0));
			check_page(v, cfg, gpa, page, want, dma == NULL ? 0 :
			    tb_dma_expected(tb_dma_seq(dma), npages_all,
			    first + k), scratch, i);
			v->pages_checked++;
		}
	}

	if (error == 0 && tb_guest_disk(g) != NULL)
		error = tb_disk_verify(tb_guest_disk(g), v, msg, msglen);

	if (was_running)
		tb_guest_resume(g);
	free(scratch);
	return (error);
}
