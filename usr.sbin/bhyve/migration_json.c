/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migration_json.h"

#define	MAX_DEPTH	32

/* Characters a string escapes as a backslash and a letter: each, its letter. */
static const char escapes[][2] = {
	{ '"', '"' }, { '\\', '\\' }, { '\n', 'n' }, { '\r', 'r' },
	{ '\t', 't' },
};
#define	NESCAPES	(sizeof(escapes) / sizeof(escapes[0]))

/* The escapes entry whose column col is c; NESCAPES if none. */
static size_t
escape_find(int col, char c)
{
	size_t i;

	for (i = 0; i < NESCAPES; i++)
		if (escapes[i][col] == c)
			break;
	return (i);
}

void
mig_json_string(FILE *f, const char *s)
{
	const unsigned char *p;
	size_t i;

	fputc('"', f);
	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		if ((i = escape_find(0, (char)*p)) < NESCAPES)
			fprintf(f, "\\%c", escapes[i][1]);
		else if (*p < 0x20)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

static const char *
skip_ws(const char *p)
{

	while (isspace((unsigned char)*p))
		p++;
	return (p);
}

/* p at a '"': return the character after the closing quote. */
static const char *
skip_string(const char *p)
{

	for (p++; *p != '"'; p++) {
		if (*p == '\0')
			return (NULL);
		if (*p == '\\' && *++p == '\0')
			return (NULL);
	}
	return (p + 1);
}

static const char *
skip_value(const char *p, int depth)
{
	char close;

	p = skip_ws(p);
	if (depth > MAX_DEPTH)
		return (NULL);
	if (*p == '"')
		return (skip_string(p));
	if (*p != '{' && *p != '[') {
		while (*p != '\0' && *p != ',' && *p != '}' && *p != ']' &&
		    !isspace((unsigned char)*p))
			p++;
		return (p);
	}
	close = *p == '{' ? '}' : ']';
	p = skip_ws(p + 1);
	if (*p == close)
		return (p + 1);
	for (;;) {
		if (close == '}') {
			if (*p != '"' || (p = skip_string(p)) == NULL)
				return (NULL);
			p = skip_ws(p);
			if (*p++ != ':')
				return (NULL);
		}
		if ((p = skip_value(p, depth + 1)) == NULL)
			return (NULL);
		p = skip_ws(p);
		if (*p == close)
			return (p + 1);
		if (*p++ != ',')
			return (NULL);
		p = skip_ws(p);
	}
}

/*
 * The first element of the object or array (open '{' or '[') at p; NULL
 * if p is NULL, is no such container or the container is empty.
 */
static const char *
first_element(const char *p, char open)
{

	if (p == NULL)
		return (NULL);
	p = skip_ws(p);
	if (*p++ != open)
		return (NULL);
	p = skip_ws(p);
	return (*p == (open == '{' ? '}' : ']') ? NULL : p);
}

/* p at an array value or an object member's value: the next element. */
static const char *
next_element(const char *p)
{

	if ((p = skip_value(p, 0)) == NULL)
		return (NULL);
	p = skip_ws(p);
	if (*p++ != ',')
		return (NULL);
	return (skip_ws(p));
}

/* Find member key (keylen bytes) of the object at p. */
static const char *
find_member(const char *p, const char *key, size_t keylen)
{
	const char *k, *end;

	for (p = first_element(p, '{'); p != NULL; p = next_element(p)) {
		if (*p != '"' || (end = skip_string(p)) == NULL)
			return (NULL);
		k = p + 1;
		p = skip_ws(end);
		if (*p++ != ':')
			return (NULL);
		p = skip_ws(p);
		if ((size_t)(end - 1 - k) == keylen &&
		    memcmp(k, key, keylen) == 0)
			return (p);
	}
	return (NULL);
}

const char *
mig_json_find(const char *text, const char *path)
{
	const char *dot;

	while (text != NULL && (dot = strchr(path, '.')) != NULL) {
		text = find_member(text, path, (size_t)(dot - path));
		path = dot + 1;
	}
	return (text == NULL ? NULL : find_member(text, path, strlen(path)));
}

const char *
mig_json_index(const char *value, unsigned int idx)
{
	const char *p;

	for (p = first_element(value, '['); p != NULL; p = next_element(p))
		if (idx-- == 0)
			return (p);
	return (NULL);
}

bool
mig_json_get_string(const char *text, const char *path, char *buf,
    size_t buflen)
{

	return (mig_json_string_at(mig_json_find(text, path), buf, buflen));
}

bool
mig_json_string_at(const char *p, char *buf, size_t buflen)
{
	size_t i, n;
	unsigned int u;

	if (p == NULL || *p != '"' || buflen == 0)
		return (false);
	n = 0;
	for (p++; *p != '"' && *p != '\0'; p++) {
		if (*p != '\\')
			u = (unsigned char)*p;
		else if (*++p == '\0')
			return (false);
		else if (*p == 'u') {
			/* Four digits, or p + 4 would pass the end. */
			if (strspn(p + 1, "0123456789abcdefABCDEF") < 4 ||
			    sscanf(p + 1, "%4x", &u) != 1)
				return (false);
			p += 4;
			/* Only control characters are escaped so. */
			if (u > 0x7f)
				u = '?';
		} else if ((i = escape_find(1, *p)) < NESCAPES)
			u = (unsigned char)escapes[i][0];
		else
			u = (unsigned char)*p;
		if (n + 1 < buflen)
			buf[n++] = (char)u;
	}
	buf[n] = '\0';
	return (*p == '"');
}

bool
mig_json_get_u64(const char *text, const char *path, uint64_t *v)
{
	const char *p;
	char *end;

	p = mig_json_find(text, path);
	if (p == NULL || !isdigit((unsigned char)*p))
		return (false);
	errno = 0;
	*v = strtoull(p, &end, 10);
	return (errno == 0 && end != p);
}

bool
mig_json_get_bool(const char *text, const char *path, bool *v)
{
	const char *p;

	p = mig_json_find(text, path);
	if (p != NULL && strncmp(p, "true", 4) == 0)
		*v = true;
	else if (p != NULL && strncmp(p, "false", 5) == 0)
		*v = false;
	else
		return (false);
	return (true);
}
