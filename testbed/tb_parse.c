/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "migration.h"

#include "tb_parse.h"

/* Leading decimal digits; strtoull would accept a sign and blanks. */
static int
parse_digits(const char *s, uint64_t *v, char **end)
{
	unsigned long long n;

	if (!isdigit((unsigned char)s[0]))
		return (EINVAL);
	errno = 0;
	n = strtoull(s, end, 10);
	if (errno == ERANGE)
		return (ERANGE);
	*v = n;
	return (0);
}

int
tb_parse_u64(const char *s, uint64_t *v)
{
	uint64_t n;
	char *end;
	int error;

	error = parse_digits(s, &n, &end);
	if (error != 0)
		return (error);
	if (*end != '\0')
		return (EINVAL);
	*v = n;
	return (0);
}

int
tb_parse_size(const char *s, uint64_t *v)
{
	static const char units[] = "KMGT";
	const char *u;
	uint64_t n;
	char *end;
	int error, shift;

	error = parse_digits(s, &n, &end);
	if (error != 0)
		return (error);
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
	if (shift != 0 && n > (UINT64_MAX >> shift))
		return (ERANGE);
	*v = n << shift;
	return (0);
}

int
tb_read_keyfile(const char *path, uint8_t *key, char *msg, size_t msglen)
{
	char why[MIG_ERRMSG_MAX];
	int error, fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		error = errno;
		snprintf(msg, msglen, "key file %s: %s", path,
		    strerror(error));
		return (error);
	}
	/*
	 * Any mode: the tests copy keys with the default umask.  bhyve and
	 * bhyvectl, which guard real guests, insist on MIG_KEY_PRIVATE.
	 */
	error = mig_key_read_fd(fd, 0, key, why, sizeof(why));
	close(fd);
	if (error == EINVAL)
		snprintf(msg, msglen, "key file %s %s (a key from 'openssl "
		    "rand -hex %d')", path, why, MIG_KEY_LEN);
	else if (error != 0)
		snprintf(msg, msglen, "key file %s %s", path, why);
	return (error);
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
