/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * tbvm: the test bed's virtual machine, in the role bhyve plays.
 *
 * "tbvm run" starts a test guest and serves its control socket, over
 * which tbctl starts a live migration (handing over the connected
 * socket, as bhyvectl does for a bhyve in capability mode), checks the
 * guest, asks for its status or stops it.  "tbvm receive" is the
 * destination: it accepts one migration, then runs the guest the same
 * way.
 *
 * Exit status: 0 after stop or a completed outgoing migration, 1 on
 * failure, 3 if an outgoing migration ended indeterminate (the guest
 * stays paused), 64 for usage errors.
 */

#include <sys/socket.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migration.h"
#include "migration_backend.h"
#include "migration_ctl.h"
#include "migration_dest_listen.h"
#include "migration_json.h"
#include "migration_seam.h"
#include "migration_source_cmd.h"

#include "tb_backend.h"
#include "tb_ctlmsg.h"
#include "tb_dirty.h"
#include "tb_guest.h"
#include "tb_memstat.h"
#include "tb_net.h"
#include "tb_parse.h"
#include "tb_probe.h"

#ifndef __unused
#define	__unused	__attribute__((__unused__))	/* as sys/cdefs.h */
#endif

#define	EX_USAGE	64
#define	EX_INDETERMINATE 3

enum vm_state {
	VM_RUNNING = 0,
	VM_PAUSED,
	VM_MIGRATING,
	VM_MIGRATED
};

static const char *const state_names[] = {
	"running", "paused", "migrating", "migrated"
};

/*
 * Test-only: where "tbvm run|receive --stop-at" stops itself (SIGSTOP),
 * once, for the fault matrix to inject a fault while both ends sit in one
 * phase: the source (run) as a round begins, before its pages leave, the
 * destination (receive) at the switchover's steps.
 */
enum stop_point {
	STOP_NONE = 0,
	STOP_ROUND1,		/* run: round 1 begins */
	STOP_ROUND2,		/* run: round 2 begins */
	STOP_STOPCOPY,		/* run: guest paused, the last round begins */
	STOP_HANDSHAKE,		/* receive: proofs checked, compat unanswered */
	STOP_READY,		/* receive: READY sent, GO not read */
	STOP_GO,		/* receive: GO read, RUNNING not sent */
	STOP_RUNNING		/* receive: RUNNING sent */
};

static const char *const stop_names[] = {
	"none", "round1", "round2", "stopcopy", "handshake", "ready", "go",
	"running"
};

struct opts {
	bool		receive;
	const char	*control;
	const char	*probe;
	const char	*listen;
	uint64_t	listen_timeout_ms;	/* 0: wait for ever */
	uint64_t	handshake_timeout_ms;	/* 0: the default */
	const char	*keyfile;
	const char	*report;
	const char	*fault;		/* post-GO fault of receive */
	enum stop_point	stop_at;
	const char	*stateless_device; /* run: a device without state */
	bool		require_encryption;
	uint32_t	timeout_ms;	/* 0: the engine's default */
};

static struct vm {
	struct tb_guest_config cfg;
	struct tb_guest	*guest;
	struct tb_backend be;
	const char	*control;
	int		ctl_fd;
	int		wake[2];	/* exit requests: one byte, the code */
	struct tb_probe	*probe;
	bool		receiving;	/* "tbvm receive" */
	enum stop_point	stop_at;	/* test-only */
	mig_progress_cb	*source_cb;	/* the controller's progress */
	void		*source_cbarg;
	const char	*stateless_device;

	pthread_mutex_t	mtx;		/* what follows */
	bool		exiting;
} vm = {
	.ctl_fd = -1,
	.wake = { -1, -1 },
	.mtx = PTHREAD_MUTEX_INITIALIZER,
};

static void
usage(void)
{

	fprintf(stderr,
	    "usage: tbvm run --name NAME --memory SIZE --vcpus N "
	    "[--segments N]\n"
	    "\t    [--workload idle|full|hotset:SIZE[@RATE]] "
	    "[--fill pattern|zero]\n"
	    "\t    [--seed S] [--dma RATE [--dma-unlogged running|drain]]\n"
	    "\t    [--disk SIZE --disk-image PATH [--disk-hot SIZE] "
	    "[--disk-rate N] [--disk-prefill]]\n"
	    "\t    --control PATH [--probe HOST:PORT]\n"
	    "\t    [--stateless-device NAME] [--stop-at round1|round2|stopcopy]\n"
	    "       tbvm receive (the guest options of run) --listen "
	    "HOST:PORT\n"
	    "\t    --key-file FILE --control PATH [--probe HOST:PORT]\n"
	    "\t    [--report FILE] [--require-encryption] [--timeout MS]\n"
	    "\t    [--lazy-memory] [--fault lose-running|die-after-go]\n"
	    "\t    [--listen-timeout MS] [--handshake-timeout MS]\n"
	    "\t    [--stop-at handshake|ready|go|running]\n");
	exit(EX_USAGE);
}

static void __attribute__((noreturn, format(printf, 1, 2)))
usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("tbvm: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(EX_USAGE);
}

static uint64_t
opt_number(const char *opt, const char *arg, uint64_t min, uint64_t max)
{
	uint64_t v;

	if (tb_parse_u64(arg, &v) != 0)
		usage_error("--%s: '%s' is not a number", opt, arg);
	if (v < min || v > max)
		usage_error("--%s: %s is out of range (%ju to %ju)", opt, arg,
		    (uintmax_t)min, (uintmax_t)max);
	return (v);
}

static const char *
option_name(const struct option *opts, int ch)
{

	while (opts->name != NULL && opts->val != ch)
		opts++;
	return (opts->name != NULL ? opts->name : "?");
}

/* run stops at the source's points, receive at the destination's. */
static enum stop_point
parse_stop_point(const char *arg, bool receive)
{
	size_t first, i, n;

	first = receive ? STOP_HANDSHAKE : STOP_ROUND1;
	n = receive ? sizeof(stop_names) / sizeof(stop_names[0]) :
	    STOP_HANDSHAKE;
	for (i = first; i < n; i++)
		if (strcmp(arg, stop_names[i]) == 0)
			return ((enum stop_point)i);
	usage_error("--stop-at: '%s' is none of %s", arg, receive ?
	    "handshake, ready, go, running" : "round1, round2, stopcopy");
}

static void
parse_args(int argc, char **argv, struct tb_guest_config *cfg,
    struct opts *o)
{
	static const struct option longopts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "memory", required_argument, NULL, 'm' },
		{ "vcpus", required_argument, NULL, 'c' },
		{ "segments", required_argument, NULL, 'S' },
		{ "workload", required_argument, NULL, 'w' },
		{ "fill", required_argument, NULL, 'f' },
		{ "seed", required_argument, NULL, 's' },
		{ "control", required_argument, NULL, 'C' },
		{ "probe", required_argument, NULL, 'p' },
		{ "listen", required_argument, NULL, 'l' },
		{ "key-file", required_argument, NULL, 'k' },
		{ "report", required_argument, NULL, 'r' },
		{ "require-encryption", no_argument, NULL, 'E' },
		{ "timeout", required_argument, NULL, 't' },
		{ "listen-timeout", required_argument, NULL, 'L' },
		{ "handshake-timeout", required_argument, NULL, 'H' },
		{ "fault", required_argument, NULL, 'F' },
		{ "stop-at", required_argument, NULL, 'T' },
		{ "lazy-memory", no_argument, NULL, 'Z' },
		{ "stateless-device", required_argument, NULL, 'N' },
		{ "dma", required_argument, NULL, 'D' },
		{ "dma-unlogged", required_argument, NULL, 'U' },
		{ "disk", required_argument, NULL, 'd' },
		{ "disk-image", required_argument, NULL, 'i' },
		{ "disk-hot", required_argument, NULL, 'h' },
		{ "disk-rate", required_argument, NULL, 'R' },
		{ "disk-prefill", no_argument, NULL, 'P' },
		{ NULL, 0, NULL, 0 }
	};
	char msg[256];
	int ch;

	memset(cfg, 0, sizeof(*cfg));
	cfg->nsegs = 1;
	cfg->seed = 1;
	cfg->fill = TB_FILL_PATTERN;
	cfg->workload.kind = TB_WL_IDLE;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (!o->receive && strchr("lkrEtFLHZ", ch) != NULL)
			usage_error("--%s is an option of 'tbvm receive'",
			    option_name(longopts, ch));
		switch (ch) {
		case 'n':
			if (strlen(optarg) >= sizeof(cfg->name) ||
			    optarg[0] == '\0')
				usage_error("--name: give 1 to %zu characters",
				    sizeof(cfg->name) - 1);
			strcpy(cfg->name, optarg);
			break;
		case 'm':
			if (tb_parse_size(optarg, &cfg->memory) != 0)
				usage_error("--memory: '%s' is not a size "
				    "such as 256M or 1G", optarg);
			break;
		case 'c':
			cfg->nvcpus = (uint32_t)opt_number("vcpus", optarg, 1,
			    TB_MAX_VCPUS);
			break;
		case 'S':
			cfg->nsegs = (uint32_t)opt_number("segments", optarg,
			    1, TB_MAX_SEGS);
			break;
		case 'w':
			if (tb_workload_parse(optarg, &cfg->workload, msg,
			    sizeof(msg)) != 0)
				usage_error("--workload: %s", msg);
			break;
		case 'f':
			if (strcmp(optarg, "pattern") == 0)
				cfg->fill = TB_FILL_PATTERN;
			else if (strcmp(optarg, "zero") == 0)
				cfg->fill = TB_FILL_ZERO;
			else
				usage_error("--fill: '%s' is neither 'pattern' "
				    "nor 'zero'", optarg);
			break;
		case 's':
			cfg->seed = opt_number("seed", optarg, 0, UINT64_MAX);
			break;
		case 'C':
			o->control = optarg;
			break;
		case 'p':
			o->probe = optarg;
			break;
		case 'l':
			o->listen = optarg;
			break;
		case 'k':
			o->keyfile = optarg;
			break;
		case 'r':
			o->report = optarg;
			break;
		case 'E':
			o->require_encryption = true;
			break;
		case 'Z':
			cfg->lazy_memory = true;
			break;
		case 't':
			o->timeout_ms = (uint32_t)opt_number("timeout", optarg,
			    1, UINT32_MAX);
			break;
		case 'L':
			o->listen_timeout_ms = opt_number("listen-timeout",
			    optarg, 1, UINT32_MAX);
			break;
		case 'H':
			o->handshake_timeout_ms = opt_number(
			    "handshake-timeout", optarg, 1, UINT32_MAX);
			break;
		case 'N':
			if (o->receive)
				usage_error("--stateless-device is an option of "
				    "'tbvm run'");
			o->stateless_device = optarg;
			break;
		case 'F':
			if (strcmp(optarg, "lose-running") != 0 &&
			    strcmp(optarg, "die-after-go") != 0)
				usage_error("--fault: '%s' is neither "
				    "'lose-running' nor 'die-after-go'", optarg);
			o->fault = optarg;
			break;
		case 'T':
			o->stop_at = parse_stop_point(optarg, o->receive);
			break;
		case 'd':
			if (tb_parse_size(optarg, &cfg->disk.size) != 0)
				usage_error("--disk: '%s' is not a size such "
				    "as 64M or 1G", optarg);
			break;
		case 'i':
			if (strlen(optarg) >= sizeof(cfg->disk.image) ||
			    optarg[0] == '\0')
				usage_error("--disk-image: give a path of 1 to "
				    "%zu characters", sizeof(cfg->disk.image) -
				    1);
			strcpy(cfg->disk.image, optarg);
			break;
		case 'h':
			if (tb_parse_size(optarg, &cfg->disk.hot_bytes) != 0)
				usage_error("--disk-hot: '%s' is not a size",
				    optarg);
			break;
		case 'R':
			cfg->disk.rate = opt_number("disk-rate", optarg, 1,
			    1000000);
			break;
		case 'P':
			cfg->disk.prefill = true;
			break;
		case 'D':
			cfg->dma.rate = opt_number("dma", optarg, 1, 1000000);
			break;
		case 'U':
			if (strcmp(optarg, "running") == 0)
				cfg->dma.unlogged = TB_DMA_UNLOGGED_RUNNING;
			else if (strcmp(optarg, "drain") == 0)
				cfg->dma.unlogged = TB_DMA_UNLOGGED_DRAIN;
			else
				usage_error("--dma-unlogged: '%s' is neither "
				    "'running' nor 'drain'", optarg);
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (cfg->name[0] == '\0')
		usage_error("--name is required");
	if (cfg->memory == 0)
		usage_error("--memory is required");
	if (cfg->nvcpus == 0)
		usage_error("--vcpus is required");
	if (o->control == NULL)
		usage_error("--control is required");
	if (o->receive && o->listen == NULL)
		usage_error("--listen is required");
	if (o->receive && o->keyfile == NULL)
		usage_error("--key-file is required");
	if (cfg->disk.size != 0 && cfg->disk.image[0] == '\0')
		usage_error("--disk needs --disk-image");
	if (cfg->disk.size == 0 && (cfg->disk.image[0] != '\0' ||
	    cfg->disk.hot_bytes != 0 || cfg->disk.rate != 0 ||
	    cfg->disk.prefill))
		usage_error("--disk-image, --disk-hot, --disk-rate and "
		    "--disk-prefill need --disk");
	if (cfg->disk.size != 0 && cfg->disk.hot_bytes == 0)
		cfg->disk.hot_bytes = cfg->disk.size < TB_DISK_HOT_DEFAULT ?
		    cfg->disk.size : TB_DISK_HOT_DEFAULT;
	if (cfg->disk.size != 0 && cfg->disk.rate == 0)
		cfg->disk.rate = TB_DISK_RATE_DEFAULT;
	if (tb_guest_config_check(cfg, msg, sizeof(msg)) != 0)
		usage_error("%s", msg);
}

static void
request_exit(int code)
{
	unsigned char c = (unsigned char)code;

	(void)write(vm.wake[1], &c, 1);
}

static void
on_signal(int sig __unused)
{

	request_exit(0);
}

/* Send one JSON reply line built by fmt. */
static void __attribute__((format(printf, 2, 3)))
reply(int fd, const char *fmt, ...)
{
	char *buf;
	size_t len;
	va_list ap;
	FILE *f;

	f = open_memstream(&buf, &len);
	if (f == NULL)
		return;
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fputc('\n', f);
	if (fclose(f) == 0)
		(void)send(fd, buf, len, MSG_NOSIGNAL);
	free(buf);
}

/* An operator command's answer: {"ok":B,"message":TEXT}. */
static void
reply_answer(int fd, bool ok, const char *message)
{
	char *buf;
	size_t len;
	FILE *f;

	if ((f = open_memstream(&buf, &len)) == NULL)
		return;
	fprintf(f, "{\"ok\":%s,\"message\":", ok ? "true" : "false");
	mig_json_string(f, message);
	fputs("}\n", f);
	if (fclose(f) == 0)
		(void)send(fd, buf, len, MSG_NOSIGNAL);
	free(buf);
}

static void
reply_error(int fd, bool usage_err, const char *why)
{
	char *buf;
	size_t len;
	FILE *f;

	f = open_memstream(&buf, &len);
	if (f == NULL)
		return;
	fputs("{\"ok\":false,\"usage\":", f);
	fputs(usage_err ? "true" : "false", f);
	fputs(",\"error\":", f);
	mig_json_string(f, why);
	fputs("}\n", f);
	if (fclose(f) == 0)
		(void)send(fd, buf, len, MSG_NOSIGNAL);
	free(buf);
}

/* The guest's state, as status and the probe report it. */
static enum vm_state
vm_state(void)
{

	if (vm.receiving && mig_dest_state() != MIG_DEST_RUNNING)
		return (VM_PAUSED);
	switch (mig_source_state()) {
	case MIG_SOURCE_MIGRATING:
		return (VM_MIGRATING);
	case MIG_SOURCE_INDETERMINATE:
	case MIG_SOURCE_CHECKPOINT:
		return (VM_PAUSED);
	case MIG_SOURCE_MIGRATED:
		return (VM_MIGRATED);
	default:
		return (VM_RUNNING);
	}
}

/* Test-only: stop here, once, if --stop-at names this point. */
static void
stop_here(enum stop_point point)
{

	if (vm.stop_at != point)
		return;
	vm.stop_at = STOP_NONE;
	printf("STOPPED %s pid=%ld\n", stop_names[point], (long)getpid());
	fflush(stdout);
	(void)raise(SIGSTOP);
}

/* The sending engine's progress, for the controller; a round's start. */
static void
source_progress(void *arg __unused, const struct mig_progress *p)
{

	if (vm.source_cb != NULL)
		vm.source_cb(vm.source_cbarg, p);
	if (p->last_round != NULL)
		return;
	if (p->phase == MIG_PHASE_PRECOPY && p->round == 1)
		stop_here(STOP_ROUND1);
	else if (p->phase == MIG_PHASE_PRECOPY && p->round == 2)
		stop_here(STOP_ROUND2);
	else if (p->phase == MIG_PHASE_STOPCOPY)
		stop_here(STOP_STOPCOPY);
}

/* The source seam (migration_seam.h): the guest's backend and its end. */
static struct mig_backend *
seam_backend_create(void *arg __unused, mig_progress_cb *cb, void *cbarg)
{

	vm.source_cb = cb;
	vm.source_cbarg = cbarg;
	tb_backend_init(&vm.be, vm.guest, source_progress, NULL);
	vm.be.stateless_device = vm.stateless_device;
	return (&vm.be.mb);
}

static void
seam_backend_destroy(void *arg __unused, struct mig_backend *be __unused)
{
}

static void
seam_migrated(void *arg __unused)
{

	tb_memstat_print(vm.guest);
	printf("MIGRATED\n");
	fflush(stdout);
	request_exit(0);
}

static void
seam_log(void *arg __unused, const char *line)
{

	fprintf(stderr, "tbvm: %s\n", line);
}

static const struct mig_source_seam source_seam = {
	.backend_create = seam_backend_create,
	.backend_destroy = seam_backend_destroy,
	.migrated = seam_migrated,
	.log = seam_log,
};

/* migrate, migrate-check: the connections, then the event channel. */
static void
cmd_migrate(int fd, struct tb_ctlmsg *m, bool check)
{
	char msg[MIG_ERRMSG_MAX];
	int error, events, i, nsocks, socks[MIG_STREAMS_MAX];

	if (m->nfds < 2) {
		reply_error(fd, true, "migrate needs the connected migration "
		    "sockets and then the event channel");
		return;
	}
	if (vm.receiving && mig_dest_state() != MIG_DEST_RUNNING) {
		reply_error(fd, false, "the guest does not run here yet");
		return;
	}
	nsocks = m->nfds - 1;
	for (i = 0; i < nsocks; i++)
		socks[i] = tb_ctl_takefd(m, i);
	events = tb_ctl_takefd(m, nsocks);
	/* The engine's peak memory is this migration's. */
	if (!check && (error = tb_memstat_reset()) != 0)
		fprintf(stderr, "tbvm: engine memory: %s\n", strerror(error));
	/* Refusals travel as a result on the event channel. */
	reply(fd, "{\"ok\":true}");
	(void)mig_source_migrate(m->body, m->bodylen, socks, nsocks, events,
	    check, msg, sizeof(msg));
}

/*
 * cancel, continue, resume, migrate-status: the answer on the reply
 * channel.
 */
static void
cmd_operator(int fd, struct tb_ctlmsg *m)
{
	char msg[MIG_ERRMSG_MAX], *line;
	int error, rfd;

	if (m->nfds != 1) {
		reply_error(fd, true, "the command needs its reply channel");
		return;
	}
	rfd = tb_ctl_takefd(m, 0);
	reply(fd, "{\"ok\":true}");
	if (strcmp(m->cmd, "migrate_status") == 0) {
		line = vm.receiving && mig_dest_state() != MIG_DEST_RUNNING ?
		    mig_dest_status_json() : mig_source_status_json();
		if (line != NULL)
			reply(rfd, "%s", line);
		free(line);
		close(rfd);
		return;
	}
	if (strcmp(m->cmd, "migrate_cancel") == 0)
		error = mig_source_cancel(msg, sizeof(msg));
	else if (strcmp(m->cmd, "migrate_continue") == 0)
		error = mig_source_continue(msg, sizeof(msg));
	else
		error = mig_source_resume(msg, sizeof(msg));
	reply_answer(rfd, error == 0, msg);
	close(rfd);
}

static bool
vm_probe_state(void *arg __unused, uint64_t *iterations, uint8_t *state)
{
	struct tb_guest *g;
	enum vm_state st;

	/* The probe answers from before the guest exists. */
	g = __atomic_load_n(&vm.guest, __ATOMIC_ACQUIRE);
	if (g == NULL || !tb_guest_is_running(g))
		return (false);
	st = vm_state();
	*iterations = tb_guest_iterations(g);
	*state = (uint8_t)st;
	return (true);
}



static void
cmd_verify(int fd)
{
	struct tb_verify v;
	char msg[256], *buf;
	size_t len;
	uint32_t i;
	FILE *f;
	int error;

	bool gated;

	if (vm.receiving && mig_dest_state() != MIG_DEST_RUNNING) {
		reply_error(fd, false, "cannot check a guest that has not "
		    "arrived");
		return;
	}
	/*
	 * The checkpoint gate keeps a migration from starting meanwhile; a
	 * guest paused by an indeterminate migration holds still anyway.
	 */
	gated = mig_source_checkpoint_begin(msg, sizeof(msg)) == 0;
	if (!gated && mig_source_state() != MIG_SOURCE_INDETERMINATE) {
		reply_error(fd, false, msg);
		return;
	}
	error = tb_guest_verify(vm.guest, &v, msg, sizeof(msg));
	if (gated)
		mig_source_checkpoint_end();
	if (error != 0) {
		reply_error(fd, false, msg);
		return;
	}
	f = open_memstream(&buf, &len);
	if (f == NULL)
		return;
	fprintf(f, "{\"ok\":%s,\"pages_checked\":%" PRIu64
	    ",\"mismatch_count\":%" PRIu64 ",\"errors\":[",
	    v.ok ? "true" : "false", v.pages_checked, v.nmismatches);
	for (i = 0; i < v.nreported; i++) {
		if (i > 0)
			fputc(',', f);
		mig_json_string(f, v.mismatch[i]);
	}
	fprintf(f, "],\"iterations\":%" PRIu64 "}\n",
	    tb_guest_iterations(vm.guest));
	if (fclose(f) == 0)
		(void)send(fd, buf, len, MSG_NOSIGNAL);
	free(buf);
}

static void
cmd_status(int fd)
{
	enum vm_state st;
	char *buf;
	size_t len;
	FILE *f;

	st = vm_state();
	f = open_memstream(&buf, &len);
	if (f == NULL)
		return;
	fprintf(f, "{\"state\":\"%s\",\"name\":", state_names[st]);
	mig_json_string(f, vm.cfg.name);
	fprintf(f, ",\"memory_bytes\":%" PRIu64 ",\"vcpus\":%" PRIu32
	    ",\"iterations\":%" PRIu64 ",\"pid\":%ld}\n", vm.cfg.memory,
	    vm.cfg.nvcpus, tb_guest_iterations(vm.guest), (long)getpid());
	if (fclose(f) == 0)
		(void)send(fd, buf, len, MSG_NOSIGNAL);
	free(buf);
}

/*
 * A checkpoint-like pause through the same gate as bhyve's --checkpoint
 * and --suspend: refused while a migration holds the guest.
 */
static void
cmd_checkpoint(int fd)
{
	struct timespec ts = { 0, 20 * 1000 * 1000 };
	char msg[MIG_ERRMSG_MAX];

	if (mig_source_checkpoint_begin(msg, sizeof(msg)) != 0) {
		reply_error(fd, false, msg);
		return;
	}
	tb_guest_pause(vm.guest);
	(void)nanosleep(&ts, NULL);
	tb_guest_resume(vm.guest);
	mig_source_checkpoint_end();
	reply(fd, "{\"ok\":true}");
}

static void *
serve_main(void *arg)
{
	int fd = (int)(intptr_t)arg;
	struct tb_ctlmsg *m;
	char msg[256];

	m = malloc(sizeof(*m));
	if (m == NULL) {
		reply_error(fd, false, "out of memory");
		close(fd);
		return (NULL);
	}
	if (tb_ctl_recv(fd, m, msg, sizeof(msg)) != 0)
		reply_error(fd, true, msg);
	else if (strcmp(m->cmd, "migrate") == 0)
		cmd_migrate(fd, m, false);
	else if (strcmp(m->cmd, "migrate_check") == 0)
		cmd_migrate(fd, m, true);
	else if (strcmp(m->cmd, "migrate_cancel") == 0 ||
	    strcmp(m->cmd, "migrate_continue") == 0 ||
	    strcmp(m->cmd, "migrate_resume") == 0 ||
	    strcmp(m->cmd, "migrate_status") == 0)
		cmd_operator(fd, m);
	else if (strcmp(m->cmd, "checkpoint") == 0)
		cmd_checkpoint(fd);
	else if (strcmp(m->cmd, "verify") == 0)
		cmd_verify(fd);
	else if (strcmp(m->cmd, "status") == 0)
		cmd_status(fd);
	else if (strcmp(m->cmd, "stop") == 0) {
		reply(fd, "{\"ok\":true}");
		/* Nothing to tear down before a guest arrived. */
		if (vm.receiving && mig_dest_state() != MIG_DEST_RUNNING)
			_exit(0);
		request_exit(0);
	} else {
		snprintf(msg, sizeof(msg), "unknown command '%.64s' (migrate, "
		    "migrate_check, migrate_cancel, migrate_continue, "
		    "migrate_resume, migrate_status, checkpoint, verify, "
		    "status or stop)",
		    m->cmd);
		reply_error(fd, true, msg);
	}
	tb_ctl_release(m);
	free(m);
	close(fd);
	return (NULL);
}

/* Serve the control socket from start to exit, one thread a request. */
static void *
serve_loop(void *arg __unused)
{
	pthread_attr_t attr;
	pthread_t t;
	int fd;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	for (;;) {
		fd = accept4(vm.ctl_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			break;
		}
		if (pthread_create(&t, &attr, serve_main,
		    (void *)(intptr_t)fd) != 0) {
			reply_error(fd, false, "cannot start a thread");
			close(fd);
		}
	}
	pthread_attr_destroy(&attr);
	return (NULL);
}

/* Wait until an exit is requested; its code. */
static int
wait_exit(void)
{
	unsigned char code;

	while (read(vm.wake[0], &code, 1) != 1)
		;
	return (code);
}

static void
teardown(void)
{

	if (vm.ctl_fd >= 0) {
		shutdown(vm.ctl_fd, SHUT_RDWR);
		(void)unlink(vm.control);
	}
	tb_probe_stop(vm.probe);
	/* A migration still running uses the guest until we exit. */
	if (mig_source_state() == MIG_SOURCE_MIGRATING)
		return;
	tb_guest_destroy(vm.guest);
	vm.guest = NULL;
}

/* Start the parts shared by run and receive: tracker check, sockets. */
static int
setup(const struct opts *o)
{
	char msg[256], host[TB_HOST_MAX], port[TB_PORT_MAX];
	char reqhost[TB_HOST_MAX], reqport[TB_PORT_MAX];
	struct sigaction sa;
	int error;

	error = tb_dirty_selftest(msg, sizeof(msg));
	if (error != 0) {
		fprintf(stderr, "tbvm: dirty tracking self-test failed: %s\n",
		    msg);
		return (error);
	}
	if (pipe2(vm.wake, O_CLOEXEC) != 0) {
		error = errno;
		fprintf(stderr, "tbvm: pipe: %s\n", strerror(error));
		return (error);
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	mig_source_init(&source_seam);
	vm.control = o->control;
	error = tb_ctl_listen(o->control, &vm.ctl_fd, msg, sizeof(msg));
	if (error != 0) {
		fprintf(stderr, "tbvm: %s\n", msg);
		return (error);
	}
	if (o->probe != NULL) {
		error = tb_probe_start(&vm.probe, o->probe, vm_probe_state,
		    NULL, host, port, msg, sizeof(msg));
		if (error != 0) {
			fprintf(stderr, "tbvm: --probe: %s\n", msg);
			return (error);
		}
		/* A port the kernel chose must be told. */
		if (tb_net_split(o->probe, 0, reqhost, reqport, msg,
		    sizeof(msg)) == 0 && strtoul(reqport, NULL, 10) == 0)
			printf("PROBE %s %s\n", host, port);
	}
	return (0);
}

/* The control socket is served from here on. */
static int
start_serving(void)
{
	pthread_t t;
	int error;

	if ((error = pthread_create(&t, NULL, serve_loop, NULL)) != 0) {
		fprintf(stderr, "tbvm: cannot serve the control socket: %s\n",
		    strerror(error));
		return (error);
	}
	pthread_detach(t);
	return (0);
}

static int
run(const struct opts *o)
{
	struct tb_guest *g;
	char msg[256];
	int error;

	if (setup(o) != 0)
		return (1);
	vm.stateless_device = o->stateless_device;
	vm.stop_at = o->stop_at;
	error = tb_guest_create(&g, &vm.cfg, true, msg, sizeof(msg));
	if (error != 0) {
		fprintf(stderr, "tbvm: %s\n", msg);
		return (1);
	}
	__atomic_store_n(&vm.guest, g, __ATOMIC_RELEASE);
	tb_guest_resume(vm.guest);
	if (start_serving() != 0)
		return (1);
	printf("RUNNING pid=%ld\n", (long)getpid());
	fflush(stdout);
	return (wait_exit());
}

/* The destination's report: the result event's object. */
static void
write_report(const char *path, enum mig_outcome out,
    const struct mig_error *err, const struct mig_stats *st)
{
	struct mig_event ev;
	char *line;
	FILE *f;

	if (path == NULL)
		return;
	mig_event_result(&ev, out, err, st);
	ev.runs_on = out == MIG_OUT_OK ? MIG_RUNS_ON_DEST : MIG_RUNS_ON_SOURCE;
	if ((line = mig_event_encode(&ev)) == NULL)
		return;
	if ((f = fopen(path, "w")) == NULL ||
	    (fprintf(f, "%s\n", line) < 0) + fclose(f) != 0)
		fprintf(stderr, "tbvm: report %s: %s\n", path,
		    strerror(errno));
	free(line);
}

static void
dest_log(void *arg __unused, const char *line)
{

	fprintf(stderr, "tbvm: %s\n", line);
}

/* The receiving engine's progress: READY sent (or a round's end). */
static void
dest_progress(void *arg __unused, const struct mig_progress *p)
{

	if (p->phase == MIG_PHASE_SWITCHOVER)
		stop_here(STOP_READY);
}

static int
receive(const struct opts *o)
{
	char msg[256], host[TB_HOST_MAX], port[TB_PORT_MAX];
	char section[MIG_NAME_MAX];
	struct mig_params params;
	struct mig_vminfo peer;
	struct mig_stats st;
	struct mig_error err;
	struct mig_conn *conn;
	struct mig_dest d;
	struct tb_guest *g;
	int error;

	vm.receiving = true;
	vm.stop_at = o->stop_at;
	conn = NULL;
	memset(&d, 0, sizeof(d));
	d.log = dest_log;
	d.listen_timeout_ms = o->listen_timeout_ms;
	d.handshake_timeout_ms = o->handshake_timeout_ms;
	mig_params_init(&params);
	error = tb_read_keyfile(o->keyfile, params.key, msg, sizeof(msg));
	if (error != 0) {
		fprintf(stderr, "tbvm: %s\n", msg);
		return (1);
	}
	params.encrypt = o->require_encryption;
	if (o->timeout_ms != 0)
		params.io_timeout_ms = o->timeout_ms;
	if (mig_stats_init(&st) != 0) {
		fprintf(stderr, "tbvm: out of memory\n");
		return (1);
	}
	if (setup(o) != 0)
		goto fail_stats;
	/*
	 * Back the guest's memory before listening, as a destination VM is
	 * created before the stream arrives (QEMU -incoming, bhyve -S); the
	 * engine still checks the source's description against it.
	 */
	error = tb_guest_create(&g, &vm.cfg, false, msg, sizeof(msg));
	if (error != 0) {
		fprintf(stderr, "tbvm: %s\n", msg);
		goto fail_stats;
	}
	__atomic_store_n(&vm.guest, g, __ATOMIC_RELEASE);
	tb_backend_init(&vm.be, vm.guest, dest_progress, NULL);
	/* The receiving's peak memory: the guest's is all set up by now. */
	if ((error = tb_memstat_reset()) != 0)
		fprintf(stderr, "tbvm: engine memory: %s\n", strerror(error));
	if (mig_dest_listen(&d, o->listen, host, sizeof(host), port,
	    sizeof(port), msg, sizeof(msg)) != 0) {
		fprintf(stderr, "tbvm: --listen %s: %s\n", o->listen, msg);
		goto fail_stats;
	}
	if (start_serving() != 0)
		goto fail_stats;
	printf("LISTENING %s %s\n", host, port);
	fflush(stdout);
	if (mig_dest_accept(&d, &params, &conn, &peer, &err) != 0)
		goto fail;
	stop_here(STOP_HANDSHAKE);
	if (mig_dest_receive(&d, &params, &conn, &vm.be.mb, &st, &err) != 0)
		goto fail;
	stop_here(STOP_GO);
	mig_dest_close(&d);
	if (tb_backend_missing_section(&vm.be, section, sizeof(section))) {
		snprintf(err.msg, sizeof(err.msg), "state section %s never "
		    "arrived", section);
		err.side = MIG_SIDE_DEST;
		err.phase = MIG_PHASE_STATE;
		err.code = EINVAL;
		goto fail;
	}
	/* Test-only faults after GO: the harness must resolve them. */
	if (o->fault != NULL && strcmp(o->fault, "die-after-go") == 0) {
		fprintf(stderr, "tbvm: fault die-after-go: exiting after GO\n");
		_exit(1);
	}
	tb_guest_resume(vm.guest);
	/* Unconfirmed or not, the guest runs here now, as in bhyve. */
	(void)mig_dest_finish(&d, conn, o->fault == NULL, &err);
	mig_conn_free(conn);
	write_report(o->report, MIG_OUT_OK, NULL, &st);
	mig_stats_free(&st);
	tb_memstat_print(vm.guest);
	stop_here(STOP_RUNNING);
	printf("RUNNING pid=%ld\n", (long)getpid());
	fflush(stdout);
	return (wait_exit());

fail:
	mig_dest_set_state(MIG_DEST_FAILED);
	mig_dest_close(&d);
	mig_conn_free(conn);
	fprintf(stderr, "tbvm: migration failed: %s side, %s: %s; this "
	    "destination discards what it received\n", mig_side_name(err.side),
	    mig_phase_name(err.phase), err.msg);
	write_report(o->report, MIG_OUT_FAILED, &err, &st);
fail_stats:
	mig_stats_free(&st);
	return (1);
}

int
main(int argc, char **argv)
{
	struct opts o;
	int code;

	signal(SIGPIPE, SIG_IGN);
	memset(&o, 0, sizeof(o));
	if (argc < 2)
		usage();
	if (strcmp(argv[1], "run") == 0)
		o.receive = false;
	else if (strcmp(argv[1], "receive") == 0)
		o.receive = true;
	else
		usage();
	parse_args(argc - 1, argv + 1, &vm.cfg, &o);
	code = o.receive ? receive(&o) : run(&o);
	teardown();
	return (code);
}
