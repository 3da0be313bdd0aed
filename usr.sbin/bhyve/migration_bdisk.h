/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * bhyve's disks for a migration without shared storage: the I/O and the
 * "incomplete" marks of the images block_if registered with
 * migration_storage.h, whose numbering and write bitmaps they are.
 */

#ifndef _MIGRATION_BDISK_H_
#define	_MIGRATION_BDISK_H_

#include <stddef.h>
#include <stdint.h>

/*
 * The backend's (migration_bhyve.c), disk i of mig_storage_count(); block
 * ranges as struct mig_backend_ops has them.  Each returns 0 or an
 * errno value (EINVAL for a disk or range that does not exist) with a
 * sentence in msg.
 */
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
/* After mig_storage_flush(): the images are complete. */
int	mig_bdisk_unmark(char *msg, size_t msglen);

#endif /* _MIGRATION_BDISK_H_ */
