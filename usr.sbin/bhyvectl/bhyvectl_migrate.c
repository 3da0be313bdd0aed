/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The controller of a migration: bhyvectl --migrate* and tbctl run this
 * file.  For a migration or a check it connects to the destination
 * (bhyve -R), which the source bhyve cannot do in capability mode,
 * hands the connected socket and one end of a socketpair to the source
 * over its control socket (mig_ctl_send(), the only FreeBSD-specific
 * step, sits behind migration_seam.h) and follows the events on the
 * other end until the result.  Killing the controller hangs up the
 * event channel, which cancels a migration that has not sent GO.
 *
 * Output: the events as JSON lines (--migrate-json; FreeBSD's libxo is
 * not in Debian, where the test bed runs this same code, so the
 * project's own format is the machine-readable one) and in words.
 */

#include <sys/socket.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
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
#include "migration_seam.h"

/* What the controller does. */
enum migrate_cmd {
	MIGRATE_CMD_NONE = 0,
	MIGRATE_CMD_MIGRATE,
	MIGRATE_CMD_CHECK,
	MIGRATE_CMD_CANCEL,
	MIGRATE_CMD_CONTINUE,
	MIGRATE_CMD_RESUME,
	MIGRATE_CMD_STATUS
};

struct migrate_ctl {
	const char	*progname;	/* before each problem reported */
	const char	*table_prefix;	/* of the table's options' names */
	enum migrate_cmd cmd;
	const char	*target;	/* destination host[:port] */
	const char	*keyfile;
	bool		json;		/* events as JSON lines on stdout */
	bool		human;		/* events in words (stderr if json) */
	int		connect_timeout_ms;
	struct mig_request req;
};

#define	MIGRATE_CONNECT_TIMEOUT_MS	10000
#define	MIGRATE_HOST_MAX		256
#define	MIGRATE_PORT_MAX		32

static struct migrate_ctl mctl = {
	.progname = "bhyvectl",
	.table_prefix = "migrate-",
	.human = true,
	.connect_timeout_ms = MIGRATE_CONNECT_TIMEOUT_MS,
};

static const char *const own_names[MIGRATE_OPT_TABLE] = {
	[MIGRATE_OPT_MIGRATE] = "migrate",
	[MIGRATE_OPT_LIVE] = "migrate-live",
	[MIGRATE_OPT_CHECK] = "migrate-check",
	[MIGRATE_OPT_CANCEL] = "migrate-cancel",
	[MIGRATE_OPT_CONTINUE] = "migrate-continue",
	[MIGRATE_OPT_RESUME] = "migrate-resume",
	[MIGRATE_OPT_STATUS] = "migrate-status",
	[MIGRATE_OPT_KEYFILE] = "migrate-keyfile",
	[MIGRATE_OPT_JSON] = "migrate-json",
};

const char *
migrate_option_name(int opt)
{
	static char names[MIG_OPT_COUNT][64];
	char *name;

	if (opt < MIGRATE_OPT_TABLE)
		return (own_names[opt]);
	name = names[opt - MIGRATE_OPT_TABLE];
	if (name[0] == '\0')
		snprintf(name, sizeof(names[0]), "migrate-%s",
		    mig_opts[opt - MIGRATE_OPT_TABLE].name);
	return (name);
}

int
migrate_option_has_arg(int opt)
{

	switch (opt) {
	case MIGRATE_OPT_CANCEL:
	case MIGRATE_OPT_CONTINUE:
	case MIGRATE_OPT_RESUME:
	case MIGRATE_OPT_STATUS:
	case MIGRATE_OPT_JSON:
		return (0);
	case MIGRATE_OPT_MIGRATE:
	case MIGRATE_OPT_LIVE:
	case MIGRATE_OPT_CHECK:
	case MIGRATE_OPT_KEYFILE:
		return (1);
	default:
		return (mig_opts[opt - MIGRATE_OPT_TABLE].type ==
		    MIG_OPT_FLAG ? 0 : 1);
	}
}

const char *
migrate_option_arg(int opt)
{

	if (opt == MIGRATE_OPT_KEYFILE)
		return ("file");
	if (opt < MIGRATE_OPT_TABLE)
		return ("host[:port]");
	return (mig_opts[opt - MIGRATE_OPT_TABLE].arg);
}

static void
say(const char *fmt, ...) __attribute__((__format__(__printf__, 1, 2)));

/* A problem in words, on stderr, as warnx() would put it. */
static void
say(const char *fmt, ...)
{
	va_list ap;

	fputs(mctl.progname, stderr);
	fputs(": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int
set_cmd(enum migrate_cmd cmd, const char *target)
{

	if (mctl.cmd != MIGRATE_CMD_NONE) {
		say("give one of --migrate, --migrate-live, --migrate-check, "
		    "--migrate-cancel, --migrate-continue, --migrate-resume "
		    "and --migrate-status, once");
		return (-1);
	}
	mctl.cmd = cmd;
	mctl.target = target;
	return (0);
}

int
migrate_option(int opt, const char *arg)
{
	char msg[MIG_ERRMSG_MAX];

	switch (opt) {
	case MIGRATE_OPT_MIGRATE:
		/* Not live: the engine pauses first and sends memory once. */
		mctl.req.set[MIG_OPT_NO_LIVE] = true;
		mctl.req.val[MIG_OPT_NO_LIVE] = 0;
		return (set_cmd(MIGRATE_CMD_MIGRATE, arg));
	case MIGRATE_OPT_LIVE:
		return (set_cmd(MIGRATE_CMD_MIGRATE, arg));
	case MIGRATE_OPT_CHECK:
		return (set_cmd(MIGRATE_CMD_CHECK, arg));
	case MIGRATE_OPT_CANCEL:
		return (set_cmd(MIGRATE_CMD_CANCEL, NULL));
	case MIGRATE_OPT_CONTINUE:
		return (set_cmd(MIGRATE_CMD_CONTINUE, NULL));
	case MIGRATE_OPT_RESUME:
		return (set_cmd(MIGRATE_CMD_RESUME, NULL));
	case MIGRATE_OPT_STATUS:
		return (set_cmd(MIGRATE_CMD_STATUS, NULL));
	case MIGRATE_OPT_KEYFILE:
		mctl.keyfile = arg;
		return (0);
	case MIGRATE_OPT_JSON:
		mctl.json = true;
		mctl.human = false;
		return (0);
	default:
		/* bhyvectl lists no MIG_OPTF_TESTBED option; tbctl does. */
		if (opt < MIGRATE_OPT_TABLE || opt >= MIGRATE_OPT_COUNT)
			return (-1);
		if (mig_request_set(&mctl.req, opt - MIGRATE_OPT_TABLE, arg,
		    msg, sizeof(msg)) != 0) {
			say("--%s%s: %s", mctl.table_prefix,
			    mig_opts[opt - MIGRATE_OPT_TABLE].name, msg);
			return (-1);
		}
		return (0);
	}
}

void
migrate_output(const char *progname, const char *table_prefix, bool json,
    bool human)
{

	mctl.progname = progname;
	mctl.table_prefix = table_prefix;
	mctl.json = json;
	mctl.human = human;
}

bool
migrate_requested(void)
{

	return (mctl.cmd != MIGRATE_CMD_NONE);
}

static int	migrate_run(const char *, struct migrate_ctl *);

int
migrate_request(const char *vmname)
{

	return (migrate_run(vmname, &mctl));
}

/* The per-migration key, the same one the destination reads. */
static int
read_key(const char *path, uint8_t *key)
{
	char msg[MIG_ERRMSG_MAX];
	int error, fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0) {
		say("cannot open the migration key file %s: %s", path,
		    strerror(errno));
		return (-1);
	}
	error = mig_key_read_fd(fd, MIG_KEY_PRIVATE, key, msg, sizeof(msg));
	close(fd);
	if (error != 0) {
		say("the migration key file %s %s", path, msg);
		return (-1);
	}
	return (0);
}

static int
connect_dest(const char *host, const char *port, int timeout_ms,
    bool human)
{
	struct addrinfo hints, *ai, *res;
	char addr[NI_MAXHOST];
	int error, fd;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if ((error = getaddrinfo(host, port, &hints, &res)) != 0) {
		say("cannot find the destination %s: %s", host,
		    gai_strerror(error));
		return (-1);
	}
	fd = -1;
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if (getnameinfo(ai->ai_addr, ai->ai_addrlen, addr,
		    sizeof(addr), NULL, 0, NI_NUMERICHOST) != 0)
			snprintf(addr, sizeof(addr), "%s", host);
		if (human)
			fprintf(stderr, "Connecting to %s port %s...\n", addr,
			    port);
		if ((error = mig_connect(ai, timeout_ms, &fd)) == 0)
			break;
		say("cannot connect to %s port %s: %s", addr, port,
		    strerror(error));
	}
	freeaddrinfo(res);
	if (fd < 0)
		say("is the destination listening (bhyve -R) and the port "
		    "open?");
	return (fd);
}

/* Follow the events until the result; its exit code. */
static int
follow(int fd, const struct migrate_ctl *c)
{
	char msg[MIG_ERRMSG_MAX];
	struct mig_event *ev;
	enum mig_phase last;
	char *line;
	size_t cap;
	ssize_t n;
	FILE *f;
	int code;

	if ((f = fdopen(fd, "r")) == NULL) {
		say("cannot read the event channel: %s", strerror(errno));
		close(fd);
		return (MIG_EXIT_FAILED);
	}
	if ((ev = malloc(sizeof(*ev))) == NULL) {
		fclose(f);
		return (MIG_EXIT_FAILED);
	}
	line = NULL;
	cap = 0;
	code = -1;
	last = MIG_PHASE_CONNECT;
	while (code < 0 && (n = getline(&line, &cap, f)) > 0) {
		if (line[n - 1] == '\n')
			line[--n] = '\0';
		if (mig_event_decode(line, ev, msg, sizeof(msg)) != 0) {
			say("ignoring what the VM sent: %s", msg);
			continue;
		}
		if (c->json) {
			printf("%s\n", line);
			fflush(stdout);
		}
		if (c->human)
			mig_event_print(c->json ? stderr : stdout, ev);
		if (ev->type == MIG_EV_RESULT)
			code = mig_outcome_exit_code(ev->outcome);
		else if (ev->type == MIG_EV_PHASE)
			last = ev->phase;
	}
	free(line);
	free(ev);
	fclose(f);
	if (code < 0 && last >= MIG_PHASE_STOPCOPY) {
		/* Paused: GO may have left before the VM went away. */
		say("the VM ended the migration without a result after it "
		    "paused the guest: ask the destination whether the guest "
		    "runs there (--migrate-status) before resuming it here");
		code = MIG_EXIT_INDETERMINATE;
	} else if (code < 0) {
		say("the VM ended the migration without a result; is it "
		    "built with migration support and still running?");
		code = MIG_EXIT_FAILED;
	}
	return (code);
}

static void
close_all(int *fds, int n)
{
	int i;

	for (i = 0; i < n; i++)
		close(fds[i]);
}

/*
 * Connect the streams, stream 0 first: all to the same destination,
 * which tells them apart by what the source says on each.
 */
static int
connect_streams(const char *host, const char *port, const struct migrate_ctl *c,
    int *socks, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		if ((socks[i] = connect_dest(host, port, c->connect_timeout_ms,
		    c->human && i == 0)) < 0) {
			close_all(socks, i);
			return (-1);
		}
	}
	return (0);
}

static int
migrate_or_check(const char *vm, const struct migrate_ctl *c)
{
	char host[MIGRATE_HOST_MAX], port[MIGRATE_PORT_MAX];
	char msg[MIG_ERRMSG_MAX];
	uint8_t key[MIG_KEY_LEN];
	char *payload;
	int error, nsocks, socks[MIG_STREAMS_MAX], sp[2];

	if (c->keyfile == NULL) {
		say("--%s needs --%s: a fresh key, the same one the "
		    "destination reads", migrate_option_name(c->cmd ==
		    MIGRATE_CMD_CHECK ? MIGRATE_OPT_CHECK : MIGRATE_OPT_LIVE),
		    migrate_option_name(MIGRATE_OPT_KEYFILE));
		return (MIG_EXIT_USAGE);
	}
	if (mig_request_check(&c->req, msg, sizeof(msg)) != 0) {
		say("%s", msg);
		return (MIG_EXIT_USAGE);
	}
	error = mig_hostport_split(c->target, MIG_DEFAULT_PORT, host,
	    sizeof(host), port, sizeof(port), msg, sizeof(msg));
	if (error == 0 && host[0] == '\0') {
		snprintf(msg, sizeof(msg), "missing host name");
		error = EINVAL;
	}
	if (error != 0) {
		say("invalid destination '%s' (%s): use host[:port] or "
		    "[IPv6-address]:port", c->target, msg);
		return (MIG_EXIT_USAGE);
	}
	if (read_key(c->keyfile, key) != 0)
		return (MIG_EXIT_FAILED);
	payload = mig_request_encode(&c->req, key);
	explicit_bzero(key, sizeof(key));
	if (payload == NULL) {
		say("out of memory");
		return (MIG_EXIT_FAILED);
	}
	/* A dry run checks over one connection. */
	nsocks = c->cmd == MIGRATE_CMD_CHECK || !c->req.set[MIG_OPT_STREAMS] ?
	    1 : (int)c->req.val[MIG_OPT_STREAMS];
	if (connect_streams(host, port, c, socks, nsocks) != 0) {
		explicit_bzero(payload, strlen(payload));
		free(payload);
		return (MIG_EXIT_FAILED);
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0) {
		say("cannot create the event channel: %s", strerror(errno));
		close_all(socks, nsocks);
		explicit_bzero(payload, strlen(payload));
		free(payload);
		return (MIG_EXIT_FAILED);
	}
	if (c->human)
		fprintf(c->json ? stderr : stdout, "%s of %s to %s port %s\n",
		    c->cmd == MIGRATE_CMD_CHECK ? "Compatibility check" :
		    c->req.set[MIG_OPT_NO_LIVE] ? "Non-live migration" :
		    "Live migration", vm, host, port);
	error = mig_ctl_send(vm, c->cmd == MIGRATE_CMD_CHECK ?
	    "migrate_check" : "migrate", payload, socks, nsocks, sp[1], msg,
	    sizeof(msg));
	explicit_bzero(payload, strlen(payload));
	free(payload);
	/* The VM holds its own copies of the descriptors now. */
	close_all(socks, nsocks);
	close(sp[1]);
	if (error != 0) {
		say("%s", msg);
		close(sp[0]);
		return (MIG_EXIT_FAILED);
	}
	return (follow(sp[0], c));
}

/* cancel, continue, resume, status: one JSON line back. */
static int
operator_cmd(const char *vm, const struct migrate_ctl *c)
{
	static const char *const cmds[] = {
		[MIGRATE_CMD_CANCEL] = "migrate_cancel",
		[MIGRATE_CMD_CONTINUE] = "migrate_continue",
		[MIGRATE_CMD_RESUME] = "migrate_resume",
		[MIGRATE_CMD_STATUS] = "migrate_status",
	};
	char msg[MIG_ERRMSG_MAX], line[1024], text[MIG_ERRMSG_MAX];
	bool ok;
	FILE *f;
	int error, sp[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0) {
		say("cannot create the reply channel: %s", strerror(errno));
		return (MIG_EXIT_FAILED);
	}
	error = mig_ctl_send(vm, cmds[c->cmd], NULL, NULL, 0, sp[1], msg,
	    sizeof(msg));
	close(sp[1]);
	if (error != 0) {
		say("%s", msg);
		close(sp[0]);
		return (MIG_EXIT_FAILED);
	}
	if ((f = fdopen(sp[0], "r")) == NULL) {
		close(sp[0]);
		return (MIG_EXIT_FAILED);
	}
	if (fgets(line, sizeof(line), f) == NULL) {
		fclose(f);
		say("the VM sent no answer; is it built with migration "
		    "support?");
		return (MIG_EXIT_FAILED);
	}
	fclose(f);
	line[strcspn(line, "\n")] = '\0';
	if (c->json)
		printf("%s\n", line);
	if (c->cmd == MIGRATE_CMD_STATUS) {
		if (c->human && mig_json_get_string(line, "state", text,
		    sizeof(text)))
			fprintf(c->json ? stderr : stdout, "Guest %s: %s\n",
			    vm, text);
		return (MIG_EXIT_OK);
	}
	if (!mig_json_get_bool(line, "ok", &ok) ||
	    !mig_json_get_string(line, "message", text, sizeof(text))) {
		say("the VM's answer is malformed: '%.80s'", line);
		return (MIG_EXIT_FAILED);
	}
	if (c->human)
		fprintf(ok ? (c->json ? stderr : stdout) : stderr, "%s: %s\n",
		    cmds[c->cmd], text);
	return (ok ? MIG_EXIT_OK : MIG_EXIT_FAILED);
}

static int
migrate_run(const char *vm, struct migrate_ctl *c)
{

	switch (c->cmd) {
	case MIGRATE_CMD_MIGRATE:
	case MIGRATE_CMD_CHECK:
		return (migrate_or_check(vm, c));
	case MIGRATE_CMD_CANCEL:
	case MIGRATE_CMD_CONTINUE:
	case MIGRATE_CMD_RESUME:
	case MIGRATE_CMD_STATUS:
		return (operator_cmd(vm, c));
	default:
		return (MIG_EXIT_USAGE);
	}
}
