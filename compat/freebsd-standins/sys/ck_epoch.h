/*
 * Stand-in for sys/contrib/ck/include/ck_epoch.h as the FreeBSD 15.0 kernel
 * uses it (<sys/epoch.h> embeds a ck_epoch_section_t in struct
 * epoch_tracker).  Project-written for compile checks only: the one type
 * the installed <sys/epoch.h> needs; the kernel's real definition differs.
 */

#ifndef CK_EPOCH_H
#define	CK_EPOCH_H

struct ck_epoch_section {
	unsigned int	bucket;
};
typedef struct ck_epoch_section ck_epoch_section_t;

#endif /* !CK_EPOCH_H */
