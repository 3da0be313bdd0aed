/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Just enough JSON for the control and progress channels: writing
 * escaped strings, and looking up members of the flat objects the
 * test bed itself produces.
 */

#ifndef _TB_JSON_H_
#define	_TB_JSON_H_

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Write s as a JSON string, quotes included. */
void	tb_json_string(FILE *, const char *s);

/*
 * Find the value of member path ("a" or "a.b" for a nested object) in
 * the object text; NULL if absent or the text is malformed.
 */
const char *tb_json_find(const char *text, const char *path);
/* Decode a string value into buf; false if it is not a string. */
bool	tb_json_get_string(const char *text, const char *path, char *buf,
	    size_t buflen);
bool	tb_json_get_u64(const char *text, const char *path, uint64_t *);
bool	tb_json_get_double(const char *text, const char *path, double *);
bool	tb_json_get_bool(const char *text, const char *path, bool *);

#endif /* _TB_JSON_H_ */
