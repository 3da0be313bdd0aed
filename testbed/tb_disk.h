/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * "tb-disk": the test guest's disk, an image file written by a device
 * thread while the guest runs: writes alternate between a hot set of
 * blocks (its first hot_bytes, round robin) and a sweep over the whole
 * disk.  Block b after g writes holds le64 g and then the pattern of
 * (seed + g, b); a block never written is all zeros, so an image may
 * start empty or sparse.  Its position (writes done) is the device's
 * state, from which the check knows every block's content.
 */

#ifndef _TB_DISK_H_
#define	_TB_DISK_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define	TB_DISK_BLOCK		4096u
#define	TB_DISK_PATH_MAX	256
#define	TB_DISK_HOT_DEFAULT	(4u << 20)
#define	TB_DISK_RATE_DEFAULT	2000	/* block writes per second */

struct tb_disk_config {
	uint64_t	size;		/* bytes; 0: no disk */
	uint64_t	hot_bytes;
	uint64_t	rate;		/* block writes per second */
	bool		prefill;	/* fresh: the sweep covered it once */
	char		image[TB_DISK_PATH_MAX];
};

struct tb_disk;
struct tb_verify;

/*
 * Open (creating, sized) the image of a checked configuration
 * (tb_guest_config_check()); the device starts paused.  A guest that
 * starts fresh refuses an image marked incomplete, and with prefill
 * writes every block first, as if the sweep had gone round once.
 */
int	tb_disk_create(struct tb_disk **, const struct tb_disk_config *,
	    uint64_t seed, bool fresh, char *msg, size_t msglen);
void	tb_disk_destroy(struct tb_disk *);
/* Finish the write in flight and flush the image; resume restarts. */
int	tb_disk_pause(struct tb_disk *);
void	tb_disk_resume(struct tb_disk *);
uint64_t tb_disk_seq(const struct tb_disk *);
void	tb_disk_set_seq(struct tb_disk *, uint64_t);
/*
 * Disk migration (tb_backend.c), in blocks of TB_DISK_BLOCK.  Every
 * completed write marks its block in the image's write bitmap, kept by
 * the registry of images (migration_storage.h) as block_if's are.
 * tb_disk_allocated() marks the blocks that may hold data (a superset).
 * The rest return 0 or an errno.
 */
const char *tb_disk_image(const struct tb_disk *);
int	tb_disk_allocated(struct tb_disk *, uint64_t first, uint64_t n,
	    uint64_t *bitmap);
int	tb_disk_read(struct tb_disk *, uint64_t first, uint64_t n, void *);
int	tb_disk_write(struct tb_disk *, uint64_t first, uint64_t n,
	    const void *);
int	tb_disk_zero(struct tb_disk *, uint64_t first, uint64_t n);
/*
 * The destination's mark, a file "IMAGE.incomplete" beside the image:
 * made durable before the first block is written, removed once the
 * guest runs here and the image was flushed (tb_disk_flush()).
 */
int	tb_disk_mark_incomplete(struct tb_disk *);
int	tb_disk_flush(struct tb_disk *);
int	tb_disk_mark_complete(struct tb_disk *);

/* Check every block of the image; the device is paused. */
int	tb_disk_verify(struct tb_disk *, struct tb_verify *, char *msg,
	    size_t msglen);

#endif /* _TB_DISK_H_ */
