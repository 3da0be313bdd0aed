/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * Destination side of a migration's control: listen, accept the
 * source, authenticate it and receive, answering dry runs and refusing
 * strangers without giving up on the real source.  Portable: bhyve -R
 * (migration_receive.c) and "tbvm receive" run the same code.
 */

#ifndef _MIGRATION_DEST_LISTEN_H_
#define	_MIGRATION_DEST_LISTEN_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define	MIG_DEST_MAXLISTEN	8
#define	MIG_DEST_PEER_MAX	80
#define	MIG_DEST_PREAUTH_MAX	8	/* handshakes served at once */
#define	MIG_DEST_HANDSHAKE_MS	5000	/* HELLO to guest description */
#define	MIG_DEST_BACKLOG	64

struct mig_backend;
struct mig_conn;
struct mig_error;
struct mig_params;
struct mig_stats;
struct mig_vminfo;

/* What the destination's status query answers. */
enum mig_dest_state {
	MIG_DEST_LISTENING = 0,
	MIG_DEST_RECEIVING,
	MIG_DEST_RUNNING,
	MIG_DEST_FAILED
};

struct mig_dest {
	int		fds[MIG_DEST_MAXLISTEN];
	int		nfds;
	char		peer[MIG_DEST_PEER_MAX];	/* the source, in words */
	void		(*log)(void *, const char *);
	void		*logarg;
	uint64_t	handshake_timeout_ms;	/* 0: MIG_DEST_HANDSHAKE_MS */
	uint64_t	listen_timeout_ms;	/* 0: wait for ever */
};

/*
 * Listen on spec ([host:]port, [v6addr]:port or port; port 0 lets the
 * system choose); host and port receive the first address bound.
 */
int	mig_dest_listen(struct mig_dest *, const char *spec, char *host,
	    size_t hostlen, char *port, size_t portlen, char *msg,
	    size_t msglen);
/*
 * Accept connections until one proves the key and describes its guest
 * (mig_recv_accept()); a connection that fails before that is logged
 * and refused.  Returns 0 with the connection, or the error of a source
 * that failed after authenticating.
 */
int	mig_dest_accept(struct mig_dest *, const struct mig_params *,
	    struct mig_conn **, struct mig_vminfo *, struct mig_error *);
/*
 * Receive until GO.  A dry run's verdict is logged and the next
 * connection is accepted, as the guest's shape is fixed by then.
 * Returns 0 once GO arrived; then the caller starts the guest and calls
 * mig_dest_finish().
 */
int	mig_dest_receive(struct mig_dest *, const struct mig_params *,
	    struct mig_conn **, struct mig_backend *, struct mig_stats *,
	    struct mig_error *);
/*
 * The guest runs here: mark it and confirm (RUNNING).  If the
 * confirmation cannot be sent the guest keeps running here and the
 * source stays paused (indeterminate) until an operator decides.
 */
int	mig_dest_finish(struct mig_dest *, struct mig_conn *, bool confirm,
	    struct mig_error *);
void	mig_dest_close(struct mig_dest *);
void	mig_dest_set_state(enum mig_dest_state);
enum mig_dest_state mig_dest_state(void);
/* One JSON line answering "status". */
char	*mig_dest_status_json(void);

#endif /* !_MIGRATION_DEST_LISTEN_H_ */
