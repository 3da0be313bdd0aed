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

#include "tb_backend.h"
#include "tb_ctlmsg.h"
#include "tb_dirty.h"
#include "tb_guest.h"
#include "tb_json.h"
#include "tb_net.h"
#include "tb_parse.h"
#include "tb_probe.h"
#include "tb_progress.h"
#include "tb_report.h"

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

struct opts {
	bool		receive;
	const char	*control;
	const char	*probe;
	const char	*listen;
	const char	*keyfile;
	const char	*report;
	bool		require_encryption;
	uint32_t	timeout_ms;	/* 0: the engine's default */
};

struct migrate_job {
	int		fd;
	struct mig_params params;
};

static struct vm {
	struct tb_guest_config cfg;
	struct tb_guest	*guest;
	struct tb_backend be;
	const char	*control;
	int		ctl_fd;
	int		wake[2];	/* exit requests: one byte, the code */
	struct tb_probe	*probe;
	/* The outgoing migration's progress; its thread's alone. */
	struct tb_progress *progress;

	pthread_mutex_t	mtx;		/* what follows */
	enum vm_state	state;
	bool		exiting;
	bool		migrate_started;
	bool		migrate_running;
	pthread_t	migrate_thread;
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
	    "\t    [--seed S] --control PATH [--probe HOST:PORT]\n"
	    "       tbvm receive (the guest options of run) --listen "
	    "HOST:PORT\n"
	    "\t    --key-file FILE --control PATH [--probe HOST:PORT]\n"
	    "\t    [--report FILE] [--require-encryption] [--timeout MS]\n");
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
		if (!o->receive && strchr("lkrEt", ch) != NULL)
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
		case 't':
			o->timeout_ms = (uint32_t)opt_number("timeout", optarg,
			    1, UINT32_MAX);
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
	tb_json_string(f, why);
	fputs("}\n", f);
	if (fclose(f) == 0)
		(void)send(fd, buf, len, MSG_NOSIGNAL);
	free(buf);
}

static void
vm_progress(void *arg __unused, const struct mig_progress *p)
{

	if (vm.progress != NULL)
		tb_progress_post(vm.progress, tb_report_progress_event(p));
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
	pthread_mutex_lock(&vm.mtx);
	st = vm.state;
	pthread_mutex_unlock(&vm.mtx);
	*iterations = tb_guest_iterations(g);
	*state = (uint8_t)st;
	return (true);
}

static int
write_report_file(const char *path, const struct tb_report *r)
{
	char *json;
	FILE *f;
	int error;

	json = tb_report_json(r);
	if (json == NULL)
		return (ENOMEM);
	f = fopen(path, "w");
	if (f == NULL) {
		error = errno;
		fprintf(stderr, "tbvm: report %s: %s\n", path,
		    strerror(error));
		free(json);
		return (error);
	}
	fprintf(f, "%s\n", json);
	free(json);
	error = fclose(f) != 0 ? errno : 0;
	if (error != 0)
		fprintf(stderr, "tbvm: report %s: %s\n", path,
		    strerror(error));
	return (error);
}

static void
fill_report(struct tb_report *r, const char *role, const char *status,
    const struct mig_error *err, const struct mig_stats *st)
{

	r->role = role;
	r->status = status;
	r->error = err;
	r->stats = st;
	r->name = vm.cfg.name;
	r->memory_bytes = vm.cfg.memory;
	r->vcpus = vm.cfg.nvcpus;
}

static void *
migrate_main(void *arg)
{
	struct migrate_job *job = arg;
	static const char *const status[] = {
		[MIG_OK] = "completed",
		[MIG_FAILED] = "failed",
		[MIG_INDETERMINATE] = "indeterminate"
	};
	struct mig_stats st;
	struct mig_error err;
	struct tb_report rep;
	struct tb_progress *pr;
	enum mig_result r;

	memset(&err, 0, sizeof(err));
	if (mig_stats_init(&st) != 0) {
		err.side = MIG_SIDE_SOURCE;
		err.code = ENOMEM;
		err.guest_running_on_source = true;
		snprintf(err.msg, sizeof(err.msg), "out of memory");
		r = MIG_FAILED;
	} else
		r = mig_send(job->fd, &vm.be.mb, &job->params, &st, &err);
	close(job->fd);

	/* The state first: whoever reads the result may act on it. */
	pthread_mutex_lock(&vm.mtx);
	pr = vm.progress;
	vm.progress = NULL;
	vm.state = r == MIG_OK ? VM_MIGRATED : r == MIG_FAILED ? VM_RUNNING :
	    VM_PAUSED;
	vm.migrate_running = false;
	pthread_mutex_unlock(&vm.mtx);

	fill_report(&rep, "source", status[r], r == MIG_OK ? NULL : &err,
	    &st);
	tb_progress_post(pr, tb_report_result_event(&rep));
	tb_progress_close(pr);
	switch (r) {
	case MIG_OK:
		printf("MIGRATED\n");
		fflush(stdout);
		request_exit(0);
		break;
	case MIG_FAILED:
		fprintf(stderr, "tbvm: migration failed: %s side, %s: %s; the "
		    "guest keeps running here\n", mig_side_name(err.side),
		    mig_phase_name(err.phase), err.msg);
		break;
	case MIG_INDETERMINATE:
		fprintf(stderr, "tbvm: migration indeterminate: %s side, "
		    "%s: %s; the guest stays paused here, as the destination "
		    "may run it\n", mig_side_name(err.side),
		    mig_phase_name(err.phase), err.msg);
		request_exit(EX_INDETERMINATE);
		break;
	}
	mig_stats_free(&st);
	free(job);
	return (NULL);
}

/* One numeric request value, in [min, max]. */
static int
req_number(const char *key, const char *val, uint64_t min, uint64_t max,
    uint64_t *v, char *msg, size_t msglen)
{
	int error;

	error = key[0] == 'b' ? tb_parse_size(val, v) : tb_parse_u64(val, v);
	if (error != 0 || *v < min || *v > max) {
		snprintf(msg, msglen, "%s: '%s' is not a number from %ju to "
		    "%ju", key, val, (uintmax_t)min, (uintmax_t)max);
		return (EINVAL);
	}
	return (0);
}

static int
migrate_params(const struct tb_ctlmsg *m, struct mig_params *p, char *msg,
    size_t msglen)
{
	const char *k, *v;
	uint64_t n;
	bool key;
	int error, i;

	mig_params_init(p);
	key = false;
	error = 0;
	for (i = 0; i < m->nkv && error == 0; i++) {
		k = m->key[i];
		v = m->val[i];
		if (strcmp(k, "key") == 0) {
			/* tbctl sends hex: 32 characters are no raw key. */
			if (strlen(v) != 2 * MIG_KEY_LEN ||
			    mig_key_decode(v, strlen(v), p->key, msg,
			    msglen) != 0) {
				snprintf(msg, msglen, "key: expected %zu hex "
				    "digits", 2 * sizeof(p->key));
				error = EINVAL;
			}
			key = true;
		} else if (strcmp(k, "downtime_limit_ms") == 0) {
			error = req_number(k, v, 1, UINT64_MAX / 1000, &n, msg,
			    msglen);
			p->downtime_limit_us = n * 1000;
		} else if (strcmp(k, "max_rounds") == 0) {
			error = req_number(k, v, 1, MIG_MAX_ROUNDS_LIMIT, &n,
			    msg, msglen);
			p->max_rounds = (uint32_t)n;
		} else if (strcmp(k, "fixed_rounds") == 0) {
			error = req_number(k, v, 1, MIG_MAX_ROUNDS_LIMIT, &n,
			    msg, msglen);
			p->policy = MIG_POLICY_FIXED;
			p->fixed_rounds = (uint32_t)n;
		} else if (strcmp(k, "max_time_ms") == 0) {
			error = req_number(k, v, 0, UINT64_MAX, &n, msg,
			    msglen);
			p->max_time_ms = n;
		} else if (strcmp(k, "bandwidth") == 0) {
			error = req_number(k, v, 0, UINT64_MAX, &n, msg,
			    msglen);
			p->bandwidth_limit = n;
		} else if (strcmp(k, "encrypt") == 0) {
			error = req_number(k, v, 0, 1, &n, msg, msglen);
			p->encrypt = n != 0;
		} else if (strcmp(k, "live") == 0) {
			error = req_number(k, v, 0, 1, &n, msg, msglen);
			p->live = n != 0;
		} else if (strcmp(k, "throttle") == 0) {
			error = req_number(k, v, 0, 1, &n, msg, msglen);
			p->auto_throttle = n != 0;
		} else if (strcmp(k, "timeout_ms") == 0) {
			error = req_number(k, v, 1, UINT32_MAX, &n, msg,
			    msglen);
			p->io_timeout_ms = (uint32_t)n;
		} else if (strcmp(k, "fault") == 0) {
			if (strcmp(v, "drop-page") == 0)
				p->fault = MIG_FAULT_DROP_DIRTY_PAGE;
			else if (strcmp(v, "stale-device") == 0)
				p->fault = MIG_FAULT_STALE_DEVICE_STATE;
			else if (strcmp(v, "none") != 0) {
				snprintf(msg, msglen, "fault: unknown fault "
				    "'%s'", v);
				error = EINVAL;
			}
		} else {
			snprintf(msg, msglen, "unknown parameter '%s'", k);
			error = EINVAL;
		}
	}
	if (error == 0 && !key) {
		snprintf(msg, msglen, "the migration key is missing");
		error = EINVAL;
	}
	if (error == 0)
		error = mig_params_check(p, msg, msglen);
	return (error);
}

static void
cmd_migrate(int fd, struct tb_ctlmsg *m)
{
	struct migrate_job *job;
	struct tb_progress *pr;
	char msg[MIG_ERRMSG_MAX];
	int error, pfd;

	job = calloc(1, sizeof(*job));
	if (job == NULL) {
		reply_error(fd, false, "out of memory");
		return;
	}
	if (migrate_params(m, &job->params, msg, sizeof(msg)) != 0) {
		reply_error(fd, true, msg);
		free(job);
		return;
	}
	if (m->nfds != 2) {
		reply_error(fd, false, "migrate needs two descriptors: the "
		    "connected migration socket and the progress channel");
		free(job);
		return;
	}
	pthread_mutex_lock(&vm.mtx);
	if (vm.exiting || vm.state != VM_RUNNING) {
		pthread_mutex_unlock(&vm.mtx);
		snprintf(msg, sizeof(msg), "the guest is %s%s",
		    vm.exiting ? "shutting down" : state_names[vm.state],
		    vm.state == VM_MIGRATING ? ": one migration at a time" :
		    "");
		reply_error(fd, false, msg);
		free(job);
		return;
	}
	/* The last migration's thread has ended: reap it. */
	if (vm.migrate_started)
		pthread_join(vm.migrate_thread, NULL);
	vm.migrate_started = false;
	pfd = tb_ctl_takefd(m, 1);
	error = tb_progress_open(&pr, pfd);
	if (error != 0) {
		close(pfd);
		pthread_mutex_unlock(&vm.mtx);
		reply_error(fd, false, strerror(error));
		free(job);
		return;
	}
	job->fd = tb_ctl_takefd(m, 0);
	vm.progress = pr;
	vm.state = VM_MIGRATING;
	error = pthread_create(&vm.migrate_thread, NULL, migrate_main, job);
	if (error != 0) {
		vm.state = VM_RUNNING;
		vm.progress = NULL;
		pthread_mutex_unlock(&vm.mtx);
		tb_progress_close(pr);
		close(job->fd);
		free(job);
		reply_error(fd, false, strerror(error));
		return;
	}
	vm.migrate_started = vm.migrate_running = true;
	pthread_mutex_unlock(&vm.mtx);
	reply(fd, "{\"ok\":true}");
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

	pthread_mutex_lock(&vm.mtx);
	if (vm.exiting || vm.state == VM_MIGRATING ||
	    vm.state == VM_MIGRATED) {
		snprintf(msg, sizeof(msg), "cannot check a guest that is %s",
		    vm.exiting ? "shutting down" : state_names[vm.state]);
		pthread_mutex_unlock(&vm.mtx);
		reply_error(fd, false, msg);
		return;
	}
	/* Holding the lock keeps a migration from starting meanwhile. */
	error = tb_guest_verify(vm.guest, &v, msg, sizeof(msg));
	pthread_mutex_unlock(&vm.mtx);
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
		tb_json_string(f, v.mismatch[i]);
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

	pthread_mutex_lock(&vm.mtx);
	st = vm.state;
	pthread_mutex_unlock(&vm.mtx);
	f = open_memstream(&buf, &len);
	if (f == NULL)
		return;
	fprintf(f, "{\"state\":\"%s\",\"name\":", state_names[st]);
	tb_json_string(f, vm.cfg.name);
	fprintf(f, ",\"memory_bytes\":%" PRIu64 ",\"vcpus\":%" PRIu32
	    ",\"iterations\":%" PRIu64 ",\"pid\":%ld}\n", vm.cfg.memory,
	    vm.cfg.nvcpus, tb_guest_iterations(vm.guest), (long)getpid());
	if (fclose(f) == 0)
		(void)send(fd, buf, len, MSG_NOSIGNAL);
	free(buf);
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
		cmd_migrate(fd, m);
	else if (strcmp(m->cmd, "verify") == 0)
		cmd_verify(fd);
	else if (strcmp(m->cmd, "status") == 0)
		cmd_status(fd);
	else if (strcmp(m->cmd, "stop") == 0) {
		reply(fd, "{\"ok\":true}");
		request_exit(0);
	} else {
		snprintf(msg, sizeof(msg), "unknown command '%.64s' (migrate, "
		    "verify, status or stop)", m->cmd);
		reply_error(fd, true, msg);
	}
	tb_ctl_release(m);
	free(m);
	close(fd);
	return (NULL);
}

/* Serve control requests until an exit is requested; its code. */
static int
serve(void)
{
	struct sigaction sa;
	struct pollfd pfd[2];
	pthread_attr_t attr;
	pthread_t t;
	unsigned char code;
	int fd;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pfd[0].fd = vm.wake[0];
	pfd[0].events = POLLIN;
	pfd[1].fd = vm.ctl_fd;
	pfd[1].events = POLLIN;
	for (;;) {
		if (poll(pfd, 2, -1) < 0)
			continue;
		if ((pfd[0].revents & POLLIN) != 0 &&
		    read(vm.wake[0], &code, 1) == 1)
			break;
		if ((pfd[1].revents & POLLIN) == 0)
			continue;
		fd = accept4(vm.ctl_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		if (pthread_create(&t, &attr, serve_main,
		    (void *)(intptr_t)fd) != 0) {
			reply_error(fd, false, "cannot start a thread");
			close(fd);
		}
	}
	pthread_attr_destroy(&attr);
	return (code);
}

static void
teardown(void)
{
	bool running;

	if (vm.ctl_fd >= 0) {
		close(vm.ctl_fd);
		(void)unlink(vm.control);
	}
	tb_probe_stop(vm.probe);
	pthread_mutex_lock(&vm.mtx);
	vm.exiting = true;
	running = vm.migrate_running;
	pthread_mutex_unlock(&vm.mtx);
	/* A migration still running uses the guest until we exit. */
	if (running)
		return;
	if (vm.migrate_started)
		pthread_join(vm.migrate_thread, NULL);
	tb_guest_destroy(vm.guest);
	vm.guest = NULL;
}

/* Start the parts shared by run and receive: tracker check, sockets. */
static int
setup(const struct opts *o)
{
	char msg[256], host[TB_HOST_MAX], port[TB_PORT_MAX];
	char reqhost[TB_HOST_MAX], reqport[TB_PORT_MAX];
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

static int
run(const struct opts *o)
{
	struct tb_guest *g;
	char msg[256];
	int error;

	if (setup(o) != 0)
		return (1);
	error = tb_guest_create(&g, &vm.cfg, true, msg, sizeof(msg));
	if (error != 0) {
		fprintf(stderr, "tbvm: %s\n", msg);
		return (1);
	}
	__atomic_store_n(&vm.guest, g, __ATOMIC_RELEASE);
	tb_backend_init(&vm.be, vm.guest, vm_progress, NULL);
	vm.state = VM_RUNNING;
	tb_guest_resume(vm.guest);
	printf("RUNNING pid=%ld\n", (long)getpid());
	fflush(stdout);
	return (serve());
}

static int
receive_failed(const struct opts *o, const struct mig_error *err,
    const struct mig_stats *st)
{
	struct tb_report rep;

	fprintf(stderr, "tbvm: migration failed: %s side, %s: %s\n",
	    mig_side_name(err->side), mig_phase_name(err->phase), err->msg);
	if (o->report != NULL) {
		fill_report(&rep, "destination", "failed", err, st);
		(void)write_report_file(o->report, &rep);
	}
	return (1);
}

static void
local_error(struct mig_error *err, enum mig_phase phase, int code,
    const char *msg)
{

	memset(err, 0, sizeof(*err));
	err->side = MIG_SIDE_DEST;
	err->phase = phase;
	err->code = code;
	snprintf(err->msg, sizeof(err->msg), "%s", msg);
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
	struct tb_report rep;
	struct tb_guest *g;
	int error, lfd, fd;

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
	error = tb_net_bind(o->listen, SOCK_STREAM, &lfd, host, port, msg,
	    sizeof(msg));
	if (error != 0) {
		fprintf(stderr, "tbvm: --listen: %s\n", msg);
		goto fail_stats;
	}
	printf("LISTENING %s %s\n", host, port);
	fflush(stdout);
	/*
	 * A connection that fails before proving the key (a port scan, a
	 * stray client, a wrong key) must not cost the real source its
	 * destination: refuse it and keep listening.
	 */
	for (;;) {
		do
			fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		while (fd < 0 && errno == EINTR);
		if (fd < 0) {
			error = errno;
			close(lfd);
			snprintf(msg, sizeof(msg), "accept: %s",
			    strerror(error));
			local_error(&err, MIG_PHASE_CONNECT, error, msg);
			goto fail;
		}
		if (mig_recv_accept(fd, &params, &conn, &peer, &err) == 0)
			break;
		close(fd);
		if (err.phase > MIG_PHASE_AUTH) {
			close(lfd);
			goto fail;
		}
		fprintf(stderr, "tbvm: refused a connection (%s side, %s): "
		    "%s; still waiting for the source\n",
		    mig_side_name(err.side), mig_phase_name(err.phase),
		    err.msg);
	}
	close(lfd);
	tb_backend_init(&vm.be, vm.guest, vm_progress, NULL);
	if (mig_recv_run(conn, &vm.be.mb, &st, &err) != 0)
		goto fail_conn;
	if (tb_backend_missing_section(&vm.be, section, sizeof(section))) {
		snprintf(msg, sizeof(msg), "state section %s never arrived",
		    section);
		local_error(&err, MIG_PHASE_STATE, EINVAL, msg);
		goto fail_conn;
	}
	vm.state = VM_RUNNING;
	tb_guest_resume(vm.guest);
	if (mig_recv_finish(conn, &err) != 0) {
		/* The source keeps its copy paused; ours must not run. */
		tb_guest_pause(vm.guest);
		goto fail_conn;
	}
	mig_conn_free(conn);
	if (o->report != NULL) {
		fill_report(&rep, "destination", "completed", NULL, &st);
		(void)write_report_file(o->report, &rep);
	}
	mig_stats_free(&st);
	printf("RUNNING pid=%ld\n", (long)getpid());
	fflush(stdout);
	return (serve());

fail_conn:
	mig_conn_free(conn);
fail:
	receive_failed(o, &err, &st);
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
