/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Destination side of a live migration.  bhyve listens and accepts the
 * source's connection before it sets up guest memory and long before it
 * enters capability mode: after that it could neither bind nor open the
 * key file.  The configuration keys are
 *
 *	migration.listen	[host:]port, [v6addr]:port or port (-R)
 *	migration.keyfile	file holding the per-migration key: 32 raw
 *				bytes or 64 hexadecimal digits; it must not
 *				be readable by group or others
 *
 * The vCPU count and memory size are taken from the source, as -r takes
 * them from a checkpoint; the devices must be configured as on the
 * source, and the engine refuses the migration, on both sides, if they
 * are not.
 */

#include <sys/param.h>
#include <sys/socket.h>

#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sysexits.h>
#include <unistd.h>

#include <vmmapi.h>

#include "bhyverun.h"
#include "config.h"
#include "debug.h"
#include "migration.h"
#include "migration_backend.h"
#include "migration_bhyve.h"
#include "migration_dest_listen.h"
#include "migration_receive.h"

#define	MIG_RECV_EXIT		4	/* bhyve's "exited due to an error" */

static struct mig_conn *recv_conn;
static struct mig_backend *recv_backend;
static struct mig_stats recv_stats;
/* Kept until GO: a dry run's connection is followed by the real one. */
static struct mig_params recv_params;
static struct mig_dest recv_dest;
#define	recv_peer	(recv_dest.peer)

static void
recv_log(void *arg __unused, const char *line)
{

	EPRINTLN("%s", line);
}

bool
migration_receiving(void)
{

	return (get_config_value("migration.listen") != NULL);
}

/* Read the per-migration key before capability mode forbids open(). */
static void
recv_read_key(const char *path, uint8_t *key)
{
	char msg[MIG_ERRMSG_MAX];
	int error, fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		err(EX_NOINPUT, "cannot open migration key file %s", path);
	error = mig_key_read_fd(fd, MIG_KEY_PRIVATE, key, msg, sizeof(msg));
	close(fd);
	if (error != 0)
		errx(error == EINVAL ? EX_DATAERR : error == EPERM ?
		    EX_USAGE : EX_NOINPUT, "migration key file %s %s", path,
		    msg);
}

/* Take the vCPU count and memory size from the source, as -r does. */
static void
recv_adopt_shape(const struct mig_vminfo *vi)
{
	const char *value;
	char buf[32];
	uint64_t total;
	uint32_t i;

	total = 0;
	for (i = 0; i < vi->nsegs && i < MIG_MAX_SEGS; i++)
		total += vi->segs[i].len;

	value = get_config_value("cpus");
	if (value == NULL && get_config_value("sockets") == NULL &&
	    get_config_value("cores") == NULL &&
	    get_config_value("threads") == NULL) {
		snprintf(buf, sizeof(buf), "%u", vi->ncpus);
		set_config_value("cpus", buf);
	} else if (value != NULL && strtoul(value, NULL, 0) != vi->ncpus) {
		EPRINTLN("Warning: the source's guest has %u vCPUs but %s "
		    "are configured here; the migration will be refused",
		    vi->ncpus, value);
	}
	snprintf(buf, sizeof(buf), "%juK", (uintmax_t)(total / 1024));
	set_config_value("memory.size", buf);
	EPRINTLN("Receiving guest from %s: %u vCPUs, %ju MiB of memory",
	    recv_peer, vi->ncpus, (uintmax_t)(total >> 20));
}

/* A config variable in milliseconds; 0 when unset. */
static uint64_t
recv_config_ms(const char *name)
{
	const char *value;
	char *end;
	unsigned long long ms;

	if ((value = get_config_value(name)) == NULL)
		return (0);
	errno = 0;
	ms = strtoull(value, &end, 10);
	if (errno != 0 || end == value || *end != '\0' || ms == 0 ||
	    ms > UINT32_MAX)
		errx(EX_USAGE, "invalid %s '%s': give milliseconds, 1 to %u",
		    name, value, UINT32_MAX);
	return (ms);
}

void
migration_receive_accept(void)
{
	char host[NI_MAXHOST], port[NI_MAXSERV], msg[MIG_ERRMSG_MAX];
	struct mig_error merr;
	struct mig_vminfo *vi;
	const char *keyfile, *spec;
	int error;

	spec = get_config_value("migration.listen");
	if (spec == NULL)
		return;
	if (restore_file != NULL)
		errx(EX_USAGE, "-r (restore from a checkpoint) and -R "
		    "(receive a migration) are mutually exclusive");
	keyfile = get_config_value("migration.keyfile");
	if (keyfile == NULL)
		errx(EX_USAGE, "receiving a migration needs the key file: "
		    "set migration.keyfile (-o migration.keyfile=path)");

	mig_params_init(&recv_params);
	recv_read_key(keyfile, recv_params.key);
	recv_dest.log = recv_log;
	recv_dest.listen_timeout_ms = recv_config_ms(
	    "migration.listen_timeout");
	recv_dest.handshake_timeout_ms = recv_config_ms(
	    "migration.handshake_timeout");
	error = mig_dest_listen(&recv_dest, spec, host, sizeof(host), port,
	    sizeof(port), msg, sizeof(msg));
	if (error == EINVAL)
		errx(EX_USAGE, "invalid migration listen address '%s' (%s): "
		    "use [host:]port or [IPv6-address]:port", spec, msg);
	if (error != 0)
		errx(EX_OSERR, "cannot listen for a migration on %s", msg);
	EPRINTLN("Waiting for the migration source on %s port %s", host,
	    port);
	vi = calloc(1, sizeof(*vi));
	if (vi == NULL)
		err(MIG_RECV_EXIT, "out of memory");
	memset(&merr, 0, sizeof(merr));
	error = mig_dest_accept(&recv_dest, &recv_params, &recv_conn, vi,
	    &merr);
	if (error != 0)
		errx(MIG_RECV_EXIT, "migration from %s failed on the %s side "
		    "during %s: %s", recv_peer, mig_side_name(merr.side),
		    mig_phase_name(merr.phase), merr.msg[0] != '\0' ?
		    merr.msg : strerror(error));
	recv_adopt_shape(vi);
	free(vi);
}

void
migration_receive_run(struct vmctx *ctx)
{
	struct mig_error merr;
	int error;

	if (recv_conn == NULL)
		return;
	recv_backend = mig_bhyve_backend_create(ctx, NULL, NULL);
	if (recv_backend == NULL)
		err(MIG_RECV_EXIT, "out of memory");
	error = mig_stats_init(&recv_stats);
	if (error != 0)
		errc(MIG_RECV_EXIT, error, "out of memory");

	/* The restore path -r takes: devices quiet while state loads. */
	if (bhyve_restore_begin() != 0) {
		vm_destroy(ctx);
		errx(MIG_RECV_EXIT, "migration from %s failed on the "
		    "destination: the devices could not be paused; the guest "
		    "keeps running on the source", recv_peer);
	}
	memset(&merr, 0, sizeof(merr));
	error = mig_dest_receive(&recv_dest, &recv_params, &recv_conn,
	    recv_backend, &recv_stats, &merr);
	explicit_bzero(recv_params.key, sizeof(recv_params.key));
	mig_dest_close(&recv_dest);
	if (error != 0) {
		/* Discard what was received. */
		vm_destroy(ctx);
		errx(MIG_RECV_EXIT, "migration from %s failed on the %s side "
		    "during %s: %s; the guest keeps running on the source and "
		    "this bhyve discards what it received", recv_peer,
		    mig_side_name(merr.side), mig_phase_name(merr.phase),
		    merr.msg[0] != '\0' ? merr.msg : strerror(error));
	}
	if (bhyve_restore_end() != 0) {
		vm_destroy(ctx);
		errx(MIG_RECV_EXIT, "migration from %s failed on the "
		    "destination: the devices could not be restarted; the "
		    "source keeps its paused copy of the guest", recv_peer);
	}
}

void
migration_receive_finish(void)
{
	struct mig_error merr;
	int error;

	if (recv_conn == NULL)
		return;
	memset(&merr, 0, sizeof(merr));
	/* The guest runs here from now on, confirmed or not. */
	error = mig_dest_finish(&recv_dest, recv_conn, true, &merr);
	if (error == 0)
		EPRINTLN("Migration from %s complete: %ju MiB in %ju ms, "
		    "downtime %ju ms", recv_peer,
		    (uintmax_t)(recv_stats.memory_bytes >> 20),
		    (uintmax_t)(recv_stats.total_time_us / 1000),
		    (uintmax_t)(recv_stats.downtime_us / 1000));
	mig_conn_free(recv_conn);
	recv_conn = NULL;
	mig_bhyve_backend_destroy(recv_backend);
	recv_backend = NULL;
	mig_stats_free(&recv_stats);
}
