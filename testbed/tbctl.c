/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * tbctl: the test bed's controller.  migrate, check, cancel,
 * switchover-continue, resume and guest-status run bhyvectl's own controller (bhyvectl_migrate.c) with
 * the options of the shared request table (migration_ctl.c); the events
 * go to stdout as JSON lines, in words to stderr.  verify, status, stop
 * and checkpoint are the test bed's own.
 *
 * Exit status: migration_ctl.h's MIG_EXIT_* (0 migrated or compatible,
 * 1 failed, 3 indeterminate, 4 incompatible, 64 usage error); verify
 * exits 1 if the guest is not intact.
 */

#include <sys/socket.h>

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bhyvectl_migrate.h"
#include "migration.h"
#include "migration_ctl.h"
#include "migration_json.h"

#include "tb_ctlmsg.h"

#define	REPLY_MAX		65536
#define	OPT_CONTROL		1000
#define	OPT_TO			1001
#define	OPT_KEYFILE		1002
#define	OPT_TABLE		1100	/* + mig_opts[] index */
#define	OPT_BHYVECTL		1200	/* + MIGRATE_OPT_*: bhyvectl's spelling */

static void
usage(void)
{

	fprintf(stderr,
	    "usage: tbctl --control PATH migrate --to HOST:PORT --key-file "
	    "FILE [options]\n"
	    "       tbctl --control PATH check --to HOST:PORT --key-file FILE\n"
	    "       tbctl --control PATH cancel | switchover-continue | resume "
	    "| guest-status\n"
	    "       tbctl --control PATH verify | status | stop | checkpoint\n"
	    "       tbctl --control PATH --migrate-live=HOST:PORT ... (bhyvectl's "
	    "options)\n"
	    "migration options (bhyvectl: --migrate-NAME):\n");
	mig_opts_usage(stderr, "", true);
	exit(MIG_EXIT_USAGE);
}

static void __attribute__((noreturn, format(printf, 2, 3)))
die(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("tbctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

/* The test bed's own commands: one JSON line back. */
static int
simple(const char *control, const char *cmd)
{
	char msg[256], text[64], err[512], *buf;
	bool ok;
	int error, fd;

	error = tb_ctl_connect(control, &fd, msg, sizeof(msg));
	if (error != 0)
		die(1, "%s", msg);
	snprintf(text, sizeof(text), "%s\n\n", cmd);
	if ((error = tb_ctl_send(fd, text, NULL, 0)) != 0)
		die(1, "control socket %s: %s", control, strerror(error));
	if ((buf = malloc(REPLY_MAX)) == NULL)
		die(1, "out of memory");
	error = tb_ctl_read_reply(fd, buf, REPLY_MAX);
	close(fd);
	if (error != 0)
		die(1, "control socket %s: %s", control, strerror(error));
	if (buf[0] == '\0')
		die(1, "the VM at %s closed the control connection without "
		    "a reply", control);
	fputs(buf, stdout);
	ok = true;
	if (mig_json_get_bool(buf, "ok", &ok) && !ok &&
	    mig_json_get_string(buf, "error", err, sizeof(err)))
		fprintf(stderr, "tbctl: %s: %s\n", cmd, err);
	free(buf);
	return (ok ? 0 : 1);
}

/*
 * tbctl's words for bhyvectl's options: the command names the option
 * that carries --to's address, the rest map one to one.
 */
static void
option(int opt, const char *arg)
{

	if (migrate_option(opt, arg) != 0)
		exit(MIG_EXIT_USAGE);
}

int
main(int argc, char **argv)
{
	static const struct {
		const char	*name;
		int		opt;
	} cmds[] = {
		{ "migrate", MIGRATE_OPT_LIVE },
		{ "check", MIGRATE_OPT_CHECK },
		{ "cancel", MIGRATE_OPT_CANCEL },
		{ "switchover-continue", MIGRATE_OPT_CONTINUE },
		{ "resume", MIGRATE_OPT_RESUME },
		{ "guest-status", MIGRATE_OPT_STATUS },
	};
	const struct option bhyvectl_opts[] = {
		MIGRATE_LONG_OPTIONS(OPT_BHYVECTL),
	};
	struct option longopts[MIG_OPT_COUNT + MIGRATE_OPT_BHYVECTL + 4];
	const char *control, *cmd, *to;
	bool bhyvectl, migrate_opts;
	size_t c;
	int ch, i, n;

	n = 0;
	longopts[n++] = (struct option){ "control", required_argument, NULL,
	    OPT_CONTROL };
	longopts[n++] = (struct option){ "to", required_argument, NULL,
	    OPT_TO };
	longopts[n++] = (struct option){ "key-file", required_argument, NULL,
	    OPT_KEYFILE };
	for (i = 0; i < MIG_OPT_COUNT; i++)
		longopts[n++] = (struct option){ mig_opts[i].name,
		    mig_opts[i].type == MIG_OPT_FLAG ? no_argument :
		    required_argument, NULL, OPT_TABLE + i };
	for (i = 0; i < MIGRATE_OPT_BHYVECTL; i++)
		longopts[n++] = bhyvectl_opts[i];
	longopts[n] = (struct option){ NULL, 0, NULL, 0 };

	migrate_output("tbctl", "", true, true);
	control = to = NULL;
	bhyvectl = migrate_opts = false;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (ch == OPT_CONTROL) {
			control = optarg;
			continue;
		}
		migrate_opts = true;
		if (ch == OPT_TO)
			to = optarg;
		else if (ch == OPT_KEYFILE)
			option(MIGRATE_OPT_KEYFILE, optarg);
		else if (ch >= OPT_TABLE && ch < OPT_TABLE + MIG_OPT_COUNT)
			option(MIGRATE_OPT_TABLE + ch - OPT_TABLE, optarg);
		else if (ch >= OPT_BHYVECTL &&
		    ch < OPT_BHYVECTL + MIGRATE_OPT_BHYVECTL) {
			/* bhyvectl's own command line, word for word. */
			if (!bhyvectl)
				migrate_output("tbctl", "migrate-", false, true);
			bhyvectl = true;
			option(ch - OPT_BHYVECTL, optarg);
		} else
			usage();
	}
	if (bhyvectl) {
		if (optind != argc || control == NULL || !migrate_requested())
			die(MIG_EXIT_USAGE, "with bhyvectl's options give "
			    "--control and one --migrate* command, no other "
			    "word");
		return (migrate_request(control));
	}
	if (optind != argc - 1)
		usage();
	cmd = argv[optind];
	if (control == NULL)
		die(MIG_EXIT_USAGE, "--control is required");

	for (c = 0; c < sizeof(cmds) / sizeof(cmds[0]); c++) {
		if (strcmp(cmd, cmds[c].name) != 0)
			continue;
		if (c < 2 && to == NULL)
			die(MIG_EXIT_USAGE, "%s: --to is required", cmd);
		if (c >= 2 && migrate_opts)
			die(MIG_EXIT_USAGE, "%s takes no options but --control",
			    cmd);
		option(cmds[c].opt, to);
		return (migrate_request(control));
	}
	if (migrate_opts)
		die(MIG_EXIT_USAGE, "%s takes no options but --control", cmd);
	if (strcmp(cmd, "verify") != 0 && strcmp(cmd, "status") != 0 &&
	    strcmp(cmd, "stop") != 0 && strcmp(cmd, "checkpoint") != 0)
		die(MIG_EXIT_USAGE, "unknown command '%s' (migrate, check, "
		    "cancel, switchover-continue, resume, guest-status, verify, "
		    "status, stop or checkpoint)", cmd);
	if (simple(control, cmd) != 0) {
		if (strcmp(cmd, "verify") == 0)
			fprintf(stderr, "tbctl: the guest's memory or state is "
			    "not what its workload wrote\n");
		return (1);
	}
	return (0);
}
