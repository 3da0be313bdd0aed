/*
 * Stand-in for usr.sbin/bhyve/debug.h of FreeBSD 15.0 (read from
 * freebsd-src commit 5e66edf5).  Project-written for compile checks
 * only: bhyve's EPRINTLN() prints one line to stderr, ending it with
 * "\r\n" when the console is in raw mode.
 */

#ifndef _DEBUG_H_
#define	_DEBUG_H_

#include <stdio.h>

extern int raw_stdio;

#define	EPRINTLN(fmt, ...)						\
	fprintf(stderr, raw_stdio ? fmt "\r\n" : fmt "\n", ##__VA_ARGS__)

#endif /* !_DEBUG_H_ */
