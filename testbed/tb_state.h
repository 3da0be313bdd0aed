/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The guest's state sections: "cpu0".."cpuN-1", then the devices
 * "tb-counter" and "tb-blob".  Each is encoded field by field in
 * little-endian order.
 */

#ifndef _TB_STATE_H_
#define	_TB_STATE_H_

#include <stddef.h>
#include <stdint.h>

#define	TB_STATE_VERSION	1	/* of every section */

struct tb_guest;

uint32_t tb_state_nsections(const struct tb_guest *);
/* The encoded length of section idx. */
size_t	tb_state_len(const struct tb_guest *, uint32_t idx);
/* Name of section idx into name (namelen bytes). */
void	tb_state_name(const struct tb_guest *, uint32_t idx, char *name,
	    size_t namelen);
/* Encode section idx into a malloc'd buffer. */
int	tb_state_save(struct tb_guest *, uint32_t idx, void **buf,
	    size_t *len, char *msg, size_t msglen);
/* Check and apply section idx; the guest must be paused. */
int	tb_state_restore(struct tb_guest *, uint32_t idx, const void *buf,
	    size_t len, char *msg, size_t msglen);

#endif /* _TB_STATE_H_ */
