/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * libFuzzer target: the destination before authentication.  The input
 * is what a peer without the key sends, byte for byte: HELLOs, AUTHs,
 * ERRORs, junk.  Nothing it sends may get past the proof of the key.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_peer.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct fuzz_outcome o;

	fuzz_session(data, len, false, &o);
	fuzz_session_report("fuzz_preauth", &o);
	/* Without the key no peer may be accepted. */
	if (o.accept_error == 0)
		abort();
	return (0);
}
