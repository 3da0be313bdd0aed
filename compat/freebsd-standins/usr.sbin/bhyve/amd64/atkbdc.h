/*
 * Stand-in for usr.sbin/bhyve/amd64/atkbdc.h of FreeBSD 15.0 (the
 * keyboard controller moved under amd64/ in 2024; snapshot.c includes it
 * as "amd64/atkbdc.h").  Project-written for compile checks only.
 */

#ifndef _ATKBDC_H_
#define	_ATKBDC_H_

struct vm_snapshot_meta;

#ifdef BHYVE_SNAPSHOT
int	atkbdc_snapshot(struct vm_snapshot_meta *);
#endif

#endif /* !_ATKBDC_H_ */
