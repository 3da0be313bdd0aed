/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The per-migration key file and the endpoint address text.  bhyve -R,
 * bhyvectl --migrate and the Linux test bed all read them here, so that
 * a key file or an address one of them takes, the others take too.
 */

#include <sys/types.h>
#include <sys/stat.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "migration.h"

/* Not isxdigit(): the key's digits must not depend on the locale. */
static int
hexval(int c)
{

	if (c >= '0' && c <= '9')
		return (c - '0');
	if (c >= 'a' && c <= 'f')
		return (c - 'a' + 10);
	if (c >= 'A' && c <= 'F')
		return (c - 'A' + 10);
	return (-1);
}

int
mig_key_decode(const void *buf, size_t len, uint8_t key[MIG_KEY_LEN],
    char *msg, size_t msglen)
{
	const uint8_t *p = buf;
	size_t i;
	int hi, lo;

	if (len == MIG_KEY_LEN) {
		memcpy(key, p, MIG_KEY_LEN);
		return (0);
	}
	/* As written by "openssl rand -hex 32 > file". */
	if (len > 0 && p[len - 1] == '\n')
		len--;
	if (len != 2 * MIG_KEY_LEN) {
		snprintf(msg, msglen, "must hold %d bytes or %d hexadecimal "
		    "digits", MIG_KEY_LEN, 2 * MIG_KEY_LEN);
		return (EINVAL);
	}
	for (i = 0; i < MIG_KEY_LEN; i++) {
		hi = hexval(p[2 * i]);
		lo = hexval(p[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			explicit_bzero(key, MIG_KEY_LEN);
			snprintf(msg, msglen, "holds a character that is not "
			    "a hexadecimal digit");
			return (EINVAL);
		}
		key[i] = (uint8_t)(hi << 4 | lo);
	}
	return (0);
}

int
mig_key_read_fd(int fd, int flags, uint8_t key[MIG_KEY_LEN], char *msg,
    size_t msglen)
{
	/* One byte more than the longest key tells a longer file. */
	uint8_t buf[2 * MIG_KEY_LEN + 2];
	struct stat sb;
	ssize_t n;
	int error;

	if (fstat(fd, &sb) != 0) {
		error = errno;
		snprintf(msg, msglen, "cannot be examined: %s",
		    strerror(error));
		return (error);
	}
	if (!S_ISREG(sb.st_mode)) {
		snprintf(msg, msglen, "is not a regular file");
		return (EPERM);
	}
	if ((flags & MIG_KEY_PRIVATE) != 0 &&
	    (sb.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
		snprintf(msg, msglen, "is accessible by other users; make it "
		    "mode 0600");
		return (EPERM);
	}
	n = read(fd, buf, sizeof(buf));
	if (n < 0) {
		error = errno;
		snprintf(msg, msglen, "cannot be read: %s", strerror(error));
		return (error);
	}
	error = mig_key_decode(buf, (size_t)n, key, msg, msglen);
	explicit_bzero(buf, sizeof(buf));
	return (error);
}

int
mig_hostport_split(const char *spec, int defport, char *host,
    size_t hostlen, char *port, size_t portlen, char *msg, size_t msglen)
{
	const char *colon, *hend, *hstart, *p;
	char dport[16];
	size_t n;

	snprintf(dport, sizeof(dport), "%d", defport);
	p = dport;
	hstart = spec;
	if (spec[0] == '[') {
		hstart = spec + 1;
		hend = strchr(hstart, ']');
		if (hend == NULL) {
			snprintf(msg, msglen, "missing ']'");
			return (EINVAL);
		}
		if (hend == hstart) {
			snprintf(msg, msglen, "no address between '[' and ']'");
			return (EINVAL);
		}
		if (hend[1] == ':')
			p = hend + 2;
		else if (hend[1] != '\0') {
			snprintf(msg, msglen, "expected ':' after ']'");
			return (EINVAL);
		}
	} else if (spec[0] != '\0' &&
	    spec[strspn(spec, "0123456789")] == '\0') {
		/* "bhyve -R 24981": a number alone is a port. */
		hend = spec;
		p = spec;
	} else {
		colon = strchr(spec, ':');
		if (colon != NULL && strchr(colon + 1, ':') != NULL)
			colon = NULL;
		hend = colon != NULL ? colon : spec + strlen(spec);
		if (colon != NULL)
			p = colon + 1;
	}
	n = (size_t)(hend - hstart);
	if (n >= hostlen) {
		snprintf(msg, msglen, "overlong host name");
		return (ENAMETOOLONG);
	}
	if (*p == '\0') {
		snprintf(msg, msglen, "missing port after ':'");
		return (EINVAL);
	}
	if (strlen(p) >= portlen) {
		snprintf(msg, msglen, "overlong port");
		return (ENAMETOOLONG);
	}
	memcpy(host, hstart, n);
	host[n] = '\0';
	memcpy(port, p, strlen(p) + 1);
	return (0);
}
