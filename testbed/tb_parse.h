/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/* Parsing of command-line values shared by tbvm and tbctl. */

#ifndef _TB_PARSE_H_
#define	_TB_PARSE_H_

#include <stddef.h>
#include <stdint.h>

/* Decimal number; 0, EINVAL (not a number) or ERANGE. */
int	tb_parse_u64(const char *, uint64_t *);
/* Size with an optional binary unit: 4096, 64K, 256M, 1G, 2GiB. */
int	tb_parse_size(const char *, uint64_t *);
/*
 * Read a MIG_KEY_LEN-byte key file as mig_key_read_fd() does; on error
 * msg names the file and the problem.
 */
int	tb_read_keyfile(const char *path, uint8_t *key, char *msg,
	    size_t msglen);
/* Lower-case hex of len bytes into out (2 * len + 1 bytes). */
void	tb_hex(const uint8_t *, size_t len, char *out);

#endif /* _TB_PARSE_H_ */
