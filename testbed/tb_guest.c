/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The test guest's memory and vCPUs.  Each vCPU owns an equal share of
 * the guest's pages (all segments in gpa order) and loops over the first
 * "loop" of them, adding one to byte 0 of each page in turn.  Its
 * position in that loop is its register state.  Pausing stops every
 * vCPU between two iterations, so memory, registers and the counter
 * device always agree at a pause.
 */

#include <sys/mman.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tb_dirty.h"
#include "tb_guest.h"
#include "tb_pattern.h"

#define	NSEC		1000000000ull
#define	THROTTLE_PERIOD	(10 * 1000000ull)	/* ns; one run/sleep cycle */
#define	CHECK_EVERY	64	/* iterations between clock checks */
#define	FILL_MAX_THREADS 8

struct tb_vcpu {
	struct tb_guest	*g;
	uint32_t	id;
	pthread_t	thread;
	uint64_t	first;		/* region, in guest pages */
	uint64_t	npages;
	uint64_t	loop;		/* pages looped over, from first */
	/* Written by the vCPU as it runs; read by others. */
	_Atomic uint64_t position;
	_Atomic uint64_t pass;
	_Atomic uint64_t iterations;
};

struct tb_guest {
	struct tb_guest_config cfg;
	uint8_t		*mem;
	uint8_t		*alias;		/* tb-dma's mapping of mem */
	uint64_t	npages;
	uint64_t	seg_pages;
	struct tb_dirty	*dirty;
	struct tb_dma	*dma;
	struct tb_disk	*disk;
	uint8_t		*blob;
	_Atomic uint64_t counter;	/* the tb-counter device */

	pthread_mutex_t	mtx;
	pthread_cond_t	cv_run;		/* vCPUs wait here */
	pthread_cond_t	cv_held;	/* the pauser waits here */
	_Atomic int	hold;		/* vCPUs must stop */
	_Atomic int	stop;		/* vCPUs must exit */
	_Atomic uint32_t throttle;	/* percent */
	bool		paused;
	uint32_t	nheld;
	uint32_t	nthreads;
	struct tb_vcpu	*vcpus;
};

/* Rate limit and throttle bookkeeping of one vCPU thread. */
struct pace {
	uint64_t	t0;		/* rate clock start */
	uint64_t	done;		/* iterations since t0 */
	uint64_t	run_start;	/* throttle: current run started */
};

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((uint64_t)ts.tv_sec * NSEC + (uint64_t)ts.tv_nsec);
}

static void
pace_reset(struct pace *pc)
{

	pc->t0 = pc->run_start = now_ns();
	pc->done = 0;
}

/* Sleep until deadline (ns), waking early if the vCPU must stop. */
static void
vcpu_sleep(struct tb_guest *g, uint64_t deadline)
{
	struct timespec ts;

	ts.tv_sec = (time_t)(deadline / NSEC);
	ts.tv_nsec = (long)(deadline % NSEC);
	pthread_mutex_lock(&g->mtx);
	while (!atomic_load(&g->hold) && !atomic_load(&g->stop) &&
	    now_ns() < deadline)
		pthread_cond_timedwait(&g->cv_run, &g->mtx, &ts);
	pthread_mutex_unlock(&g->mtx);
}

static void
pace(struct tb_vcpu *vc, struct pace *pc, uint64_t n)
{
	struct tb_guest *g = vc->g;
	uint64_t now, slept, t, due;

	pc->done += n;
	now = now_ns();
	t = atomic_load_explicit(&g->throttle, memory_order_relaxed);
	if (t > 0 && now - pc->run_start >= THROTTLE_PERIOD / 100 *
	    (100 - t)) {
		vcpu_sleep(g, now + THROTTLE_PERIOD / 100 * t);
		slept = now_ns() - now;
		/* Time spent throttled does not count towards the rate. */
		pc->t0 += slept;
		now += slept;
		pc->run_start = now;
	}
	if (vc->g->cfg.workload.rate != 0) {
		due = pc->t0 + pc->done * NSEC / g->cfg.workload.rate;
		if (due > now)
			vcpu_sleep(g, due);
	}
}

/*
 * Park between two iterations until resumed; the caller has published
 * its registers.  Returns true if the vCPU must exit.
 */
static bool
vcpu_hold(struct tb_guest *g)
{
	bool stop;

	pthread_mutex_lock(&g->mtx);
	g->nheld++;
	pthread_cond_broadcast(&g->cv_held);
	while (atomic_load(&g->hold) && !atomic_load(&g->stop))
		pthread_cond_wait(&g->cv_run, &g->mtx);
	g->nheld--;
	stop = atomic_load(&g->stop);
	pthread_mutex_unlock(&g->mtx);
	return (stop);
}

static void
vcpu_idle(struct tb_guest *g)
{

	pthread_mutex_lock(&g->mtx);
	while (!atomic_load(&g->hold) && !atomic_load(&g->stop))
		pthread_cond_wait(&g->cv_run, &g->mtx);
	pthread_mutex_unlock(&g->mtx);
}

static void *
vcpu_main(void *arg)
{
	struct tb_vcpu *vc = arg;
	struct tb_guest *g = vc->g;
	uint8_t *base = g->mem + (vc->first << TB_PAGE_SHIFT);
	uint64_t pos, pass, it, batch, n;
	struct pace pc;

	batch = CHECK_EVERY;
	if (g->cfg.workload.rate != 0 && g->cfg.workload.rate / 1000 < batch)
		batch = g->cfg.workload.rate / 1000 + 1;
	pos = pass = it = n = 0;
	pace_reset(&pc);
	for (;;) {
		if (atomic_load_explicit(&g->hold, memory_order_acquire)) {
			if (vcpu_hold(g))
				break;
			/* A restore may have moved the registers. */
			pos = atomic_load(&vc->position);
			pass = atomic_load(&vc->pass);
			it = atomic_load(&vc->iterations);
			pace_reset(&pc);
			n = 0;
		}
		if (atomic_load(&g->stop))
			break;
		if (vc->loop == 0) {
			vcpu_idle(g);
			continue;
		}
		base[pos << TB_PAGE_SHIFT]++;
		if (++pos == vc->loop) {
			pos = 0;
			pass++;
		}
		it++;
		atomic_store_explicit(&vc->position, pos, memory_order_relaxed);
		atomic_store_explicit(&vc->pass, pass, memory_order_relaxed);
		atomic_store_explicit(&vc->iterations, it,
		    memory_order_relaxed);
		if (it % TB_COUNTER_EVERY == 0)
			atomic_fetch_add_explicit(&g->counter, 1,
			    memory_order_relaxed);
		if (++n == batch) {
			pace(vc, &pc, n);
			n = 0;
		}
	}
	return (NULL);
}

struct fill_job {
	struct tb_guest	*g;
	uint64_t	first;
	uint64_t	npages;
	bool		pattern;	/* else only fault the pages in */
};

static void *
fill_main(void *arg)
{
	struct fill_job *job = arg;
	struct tb_guest *g = job->g;
	uint64_t gpa, i;
	uint8_t *page;

	/*
	 * Faulting pages in one by one costs several microseconds each on
	 * a virtualized host; populating the range in one call is faster.
	 * Older kernels lack it and fall back to faulting.
	 */
	(void)madvise(g->mem + (job->first << TB_PAGE_SHIFT),
	    job->npages << TB_PAGE_SHIFT, MADV_POPULATE_WRITE);
	if (!job->pattern)
		return (NULL);
	for (i = job->first; i < job->first + job->npages; i++) {
		page = tb_guest_page(g, i, &gpa);
		tb_pattern_page(g->cfg.seed, gpa, page);
	}
	return (NULL);
}

/*
 * Fault all of memory in, with the pattern or without (a destination,
 * like bhyve -S, backs its memory before the stream arrives; with
 * --lazy-memory, like bhyve without -S, pages fault in as they arrive
 * and what arrives as zero ranges is never touched).
 */
static void
fill_memory(struct tb_guest *g, bool pattern)
{
	struct fill_job jobs[FILL_MAX_THREADS];
	pthread_t threads[FILL_MAX_THREADS];
	bool started[FILL_MAX_THREADS];
	long ncpu;
	int i, n;

	ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	n = ncpu < 1 ? 1 : ncpu > FILL_MAX_THREADS ? FILL_MAX_THREADS :
	    (int)ncpu;
	if ((uint64_t)n > g->npages)
		n = 1;
	for (i = 0; i < n; i++) {
		jobs[i].g = g;
		jobs[i].pattern = pattern;
		jobs[i].first = g->npages * (uint64_t)i / (uint64_t)n;
		jobs[i].npages = g->npages * (uint64_t)(i + 1) / (uint64_t)n -
		    jobs[i].first;
		started[i] = i > 0 &&
		    pthread_create(&threads[i], NULL, fill_main, &jobs[i]) == 0;
	}
	/* Shares whose thread could not start are done here. */
	for (i = 0; i < n; i++)
		if (!started[i])
			fill_main(&jobs[i]);
	for (i = 0; i < n; i++)
		if (started[i])
			pthread_join(threads[i], NULL);
}

static void
stop_vcpus(struct tb_guest *g)
{
	uint32_t i;

	pthread_mutex_lock(&g->mtx);
	atomic_store(&g->stop, 1);
	pthread_cond_broadcast(&g->cv_run);
	pthread_mutex_unlock(&g->mtx);
	for (i = 0; i < g->nthreads; i++)
		pthread_join(g->vcpus[i].thread, NULL);
	g->nthreads = 0;
}

/*
 * Guest memory with a device: one memfd mapped twice, the first mapping
 * tracked, the second tb-dma's (what the tracker does not see, as DMA).
 */
static int
map_shared_memory(struct tb_guest *g, char *msg, size_t msglen)
{
	int error, fd;

	fd = memfd_create("tbvm-guest", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)g->cfg.memory) != 0) {
		error = errno;
		snprintf(msg, msglen, "cannot create %ju bytes of shared "
		    "guest memory: %s", (uintmax_t)g->cfg.memory,
		    strerror(error));
		if (fd >= 0)
			close(fd);
		return (error);
	}
	g->mem = mmap(NULL, g->cfg.memory, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_NORESERVE, fd, 0);
	g->alias = mmap(NULL, g->cfg.memory, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_NORESERVE, fd, 0);
	error = g->mem == MAP_FAILED || g->alias == MAP_FAILED ? errno : 0;
	close(fd);
	if (g->alias == MAP_FAILED)
		g->alias = NULL;
	if (error != 0)
		snprintf(msg, msglen, "cannot map shared guest memory: %s",
		    strerror(error));
	return (error);
}

int
tb_guest_create(struct tb_guest **gp, const struct tb_guest_config *cfg,
    bool fresh, char *msg, size_t msglen)
{
	struct mig_memseg segs[TB_MAX_SEGS];
	struct tb_vcpu *vc;
	struct tb_guest *g;
	uint64_t share;
	uint32_t i;
	int error;

	*gp = NULL;
	error = tb_guest_config_check(cfg, msg, msglen);
	if (error != 0)
		return (error);
	g = calloc(1, sizeof(*g));
	if (g == NULL)
		goto nomem;
	g->cfg = *cfg;
	g->npages = cfg->memory >> TB_PAGE_SHIFT;
	g->seg_pages = g->npages / cfg->nsegs;
	pthread_mutex_init(&g->mtx, NULL);
	pthread_cond_init(&g->cv_run, NULL);
	pthread_cond_init(&g->cv_held, NULL);
	atomic_store(&g->hold, 1);
	g->paused = true;
	g->blob = calloc(1, TB_BLOB_SIZE);
	g->vcpus = calloc(cfg->nvcpus, sizeof(*g->vcpus));
	if (g->blob == NULL || g->vcpus == NULL)
		goto nomem;
	if (cfg->dma.rate != 0)
		error = map_shared_memory(g, msg, msglen);
	else {
		g->mem = mmap(NULL, cfg->memory, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		error = g->mem == MAP_FAILED ? errno : 0;
		if (error != 0)
			snprintf(msg, msglen, "cannot map %ju bytes of guest "
			    "memory: %s", (uintmax_t)cfg->memory,
			    strerror(error));
	}
	if (g->mem == MAP_FAILED)
		g->mem = NULL;
	if (error != 0)
		goto fail;
	error = tb_dirty_open(&g->dirty, g->mem, cfg->memory, msg, msglen);
	if (error != 0)
		goto fail;
	if (fresh) {
		if (cfg->fill == TB_FILL_PATTERN)
			fill_memory(g, true);
		tb_pattern_blob(cfg->seed, g->blob);
	} else if (!cfg->lazy_memory)
		fill_memory(g, false);

	for (i = 0; i < cfg->nvcpus; i++) {
		vc = &g->vcpus[i];
		vc->g = g;
		vc->id = i;
		vc->first = g->npages * i / cfg->nvcpus;
		vc->npages = g->npages * (i + 1) / cfg->nvcpus - vc->first;
		switch (cfg->workload.kind) {
		case TB_WL_IDLE:
			vc->loop = 0;
			break;
		case TB_WL_FULL:
			vc->loop = vc->npages;
			break;
		case TB_WL_HOTSET:
			share = cfg->workload.hot_bytes / cfg->nvcpus /
			    TB_PAGE_SIZE;
			vc->loop = share < vc->npages ? share : vc->npages;
			break;
		}
	}
	if (cfg->dma.rate != 0) {
		for (i = 0; i < cfg->nsegs; i++)
			tb_guest_seg(g, i, &segs[i].gpa, &segs[i].len,
			    &segs[i].host);
		error = tb_dma_create(&g->dma, &cfg->dma, g->mem, g->alias,
		    g->npages, segs, cfg->nsegs, msg, msglen);
		if (error != 0)
			goto fail;
	}
	if (cfg->disk.size != 0 && (error = tb_disk_create(&g->disk,
	    &cfg->disk, cfg->seed, fresh, msg, msglen)) != 0)
		goto fail;
	for (i = 0; i < cfg->nvcpus; i++) {
		error = pthread_create(&g->vcpus[i].thread, NULL, vcpu_main,
		    &g->vcpus[i]);
		if (error != 0) {
			snprintf(msg, msglen, "cannot start vCPU %u: %s", i,
			    strerror(error));
			goto fail;
		}
		g->nthreads++;
	}
	*gp = g;
	return (0);

nomem:
	error = ENOMEM;
	snprintf(msg, msglen, "out of memory");
fail:
	tb_guest_destroy(g);
	return (error);
}

void
tb_guest_destroy(struct tb_guest *g)
{

	if (g == NULL)
		return;
	stop_vcpus(g);
	tb_disk_destroy(g->disk);
	tb_dma_destroy(g->dma);
	tb_dirty_close(g->dirty);
	if (g->mem != NULL)
		munmap(g->mem, g->cfg.memory);
	if (g->alias != NULL)
		munmap(g->alias, g->cfg.memory);
	pthread_cond_destroy(&g->cv_held);
	pthread_cond_destroy(&g->cv_run);
	pthread_mutex_destroy(&g->mtx);
	free(g->vcpus);
	free(g->blob);
	free(g);
}

const struct tb_guest_config *
tb_guest_config(const struct tb_guest *g)
{

	return (&g->cfg);
}

uint32_t
tb_guest_nsegs(const struct tb_guest *g)
{

	return (g->cfg.nsegs);
}

void
tb_guest_seg(const struct tb_guest *g, uint32_t seg, uint64_t *gpa,
    uint64_t *len, uint8_t **host)
{

	*gpa = seg * TB_SEG_STRIDE;
	*len = g->seg_pages << TB_PAGE_SHIFT;
	*host = g->mem + ((seg * g->seg_pages) << TB_PAGE_SHIFT);
}

struct tb_dirty *
tb_guest_dirty(const struct tb_guest *g)
{

	return (g->dirty);
}

struct tb_dma *
tb_guest_dma(const struct tb_guest *g)
{

	return (g->dma);
}

struct tb_disk *
tb_guest_disk(const struct tb_guest *g)
{

	return (g->disk);
}

uint8_t *
tb_guest_page(const struct tb_guest *g, uint64_t idx, uint64_t *gpa)
{

	*gpa = idx / g->seg_pages * TB_SEG_STRIDE +
	    ((idx % g->seg_pages) << TB_PAGE_SHIFT);
	return (g->mem + (idx << TB_PAGE_SHIFT));
}

int
tb_guest_pause(struct tb_guest *g)
{
	int error;

	error = 0;
	pthread_mutex_lock(&g->mtx);
	if (!g->paused) {
		atomic_store(&g->hold, 1);
		pthread_cond_broadcast(&g->cv_run);
		while (g->nheld < g->nthreads)
			pthread_cond_wait(&g->cv_held, &g->mtx);
		g->paused = true;
		/* Devices after vCPUs, as bhyve's vm_pause_devices(). */
		if (g->dma != NULL)
			tb_dma_pause(g->dma);
		if (g->disk != NULL)
			error = tb_disk_pause(g->disk);
	}
	pthread_mutex_unlock(&g->mtx);
	return (error);
}

int
tb_guest_resume(struct tb_guest *g)
{

	pthread_mutex_lock(&g->mtx);
	if (g->paused && g->dma != NULL)
		tb_dma_resume(g->dma);
	if (g->paused && g->disk != NULL)
		tb_disk_resume(g->disk);
	g->paused = false;
	atomic_store(&g->hold, 0);
	pthread_cond_broadcast(&g->cv_run);
	pthread_mutex_unlock(&g->mtx);
	return (0);
}

bool
tb_guest_is_running(const struct tb_guest *g)
{

	return (!atomic_load(&g->hold));
}

int
tb_guest_throttle(struct tb_guest *g, uint32_t percent)
{

	if (percent >= 100)
		return (EINVAL);
	atomic_store(&g->throttle, percent);
	return (0);
}

uint64_t
tb_guest_iterations(const struct tb_guest *g)
{
	uint64_t sum;
	uint32_t i;

	sum = 0;
	for (i = 0; i < g->cfg.nvcpus; i++)
		sum += atomic_load_explicit(&g->vcpus[i].iterations,
		    memory_order_relaxed);
	return (sum);
}

void
tb_guest_get_regs(const struct tb_guest *g, uint32_t vcpu,
    struct tb_vcpu_regs *r)
{
	struct tb_vcpu *vc = &g->vcpus[vcpu];

	r->position = atomic_load(&vc->position);
	r->pass = atomic_load(&vc->pass);
	r->iterations = atomic_load(&vc->iterations);
}

void
tb_guest_set_regs(struct tb_guest *g, uint32_t vcpu,
    const struct tb_vcpu_regs *r)
{
	struct tb_vcpu *vc = &g->vcpus[vcpu];

	atomic_store(&vc->position, r->position);
	atomic_store(&vc->pass, r->pass);
	atomic_store(&vc->iterations, r->iterations);
}

void
tb_guest_region(const struct tb_guest *g, uint32_t vcpu, uint64_t *first,
    uint64_t *npages, uint64_t *loop)
{
	const struct tb_vcpu *vc = &g->vcpus[vcpu];

	*first = vc->first;
	*npages = vc->npages;
	*loop = vc->loop;
}

uint64_t
tb_guest_counter(const struct tb_guest *g)
{

	return (atomic_load(&g->counter));
}

void
tb_guest_set_counter(struct tb_guest *g, uint64_t v)
{

	atomic_store(&g->counter, v);
}

uint8_t *
tb_guest_blob(struct tb_guest *g)
{

	return (g->blob);
}
