/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * bhyve's disks for a migration without shared storage: every block_if
 * image, in the order the devices opened them (the same on both hosts
 * for the same configuration), with a write bitmap in blocks of
 * MIG_BDISK_BLOCK that block_if marks when a write or delete completes.
 */

#ifndef _MIGRATION_BDISK_H_
#define	_MIGRATION_BDISK_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "migration_backend.h"

#define	MIG_BDISK_BLOCK		(64u << 10)	/* tracking unit, bytes */

/* block_if's hooks: open, close, a write or delete completed. */
void	mig_bdisk_attach(const void *bc, int fd, uint64_t size, bool ischr,
	    const char *path);
void	mig_bdisk_detach(const void *bc);
void	mig_bdisk_written(const void *bc, uint64_t offset, uint64_t len);

/*
 * The backend's (migration_bhyve.c), disk i of mig_bdisk_count(); block
 * ranges as struct mig_backend_ops has them.  Each returns 0 or an
 * errno value with a sentence in msg.
 */
uint32_t mig_bdisk_count(void);
void	mig_bdisk_describe(uint32_t i, struct mig_disk *);
void	mig_bdisk_track(uint32_t i);
void	mig_bdisk_collect(uint32_t i, uint64_t first, uint64_t n,
	    uint64_t *bitmap);
int	mig_bdisk_allocated(uint32_t i, uint64_t first, uint64_t n,
	    uint64_t *bitmap, char *msg, size_t msglen);
int	mig_bdisk_read(uint32_t i, uint64_t first, uint64_t n, void *buf,
	    char *msg, size_t msglen);
int	mig_bdisk_write(uint32_t i, uint64_t first, uint64_t n,
	    const void *buf, char *msg, size_t msglen);
int	mig_bdisk_zero(uint32_t i, uint64_t first, uint64_t n, char *msg,
	    size_t msglen);
/*
 * The destination's "incomplete" marks: a file IMAGE.incomplete beside
 * an image file, /var/db/bhyve/VM.diskN.incomplete for a device.  Made
 * before capability mode (bhyve -R receives before caph_enter()); the
 * directory descriptors kept, limited to what unmarking needs.
 */
int	mig_bdisk_mark(const char *vmname, char *msg, size_t msglen);
int	mig_bdisk_flush(char *msg, size_t msglen);
/* After mig_bdisk_flush(): the images are complete. */
int	mig_bdisk_unmark(char *msg, size_t msglen);

#endif /* _MIGRATION_BDISK_H_ */
