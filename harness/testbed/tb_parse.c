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
#include <strings.h>

#include "tb_parse.h"

int
tb_parse_u64(const char *s, uint64_t *v)
{
	unsigned long long n;
	char *end;

	/* strtoull would accept a sign and leading blanks. */
	if (!isdigit((unsigned char)s[0]))
		return (EINVAL);
	errno = 0;
	n = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return (ERANGE);
	if (*end != '\0')
		return (EINVAL);
	*v = n;
	return (0);
}

int
tb_parse_size(const char *s, uint64_t *v)
{
	static const char units[] = "KMGT";
	unsigned long long n;
	const char *u;
	char *end;
	int shift;

	if (!isdigit((unsigned char)s[0]))
		return (EINVAL);
	errno = 0;
	n = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return (ERANGE);
	shift = 0;
	if (*end != '\0' && (u = strchr(units, toupper((unsigned char)*end)))
	    != NULL) {
		shift = 10 * (int)(u - units + 1);
		end++;
		if (strcasecmp(end, "iB") == 0 || strcasecmp(end, "B") == 0)
			end += strlen(end);
	}
	if (*end != '\0')
		return (EINVAL);
	if (shift != 0 && n > (~0ull >> shift))
		return (ERANGE);
	*v = n << shift;
	return (0);
}

static int
hexval(int c)
{

	if (c >= '0' && c <= '9')
		return (c - '0');
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return (c - 'a' + 10);
	return (-1);
}

int
tb_parse_key(const char *s, uint8_t *key, size_t keylen)
{
	size_t i;
	int hi, lo;

	while (isspace((unsigned char)*s))
		s++;
	for (i = 0; i < keylen; i++) {
		hi = hexval((unsigned char)s[2 * i]);
		lo = hi < 0 ? -1 : hexval((unsigned char)s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return (EINVAL);
		key[i] = (uint8_t)(hi << 4 | lo);
	}
	for (s += 2 * keylen; *s != '\0'; s++)
		if (!isspace((unsigned char)*s))
			return (EINVAL);
	return (0);
}

int
tb_read_keyfile(const char *path, uint8_t *key, size_t keylen, char *msg,
    size_t msglen)
{
	char buf[256];
	size_t n;
	FILE *f;
	int error;

	f = fopen(path, "r");
	if (f == NULL) {
		error = errno;
		snprintf(msg, msglen, "key file %s: %s", path,
		    strerror(error));
		return (error);
	}
	n = fread(buf, 1, sizeof(buf) - 1, f);
	error = ferror(f) ? EIO : 0;
	fclose(f);
	if (error != 0) {
		snprintf(msg, msglen, "key file %s: read error", path);
		return (error);
	}
	buf[n] = '\0';
	if (n == sizeof(buf) - 1 || strlen(buf) != n ||
	    tb_parse_key(buf, key, keylen) != 0) {
		snprintf(msg, msglen, "key file %s: expected %zu hex digits "
		    "(a key from 'openssl rand -hex %zu')", path, 2 * keylen,
		    keylen);
		return (EINVAL);
	}
	return (0);
}

void
tb_hex(const uint8_t *p, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < len; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * len] = '\0';
}
