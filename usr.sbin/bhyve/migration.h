/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Live migration engine: public interface.
 *
 * The engine moves a running guest from a source to a destination over
 * one connected stream socket.  It is plain C with no FreeBSD-only or
 * Linux-only calls: bhyve links it with a backend built on libvmmapi, the
 * Linux test bed links it with a backend built on userfaultfd.
 */

#ifndef _MIGRATION_H_
#define	_MIGRATION_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct addrinfo;
struct mig_backend;
struct mig_conn;

#define	MIG_KEY_LEN		32	/* per-migration key, bytes */
#define	MIG_ERRMSG_MAX		256
#define	MIG_MAX_ROUNDS_LIMIT	1000	/* upper bound of max_rounds */
#define	MIG_DEFAULT_PORT	24981
#define	MIG_STREAMS_MAX		8	/* connections in one session */
#define	MIG_MAX_HOLD_MS		3600000u /* longest switchover hook wait */

/* Where a migration was when it stopped; also reported in progress. */
enum mig_phase {
	MIG_PHASE_CONNECT = 0,	/* socket set-up */
	MIG_PHASE_HANDSHAKE,	/* version and capability negotiation */
	MIG_PHASE_AUTH,		/* proof of the per-migration key */
	MIG_PHASE_COMPAT,	/* memory layout, vCPUs, devices */
	MIG_PHASE_PRECOPY,	/* live memory rounds */
	MIG_PHASE_STOPCOPY,	/* guest paused, last dirty pages */
	MIG_PHASE_STATE,	/* vCPU and device state */
	MIG_PHASE_SWITCHOVER,	/* ready/go */
	MIG_PHASE_DONE,
	MIG_PHASE_COUNT
};

/* Which side a failure belongs to. */
enum mig_side {
	MIG_SIDE_SOURCE = 0,
	MIG_SIDE_DEST,
	MIG_SIDE_LINK		/* the connection itself: reset, timeout */
};

enum mig_role {
	MIG_ROLE_SOURCE = 0,
	MIG_ROLE_DEST
};

/*
 * Fault injection for the test suite only.  Every consumer but the test
 * bed leaves this at MIG_FAULT_NONE.
 */
enum mig_fault {
	MIG_FAULT_NONE = 0,
	MIG_FAULT_DROP_DIRTY_PAGE,	/* sender skips one dirty page */
	MIG_FAULT_STALE_DEVICE_STATE,	/* device state saved 100 ms early */
	MIG_FAULT_KILL_STREAM,		/* the last stream dies in round 1 */
	MIG_FAULT_BAD_TAG,		/* round 1's first frame: a bad tag */
	MIG_FAULT_BAD_TAG_IGNORED,	/* and the source resends nothing */
	MIG_FAULT_BAD_INDEX_TAG,	/* round 1's first index: a bad tag */
};

/* Round policy. */
enum mig_policy_mode {
	MIG_POLICY_CONVERGE = 0,	/* iterate while it pays */
	MIG_POLICY_FIXED		/* fixed rounds (as in D30954) */
};

struct mig_params {
	uint8_t		key[MIG_KEY_LEN];
	bool		live;			/* pre-copy; else pause first */
	/* Source: encrypt the stream; destination: refuse it in clear. */
	bool		encrypt;
	enum mig_policy_mode policy;
	uint32_t	fixed_rounds;		/* MIG_POLICY_FIXED only */
	uint32_t	max_rounds;		/* live rounds, >= 1 */
	uint64_t	downtime_limit_us;	/* target final downtime */
	uint64_t	max_time_ms;		/* live phase bound; 0: none */
	uint64_t	bandwidth_limit;	/* bytes/s; 0: unlimited */
	bool		auto_throttle;		/* slow vCPUs to converge */
	uint32_t	io_timeout_ms;		/* per socket operation */
	uint64_t	max_pause_ms;		/* 0: see pause_bound_ms() */
	uint32_t	nstreams;		/* connections, 1..8 */
	/*
	 * The switchover hook: once paused, wait this long at most for
	 * the controller's go-ahead (hook), else roll back; 0: no hook.
	 */
	uint64_t	switchover_wait_ms;
	enum mig_fault	fault;
	bool		migrate_disks;		/* no shared storage */
	/*
	 * Source: a dry run (handshake, authentication, the compatibility
	 * check; no memory moves), and the operator's cancel, or NULL.
	 */
	bool		check_only;
	struct mig_cancel *cancel;
	struct mig_hook	*hook;
};

/*
 * An operator's cancel raced against the source's commit to GO: exactly
 * one of mig_cancel_request() and mig_cancel_commit() returns true.
 */
struct mig_cancel {
	int		state;		/* __atomic: open, cancelled, committed */
};

void	mig_cancel_init(struct mig_cancel *);
bool	mig_cancel_request(struct mig_cancel *);
bool	mig_cancel_commit(struct mig_cancel *);
bool	mig_cancelled(const struct mig_cancel *);

/*
 * The switchover hook's go-ahead (migration_switchover.c): the engine
 * waits at it with the guest paused, the controller releases it.
 * mig_hook_release() is true only while the engine waits there.
 */
struct mig_hook {
	int		state;		/* __atomic: idle, waiting, released */
};

void	mig_hook_init(struct mig_hook *);
bool	mig_hook_release(struct mig_hook *);

/* Fill in the defaults (live, 300 ms downtime, 30 rounds, 10 s timeouts). */
void	mig_params_init(struct mig_params *);
/* Check a parameter set; on error fill msg and return EINVAL. */
int	mig_params_check(const struct mig_params *, char *msg, size_t msglen);

/* Why the live phase ended. */
enum mig_stop_reason {
	MIG_STOP_NONE = 0,
	MIG_STOP_CONVERGED,	/* estimated downtime fits the limit */
	MIG_STOP_FIXED_ROUNDS,	/* MIG_POLICY_FIXED count reached */
	MIG_STOP_MAX_ROUNDS,
	MIG_STOP_MAX_TIME,
	MIG_STOP_NO_PROGRESS	/* dirty set no longer shrinks */
};

struct mig_round_stats {
	uint32_t	index;		/* 1-based; the last one is stop-copy */
	bool		final;		/* taken with the guest paused */
	uint64_t	dirty_pages;	/* pages to send in this round */
	uint64_t	pages_sent;	/* non-zero pages with data */
	uint64_t	zero_pages;	/* pages sent as a zero marker */
	uint64_t	unpopulated_pages; /* of those, never read: ranges */
	uint64_t	rewritten_pages; /* written again: left to next round */
	uint64_t	owed_pages;	/* failed their tag: sent again */
	uint64_t	bytes;		/* bytes on the wire */
	uint64_t	duration_us;
	uint32_t	throttle_pct;	/* vCPU throttle in force */
	uint64_t	est_downtime_us; /* policy's estimate after round */
	uint64_t	disk_dirty_blocks; /* disk blocks to send */
	uint64_t	disk_blocks_sent; /* with data */
	uint64_t	disk_zero_blocks; /* as zero markers or ranges */
	uint64_t	disk_bytes;	/* of bytes: disk frames on the wire */
};

#define	MIG_STATS_MAX_ROUNDS	(MIG_MAX_ROUNDS_LIMIT + 1)

struct mig_stats {
	uint32_t	nrounds;
	struct mig_round_stats *rounds;	/* MIG_STATS_MAX_ROUNDS entries */
	uint64_t	total_time_us;
	uint64_t	downtime_us;	/* source pause to destination run */
	/* Its parts: last memory, the hook's wait, state and switchover. */
	uint64_t	downtime_memory_us;
	uint64_t	downtime_hook_us;
	uint64_t	downtime_state_us;
	uint64_t	state_bytes;	/* vCPU + device state */
	uint64_t	bytes_sent;	/* everything on the wire, both ways */
	uint64_t	memory_bytes;	/* guest memory size */
	uint64_t	rtt_us;		/* measured in the handshake */
	uint32_t	protocol_version;
	bool		encrypted;
	enum mig_stop_reason stop_reason;
	uint32_t	nstreams;	/* connections the memory moved over */
};

int	mig_stats_init(struct mig_stats *);
void	mig_stats_free(struct mig_stats *);

struct mig_error {
	enum mig_side	side;
	enum mig_phase	phase;
	int		code;		/* errno value */
	bool		guest_running_on_source;
	bool		dry_run;	/* destination: the peer only checked */
	char		msg[MIG_ERRMSG_MAX];
};

/*
 * Outcome of mig_send().  MIG_INDETERMINATE means "go" was sent but the
 * destination never confirmed that it runs the guest: the source keeps it
 * paused so that two copies never run, and an operator decides.
 */
enum mig_result {
	MIG_OK = 0,
	MIG_FAILED,		/* the guest runs on the source */
	MIG_INDETERMINATE
};

/* Progress events, delivered to the backend's progress hook. */
struct mig_progress {
	enum mig_phase	phase;
	uint32_t	round;
	uint64_t	remaining_pages;
	const struct mig_round_stats *last_round; /* on a round's end */
	/* Once: the pause outlasted the policy's final estimate. */
	bool		estimate_missed;
	uint64_t	est_downtime_us;
	uint64_t	paused_us;
	/* Nonzero: paused, waiting this long at most for the hook. */
	uint64_t	hold_ms;
};

const char *mig_phase_name(enum mig_phase);
const char *mig_stop_reason_name(enum mig_stop_reason);
const char *mig_side_name(enum mig_side);

/*
 * Socket set-up shared by both ends: timeouts, keepalive, no delay.
 * Returns 0 or an errno value.
 */
int	mig_socket_setup(int fd, uint32_t io_timeout_ms);
/*
 * Connect a stream socket to one address, giving up after timeout_ms.
 * Returns 0 with the connected socket in *fd, or an errno value.
 */
int	mig_connect(const struct addrinfo *, int timeout_ms, int *fd);

/*
 * The per-migration key and the endpoint address as bhyve, bhyvectl
 * and the test bed read them (migration_key.c).  Each returns 0 or an
 * errno value and on error fills msg with the problem, for the caller
 * to put after the file's or the address's name: the key file's "must
 * hold 32 bytes or ...", the address's "missing ']'".
 */
#define	MIG_KEY_PRIVATE		0x1	/* refuse a key file others may read */
/* 32 raw bytes, or 64 hex digits and an optional newline; else EINVAL. */
int	mig_key_decode(const void *buf, size_t len, uint8_t key[MIG_KEY_LEN],
	    char *msg, size_t msglen);
/*
 * Read the key from an open file, which must be a regular file (EPERM)
 * and with MIG_KEY_PRIVATE accessible to its owner only (EPERM).
 */
int	mig_key_read_fd(int fd, int flags, uint8_t key[MIG_KEY_LEN],
	    char *msg, size_t msglen);
/*
 * Split "[v6addr]:port", "[v6addr]", "host:port", ":port", "host" or a
 * port alone into host (empty if absent) and port (defport if absent).
 * A bare IPv6 address, with two colons or more, is a host.
 */
int	mig_hostport_split(const char *spec, int defport, char *host,
	    size_t hostlen, char *port, size_t portlen, char *msg,
	    size_t msglen);

/*
 * Source: migrate the guest over the p->nstreams connected sockets in
 * fds (stream 0 first).  On MIG_OK the guest now runs on the destination
 * and must not be resumed here.  On MIG_FAILED it runs here again, its
 * dirty log restored.
 */
enum mig_result	mig_send(const int *fds, struct mig_backend *,
	    const struct mig_params *, struct mig_stats *, struct mig_error *);

/*
 * Destination, in two steps so that bhyve can take the guest's shape
 * from the stream before it sets up memory and enters capability mode:
 * mig_recv_accept() authenticates the peer and reads its description of
 * the guest; mig_recv_run() checks it against the local backend, receives
 * memory and state, and returns 0 once "go" arrived; the caller then
 * starts the guest and calls mig_recv_finish().  mig_conn_free() closes.
 * mig_recv_accept() sets *proven (unless NULL) to 1, atomically, once the
 * peer proved the key, so that a listener serving several handshakes can
 * tell a real source from a stranger while the handshake goes on.
 */
struct mig_vminfo;
int	mig_recv_accept(int fd, const struct mig_params *, int *proven,
	    struct mig_conn **, struct mig_vminfo *, struct mig_error *);
int	mig_recv_run(struct mig_conn *, struct mig_backend *,
	    struct mig_stats *, struct mig_error *);
int	mig_recv_finish(struct mig_conn *, struct mig_error *);
void	mig_conn_free(struct mig_conn *);
/*
 * The source asked for a dry run: mig_recv_run() returns after the
 * compatibility verdict (0: compatible), and the destination waits for
 * the next connection.
 */
bool	mig_conn_check_only(const struct mig_conn *);
/*
 * Several streams: mig_recv_accept() returns EINPROGRESS with a
 * connection that answered HELLO with a JOIN whose proof holds for the
 * session it names (one whose proof fails is refused, EACCES, during
 * MIG_PHASE_AUTH).  mig_conn_join() checks it against an accepted
 * session; on 0 the session owns its socket, and either way the caller
 * frees join.  A session counts its streams, and receives once every
 * further one joined.
 */
int	mig_conn_join(struct mig_conn *session, struct mig_conn *join,
	    char *msg, size_t msglen);
uint32_t mig_conn_nstreams(const struct mig_conn *);
bool	mig_conn_joined_all(const struct mig_conn *);

#endif /* _MIGRATION_H_ */
