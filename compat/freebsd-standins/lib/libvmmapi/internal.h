/*
 * Stand-in for lib/libvmmapi/internal.h of FreeBSD 15.0 (read from the
 * freebsd-src version with the memsegs[VM_MEMSEG_COUNT] array, blob id
 * 418743197 as stored).  Project-written for compile checks only: what
 * lib/libvmmapi/vmmapi_dirty.c uses, i.e. the descriptor in struct vmctx.
 */

#ifndef __VMMAPI_INTERNAL_H__
#define	__VMMAPI_INTERNAL_H__

#include <sys/types.h>

struct vmctx {
	int	fd;
	int	memflags;
	char	*baseaddr;
	char	*name;
};

#endif /* !__VMMAPI_INTERNAL_H__ */
