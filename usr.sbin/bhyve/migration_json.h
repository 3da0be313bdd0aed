/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Just enough JSON for the control plane (migration_ctl.c) and the test
 * bed's control replies: writing escaped strings, and looking up
 * members of the objects the project itself produces.  Portable: bhyve,
 * bhyvectl, tbvm and tbctl link it.
 */

#ifndef _MIGRATION_JSON_H_
#define	_MIGRATION_JSON_H_

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Write s as a JSON string, quotes included. */
void	mig_json_string(FILE *, const char *s);

/*
 * Find the value of member path ("a" or "a.b" for a nested object) in
 * the object text; NULL if absent or the text is malformed.
 */
const char *mig_json_find(const char *text, const char *path);
/* Element idx of the array value starts at; NULL if there is none. */
const char *mig_json_index(const char *value, unsigned int idx);
/* Decode the string value at p into buf; false if it is not one. */
bool	mig_json_string_at(const char *p, char *buf, size_t buflen);
/* Decode a string value into buf; false if it is not a string. */
bool	mig_json_get_string(const char *text, const char *path, char *buf,
	    size_t buflen);
bool	mig_json_get_u64(const char *text, const char *path, uint64_t *);
bool	mig_json_get_bool(const char *text, const char *path, bool *);

#endif /* _MIGRATION_JSON_H_ */
