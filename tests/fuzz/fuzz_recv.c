/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * libFuzzer target: the destination's receive loop after a real
 * handshake.  The input's records (fuzz_guest.h) become frames sealed
 * with the session keys, so they pass the tag check and reach every
 * handler: rounds, pages, zero ranges, state, READY, GO.
 */

#include <stddef.h>
#include <stdint.h>

#include "fuzz_peer.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct fuzz_outcome o;

	fuzz_session(data, len, true, &o);
	fuzz_session_report("fuzz_recv", &o);
	return (0);
}
