/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * tbctl: the test bed's controller, in the role of bhyvectl --migrate.
 * It connects the migration socket itself and hands it to the VM over
 * the control socket, with a socket pair for the VM's progress, then
 * follows the progress until the result.
 *
 * Exit status: 0 completed (or verify found the guest intact), 1 failed,
 * 3 indeterminate, 64 usage error.
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

#include "migration.h"

#include "tb_ctlmsg.h"
#include "tb_json.h"
#include "tb_net.h"
#include "tb_parse.h"

#define	EX_USAGE		64
#define	EX_INDETERMINATE	3
#define	CONNECT_TIMEOUT_MS	30000
#define	REPLY_MAX		65536
#define	RESULT_PREFIX		"{\"event\":\"result\","

struct migrate_opts {
	const char	*to;
	const char	*keyfile;
	const char	*report;
	FILE		*req;		/* request lines being built */
	uint64_t	timeout_ms;
};

static void
usage(void)
{

	fprintf(stderr,
	    "usage: tbctl --control PATH migrate --to HOST:PORT --key-file "
	    "FILE\n"
	    "\t    [--downtime-limit MS] [--max-rounds N] [--fixed-rounds N]\n"
	    "\t    [--max-time MS] [--bandwidth BYTES_PER_SEC] [--encrypt]\n"
	    "\t    [--no-throttle] [--no-live] [--timeout MS]\n"
	    "\t    [--fault drop-page|stale-device] [--report FILE]\n"
	    "       tbctl --control PATH verify | status | stop\n");
	exit(EX_USAGE);
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

static uint64_t
opt_number(const char *opt, const char *arg)
{
	uint64_t v;

	if (tb_parse_u64(arg, &v) != 0)
		die(EX_USAGE, "--%s: '%s' is not a number", opt, arg);
	return (v);
}

/* Send a request and return the VM's reply; exit if it refused. */
static char *
request(const char *control, const char *text, const int *fds, int nfds)
{
	char msg[256], *buf, err[512];
	bool ok, usage_err;
	int error, fd;

	error = tb_ctl_connect(control, &fd, msg, sizeof(msg));
	if (error != 0)
		die(1, "%s", msg);
	error = tb_ctl_send(fd, text, fds, nfds);
	if (error != 0)
		die(1, "control socket %s: %s", control, strerror(error));
	buf = malloc(REPLY_MAX);
	if (buf == NULL)
		die(1, "out of memory");
	error = tb_ctl_read_reply(fd, buf, REPLY_MAX);
	close(fd);
	if (error != 0)
		die(1, "control socket %s: %s", control, strerror(error));
	if (buf[0] == '\0')
		die(1, "the VM at %s closed the control connection without "
		    "a reply", control);
	if (tb_json_get_bool(buf, "ok", &ok) && !ok &&
	    tb_json_get_string(buf, "error", err, sizeof(err))) {
		usage_err = false;
		(void)tb_json_get_bool(buf, "usage", &usage_err);
		die(usage_err ? EX_USAGE : 1, "the VM refused: %s", err);
	}
	return (buf);
}

static void
print_round(const char *line)
{
	uint64_t index, dirty, sent, zero, bytes, throttle;
	double dur, est;
	bool final;

	if (!tb_json_get_u64(line, "index", &index) ||
	    !tb_json_get_u64(line, "dirty_pages", &dirty) ||
	    !tb_json_get_u64(line, "pages_sent", &sent) ||
	    !tb_json_get_u64(line, "zero_pages", &zero) ||
	    !tb_json_get_u64(line, "bytes", &bytes) ||
	    !tb_json_get_u64(line, "throttle_pct", &throttle) ||
	    !tb_json_get_double(line, "duration_ms", &dur) ||
	    !tb_json_get_double(line, "est_downtime_ms", &est) ||
	    !tb_json_get_bool(line, "final", &final))
		return;
	fprintf(stderr, "tbctl: round %ju%s: %ju dirty, %ju sent, %ju zero, "
	    "%.1f MiB in %.1f ms, throttle %ju%%, est. downtime %.1f ms\n",
	    (uintmax_t)index, final ? " (final, paused)" : "",
	    (uintmax_t)dirty, (uintmax_t)sent, (uintmax_t)zero,
	    (double)bytes / (1 << 20), dur, (uintmax_t)throttle, est);
}

/* Write the result (without its event member) and return the code. */
static int
finish(const char *line, const char *report)
{
	char status[32], side[32], phase[32], message[512];
	FILE *f;

	/* The report proper is the event minus its "event" member. */
	if (strncmp(line, RESULT_PREFIX, strlen(RESULT_PREFIX)) == 0) {
		printf("{%s\n", line + strlen(RESULT_PREFIX));
		if (report != NULL && ((f = fopen(report, "w")) == NULL ||
		    (fprintf(f, "{%s\n", line + strlen(RESULT_PREFIX)) < 0) +
		    fclose(f) != 0))
			fprintf(stderr, "tbctl: report %s: %s\n", report,
			    strerror(errno));
	}
	fflush(stdout);
	if (!tb_json_get_string(line, "status", status, sizeof(status)))
		die(1, "the VM's result has no status");
	if (strcmp(status, "completed") == 0) {
		fprintf(stderr, "tbctl: migration completed\n");
		return (0);
	}
	if (!tb_json_get_string(line, "error.side", side, sizeof(side)) ||
	    !tb_json_get_string(line, "error.phase", phase, sizeof(phase)) ||
	    !tb_json_get_string(line, "error.message", message,
	    sizeof(message)))
		snprintf(message, sizeof(message), "no reason given");
	if (strcmp(status, "indeterminate") == 0) {
		fprintf(stderr, "tbctl: migration indeterminate: %s side, %s: "
		    "%s; the source keeps the guest paused, decide which copy "
		    "runs\n", side, phase, message);
		return (EX_INDETERMINATE);
	}
	fprintf(stderr, "tbctl: migration failed: %s side, %s: %s\n", side,
	    phase, message);
	return (1);
}

static int
follow(int pfd, const char *report)
{
	char event[32], phase[32], last[32], *line;
	size_t cap;
	ssize_t n;
	FILE *f;
	int code;

	f = fdopen(pfd, "r");
	if (f == NULL)
		die(1, "progress channel: %s", strerror(errno));
	line = NULL;
	cap = 0;
	code = -1;
	last[0] = '\0';
	while (code < 0 && (n = getline(&line, &cap, f)) > 0) {
		if (line[n - 1] == '\n')
			line[n - 1] = '\0';
		if (!tb_json_get_string(line, "event", event, sizeof(event)))
			continue;
		if (strcmp(event, "round") == 0)
			print_round(line);
		else if (strcmp(event, "phase") == 0 &&
		    tb_json_get_string(line, "phase", phase, sizeof(phase)) &&
		    strcmp(phase, last) != 0) {
			fprintf(stderr, "tbctl: %s\n", phase);
			strcpy(last, phase);
		}
		else if (strcmp(event, "result") == 0)
			code = finish(line, report);
	}
	free(line);
	fclose(f);
	if (code < 0)
		die(1, "the VM closed the progress channel without a result "
		    "(did tbvm exit or crash?)");
	return (code);
}

static int
migrate(const char *control, struct migrate_opts *mo, char *reqbuf)
{
	uint8_t key[MIG_KEY_LEN];
	char msg[256], hex[2 * MIG_KEY_LEN + 1], *text, *reply;
	size_t len;
	int error, fds[2], sp[2], tcp;
	FILE *f;

	error = tb_read_keyfile(mo->keyfile, key, msg, sizeof(msg));
	if (error != 0)
		die(1, "%s", msg);
	tb_hex(key, sizeof(key), hex);
	f = open_memstream(&text, &len);
	if (f == NULL)
		die(1, "out of memory");
	fprintf(f, "migrate\nkey=%s\n%s\n", hex, reqbuf);
	if (fclose(f) != 0)
		die(1, "out of memory");
	explicit_bzero(hex, sizeof(hex));
	explicit_bzero(key, sizeof(key));

	error = tb_net_connect(mo->to, mo->timeout_ms != 0 ?
	    (int)mo->timeout_ms : CONNECT_TIMEOUT_MS, &tcp, msg, sizeof(msg));
	if (error != 0)
		die(1, "--to: %s", msg);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0)
		die(1, "socketpair: %s", strerror(errno));
	fds[0] = tcp;
	fds[1] = sp[1];
	reply = request(control, text, fds, 2);
	explicit_bzero(text, len);
	free(text);
	free(reply);
	/* The VM holds its own copies now. */
	close(tcp);
	close(sp[1]);
	return (follow(sp[0], mo->report));
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "control", required_argument, NULL, 'C' },
		{ "to", required_argument, NULL, 'T' },
		{ "key-file", required_argument, NULL, 'k' },
		{ "downtime-limit", required_argument, NULL, 'd' },
		{ "max-rounds", required_argument, NULL, 'r' },
		{ "fixed-rounds", required_argument, NULL, 'F' },
		{ "max-time", required_argument, NULL, 'M' },
		{ "bandwidth", required_argument, NULL, 'b' },
		{ "encrypt", no_argument, NULL, 'e' },
		{ "no-throttle", no_argument, NULL, 'n' },
		{ "no-live", no_argument, NULL, 'L' },
		{ "timeout", required_argument, NULL, 't' },
		{ "fault", required_argument, NULL, 'f' },
		{ "report", required_argument, NULL, 'R' },
		{ NULL, 0, NULL, 0 }
	};
	struct migrate_opts mo;
	char host[TB_HOST_MAX], port[TB_PORT_MAX], msg[256];
	const char *control, *cmd;
	char *reqbuf, *reply;
	size_t reqlen;
	uint64_t v;
	bool ok, migrate_opt;
	int ch, code;

	memset(&mo, 0, sizeof(mo));
	control = NULL;
	migrate_opt = false;
	mo.req = open_memstream(&reqbuf, &reqlen);
	if (mo.req == NULL)
		die(1, "out of memory");
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		migrate_opt = migrate_opt || ch != 'C';
		switch (ch) {
		case 'C':
			control = optarg;
			break;
		case 'T':
			mo.to = optarg;
			break;
		case 'k':
			mo.keyfile = optarg;
			break;
		case 'd':
			fprintf(mo.req, "downtime_limit_ms=%ju\n",
			    (uintmax_t)opt_number("downtime-limit", optarg));
			break;
		case 'r':
			fprintf(mo.req, "max_rounds=%ju\n",
			    (uintmax_t)opt_number("max-rounds", optarg));
			break;
		case 'F':
			fprintf(mo.req, "fixed_rounds=%ju\n",
			    (uintmax_t)opt_number("fixed-rounds", optarg));
			break;
		case 'M':
			fprintf(mo.req, "max_time_ms=%ju\n",
			    (uintmax_t)opt_number("max-time", optarg));
			break;
		case 'b':
			if (tb_parse_size(optarg, &v) != 0)
				die(EX_USAGE, "--bandwidth: '%s' is not a rate "
				    "such as 100M (bytes/s)", optarg);
			fprintf(mo.req, "bandwidth=%ju\n", (uintmax_t)v);
			break;
		case 'e':
			fprintf(mo.req, "encrypt=1\n");
			break;
		case 'n':
			fprintf(mo.req, "throttle=0\n");
			break;
		case 'L':
			fprintf(mo.req, "live=0\n");
			break;
		case 't':
			mo.timeout_ms = opt_number("timeout", optarg);
			if (mo.timeout_ms == 0 || mo.timeout_ms > INT32_MAX)
				die(EX_USAGE, "--timeout: %s is out of range",
				    optarg);
			fprintf(mo.req, "timeout_ms=%ju\n",
			    (uintmax_t)mo.timeout_ms);
			break;
		case 'f':
			if (strcmp(optarg, "drop-page") != 0 &&
			    strcmp(optarg, "stale-device") != 0)
				die(EX_USAGE, "--fault: '%s' is neither "
				    "'drop-page' nor 'stale-device'", optarg);
			fprintf(mo.req, "fault=%s\n", optarg);
			break;
		case 'R':
			mo.report = optarg;
			break;
		default:
			usage();
		}
	}
	if (fclose(mo.req) != 0)
		die(1, "out of memory");
	if (optind != argc - 1)
		usage();
	cmd = argv[optind];
	if (control == NULL)
		die(EX_USAGE, "--control is required");

	if (strcmp(cmd, "migrate") == 0) {
		if (mo.to == NULL)
			die(EX_USAGE, "migrate: --to is required");
		if (mo.keyfile == NULL)
			die(EX_USAGE, "migrate: --key-file is required");
		if (tb_net_split(mo.to, 0, host, port, msg, sizeof(msg)) != 0)
			die(EX_USAGE, "--to: %s", msg);
		code = migrate(control, &mo, reqbuf);
		free(reqbuf);
		return (code);
	}
	free(reqbuf);
	if (migrate_opt)
		die(EX_USAGE, "%s takes no options but --control", cmd);
	if (strcmp(cmd, "verify") == 0)
		reply = request(control, "verify\n\n", NULL, 0);
	else if (strcmp(cmd, "status") == 0)
		reply = request(control, "status\n\n", NULL, 0);
	else if (strcmp(cmd, "stop") == 0)
		reply = request(control, "stop\n\n", NULL, 0);
	else
		die(EX_USAGE, "unknown command '%s' (migrate, verify, status "
		    "or stop)", cmd);
	fputs(reply, stdout);
	code = 0;
	if (strcmp(cmd, "verify") == 0 &&
	    (!tb_json_get_bool(reply, "ok", &ok) || !ok)) {
		fprintf(stderr, "tbctl: the guest's memory or state is not "
		    "what its workload wrote\n");
		code = 1;
	}
	free(reply);
	return (code);
}
