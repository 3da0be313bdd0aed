/*
 * Stand-in for usr.sbin/bhyve/ipc.h of FreeBSD 15.0 (read from
 * freebsd-src commit d28066d8: handlers return int and register in the
 * ipc_cmd_set linker set).  Project-written for compile checks only.
 */

#ifndef _IPC_H_
#define	_IPC_H_

#include <sys/cdefs.h>
#include <sys/linker_set.h>
#include <sys/nv.h>

struct vmctx;

struct ipc_command {
	const char *name;
	int	(*handler)(struct vmctx *, const nvlist_t *);
};

#define	IPC_COMMAND(set, name, function)				\
	static struct ipc_command name ## _ipc_command =		\
	    { #name, function };					\
	DATA_SET(set, name ## _ipc_command)

SET_DECLARE(ipc_cmd_set, struct ipc_command);

#endif /* !_IPC_H_ */
