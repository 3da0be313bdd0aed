/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Deterministic guest content from (seed, gpa): every page differs from
 * every other, so a page written to the wrong place is caught.
 */

#ifndef _TB_PATTERN_H_
#define	_TB_PATTERN_H_

#include <stdint.h>

#define	TB_PATTERN_OFF	8	/* bytes 0..7: counter byte and zeros */

/* Fill bytes TB_PATTERN_OFF..page end of page for the page at gpa. */
void	tb_pattern_page(uint64_t seed, uint64_t gpa, uint8_t *page);
/* Fill the tb-blob device's TB_BLOB_SIZE bytes. */
void	tb_pattern_blob(uint64_t seed, uint8_t *blob);

#endif /* _TB_PATTERN_H_ */
