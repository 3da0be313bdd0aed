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

void
mig_json_string(FILE *f, const char *s)
{
	const unsigned char *p;

	fputc('"', f);
	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		switch (*p) {
		case '"':
			fputs("\\\"", f);
			break;
		case '\\':
			fputs("\\\\", f);
			break;
		case '\n':
			fputs("\\n", f);
			break;
		case '\r':
			fputs("\\r", f);
			break;
		case '\t':
			fputs("\\t", f);
			break;
		default:
			if (*p < 0x20)
				fprintf(f, "\\u%04x", *p);
			else
				fputc(*p, f);
		}
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

/* Find member key (keylen bytes) of the object at p. */
static const char *
find_member(const char *p, const char *key, size_t keylen)
{
	const char *k, *end;

	p = skip_ws(p);
	if (*p++ != '{')
		return (NULL);
	p = skip_ws(p);
	if (*p == '}')
		return (NULL);
	for (;;) {
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
		if ((p = skip_value(p, 0)) == NULL)
			return (NULL);
		p = skip_ws(p);
		if (*p++ != ',')
			return (NULL);
		p = skip_ws(p);
	}
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

	if (value == NULL)
		return (NULL);
	p = skip_ws(value);
	if (*p++ != '[')
		return (NULL);
	p = skip_ws(p);
	if (*p == ']')
		return (NULL);
	for (;;) {
		if (idx-- == 0)
			return (p);
		if ((p = skip_value(p, 0)) == NULL)
			return (NULL);
		p = skip_ws(p);
		if (*p++ != ',')
			return (NULL);
		p = skip_ws(p);
	}
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
	size_t n;
	unsigned int u;

	if (p == NULL || *p != '"' || buflen == 0)
		return (false);
	n = 0;
	for (p++; *p != '"' && *p != '\0'; p++) {
		if (*p == '\\') {
			p++;
			switch (*p) {
			case 'n':
				u = '\n';
				break;
			case 't':
				u = '\t';
				break;
			case 'r':
				u = '\r';
				break;
			case 'u':
				if (sscanf(p + 1, "%4x", &u) != 1)
					return (false);
				p += 4;
				/* Only control characters are escaped so. */
				if (u > 0x7f)
					u = '?';
				break;
			case '\0':
				return (false);
			default:
				u = (unsigned char)*p;
			}
		} else
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
mig_json_get_double(const char *text, const char *path, double *v)
{
	const char *p;
	char *end;

	p = mig_json_find(text, path);
	if (p == NULL)
		return (false);
	*v = strtod(p, &end);
	return (end != p);
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
