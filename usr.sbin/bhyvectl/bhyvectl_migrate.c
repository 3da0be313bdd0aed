/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * bhyvectl --migrate / --migrate-live: connect to the destination bhyve
 * (started with -R), hand the connected socket and a progress channel
 * to the source bhyve over its control socket, and report what happens
 * in words.  bhyve runs in capability mode and cannot connect by itself;
 * bhyvectl can.  The reply format is described in
 * usr.sbin/bhyve/migration_ipc.c.
 */

#include <sys/param.h>
#include <sys/nv.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libutil.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "bhyvectl_migrate.h"
#include "migration.h"
#include "snapshot.h"

#define	MIGRATE_CONNECT_TIMEOUT_MS	10000
#define	MIGRATE_LINE_MAX		1024

#define	MIGRATE_OK		0
#define	MIGRATE_FAILED		1
#define	MIGRATE_UNKNOWN		2

static struct {
	const char	*target;
	bool		live;
	bool		encrypt;
	const char	*keyfile;
	bool		has_downtime, has_max_rounds, has_fixed_rounds;
	bool		has_bandwidth;
	uint64_t	downtime_ms;
	uint64_t	max_rounds;
	uint64_t	fixed_rounds;
	uint64_t	bandwidth;
} mopt;

static const char *const migrate_opt_names[MIGRATE_OPT_COUNT] = {
	[MIGRATE_OPT_MIGRATE] = "migrate",
	[MIGRATE_OPT_LIVE] = "migrate-live",
	[MIGRATE_OPT_DOWNTIME] = "migrate-downtime",
	[MIGRATE_OPT_MAX_ROUNDS] = "migrate-max-rounds",
	[MIGRATE_OPT_FIXED_ROUNDS] = "migrate-fixed-rounds",
	[MIGRATE_OPT_BANDWIDTH] = "migrate-bandwidth",
	[MIGRATE_OPT_ENCRYPT] = "migrate-encrypt",
	[MIGRATE_OPT_KEYFILE] = "migrate-keyfile",
};

static int
migrate_uint(int opt, const char *arg, uint64_t min, uint64_t max,
    uint64_t *val)
{
	char *end;
	uintmax_t v;

	errno = 0;
	v = strtoumax(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || v < min || v > max) {
		warnx("--%s: '%s' is not a number from %ju to %ju",
		    migrate_opt_names[opt], arg, (uintmax_t)min,
		    (uintmax_t)max);
		return (-1);
	}
	*val = v;
	return (0);
}

int
migrate_option(int opt, const char *arg)
{

	switch (opt) {
	case MIGRATE_OPT_MIGRATE:
	case MIGRATE_OPT_LIVE:
		if (mopt.target != NULL) {
			warnx("give one of --migrate and --migrate-live, once");
			return (-1);
		}
		mopt.target = arg;
		mopt.live = (opt == MIGRATE_OPT_LIVE);
		return (0);
	case MIGRATE_OPT_DOWNTIME:
		mopt.has_downtime = true;
		return (migrate_uint(opt, arg, 1, 3600 * 1000,
		    &mopt.downtime_ms));
	case MIGRATE_OPT_MAX_ROUNDS:
		mopt.has_max_rounds = true;
		return (migrate_uint(opt, arg, 1, MIG_MAX_ROUNDS_LIMIT,
		    &mopt.max_rounds));
	case MIGRATE_OPT_FIXED_ROUNDS:
		mopt.has_fixed_rounds = true;
		return (migrate_uint(opt, arg, 1, MIG_MAX_ROUNDS_LIMIT,
		    &mopt.fixed_rounds));
	case MIGRATE_OPT_BANDWIDTH:
		mopt.has_bandwidth = true;
		if (expand_number(arg, &mopt.bandwidth) != 0 ||
		    mopt.bandwidth == 0) {
			warnx("--migrate-bandwidth: '%s' is not a rate in "
			    "bytes per second (suffixes k, m, g allowed)", arg);
			return (-1);
		}
		return (0);
	case MIGRATE_OPT_ENCRYPT:
		mopt.encrypt = true;
		return (0);
	case MIGRATE_OPT_KEYFILE:
		mopt.keyfile = arg;
		return (0);
	default:
		return (-1);
	}
}

bool
migrate_requested(void)
{

	return (mopt.target != NULL);
}

/* The per-migration key, the same one the destination bhyve reads. */
static int
migrate_read_key(const char *path, uint8_t *key)
{
	char msg[MIG_ERRMSG_MAX];
	int error, fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		warn("cannot open the migration key file %s", path);
		return (-1);
	}
	error = mig_key_read_fd(fd, MIG_KEY_PRIVATE, key, msg, sizeof(msg));
	close(fd);
	if (error != 0) {
		warnx("the migration key file %s %s", path, msg);
		return (-1);
	}
	return (0);
}

static int
migrate_connect(const char *host, const char *port)
{
	struct addrinfo hints, *ai, *res;
	char addr[NI_MAXHOST];
	int error, fd;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	error = getaddrinfo(host, port, &hints, &res);
	if (error != 0) {
		warnx("cannot find the destination %s: %s", host,
		    gai_strerror(error));
		return (-1);
	}
	fd = -1;
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if (getnameinfo(ai->ai_addr, ai->ai_addrlen, addr,
		    sizeof(addr), NULL, 0, NI_NUMERICHOST) != 0)
			strlcpy(addr, host, sizeof(addr));
		printf("Connecting to %s port %s...\n", addr, port);
		fflush(stdout);
		error = mig_connect(ai, MIGRATE_CONNECT_TIMEOUT_MS, &fd);
		if (error == 0)
			break;
		warnc(error, "cannot connect to %s port %s", addr, port);
	}
	freeaddrinfo(res);
	if (fd < 0)
		warnx("is the destination bhyve started with -R and is the "
		    "port open?");
	return (fd);
}

/* Send the request to the source bhyve over its control socket. */
static int
migrate_send(const char *vmname, nvlist_t *nvl)
{
	struct sockaddr_un addr;
	int error, fd;

	fd = socket(PF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		warn("cannot create a socket");
		return (-1);
	}
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s%s", BHYVE_RUN_DIR,
	    vmname);
	addr.sun_len = SUN_LEN(&addr);
	error = 0;
	if (connect(fd, (struct sockaddr *)&addr, addr.sun_len) != 0) {
		warn("cannot reach bhyve for %s at %s", vmname, addr.sun_path);
		error = -1;
	} else if (nvlist_send(fd, nvl) != 0) {
		warn("cannot send the migration request to bhyve");
		error = -1;
	}
	close(fd);
	return (error);
}

/* The value of key=value in a reply line, or NULL. */
static const char *
migrate_field(const char *line, const char *key, char *buf, size_t buflen)
{
	const char *p, *v;
	size_t klen, n;

	klen = strlen(key);
	for (p = line; (p = strstr(p, key)) != NULL; p += klen) {
		if ((p != line && p[-1] != ' ') || p[klen] != '=')
			continue;
		v = p + klen + 1;
		n = strcspn(v, " ");
		if (n >= buflen)
			n = buflen - 1;
		memcpy(buf, v, n);
		buf[n] = '\0';
		return (buf);
	}
	return (NULL);
}

static uint64_t
migrate_num(const char *line, const char *key)
{
	char buf[32];

	if (migrate_field(line, key, buf, sizeof(buf)) == NULL)
		return (0);
	return (strtoull(buf, NULL, 10));
}

static void
migrate_print_round(const char *line)
{
	uint64_t bytes, ms;

	bytes = migrate_num(line, "bytes");
	ms = migrate_num(line, "ms");
	if (migrate_num(line, "final") != 0)
		printf("Final round, guest paused: ");
	else
		printf("Round %ju: ", (uintmax_t)migrate_num(line, "index"));
	printf("%ju dirty pages, %ju sent, %ju zero; %.1f MiB in %ju ms",
	    (uintmax_t)migrate_num(line, "dirty"),
	    (uintmax_t)migrate_num(line, "sent"),
	    (uintmax_t)migrate_num(line, "zero"),
	    (double)bytes / (1 << 20), (uintmax_t)ms);
	if (migrate_num(line, "throttle") != 0)
		printf("; vCPUs slowed by %ju%%",
		    (uintmax_t)migrate_num(line, "throttle"));
	if (migrate_num(line, "final") == 0)
		printf("; estimated downtime %ju ms",
		    (uintmax_t)migrate_num(line, "est_downtime_ms"));
	printf("\n");
}

static void
migrate_print_stats(const char *line)
{
	uint64_t ms;

	ms = migrate_num(line, "total_ms");
	printf("Moved %.1f MiB of guest memory in %ju rounds, %.1f MiB on "
	    "the wire%s, in %ju.%03ju s; guest downtime %ju ms\n",
	    (double)migrate_num(line, "memory") / (1 << 20),
	    (uintmax_t)migrate_num(line, "rounds"),
	    (double)migrate_num(line, "bytes") / (1 << 20),
	    migrate_num(line, "encrypted") != 0 ? " (encrypted)" : "",
	    (uintmax_t)(ms / 1000), (uintmax_t)(ms % 1000),
	    (uintmax_t)migrate_num(line, "downtime_ms"));
}

/* Follow the reply until its result line. */
static int
migrate_follow(FILE *fp, const char *vmname, const char *host)
{
	char line[MIGRATE_LINE_MAX], side[32], phase[32], msg[MIGRATE_LINE_MAX];
	char word[32];
	size_t n;

	side[0] = phase[0] = '\0';
	strlcpy(msg, "no reason given", sizeof(msg));
	while (fgets(line, sizeof(line), fp) != NULL) {
		n = strcspn(line, "\n");
		line[n] = '\0';
		n = strcspn(line, " ");
		if (n >= sizeof(word))
			continue;
		memcpy(word, line, n);
		word[n] = '\0';
		if (strcmp(word, "phase") == 0) {
			if (migrate_field(line, "name", phase,
			    sizeof(phase)) != NULL)
				printf("Migration phase: %s\n", phase);
		} else if (strcmp(word, "round") == 0) {
			migrate_print_round(line);
		} else if (strcmp(word, "stats") == 0) {
			migrate_print_stats(line);
		} else if (strcmp(word, "error") == 0) {
			(void)migrate_field(line, "side", side, sizeof(side));
			(void)migrate_field(line, "phase", phase,
			    sizeof(phase));
		} else if (strcmp(word, "message") == 0) {
			strlcpy(msg, line[n] != '\0' ? line + n + 1 : "",
			    sizeof(msg));
		} else if (strcmp(word, "result") == 0) {
			if (strcmp(line + n + 1, "ok") == 0) {
				printf("Migration complete: %s runs on %s "
				    "now.\n", vmname, host);
				return (MIGRATE_OK);
			}
			if (strcmp(line + n + 1, "indeterminate") == 0) {
				fprintf(stderr, "Migration outcome unknown: "
				    "%s\n%s is kept paused on this host so "
				    "that it never runs twice.  Check whether "
				    "it runs on %s; if it does, destroy it "
				    "here (bhyvectl --vm=%s --destroy).\n",
				    msg, vmname, host, vmname);
				return (MIGRATE_UNKNOWN);
			}
			fprintf(stderr, "Migration failed on the %s side "
			    "during %s: %s\n%s keeps running on this host.\n",
			    side[0] != '\0' ? side : "source",
			    phase[0] != '\0' ? phase : "set-up", msg, vmname);
			return (MIGRATE_FAILED);
		}
		fflush(stdout);
	}
	fprintf(stderr, "bhyve ended the migration without a result.  Is it "
	    "built with migration support (WITH_BHYVE_SNAPSHOT) and still "
	    "running?\n");
	return (MIGRATE_FAILED);
}

int
migrate_request(const char *vmname)
{
	char host[MAXHOSTNAMELEN], port[NI_MAXSERV], msg[MIG_ERRMSG_MAX];
	uint8_t key[MIG_KEY_LEN];
	nvlist_t *nvl;
	FILE *fp;
	int error, sock, sp[2];

	if (mopt.keyfile == NULL) {
		warnx("--migrate needs --migrate-keyfile: a fresh key, the "
		    "same one the destination bhyve reads from its "
		    "migration.keyfile");
		return (MIGRATE_FAILED);
	}
	if (mopt.has_fixed_rounds && mopt.has_max_rounds) {
		warnx("--migrate-fixed-rounds and --migrate-max-rounds "
		    "exclude each other");
		return (MIGRATE_FAILED);
	}
	if (!mopt.live && (mopt.has_fixed_rounds || mopt.has_max_rounds ||
	    mopt.has_downtime)) {
		warnx("round and downtime options apply to --migrate-live "
		    "only");
		return (MIGRATE_FAILED);
	}
	error = mig_hostport_split(mopt.target, MIG_DEFAULT_PORT, host,
	    sizeof(host), port, sizeof(port), msg, sizeof(msg));
	if (error == 0 && host[0] == '\0') {
		strlcpy(msg, "missing host name", sizeof(msg));
		error = EINVAL;
	}
	if (error != 0) {
		warnx("invalid destination '%s' (%s): use host[:port] or "
		    "[IPv6-address]:port", mopt.target, msg);
		return (MIGRATE_FAILED);
	}
	if (migrate_read_key(mopt.keyfile, key) != 0)
		return (MIGRATE_FAILED);

	sock = migrate_connect(host, port);
	if (sock < 0) {
		explicit_bzero(key, sizeof(key));
		return (MIGRATE_FAILED);
	}
	if (socketpair(PF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0) {
		warn("cannot create the progress channel");
		close(sock);
		explicit_bzero(key, sizeof(key));
		return (MIGRATE_FAILED);
	}

	nvl = nvlist_create(0);
	nvlist_add_string(nvl, "cmd", "migrate");
	nvlist_move_descriptor(nvl, "socket", sock);
	nvlist_move_descriptor(nvl, "progress", sp[1]);
	nvlist_add_binary(nvl, "key", key, sizeof(key));
	explicit_bzero(key, sizeof(key));
	nvlist_add_bool(nvl, "live", mopt.live);
	nvlist_add_bool(nvl, "encrypt", mopt.encrypt);
	if (mopt.has_downtime)
		nvlist_add_number(nvl, "downtime_ms", mopt.downtime_ms);
	if (mopt.has_max_rounds)
		nvlist_add_number(nvl, "max_rounds", mopt.max_rounds);
	if (mopt.has_fixed_rounds)
		nvlist_add_number(nvl, "fixed_rounds", mopt.fixed_rounds);
	if (mopt.has_bandwidth)
		nvlist_add_number(nvl, "bandwidth", mopt.bandwidth);
	if (nvlist_error(nvl) != 0) {
		warnc(nvlist_error(nvl), "cannot build the migration request");
		nvlist_destroy(nvl);
		close(sp[0]);
		return (MIGRATE_FAILED);
	}
	printf("%s migration of %s to %s port %s\n",
	    mopt.live ? "Live" : "Non-live", vmname, host, port);
	fflush(stdout);
	error = migrate_send(vmname, nvl);
	/* bhyve holds its own copies of the descriptors now. */
	nvlist_destroy(nvl);
	if (error != 0) {
		close(sp[0]);
		return (MIGRATE_FAILED);
	}

	fp = fdopen(sp[0], "r");
	if (fp == NULL) {
		warn("cannot read the progress channel");
		close(sp[0]);
		return (MIGRATE_FAILED);
	}
	error = migrate_follow(fp, vmname, host);
	fclose(fp);
	return (error);
}
