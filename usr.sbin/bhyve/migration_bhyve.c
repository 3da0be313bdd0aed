/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The bhyve backend of the live migration engine: guest memory as
 * libvmmapi maps it, dirty pages from vmm's tracker, vCPU and device
 * state through the snapshot code, and for a migration without shared
 * storage the block_if disks with their write bitmaps
 * (migration_storage.c, migration_bdisk.c).
 *
 * State sections, in the order the destination restores them (the
 * order "bhyve -r" uses): each PCI device by its instance name, the
 * amd64 keyboard controller, then the vmm kernel structures one group
 * at a time (each group covers every vCPU).  A section's version is
 * MIG_BHYVE_STATE_VERSION; bump it when a snapshot layout changes
 * incompatibly.
 */

#include <sys/param.h>
#include <sys/cpuset.h>
#include <sys/mman.h>
#include <sys/sysctl.h>

#include <machine/cpufunc.h>
#include <machine/vmm.h>
#include <machine/vmm_snapshot.h>

#include <assert.h>
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pthread_np.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <vmmapi.h>

#ifdef __amd64__
#include "amd64/atkbdc.h"
#endif
#include "bhyverun.h"
#include "config.h"
#include "debug.h"
#include "migration.h"
#include "migration_backend.h"
#include "migration_bdisk.h"
#include "migration_bhyve.h"
#include "migration_devlog.h"
#include "migration_storage.h"
#include "pci_emul.h"
#include "snapshot.h"

#define	MIG_BHYVE_STATE_VERSION	1

/* First try for a section's buffer; doubled up to MIG_SECTION_MAX. */
#define	MIG_BHYVE_STATE_BUF	(1u << 20)

/* Throttle duty cycle. */
#define	MIG_BHYVE_THROTTLE_PERIOD_MS	100
#define	MIG_BHYVE_THROTTLE_MAX		99

enum sect_kind {
	SECT_PCI,
	SECT_ATKBDC,
	SECT_KERN
};

struct bhyve_sect {
	enum sect_kind	kind;
	const char	*name;
	struct pci_devinst *pdi;	/* SECT_PCI */
	enum snapshot_req req;		/* SECT_KERN */
};

struct bhyve_mig {
	struct mig_backend be;
	struct vmctx	*ctx;
	mig_bhyve_progress_cb *progress_cb;
	void		*progress_arg;

	uint64_t	page_size;
	uint32_t	nsegs;
	struct mig_memseg segs[MIG_MAX_SEGS];
	uint32_t	nsects;
	struct bhyve_sect sects[MIG_MAX_SECTIONS];

	bool		tracking;
	bool		paused;

	/* Throttle thread. */
	pthread_mutex_t	thr_mtx;
	pthread_cond_t	thr_cv;		/* work or exit for the thread */
	pthread_cond_t	thr_idle_cv;	/* a cycle finished */
	pthread_t	thr;
	bool		thr_started;
	bool		thr_exit;
	bool		thr_cycling;	/* vCPUs held by the thread now */
	uint32_t	thr_pct;
};

/*
 * The device write log block_if marks.  Its writers (block_if threads)
 * may hold the pointer at any time, so it lives as long as the guest's
 * memory: created by the first migration, disarmed between them.
 */
static struct mig_devlog *mig_bhyve_devlog;

/* The kernel structures, as the snapshot code names them. */
static const struct {
	const char	*name;
	enum snapshot_req req;
} mig_bhyve_kern[] = {
	{ "vhpet",	STRUCT_VHPET },
	{ "vm",		STRUCT_VM },
	{ "vioapic",	STRUCT_VIOAPIC },
	{ "vlapic",	STRUCT_VLAPIC },
	{ "vmcx",	STRUCT_VMCX },
	{ "vatpit",	STRUCT_VATPIT },
	{ "vatpic",	STRUCT_VATPIC },
	{ "vpmtmr",	STRUCT_VPMTMR },
	{ "vrtc",	STRUCT_VRTC },
};

static void mig_bhyve_throttle_stop(struct bhyve_mig *);

static void
mig_bhyve_msg(struct bhyve_mig *bm, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(bm->be.errmsg, sizeof(bm->be.errmsg), fmt, ap);
	va_end(ap);
}

static int
mig_bhyve_add_sect(struct bhyve_mig *bm, enum sect_kind kind,
    const char *name, struct pci_devinst *pdi, enum snapshot_req req)
{
	struct bhyve_sect *s;

	if (bm->nsects >= MIG_MAX_SECTIONS) {
		mig_bhyve_msg(bm, "the guest has more than %d devices and "
		    "kernel state groups to move", MIG_MAX_SECTIONS);
		return (E2BIG);
	}
	if (strlen(name) >= MIG_NAME_MAX) {
		mig_bhyve_msg(bm, "device name \"%s\" is longer than the "
		    "migration stream allows (%d characters)", name,
		    MIG_NAME_MAX - 1);
		return (ENAMETOOLONG);
	}
	s = &bm->sects[bm->nsects++];
	s->kind = kind;
	s->name = name;
	s->pdi = pdi;
	s->req = req;
	return (0);
}

/*
 * Guest RAM: every mapping of a system memory segment, in guest-physical
 * order.  Device memory (boot ROM and its variable store, framebuffer)
 * is not moved.
 */
static int
mig_bhyve_memsegs(struct bhyve_mig *bm, struct mig_vminfo *vi)
{
	char name[VM_MAX_SUFFIXLEN + 1];
	vm_ooffset_t segoff;
	vm_paddr_t gpa;
	size_t len, seglen;
	int flags, prot, segid;
	void *host;

	bm->nsegs = 0;
	gpa = 0;
	for (;;) {
		if (vm_mmap_getnext(bm->ctx, &gpa, &segid, &segoff, &len,
		    &prot, &flags) != 0) {
			if (errno == ENOENT)
				break;
			mig_bhyve_msg(bm, "cannot walk guest memory: %s",
			    strerror(errno));
			return (errno);
		}
		memset(name, 0, sizeof(name));
		if (vm_get_memseg(bm->ctx, segid, &seglen, name,
		    sizeof(name)) != 0) {
			mig_bhyve_msg(bm, "cannot read guest memory segment "
			    "%d: %s", segid, strerror(errno));
			return (errno);
		}
		if (name[0] != '\0') {
			/* A devmem segment: boot ROM, framebuffer. */
			gpa += len;
			continue;
		}
		if (len % bm->page_size != 0 || gpa % bm->page_size != 0) {
			mig_bhyve_msg(bm, "guest memory at %#jx is not "
			    "page aligned", (uintmax_t)gpa);
			return (EINVAL);
		}
		if (bm->nsegs >= MIG_MAX_SEGS) {
			mig_bhyve_msg(bm, "guest memory has more than %d "
			    "ranges", MIG_MAX_SEGS);
			return (E2BIG);
		}
		host = vm_map_gpa(bm->ctx, gpa, len);
		if (host == NULL) {
			mig_bhyve_msg(bm, "guest memory at %#jx is not mapped "
			    "in bhyve", (uintmax_t)gpa);
			return (EFAULT);
		}
		bm->segs[bm->nsegs].gpa = gpa;
		bm->segs[bm->nsegs].len = len;
		bm->segs[bm->nsegs].host = host;
		bm->nsegs++;
		gpa += len;
	}
	if (bm->nsegs == 0) {
		mig_bhyve_msg(bm, "the guest has no memory set up");
		return (ENOENT);
	}
	vi->nsegs = bm->nsegs;
	memcpy(vi->segs, bm->segs, sizeof(bm->segs[0]) * bm->nsegs);
	return (0);
}

static int
mig_bhyve_sections(struct bhyve_mig *bm, struct mig_vminfo *vi)
{
	struct pci_devinst *pdi;
	const char *emu;
	uint32_t i;
	int error;

	bm->nsects = 0;
	pdi = NULL;
	while ((pdi = pci_next(pdi)) != NULL) {
		emu = pdi->pi_d != NULL ? pdi->pi_d->pe_emu : NULL;
		if (emu != NULL && strcmp(emu, "passthru") == 0) {
			mig_bhyve_msg(bm, "%s is a PCI pass-through device: "
			    "its DMA into guest memory cannot be tracked, so "
			    "this guest cannot be migrated", pdi->pi_name);
			return (ENOTSUP);
		}
		/*
		 * pci_snapshot() fails with ENOTSUP for such a device, but
		 * only after the guest was paused: refuse it now, in the
		 * compatibility phase, by name.
		 */
		if (pdi->pi_d == NULL || pdi->pi_d->pe_snapshot == NULL) {
			mig_bhyve_msg(bm, "device %s (%s) has no snapshot "
			    "routine, so its state cannot be moved and this "
			    "guest cannot be migrated", pdi->pi_name,
			    emu != NULL ? emu : "unknown emulation");
			return (ENOTSUP);
		}
		error = mig_bhyve_add_sect(bm, SECT_PCI, pdi->pi_name, pdi, 0);
		if (error != 0)
			return (error);
	}
#ifdef __amd64__
	error = mig_bhyve_add_sect(bm, SECT_ATKBDC, "atkbdc", NULL, 0);
	if (error != 0)
		return (error);
#endif
	for (i = 0; i < nitems(mig_bhyve_kern); i++) {
		error = mig_bhyve_add_sect(bm, SECT_KERN,
		    mig_bhyve_kern[i].name, NULL, mig_bhyve_kern[i].req);
		if (error != 0)
			return (error);
	}

	vi->nsections = bm->nsects;
	for (i = 0; i < bm->nsects; i++) {
		strlcpy(vi->sections[i].name, bm->sects[i].name,
		    sizeof(vi->sections[i].name));
		vi->sections[i].version = MIG_BHYVE_STATE_VERSION;
	}
	return (0);
}

/*
 * What the guest may have seen and used of the CPU: vendor, basic and
 * extended feature flags, structured extended features, the XSAVE state
 * components, and the TSC frequency, which bhyve does not scale (a
 * restore only rebases the offset).  15.0's userland cannot read the
 * CPUID vmm presents to a guest; vmm derives it from the host's, so the
 * host leaves are read with the bits that describe the host kernel
 * rather than the CPU masked: OSXSAVE (leaf 1 ECX 27, CR4.OSXSAVE) and
 * OSPKE (leaf 7 ECX 4, CR4.PKE), and leaf 1 EBX (APIC ID, CLFLUSH size).
 */
static void
mig_bhyve_cpu_features(char *buf, size_t len)
{
	u_int vendor[4], l0[4], l1[4], l7[4], ld[4], le[4], le1[4];
	uint64_t tsc_freq;
	size_t tsclen;

	memset(l7, 0, sizeof(l7));
	memset(ld, 0, sizeof(ld));
	memset(le1, 0, sizeof(le1));
	do_cpuid(0, l0);
	vendor[0] = l0[1];
	vendor[1] = l0[3];
	vendor[2] = l0[2];
	vendor[3] = 0;
	do_cpuid(1, l1);
	if (l0[0] >= 7)
		cpuid_count(7, 0, l7);
	if (l0[0] >= 0xd)
		cpuid_count(0xd, 0, ld);
	do_cpuid(0x80000000, le);
	if (le[0] >= 0x80000001)
		do_cpuid(0x80000001, le1);
	tsclen = sizeof(tsc_freq);
	if (sysctlbyname("machdep.tsc_freq", &tsc_freq, &tsclen, NULL, 0) != 0)
		tsc_freq = 0;

	snprintf(buf, len,
	    "%.12s 1:%08x:%08x 7:%08x:%08x:%08x d:%08x 80000001:%08x:%08x "
	    "tsc:%ju", (const char *)vendor, l1[2] & ~(1u << 27), l1[3], l7[1],
	    l7[2] & ~(1u << 4), l7[3], ld[0], le1[2], le1[3],
	    (uintmax_t)tsc_freq);
}

static int
mig_bhyve_vminfo(void *arg, struct mig_vminfo *vi)
{
	struct bhyve_mig *bm = arg;
	const struct mig_image *img;
	uint32_t i, unregistered;
	int error;

	memset(vi, 0, sizeof(*vi));
	vi->ncpus = guest_ncpus;
	vi->page_size = bm->page_size;
	error = mig_bhyve_memsegs(bm, vi);
	if (error != 0)
		return (error);
	error = mig_bhyve_sections(bm, vi);
	if (error != 0)
		return (error);
	mig_bhyve_cpu_features(vi->cpu_features, sizeof(vi->cpu_features));
	/* Disks the hand-over would miss: no flush, no reopen, no move. */
	if ((unregistered = mig_storage_unregistered()) != 0) {
		mig_bhyve_msg(bm, "%u disk images were opened while the "
		    "migration's list of %d was full", unregistered,
		    MIG_STORAGE_MAX);
		return (ENOSPC);
	}
	/* The engine refuses to move disks when there are more. */
	vi->ndisks = MIN(mig_storage_count(), MIG_MAX_DISKS);
	vi->ndisks_beyond = mig_storage_count() - vi->ndisks;
	for (i = 0; i < vi->ndisks; i++) {
		if ((img = mig_storage_image(i)) == NULL) {
			mig_bhyve_msg(bm, "disk %u was closed", i);
			return (EINVAL);
		}
		vi->disks[i].block_size = img->block;
		vi->disks[i].size = img->size;
		if ((img->oflags & O_ACCMODE) == O_RDONLY)
			vi->disks[i].flags |= MIG_DISK_READONLY;
	}
	return (0);
}

/* The disks' operations: the registry checks disk and range. */
static int
mig_bhyve_disk_start(void *arg, uint32_t disk)
{
	struct bhyve_mig *bm = arg;

	return (mig_storage_track(disk, bm->be.errmsg, sizeof(bm->be.errmsg)));
}

static int
mig_bhyve_disk_collect(void *arg, uint32_t disk, uint64_t first,
    uint64_t n, uint64_t *bitmap)
{
	struct bhyve_mig *bm = arg;

	return (mig_storage_collect(disk, first, n, bitmap, bm->be.errmsg,
	    sizeof(bm->be.errmsg)));
}

static int
mig_bhyve_disk_allocated(void *arg, uint32_t disk, uint64_t first,
    uint64_t n, uint64_t *bitmap)
{
	struct bhyve_mig *bm = arg;

	return (mig_bdisk_allocated(disk, first, n, bitmap, bm->be.errmsg,
	    sizeof(bm->be.errmsg)));
}

static int
mig_bhyve_disk_read(void *arg, uint32_t disk, uint64_t first, uint64_t n,
    void *buf)
{
	struct bhyve_mig *bm = arg;

	return (mig_bdisk_read(disk, first, n, buf, bm->be.errmsg,
	    sizeof(bm->be.errmsg)));
}

static void
mig_bhyve_disk_stop(void *arg __unused, uint32_t disk __unused)
{
	/* block_if marks every write anyway: nothing to disarm. */
}

static int
mig_bhyve_disk_recv_begin(void *arg)
{
	struct bhyve_mig *bm = arg;
	const char *name;

	name = get_config_value("name");
	return (mig_bdisk_mark(name != NULL ? name : "vm", bm->be.errmsg,
	    sizeof(bm->be.errmsg)));
}

static int
mig_bhyve_disk_write(void *arg, uint32_t disk, uint64_t first, uint64_t n,
    const void *buf)
{
	struct bhyve_mig *bm = arg;

	return (mig_bdisk_write(disk, first, n, buf, bm->be.errmsg,
	    sizeof(bm->be.errmsg)));
}

static int
mig_bhyve_disk_zero(void *arg, uint32_t disk, uint64_t first, uint64_t n)
{
	struct bhyve_mig *bm = arg;

	return (mig_bdisk_zero(disk, first, n, bm->be.errmsg,
	    sizeof(bm->be.errmsg)));
}

static int
mig_bhyve_disk_recv_done(void *arg)
{
	struct bhyve_mig *bm = arg;
	int error;

	if ((error = mig_storage_flush(bm->be.errmsg,
	    sizeof(bm->be.errmsg))) != 0)
		return (error);
	return (mig_bdisk_unmark(bm->be.errmsg, sizeof(bm->be.errmsg)));
}

/* The guest-physical range of npages pages from page first of seg. */
static int
mig_bhyve_range(struct bhyve_mig *bm, uint32_t seg, uint64_t first,
    uint64_t npages, vm_paddr_t *gpa)
{
	uint64_t segpages;

	if (seg >= bm->nsegs || npages == 0 ||
	    npages > MIG_DIRTY_CHUNK_PAGES) {
		mig_bhyve_msg(bm, "bad dirty page range (segment %u, %ju "
		    "pages)", seg, (uintmax_t)npages);
		return (EINVAL);
	}
	segpages = bm->segs[seg].len / bm->page_size;
	if (first >= segpages || npages > segpages - first) {
		mig_bhyve_msg(bm, "dirty page range beyond guest memory "
		    "(segment %u, pages %ju+%ju)", seg, (uintmax_t)first,
		    (uintmax_t)npages);
		return (EINVAL);
	}
	*gpa = bm->segs[seg].gpa + first * bm->page_size;
	return (0);
}

static int
mig_bhyve_dirty_start(void *arg)
{
	struct bhyve_mig *bm = arg;
	int error;

	if (vm_dirty_track(bm->ctx, true) != 0) {
		error = errno;
		if (error == ENOTTY || error == ENOSYS)
			mig_bhyve_msg(bm, "the vmm kernel module cannot track "
			    "dirty guest pages; it lacks this series' vmm "
			    "patches");
		else
			mig_bhyve_msg(bm, "cannot start dirty page tracking: "
			    "%s", strerror(error));
		return (error);
	}
	if (mig_bhyve_devlog == NULL) {
		error = mig_devlog_create(&mig_bhyve_devlog, bm->segs,
		    bm->nsegs, bm->page_size);
		if (error != 0) {
			(void)vm_dirty_track(bm->ctx, false);
			mig_bhyve_msg(bm, "cannot create the device write "
			    "log: %s", strerror(error));
			return (error);
		}
		mig_devlog_set_current(mig_bhyve_devlog);
	}
	mig_devlog_arm(mig_bhyve_devlog);
	bm->tracking = true;
	return (0);
}

/* Guest pages block_if read into (see migration_devlog.h). */
static int
mig_bhyve_devlog_collect(void *arg, uint32_t seg, uint64_t first,
    uint64_t npages, uint64_t *bitmap)
{
	struct bhyve_mig *bm = arg;
	int error;

	error = mig_devlog_collect(mig_bhyve_devlog, seg, first, npages,
	    bitmap);
	if (error != 0)
		mig_bhyve_msg(bm, "bad device write log range (segment %u, "
		    "%ju pages)", seg, (uintmax_t)npages);
	return (error);
}

static int
mig_bhyve_dirty_collect(void *arg, uint32_t seg, uint64_t first,
    uint64_t npages, uint64_t *bitmap)
{
	struct bhyve_mig *bm = arg;
	vm_paddr_t gpa;
	int error;

	error = mig_bhyve_range(bm, seg, first, npages, &gpa);
	if (error != 0)
		return (error);
	if (vm_dirty_get(bm->ctx, gpa, npages, bitmap) != 0) {
		error = errno;
		mig_bhyve_msg(bm, "cannot read dirty pages at %#jx: %s",
		    (uintmax_t)gpa, strerror(error));
		return (error);
	}
	return (0);
}

static int
mig_bhyve_populated(void *arg, uint32_t seg, uint64_t first,
    uint64_t npages, uint64_t *bitmap)
{
	struct bhyve_mig *bm = arg;
	vm_paddr_t gpa;
	int error;

	error = mig_bhyve_range(bm, seg, first, npages, &gpa);
	if (error != 0)
		return (error);
	if (vm_populated(bm->ctx, gpa, npages, bitmap) != 0) {
		error = errno;
		mig_bhyve_msg(bm, "cannot tell which pages at %#jx hold "
		    "data: %s", (uintmax_t)gpa, strerror(error));
		return (error);
	}
	return (0);
}

static void
mig_bhyve_dirty_stop(void *arg)
{
	struct bhyve_mig *bm = arg;

	if (!bm->tracking)
		return;
	mig_devlog_disarm(mig_bhyve_devlog);
	if (vm_dirty_track(bm->ctx, false) != 0)
		EPRINTLN("migration: cannot stop dirty page tracking: %s",
		    strerror(errno));
	bm->tracking = false;
}

/*
 * Source side pause and resume: the checkpoint code's own path, which
 * parks every vCPU thread outside the guest before the device
 * emulations are quiesced.
 */
static int
mig_bhyve_pause(void *arg)
{
	struct bhyve_mig *bm = arg;
	int error;

	if (bm->paused)
		return (0);
	mig_bhyve_throttle_stop(bm);
	vm_vcpu_pause(bm->ctx);
	error = vm_pause_devices();
	if (error != 0)
		mig_bhyve_msg(bm, "a device emulation could not be paused "
		    "(error %d)", error);
	/* blockif_pause() flushed too, but only warns when that fails. */
	else
		error = mig_storage_flush(bm->be.errmsg, sizeof(bm->be.errmsg));
	if (error != 0) {
		(void)vm_resume_devices();
		vm_vcpu_resume(bm->ctx);
		return (error);
	}
	bm->paused = true;
	return (0);
}

static int
mig_bhyve_resume(void *arg)
{
	struct bhyve_mig *bm = arg;
	int error;

	if (!bm->paused)
		return (0);
	error = vm_resume_devices();
	vm_vcpu_resume(bm->ctx);
	bm->paused = false;
	if (error != 0) {
		mig_bhyve_msg(bm, "a device emulation could not be resumed "
		    "(error %d)", error);
		return (error);
	}
	return (0);
}

/* bhyve -R: reopen the disk images the source has flushed. */
static int
mig_bhyve_before_ready(void *arg)
{
	struct bhyve_mig *bm = arg;

	return (mig_storage_reopen(bm->be.errmsg, sizeof(bm->be.errmsg)));
}

static void
mig_bhyve_sleep_ms(uint32_t ms)
{
	struct timespec ts;

	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (long)(ms % 1000) * 1000000;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/*
 * Throttle: hold the vCPUs out of the guest for pct% of each period.
 * vCPUs that are already stopped (not yet started by the guest, or
 * held by the debug server) are left alone, so that the thread never
 * starts a vCPU that was not running.
 */
static void *
mig_bhyve_throttle_thread(void *arg)
{
	struct bhyve_mig *bm = arg;
	cpuset_t stopped, held;
	uint32_t pct;
	int i;

	pthread_set_name_np(pthread_self(), "migration throttle");
	pthread_mutex_lock(&bm->thr_mtx);
	for (;;) {
		while (!bm->thr_exit && bm->thr_pct == 0)
			pthread_cond_wait(&bm->thr_cv, &bm->thr_mtx);
		if (bm->thr_exit)
			break;
		pct = bm->thr_pct;
		bm->thr_cycling = true;
		pthread_mutex_unlock(&bm->thr_mtx);

		CPU_ZERO(&held);
		CPU_ZERO(&stopped);
		if (vm_debug_cpus(bm->ctx, &stopped) == 0) {
			for (i = 0; i < guest_ncpus; i++) {
				if (CPU_ISSET(i, &stopped))
					continue;
				if (vm_suspend_cpu(fbsdrun_vcpu(i)) == 0)
					CPU_SET(i, &held);
			}
		}
		mig_bhyve_sleep_ms(MIG_BHYVE_THROTTLE_PERIOD_MS * pct / 100);
		for (i = 0; i < guest_ncpus; i++) {
			if (CPU_ISSET(i, &held))
				(void)vm_resume_cpu(fbsdrun_vcpu(i));
		}

		pthread_mutex_lock(&bm->thr_mtx);
		bm->thr_cycling = false;
		pthread_cond_broadcast(&bm->thr_idle_cv);
		pthread_mutex_unlock(&bm->thr_mtx);
		mig_bhyve_sleep_ms(MIG_BHYVE_THROTTLE_PERIOD_MS *
		    (100 - pct) / 100);
		pthread_mutex_lock(&bm->thr_mtx);
	}
	pthread_mutex_unlock(&bm->thr_mtx);
	return (NULL);
}

static int
mig_bhyve_throttle(void *arg, uint32_t percent)
{
	struct bhyve_mig *bm = arg;
	int error;

	if (percent > MIG_BHYVE_THROTTLE_MAX)
		percent = MIG_BHYVE_THROTTLE_MAX;
	pthread_mutex_lock(&bm->thr_mtx);
	if (percent > 0 && bm->paused) {
		/* A paused guest needs no throttle. */
		pthread_mutex_unlock(&bm->thr_mtx);
		return (0);
	}
	if (percent > 0 && !bm->thr_started) {
		error = pthread_create(&bm->thr, NULL,
		    mig_bhyve_throttle_thread, bm);
		if (error != 0) {
			pthread_mutex_unlock(&bm->thr_mtx);
			mig_bhyve_msg(bm, "cannot start the vCPU throttle "
			    "thread: %s", strerror(error));
			return (error);
		}
		bm->thr_started = true;
	}
	bm->thr_pct = percent;
	pthread_cond_broadcast(&bm->thr_cv);
	pthread_mutex_unlock(&bm->thr_mtx);
	return (0);
}

/* Lift the throttle and wait until the thread holds no vCPU. */
static void
mig_bhyve_throttle_stop(struct bhyve_mig *bm)
{

	pthread_mutex_lock(&bm->thr_mtx);
	bm->thr_pct = 0;
	while (bm->thr_cycling)
		pthread_cond_wait(&bm->thr_idle_cv, &bm->thr_mtx);
	pthread_mutex_unlock(&bm->thr_mtx);
}

static int
mig_bhyve_snapshot(struct bhyve_sect *s, struct vmctx *ctx, void *buf,
    size_t len, enum vm_snapshot_op op, size_t *used)
{
	struct vm_snapshot_meta *meta;
	int error;

	meta = &(struct vm_snapshot_meta) {
		.dev_name = s->name,
		.dev_req = s->req,
		.dev_data = s->pdi,
		.buffer.buf_start = buf,
		.buffer.buf_size = len,
		.buffer.buf = buf,
		.buffer.buf_rem = len,
		.op = op,
	};
	switch (s->kind) {
	case SECT_PCI:
		error = pci_snapshot(meta);
		break;
#ifdef __amd64__
	case SECT_ATKBDC:
		error = atkbdc_snapshot(meta);
		break;
#endif
	case SECT_KERN:
		error = vm_snapshot_req(ctx, meta) == 0 ? 0 : errno;
		break;
	default:
		error = EINVAL;
		break;
	}
	*used = len - meta->buffer.buf_rem;
	return (error);
}

static int
mig_bhyve_state_save(void *arg, uint32_t idx, void **bufp, size_t *lenp)
{
	struct bhyve_mig *bm = arg;
	struct bhyve_sect *s;
	size_t len, used;
	void *buf, *p;
	int error;

	if (idx >= bm->nsects)
		return (EINVAL);
	s = &bm->sects[idx];
	for (len = MIG_BHYVE_STATE_BUF;; len *= 2) {
		buf = malloc(len);
		if (buf == NULL) {
			mig_bhyve_msg(bm, "out of memory saving %s", s->name);
			return (ENOMEM);
		}
		error = mig_bhyve_snapshot(s, bm->ctx, buf, len,
		    VM_SNAPSHOT_SAVE, &used);
		if (error == 0)
			break;
		free(buf);
		if ((error != E2BIG && error != ENOSPC) ||
		    len >= MIG_SECTION_MAX) {
			mig_bhyve_msg(bm, "cannot save the state of %s: %s",
			    s->name, strerror(error));
			return (error);
		}
	}
	if (used == 0) {
		/* Keep a valid pointer for an empty section. */
		used = 1;
		*(uint8_t *)buf = 0;
	}
	p = realloc(buf, used);
	*bufp = p != NULL ? p : buf;
	*lenp = used;
	return (0);
}

static int
mig_bhyve_state_restore(void *arg, uint32_t idx, const void *buf,
    size_t len)
{
	struct bhyve_mig *bm = arg;
	struct bhyve_sect *s;
	size_t used;
	void *copy;
	int error;

	if (idx >= bm->nsects)
		return (EINVAL);
	s = &bm->sects[idx];
	if (len == 0) {
		mig_bhyve_msg(bm, "the source sent no state for %s", s->name);
		return (EINVAL);
	}
	/* The snapshot callbacks take a writable buffer. */
	copy = malloc(len);
	if (copy == NULL) {
		mig_bhyve_msg(bm, "out of memory restoring %s", s->name);
		return (ENOMEM);
	}
	memcpy(copy, buf, len);
	error = mig_bhyve_snapshot(s, bm->ctx, copy, len,
	    VM_SNAPSHOT_RESTORE, &used);
	free(copy);
	if (error != 0) {
		mig_bhyve_msg(bm, "cannot restore the state of %s: %s",
		    s->name, strerror(error));
		return (error);
	}
	return (0);
}

static void
mig_bhyve_progress(void *arg, const struct mig_progress *p)
{
	struct bhyve_mig *bm = arg;

	if (bm->progress_cb != NULL)
		bm->progress_cb(bm->progress_arg, p);
}

static const struct mig_backend_ops mig_bhyve_ops = {
	.vminfo = mig_bhyve_vminfo,
	.dirty_start = mig_bhyve_dirty_start,
	.dirty_collect = mig_bhyve_dirty_collect,
	.populated = mig_bhyve_populated,
	.dirty_stop = mig_bhyve_dirty_stop,
	.devlog_collect = mig_bhyve_devlog_collect,
	.pause = mig_bhyve_pause,
	.resume = mig_bhyve_resume,
	.before_ready = mig_bhyve_before_ready,
	.throttle = mig_bhyve_throttle,
	.state_save = mig_bhyve_state_save,
	.state_restore = mig_bhyve_state_restore,
	.disk_start = mig_bhyve_disk_start,
	.disk_collect = mig_bhyve_disk_collect,
	.disk_allocated = mig_bhyve_disk_allocated,
	.disk_read = mig_bhyve_disk_read,
	.disk_stop = mig_bhyve_disk_stop,
	.disk_recv_begin = mig_bhyve_disk_recv_begin,
	.disk_write = mig_bhyve_disk_write,
	.disk_zero = mig_bhyve_disk_zero,
	.disk_recv_done = mig_bhyve_disk_recv_done,
	.progress = mig_bhyve_progress,
};

struct mig_backend *
mig_bhyve_backend_create(struct vmctx *ctx, mig_bhyve_progress_cb *cb,
    void *cbarg)
{
	struct bhyve_mig *bm;

	bm = calloc(1, sizeof(*bm));
	if (bm == NULL)
		return (NULL);
	bm->ctx = ctx;
	bm->progress_cb = cb;
	bm->progress_arg = cbarg;
	bm->page_size = PAGE_SIZE;
	pthread_mutex_init(&bm->thr_mtx, NULL);
	pthread_cond_init(&bm->thr_cv, NULL);
	pthread_cond_init(&bm->thr_idle_cv, NULL);
	bm->be.ops = &mig_bhyve_ops;
	bm->be.arg = bm;
	return (&bm->be);
}

void
mig_bhyve_backend_destroy(struct mig_backend *be)
{
	struct bhyve_mig *bm;

	if (be == NULL)
		return;
	bm = be->arg;
	pthread_mutex_lock(&bm->thr_mtx);
	bm->thr_exit = true;
	bm->thr_pct = 0;
	pthread_cond_broadcast(&bm->thr_cv);
	pthread_mutex_unlock(&bm->thr_mtx);
	if (bm->thr_started)
		pthread_join(bm->thr, NULL);
	mig_bhyve_dirty_stop(bm);
	pthread_cond_destroy(&bm->thr_idle_cv);
	pthread_cond_destroy(&bm->thr_cv);
	pthread_mutex_destroy(&bm->thr_mtx);
	free(bm);
}

/*
 * The restore path shared by "bhyve -r" and "bhyve -R".  The vCPUs
 * were started suspended by bhyve_start_vcpu(), so only the device
 * emulations need quiescing while state is loaded.  The callers report
 * failures in their own words.
 */
int
bhyve_restore_begin(void)
{

	return (vm_pause_devices());
}

int
bhyve_restore_end(void)
{

	return (vm_resume_devices());
}

void
bhyve_restore_start(struct vmctx *ctx, int ncpus)
{
	int vcpuid;

	if (vm_restore_time(ctx) < 0)
		err(EX_OSERR, "Unable to restore time");
	for (vcpuid = 0; vcpuid < ncpus; vcpuid++)
		vm_resume_cpu(fbsdrun_vcpu(vcpuid));
}
