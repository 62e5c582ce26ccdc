/*	SPDX-License-Identifier: BSD-2-Clause	*/

/*
 * balloon.kmod: the Xen memory balloon driver for NetBSD domUs.
 *
 * This file is the kernel side: the module entry point, the worker
 * thread, the xenstore watch on memory/target, the hw.balloon sysctl
 * tree, and one small wrapper per kernel service the Rust core uses
 * (glue.h). It holds no policy: every decision is the core's.
 *
 * Locking. sc_lock (adaptive, IPL_NONE) protects the core's control
 * half (targets, knobs, limits, bookkeeping, figures, state, log budget,
 * counters) and the softc's flags. It is only ever held for short
 * critical sections: no hypercall, scrub, page allocation or plug runs
 * under it. The xenwatch thread (watch callback), a process doing sysctl
 * (which holds sysctl_treelock, as the writer for a write, while its
 * handler waits: kern_sysctl.c 1.257) and modload/modunload call the
 * balloon_rs_* entries with it held.
 *
 * A step is carried out by one thread at a time: the worker thread, or
 * unload's release while the worker is parked (sc_hold; the worker says
 * it is between steps with sc_stepping false). balloon_rs_step and
 * balloon_rs_release are called WITHOUT sc_lock; the core takes it
 * (balloon_shim_core_lock) to snapshot the target and knobs and decide
 * the step, and again to publish its result. So the single xenwatch
 * thread, which also serves the kernel's shutdown and device watches
 * (xenbus_xs.c xenwatch_thread), and sysctl never wait for a batch of
 * scrubs, a hypercall or a 128 MiB plug. A target or knob that arrives
 * during a step sets sc_kicked, so the worker asks the core again before
 * it sleeps.
 */

#include "balloon_kernel.h"
#include "balloon_shim.h"

MODULE(MODULE_CLASS_DRIVER, balloon, NULL);

#define BALLOON_XNAME		"balloon0"
/* Longest sleep the worker takes in one wait; it re-asks the core after. */
#define BALLOON_MAX_WAIT_MS	60000
/* Bytes of hw.balloon.state, NUL included. */
#define BALLOON_STATE_LEN	128
/* Longest wait for the xenwatch thread to deliver the barrier event. */
#define BALLOON_BARRIER_WAIT_MS	30000
/* modload gives up waiting for the PoD balloon-down after this long
 * without progress: Linux's balloon_boot_timeout (180 s), after which
 * Linux panics and this module carries on. */
#define BALLOON_POD_STALL_MS	180000
#define BALLOON_POD_POLL_MS	100

struct balloon_softc {
	kmutex_t		 sc_lock;
	kcondvar_t		 sc_cv;		/* worker waits; callbacks drain */
	lwp_t			*sc_worker;
	bool			 sc_dying;	/* worker must exit */
	bool			 sc_stepping;	/* the worker is inside a step */
	bool			 sc_hold;	/* unload steps: worker parks */
	bool			 sc_kicked;	/* target or knob changed */
	bool			 sc_watching;	/* watch callbacks may act */
	bool			 sc_watch_registered; /* sc_watch is on xenbus's list */
	/* See balloon_watch_barrier(). */
	struct xenbus_watch	 sc_barrier[2];
	unsigned int		 sc_barrier_cur; /* the one in use */
	bool			 sc_barrier_pending; /* registered, not done */
	bool			 sc_barrier_done; /* its first event came */
	bool			 sc_resync;	/* next event: re-registration's */
	unsigned int		 sc_callbacks;	/* watch callbacks running */
	struct balloon_rs	*sc_rs;
	struct sysctllog	*sc_sysctllog;
	struct xenbus_watch	 sc_watch;
	enum balloon_guest_mode	 sc_mode;
};

/*
 * One instance, static: a watch callback that is already running when
 * the watch is unregistered still finds valid memory (see
 * balloon_watch_stop()).
 */
static struct balloon_softc balloon_softc;

static char balloon_watch_node[] = "memory/target";

/* --- the core's lock (glue.h) --- */

void
balloon_shim_core_lock(void)
{

	mutex_enter(&balloon_softc.sc_lock);
}

void
balloon_shim_core_unlock(void)
{

	mutex_exit(&balloon_softc.sc_lock);
}

/*
 * Wakes the worker: a target or knob changed. Called with sc_lock held.
 * sc_kicked makes a worker that is inside a step ask the core again
 * before it sleeps.
 */
static void
balloon_kick(struct balloon_softc *sc)
{

	sc->sc_kicked = true;
	cv_broadcast(&sc->sc_cv);
}

/* --- kernel services for the core (glue.h) --- */

/*
 * The core's heap.  KM_NOSLEEP: the worker calls in with sc_lock held, and
 * KM_SLEEP never returns NULL (subr_kmem.c 1.77 kmem_alloc asserts it); a
 * request it cannot meet sleeps instead, for requests over the kmem caches
 * in uvm_km_kmem_alloc's loop on uvm_wait("plpg") (uvm_km.c 1.135), with the
 * lock held and every watch and sysctl of hw.balloon behind it.  With
 * KM_NOSLEEP a shortage is a NULL, which the core takes as ENOMEM: it
 * allocates only fallibly, at attach and when a plug grows its bitmap.
 */
void *
balloon_shim_kmem_alloc(size_t size)
{

	return kmem_alloc(size, KM_NOSLEEP);
}

void
balloon_shim_kmem_free(void *p, size_t size)
{

	kmem_free(p, size);
}

void
balloon_shim_panic(const char *msg, size_t len)
{

	panic("%s: %.*s", BALLOON_XNAME, (int)len, msg);
}

void
balloon_shim_log(const char *msg, size_t len)
{

	printf("%s: %.*s\n", BALLOON_XNAME, (int)len, msg);
}

void
balloon_shim_meminfo(struct balloon_meminfo *mi)
{

	mi->free_pages = (uint64_t)uvm_availmem(false);
	mi->freetarg_pages = (uint64_t)MAX(uvmexp.freetarg, 0);
	mi->managed_pages = (uint64_t)MAX(uvmexp.npages, 0);
}

/*
 * Pages from [lo_pfn, hi_pfn) first: uvm_pglistalloc(9) claims them by
 * range, all or nothing and without sleeping, so ask for what is wanted
 * and halve on failure. The rest comes from uvm_pagealloc(9).
 */
size_t
balloon_shim_pages_alloc(uint64_t *pfns, size_t n, uint64_t lo_pfn,
    uint64_t hi_pfn)
{
	struct pglist list;
	struct vm_page *pg;
	size_t got = 0, want;

	want = n;
	while (hi_pfn > lo_pfn && want > 0 && got < n) {
		want = MIN(want, n - got);
		TAILQ_INIT(&list);
		if (uvm_pglistalloc(ptoa((psize_t)want), ptoa(lo_pfn),
		    ptoa(hi_pfn), PAGE_SIZE, 0, &list, (int)want, 0) != 0) {
			want /= 2;
			continue;
		}
		while ((pg = TAILQ_FIRST(&list)) != NULL) {
			TAILQ_REMOVE(&list, pg, pageq.queue);
			pfns[got++] = atop(VM_PAGE_TO_PHYS(pg));
		}
	}
	while (got < n) {
		pg = uvm_pagealloc(NULL, 0, NULL, 0);
		if (pg == NULL)
			break;
		pfns[got++] = atop(VM_PAGE_TO_PHYS(pg));
	}
	return got;
}

/*
 * uvm_pglistalloc(9) with an alignment above PAGE_SIZE takes its
 * contiguous path (uvm_pglist.c 1.90): one run of free pages in one
 * segment, aligned, or ENOMEM; waitok 0 never sleeps. Each call pauses
 * every CPU's free-page cache (uvm_pgflcache.c 1.6), so the driver asks
 * for large runs and rarely.
 */
int
balloon_shim_pages_alloc_run(uint64_t npages, uint64_t align_pages,
    uint64_t lo_pfn, uint64_t hi_pfn, uint64_t *first)
{
	struct pglist list;
	struct vm_page *pg;
	uint64_t pfn, next;
	int error;

	/* uvm_pglistalloc counts pages in an int. */
	if (npages == 0 || npages > ((uint64_t)1 << 30) || hi_pfn <= lo_pfn)
		return EINVAL;
	TAILQ_INIT(&list);
	error = uvm_pglistalloc(ptoa((psize_t)npages), ptoa(lo_pfn),
	    ptoa(hi_pfn), ptoa((psize_t)align_pages), 0, &list, 1, 0);
	if (error != 0)
		return error;
	next = 0;
	*first = UINT64_MAX;
	while ((pg = TAILQ_FIRST(&list)) != NULL) {
		TAILQ_REMOVE(&list, pg, pageq.queue);
		pfn = atop(VM_PAGE_TO_PHYS(pg));
		if (*first == UINT64_MAX)
			*first = pfn;
		else if (pfn != next)
			panic("%s: uvm_pglistalloc run not contiguous at %#llx",
			    BALLOON_XNAME, (unsigned long long)pfn);
		next = pfn + 1;
	}
	return 0;
}

void
balloon_shim_pages_free_run(uint64_t pfn, uint64_t n)
{
	struct vm_page *pg;
	uint64_t i;

	for (i = 0; i < n; i++) {
		pg = PHYS_TO_VM_PAGE(ptoa(pfn + i));
		if (pg == NULL)
			panic("%s: no vm_page for frame %#llx", BALLOON_XNAME,
			    (unsigned long long)(pfn + i));
		uvm_pagefree(pg);
	}
}

void
balloon_shim_pages_free(const uint64_t *pfns, size_t n)
{
	struct vm_page *pg;
	size_t i;

	for (i = 0; i < n; i++) {
		pg = PHYS_TO_VM_PAGE(ptoa(pfns[i]));
		if (pg == NULL)
			panic("%s: no vm_page for frame %#llx", BALLOON_XNAME,
			    (unsigned long long)pfns[i]);
		uvm_pagefree(pg);
	}
}

/*
 * The amd64 direct map of a PVH/HVM kernel: the addresses of the
 * kernel's pmap_direct_base and pmap_direct_end (vaddr_t globals of
 * x86/pmap.c 1.414, declared in x86/pmap.h 1.134 under __HAVE_DIRECT_MAP
 * with PMAP_DIRECT_MAP(pa) = pmap_direct_base + pa), or NULL. A module is
 * not built with _KERNEL_OPT, so it never sees __HAVE_DIRECT_MAP
 * (amd64/types.h 1.71: x86_64 without XENPV, KASAN or KMSAN); they are
 * looked up by name at load (balloon_dmap_probe()) and are absent from a
 * kernel without a direct map. pmap_init_directmap (pmap.c 1.414) maps
 * [0, lastpa) of physical memory once at boot and sets pmap_direct_end =
 * pmap_direct_base + lastpa; the assisted kernel's pmap_growdirectmap
 * raises it (docs/kernel-growth.md 5.1), so it is read at every use.
 */
static struct {
	volatile const vaddr_t	*base;
	volatile const vaddr_t	*end;
} balloon_dmap;

static void
balloon_dmap_probe(bool pvh)
{
	unsigned long base, end;

	balloon_dmap.base = NULL;
	balloon_dmap.end = NULL;
	if (!pvh)
		return;
	if (ksyms_getval("netbsd", "pmap_direct_base", &base,
	    KSYMS_EXTERN) != 0 ||
	    ksyms_getval("netbsd", "pmap_direct_end", &end,
	    KSYMS_EXTERN) != 0)
		return;
	balloon_dmap.base = (volatile const vaddr_t *)base;
	balloon_dmap.end = (volatile const vaddr_t *)end;
}

/*
 * Zeroes frames [pfn, pfn + n) with one memset through the direct map,
 * as pmap_zero_page() zeroes one (pmap.c 1.414: memset of
 * PMAP_DIRECT_MAP(pa)), when the kernel has a direct map and the whole
 * run lies below pmap_direct_end (a write past it faults). False when it
 * did not.
 */
static bool
balloon_dmap_zero(uint64_t pfn, size_t n)
{
	vaddr_t base, end;
	uint64_t frames;

	if (balloon_dmap.base == NULL)
		return false;
	base = *balloon_dmap.base;
	end = *balloon_dmap.end;
	if (end <= base)
		return false;
	frames = atop(end - base);
	if (pfn > frames || n > frames - pfn)
		return false;
	memset((void *)(base + ptoa(pfn)), 0, (size_t)ptoa(n));
	return true;
}

/*
 * Zeroes pages the driver owns. A XENPV kernel's pmap_zero_page() is one
 * MMUEXT_CLEAR_PAGE hypercall per page (x86/pmap.c 1.414, xen_pagezero
 * in x86_xpmap.c), and Xen's do_mmuext_op takes an array of operations
 * (xen/arch/x86/mm.c @009360ac): a PV guest has Xen clear up to
 * BALLOON_CLEAR_BATCH pages per hypercall instead. A PVH/HVM kernel's
 * pmap_zero_page() is a memset of one page through the direct map
 * (pmap.c 1.414): with the direct map found, each run of consecutive
 * frames (a 2 MiB extent is 512) is one memset through it instead;
 * without one (a KASAN kernel), or for a run not wholly below
 * pmap_direct_end, one pmap_zero_page() per page.
 */
#define BALLOON_CLEAR_BATCH	16	/* 384 bytes of stack */

void
balloon_shim_pages_scrub(const uint64_t *pfns, size_t n)
{
	size_t i, j;
#ifdef BALLOON_PV_P2M
	struct mmuext_op ops[BALLOON_CLEAR_BATCH];
	size_t k;
	int done;

	if (vm_guest == VM_GUEST_XENPV) {
		for (i = 0; i < n; i += k) {
			k = MIN(n - i, BALLOON_CLEAR_BATCH);
			memset(ops, 0, sizeof(ops));
			for (j = 0; j < k; j++) {
				ops[j].cmd = MMUEXT_CLEAR_PAGE;
				ops[j].arg1.mfn =
				    xpmap_phys_to_machine_mapping[pfns[i + j]];
			}
			done = 0;
			/* xen_pagezero() panics on a failed clear too. */
			if (HYPERVISOR_mmuext_op(ops, (int)k, &done,
			    DOMID_SELF) < 0)
				panic("%s: MMUEXT_CLEAR_PAGE of frame %#llx "
				    "failed", BALLOON_XNAME,
				    (unsigned long long)pfns[i + (size_t)done]);
		}
		return;
	}
#endif
	for (i = 0; i < n; i = j) {
		for (j = i + 1; j < n && pfns[j] == pfns[j - 1] + 1; j++)
			continue;
		if (balloon_dmap_zero(pfns[i], j - i))
			continue;
		for (; i < j; i++)
			pmap_zero_page(ptoa(pfns[i]));
	}
}

#ifdef BALLOON_PV_P2M
uint64_t
balloon_shim_p2m_lookup(uint64_t pfn)
{
	unsigned long mfn;

	mfn = xpmap_phys_to_machine_mapping[pfn];
	return mfn == INVALID_P2M_ENTRY ? UINT64_MAX : (uint64_t)mfn;
}

/*
 * xpq_queue_machphys_update() and xpq_flush_queue() use curcpu()'s queue
 * with no lock (x86_xpmap.c 1.84.4.2): stay on one CPU from the first
 * update to the flush, or updates are left in another CPU's queue.
 */
void
balloon_shim_p2m_set_batch(const uint64_t *pfns, const uint64_t *mfns,
    size_t n)
{
	size_t i;

	kpreempt_disable();
	for (i = 0; i < n; i++) {
		xpmap_ptom_map(ptoa(pfns[i]), ptoa(mfns[i]));
		xpq_queue_machphys_update(ptoa(mfns[i]), ptoa(pfns[i]));
	}
	xpq_flush_queue();
	kpreempt_enable();
}

void
balloon_shim_p2m_clear(uint64_t pfn)
{

	xpmap_ptom_unmap(ptoa(pfn));
}
#else	/* !BALLOON_PV_P2M */
/*
 * A module for GENERIC refuses a PV guest at load (balloon_init()), and
 * the core calls these only in PV mode: reaching one is a driver bug.
 */
static void __dead
balloon_no_p2m(const char *fn)
{

	panic("%s: %s in a build without PV support", BALLOON_XNAME, fn);
}

uint64_t
balloon_shim_p2m_lookup(uint64_t pfn)
{

	balloon_no_p2m(__func__);
}

void
balloon_shim_p2m_set_batch(const uint64_t *pfns, const uint64_t *mfns,
    size_t n)
{

	balloon_no_p2m(__func__);
}

void
balloon_shim_p2m_clear(uint64_t pfn)
{

	balloon_no_p2m(__func__);
}
#endif	/* BALLOON_PV_P2M */

static long
balloon_memory_op(unsigned int cmd, uint64_t *frames, size_t n,
    unsigned int order)
{
	struct xen_memory_reservation res;

	memset(&res, 0, sizeof(res));
	/* xen_pfn_t is unsigned long, 64 bits on amd64, like uint64_t. */
	set_xen_guest_handle(res.extent_start, (xen_pfn_t *)frames);
	res.nr_extents = n;
	res.extent_order = order;
	res.domid = DOMID_SELF;
	return HYPERVISOR_memory_op(cmd, &res);
}

long
balloon_shim_decrease_reservation(uint64_t *frames, size_t n)
{

	return balloon_memory_op(XENMEM_decrease_reservation, frames, n, 0);
}

long
balloon_shim_increase_reservation(uint64_t *mfns, size_t n)
{

	return balloon_memory_op(XENMEM_increase_reservation, mfns, n, 0);
}

long
balloon_shim_populate_physmap(uint64_t *pfns, size_t n)
{

	return balloon_memory_op(XENMEM_populate_physmap, pfns, n, 0);
}

long
balloon_shim_reservation(enum balloon_memop op, uint64_t *frames, size_t n,
    unsigned int order)
{

	switch (op) {
	case BALLOON_MEMOP_DECREASE:
		return balloon_memory_op(XENMEM_decrease_reservation, frames,
		    n, order);
	case BALLOON_MEMOP_INCREASE:
		return balloon_memory_op(XENMEM_increase_reservation, frames,
		    n, order);
	case BALLOON_MEMOP_POPULATE:
		return balloon_memory_op(XENMEM_populate_physmap, frames, n,
		    order);
	}
	return -EINVAL;
}

/*
 * The kernel growth interfaces of docs/kernel-growth.md, resolved by name
 * at load (balloon_growth_probe()); all NULL unless the whole set of the
 * mode resolved. The core asks for growth only then, so a NULL one here
 * is a driver bug, answered with ENODEV rather than a call through NULL.
 * Stock uvm_physseg_plug/unplug are never called: after uvm_page_init
 * they are unsafe on every kernel (no lock, physmem never lowered, PV
 * p2m and PVH direct map not grown; kernel-growth.md section 1).
 */
static struct {
	int	(*hotplug_add)(paddr_t, psize_t);
	int	(*hotplug_remove)(paddr_t, psize_t);
	paddr_t	(*p2m_limit)(void);
	int	(*p2m_grow)(paddr_t);
	int	(*growdirectmap)(paddr_t);
	paddr_t	(*xenmem_alloc)(u_long, u_long, bool);
	void	(*xenmem_free)(paddr_t, u_long);
} balloon_growth;

/* Segments are placed on 2 MiB boundaries (kernel-growth.md 5.2). */
#define BALLOON_SEGMENT_ALIGN	(2UL * 1024 * 1024)

int
balloon_shim_grow_reserve(uint64_t pfn, uint64_t npages, uint64_t *startp)
{
	paddr_t pa;
	u_long size;
	int error;

	*startp = pfn;
	if (balloon_growth.p2m_grow != NULL)
		return balloon_growth.p2m_grow((paddr_t)(pfn + npages));
	if (balloon_growth.xenmem_alloc == NULL ||
	    balloon_growth.growdirectmap == NULL)
		return ENODEV;
	size = (u_long)ptoa(npages);
	pa = balloon_growth.xenmem_alloc(size, BALLOON_SEGMENT_ALIGN, false);
	if (pa == 0)
		return ERANGE;
	error = balloon_growth.growdirectmap(pa + size);
	if (error != 0) {
		balloon_growth.xenmem_free(pa, size);
		return error;
	}
	*startp = atop(pa);
	return 0;
}

void
balloon_shim_grow_unreserve(uint64_t pfn, uint64_t npages)
{

	/* PV: the p2m never shrinks (kernel-growth.md 4.3). */
	if (balloon_growth.xenmem_free != NULL)
		balloon_growth.xenmem_free(ptoa(pfn), (u_long)ptoa(npages));
}

int
balloon_shim_physseg_plug(uint64_t pfn, uint64_t npages)
{

	if (balloon_growth.hotplug_add == NULL)
		return ENODEV;
	return balloon_growth.hotplug_add((paddr_t)pfn, (psize_t)npages);
}

int
balloon_shim_physseg_unplug(uint64_t pfn, uint64_t npages)
{
	int error;

	if (balloon_growth.hotplug_remove == NULL)
		return ENODEV;
	error = balloon_growth.hotplug_remove((paddr_t)pfn, (psize_t)npages);
	if (error == 0 && balloon_growth.xenmem_free != NULL)
		balloon_growth.xenmem_free(ptoa(pfn), (u_long)ptoa(npages));
	return error;
}

/* --- helpers --- */

static uint64_t
balloon_uptime_ms(void)
{
	struct timeval tv;

	getmicrouptime(&tv);
	return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

static long
balloon_reservation_op(unsigned int cmd)
{
	domid_t domid = DOMID_SELF;

	return HYPERVISOR_memory_op(cmd, &domid);
}

/*
 * Re-reads the limit targets are clamped to, as every target arrives:
 * Xen's maximum reservation, which libxl sets to memory + 1 MiB at domain
 * creation (libxl_dom.c @021cd1c4 libxl__build_pre) and which xl mem-set
 * raises to the target + 1 MiB before it writes memory/target
 * (libxl_mem.c @0241809b libxl_set_memory_target), bounded by
 * memory/static-max. The hypercall and the xenstore read run without
 * sc_lock; the core takes the figures under it.
 */
static void
balloon_limit_refresh(struct balloon_softc *sc)
{
	char smax[BALLOON_XS_VALUE_LEN];
	size_t len = 0;
	long max;

	max = balloon_reservation_op(XENMEM_maximum_reservation);
	if (max <= 0)
		return;
	/* The core reads the digits up to the NUL padding. */
	memset(smax, 0, sizeof(smax));
	if (xenbus_read(NULL, "memory", "static-max", smax,
	    sizeof(smax) - 1) == 0)
		len = sizeof(smax);
	mutex_enter(&sc->sc_lock);
	(void)balloon_rs_set_limit(sc->sc_rs, (uint64_t)max, smax, len);
	/*
	 * A new limit may move the target (the core clamps it), even when
	 * what asked for the refresh (a sysctl write) is then refused, or
	 * was only a read of hw.balloon.max: wake the worker, which asks the
	 * core what to do. Without it the driver said "deflating" and slept
	 * for good (found by the soak).
	 */
	balloon_kick(sc);
	mutex_exit(&sc->sc_lock);
}

/*
 * memory/target as it is at load, before the worker can move the
 * reservation read just before: a PVH guest's toolstack offset is fixed
 * from the two (balloon_rs_load_target()), since the module's first watch
 * event may already carry a newer target (Linux fixes target_diff at its
 * first event, drivers/xen/xen-balloon.c @06236046, which for a built-in
 * driver comes at boot).
 */
static void
balloon_load_target(struct balloon_softc *sc)
{
	char v[BALLOON_XS_VALUE_LEN];

	memset(v, 0, sizeof(v));
	if (xenbus_read(NULL, "memory", "target", v, sizeof(v) - 1) != 0)
		return;
	mutex_enter(&sc->sc_lock);
	(void)balloon_rs_load_target(sc->sc_rs, v, sizeof(v));
	mutex_exit(&sc->sc_lock);
}

/*
 * control/feature-balloon = 1 says a balloon driver runs: XAPI's squeezed
 * waits for it, and the Windows PV drivers write it when their balloon
 * starts and remove it when it stops (xenserver/win-xenbus
 * src/xenbus/fdo.c __FdoD3ToD0 / __FdoD0ToD3). xenstore may lose it across
 * a suspend and resume; xs_resume() then registers every watch again
 * (xenbus_xs.c 1.9.2.1), so the target watch fires and writes it back.
 * Returns 0 or the errno of xenbus_printf(9).
 */
static int
balloon_advertise(void)
{
	char v[4];

	memset(v, 0, sizeof(v));
	if (xenbus_read(NULL, "control", "feature-balloon", v,
	    sizeof(v) - 1) == 0 && v[0] == '1' && v[1] == '\0')
		return 0;
	return xenbus_printf(NULL, "control", "feature-balloon", "%d", 1);
}

/* What every target event refreshes: the limit and the advertisement. */
static void
balloon_toolstack_refresh(struct balloon_softc *sc)
{

	balloon_limit_refresh(sc);
	(void)balloon_advertise();
}

/* --- the worker thread --- */

static void
balloon_worker(void *arg)
{
	struct balloon_softc *sc = arg;
	enum balloon_step_status st;
	uint64_t wait_ms;
	int ticks;

	mutex_enter(&sc->sc_lock);
	while (!sc->sc_dying) {
		/* Unload is giving everything back: stay out of its way. */
		if (sc->sc_hold) {
			cv_wait(&sc->sc_cv, &sc->sc_lock);
			continue;
		}
		sc->sc_stepping = true;
		sc->sc_kicked = false;
		mutex_exit(&sc->sc_lock);
		/* The core takes sc_lock itself, around decision and result. */
		wait_ms = 0;
		st = balloon_rs_step(sc->sc_rs, balloon_uptime_ms(), &wait_ms);
		mutex_enter(&sc->sc_lock);
		sc->sc_stepping = false;
		if (sc->sc_hold)
			cv_broadcast(&sc->sc_cv);	/* balloon_fini() waits */
		/* Another batch, or a target or knob came during the step. */
		if (st == BALLOON_STEP_AGAIN || sc->sc_kicked)
			continue;
		ticks = 0;	/* 0: until woken */
		if (st == BALLOON_STEP_SLEEP) {
			wait_ms = MIN(wait_ms, BALLOON_MAX_WAIT_MS);
			/* mstohz() rounds down; 0 ticks would mean forever. */
			ticks = MAX((int)mstohz(wait_ms), 1);
		}
		(void)cv_timedwait(&sc->sc_cv, &sc->sc_lock, ticks);
	}
	mutex_exit(&sc->sc_lock);
	kthread_exit(0);
}

/* --- the xenstore watch --- */

/*
 * Bytes xenbus_read wrote into a buffer zeroed before: up to its last
 * byte that is not NUL, never past the buffer.
 */
static size_t
balloon_value_len(const char *buf, size_t size)
{
	size_t n;

	for (n = size; n > 0 && buf[n - 1] == '\0'; n--)
		continue;
	return n;
}

/*
 * Every line the callback causes is the core's, within its log budget.
 * The netbsd-10 xenbus_read (xenbus_probe.c 1.58.6.1 and
 * xbdback_xenbus.c 1.101.4.2 call it as (t, dir, node, buf, bufsz))
 * fills the caller's buffer and reports no length: the buffer is zeroed
 * first and the core is given what was written, so bytes after an
 * embedded NUL reach it and are refused, and strlen never runs off the
 * end of a buffer xenbus_read filled to the last byte.
 */
static void
balloon_watch_cb(struct xenbus_watch *w, const char **vec, unsigned int len)
{
	struct balloon_softc *sc = &balloon_softc;
	char value[BALLOON_XS_VALUE_LEN];
	size_t n;
	bool resync;
	int error;

	(void)w;
	(void)vec;
	(void)len;
	mutex_enter(&sc->sc_lock);
	if (!sc->sc_watching) {
		mutex_exit(&sc->sc_lock);
		return;
	}
	sc->sc_callbacks++;
	mutex_exit(&sc->sc_lock);

	balloon_toolstack_refresh(sc);
	memset(value, 0, sizeof(value));
	error = xenbus_read(NULL, "memory", "target", value, sizeof(value));
	n = error == 0 ? balloon_value_len(value, sizeof(value)) : 0;

	mutex_enter(&sc->sc_lock);
	resync = sc->sc_resync;
	sc->sc_resync = false;
	(void)balloon_rs_xenstore_event(sc->sc_rs, error, value, n, resync,
	    balloon_uptime_ms());
	sc->sc_callbacks--;
	/*
	 * Wakes the worker (a new target, or a log line held for later: it
	 * works out when to print it) and balloon_watch_stop().
	 */
	balloon_kick(sc);
	mutex_exit(&sc->sc_lock);
}

/*
 * Registers the watch. register_xenbus_watch() (xenbus_xs.c) takes a
 * watch off its list again when xenstored refuses it, except for EEXIST,
 * which leaves it registered; unregistering a watch that is not on the
 * list panics (KASSERT, or SLIST_REMOVE walking off the list). So the
 * softc records whether the watch is registered, and only such a watch
 * is ever unregistered.
 *
 * After a refused unload (resync) the event
 * xenstored fires for the new registration is marked, so that it does
 * not undo a target set with sysctl meanwhile.
 */
static int
balloon_watch_start(struct balloon_softc *sc, bool resync)
{
	int error;

	sc->sc_watch.node = balloon_watch_node;
	sc->sc_watch.node_sz = sizeof(balloon_watch_node);
	sc->sc_watch.xbw_callback = balloon_watch_cb;
	mutex_enter(&sc->sc_lock);
	sc->sc_watching = true;
	sc->sc_resync = resync;
	mutex_exit(&sc->sc_lock);
	error = register_xenbus_watch(&sc->sc_watch);
	if (error == 0 || error == EEXIST)
		sc->sc_watch_registered = true;
	return error;
}

/*
 * The barrier watch's callback: the first event of the barrier in use has
 * been delivered. Events of the other one (stray ones of an earlier
 * unload, queued before it was unregistered) prove nothing and are
 * ignored.
 */
static void
balloon_barrier_cb(struct xenbus_watch *w, const char **vec, unsigned int len)
{
	struct balloon_softc *sc = &balloon_softc;

	(void)vec;
	(void)len;
	mutex_enter(&sc->sc_lock);
	if (w == &sc->sc_barrier[sc->sc_barrier_cur]) {
		sc->sc_barrier_done = true;
		cv_broadcast(&sc->sc_cv);
	}
	mutex_exit(&sc->sc_lock);
}

/*
 * Waits for the barrier's first event: as long as the xenwatch thread is
 * inside a callback of ours (it will return: its xenbus_read answers or
 * fails), else up to BALLOON_BARRIER_WAIT_MS.
 */
static bool
balloon_barrier_wait(struct balloon_softc *sc)
{
	int ticks = MAX((int)mstohz(BALLOON_BARRIER_WAIT_MS), 1);
	bool done;

	mutex_enter(&sc->sc_lock);
	while (!sc->sc_barrier_done) {
		if (cv_timedwait(&sc->sc_cv, &sc->sc_lock, ticks) != 0 &&
		    sc->sc_callbacks == 0)
			break;
	}
	done = sc->sc_barrier_done;
	mutex_exit(&sc->sc_lock);
	return done;
}

/* Unregisters the barrier in use; the next one is the other watch. */
static void
balloon_barrier_retire(struct balloon_softc *sc)
{

	unregister_xenbus_watch(&sc->sc_barrier[sc->sc_barrier_cur]);
	mutex_enter(&sc->sc_lock);
	sc->sc_barrier_pending = false;
	sc->sc_barrier_cur ^= 1;
	mutex_exit(&sc->sc_lock);
}

/*
 * Waits until no callback of sc_watch can be running or about to run.
 * The xenwatch thread (xenbus_xs.c 1.22 xenwatch_thread) takes every
 * queued event off its queue and then calls the callbacks with no lock
 * held, and unregister_xenbus_watch() purges only the queue, not events
 * already taken: such a callback may not even have reached its first
 * instruction, so no flag of ours can see it. But events are delivered
 * one at a time, in order, and xenstore fires a newly registered watch
 * once. So a barrier watch is registered after sc_watch is gone, and once
 * its first event has come, every earlier callback has returned.
 *
 * Returns 0 once that is proven, or EBUSY when it cannot be: the xenwatch
 * thread did not answer in BALLOON_BARRIER_WAIT_MS (it may be blocked in
 * another driver's callback), or the barrier could not be registered.
 * The caller must then refuse to unload. A barrier that timed out stays
 * registered (pending), and the next unload first waits for it again:
 * until its first event has come, nothing later can be proven either.
 */
static int
balloon_watch_barrier(struct balloon_softc *sc)
{
	struct xenbus_watch *bw;
	int error;

	if (sc->sc_barrier_pending) {
		if (!balloon_barrier_wait(sc))
			return EBUSY;
		/*
		 * It predates the latest sc_watch registration: retire it
		 * and prove the order with a fresh one.
		 */
		balloon_barrier_retire(sc);
	}
	bw = &sc->sc_barrier[sc->sc_barrier_cur];
	bw->node = balloon_watch_node;
	bw->node_sz = sizeof(balloon_watch_node);
	bw->xbw_callback = balloon_barrier_cb;
	mutex_enter(&sc->sc_lock);
	sc->sc_barrier_done = false;
	mutex_exit(&sc->sc_lock);
	error = register_xenbus_watch(bw);
	if (error != 0 && error != EEXIST)
		return EBUSY;	/* taken off the list again: nothing to undo */
	sc->sc_barrier_pending = true;
	if (error == EEXIST) {
		/* Left registered, but no first event is promised. */
		balloon_barrier_retire(sc);
		return EBUSY;
	}
	if (!balloon_barrier_wait(sc))
		return EBUSY;
	balloon_barrier_retire(sc);
	return 0;
}

/*
 * Stops the watch and waits for callbacks that had already begun or been
 * taken for delivery (balloon_watch_barrier()); sc_watching turns late
 * ones into no-ops. Returns 0, or EBUSY when a callback may still be
 * pending.
 */
static int
balloon_watch_stop(struct balloon_softc *sc)
{
	int error = 0;

	mutex_enter(&sc->sc_lock);
	sc->sc_watching = false;
	mutex_exit(&sc->sc_lock);
	if (sc->sc_watch_registered) {
		unregister_xenbus_watch(&sc->sc_watch);
		sc->sc_watch_registered = false;
		error = balloon_watch_barrier(sc);
	} else if (sc->sc_barrier_pending)
		error = balloon_watch_barrier(sc);
	if (error != 0)
		return error;
	mutex_enter(&sc->sc_lock);
	while (sc->sc_callbacks > 0)
		cv_wait(&sc->sc_cv, &sc->sc_lock);
	mutex_exit(&sc->sc_lock);
	return 0;
}

/* --- sysctl hw.balloon --- */

enum balloon_node_kind {
	BALLOON_NODE_QUAD,
	BALLOON_NODE_BOOL,
	BALLOON_NODE_TEXT
};

/*
 * One sysctl node. Its sysctl_data points at its entry here, so the one
 * handler of each kind knows which value to read and write.
 */
struct balloon_node {
	const char		*bn_name;
	enum balloon_node_kind	 bn_kind;
	int			 bn_value;	/* balloon_value or _text */
	bool			 bn_writable;
	const char		*bn_desc;
};

#define	BN_QUAD_RO(n, v, d)	{ n, BALLOON_NODE_QUAD, v, false, d }
#define	BN_QUAD_RW(n, v, d)	{ n, BALLOON_NODE_QUAD, v, true, d }
#define	BN_BOOL_RW(n, v, d)	{ n, BALLOON_NODE_BOOL, v, true, d }
#define	BN_TEXT(n, v, d)	{ n, BALLOON_NODE_TEXT, v, false, d }

/* hw.balloon.*: values in KiB unless the name says otherwise. */
static const struct balloon_node balloon_nodes[] = {
	BN_QUAD_RO("current", BALLOON_V_CURRENT_KIB,
	    "Memory the domain holds now (KiB)"),
	BN_QUAD_RW("target", BALLOON_V_TARGET_KIB,
	    "Memory the driver steers to (KiB); a later xenstore "
	    "memory/target wins"),
	BN_QUAD_RW("min", BALLOON_V_MIN_KIB,
	    "Floor the domain never shrinks below (KiB); cannot be set "
	    "under the safe floor"),
	BN_QUAD_RO("max", BALLOON_V_MAX_KIB,
	    "Most memory a target may ask for (KiB): Xen's maximum "
	    "reservation and memory/static-max, re-read with every target"),
	BN_QUAD_RW("batch", BALLOON_V_BATCH,
	    "Most frames per step, one hypercall; a 2 MiB extent counts "
	    "512 (1 to 65536)"),
	BN_QUAD_RW("retry_delay_max", BALLOON_V_RETRY_DELAY_MAX_MS,
	    "Longest wait between retries after a short step (ms)"),
	BN_QUAD_RW("retry_max", BALLOON_V_RETRY_MAX,
	    "Retries after a short step before giving up on a target "
	    "(the step after the last one gives up if short too); "
	    "0 retries forever"),
	BN_QUAD_RO("ballooned", BALLOON_V_BALLOONED_KIB,
	    "Memory now given back to Xen (KiB)"),
	BN_QUAD_RO("plugged", BALLOON_V_PLUGGED_KIB,
	    "Memory in hot-plugged segments (KiB)"),
	BN_QUAD_RO("toolstack_offset", BALLOON_V_OFFSET_KIB,
	    "Memory Xen counts beyond memory/target: PVH special pages "
	    "and ACPI tables (KiB)"),
	BN_BOOL_RW("scrub", BALLOON_V_SCRUB,
	    "Zero pages before they are given to Xen"),
	BN_BOOL_RW("hotplug", BALLOON_V_HOTPLUG,
	    "Grow past boot memory with uvm_physseg_hotplug_add "
	    "(needs options UVM_HOTPLUG and the kernel growth interfaces)"),
	BN_BOOL_RW("unplug", BALLOON_V_UNPLUG,
	    "Unplug hot-plugged segments once fully ballooned"),
	BN_TEXT("state", BALLOON_T_STATE,
	    "What the driver is doing: idle, inflating, deflating, "
	    "plugging, unplugging, returning the frames of a failed plug, "
	    "waiting or cancelled, with the reason"),
};

/* hw.balloon.stats.*: counters since load; they only grow. */
static const struct balloon_node balloon_stat_nodes[] = {
	BN_QUAD_RO("pages_inflated", BALLOON_V_STAT_INFLATED_PAGES,
	    "Pages given to Xen"),
	BN_QUAD_RO("pages_deflated", BALLOON_V_STAT_DEFLATED_PAGES,
	    "Pages taken back from Xen"),
	BN_QUAD_RO("pages_scrubbed", BALLOON_V_STAT_SCRUBBED_PAGES,
	    "Pages zeroed before they were given to Xen"),
	BN_QUAD_RO("hypercalls", BALLOON_V_STAT_HYPERCALLS,
	    "Memory reservation hypercalls made"),
	BN_QUAD_RO("short_results", BALLOON_V_STAT_SHORT_RESULTS,
	    "Steps that did less than they asked"),
	BN_QUAD_RO("retries", BALLOON_V_STAT_RETRIES,
	    "Retries scheduled after short steps"),
	BN_QUAD_RO("targets_accepted", BALLOON_V_STAT_TARGETS_ACCEPTED,
	    "Targets accepted from xenstore or sysctl"),
	BN_QUAD_RO("targets_clamped", BALLOON_V_STAT_TARGETS_CLAMPED,
	    "Accepted xenstore targets clamped to the floor or maximum"),
	BN_QUAD_RO("targets_refused", BALLOON_V_STAT_TARGETS_REFUSED,
	    "Targets refused as malformed or out of range"),
	BN_QUAD_RO("targets_given_up", BALLOON_V_STAT_TARGETS_GIVEN_UP,
	    "Targets the driver gave up on"),
	BN_QUAD_RO("segments_plugged", BALLOON_V_STAT_PLUGS,
	    "Segments added with uvm_physseg_hotplug_add"),
	BN_QUAD_RO("segments_unplugged", BALLOON_V_STAT_UNPLUGS,
	    "Segments removed with uvm_physseg_hotplug_remove"),
	BN_QUAD_RO("frames_lost", BALLOON_V_STAT_FRAMES_LOST,
	    "Frames backed for a plug and never given back: always 0, "
	    "they are retried until Xen takes them"),
	BN_QUAD_RO("messages_suppressed", BALLOON_V_STAT_MESSAGES_SUPPRESSED,
	    "Kernel messages dropped by the rate limit"),
	BN_QUAD_RO("last_errno", BALLOON_V_STAT_LAST_ERRNO,
	    "errno of the last failed step; 0 when none failed"),
	BN_TEXT("last_error", BALLOON_T_LAST_ERROR,
	    "The last failed step's error and kind, or none"),
};

static int
balloon_sysctl_value(SYSCTLFN_ARGS)
{
	struct balloon_softc *sc = &balloon_softc;
	const struct balloon_node *bn = rnode->sysctl_data;
	struct sysctlnode node;
	uint64_t cur;
	int64_t quad;
	bool flag;
	int error;

	/* hw.balloon.max says the limit as it is now, not at the last target. */
	if (bn->bn_value == BALLOON_V_MAX_KIB)
		balloon_limit_refresh(sc);
	mutex_enter(&sc->sc_lock);
	error = balloon_rs_get(sc->sc_rs, bn->bn_value, &cur);
	mutex_exit(&sc->sc_lock);
	if (error != 0)
		return error;
	node = *rnode;
	if (bn->bn_kind == BALLOON_NODE_BOOL) {
		flag = cur != 0;
		node.sysctl_data = &flag;
	} else {
		quad = cur > INT64_MAX ? INT64_MAX : (int64_t)cur;
		node.sysctl_data = &quad;
	}
	error = sysctl_lookup(SYSCTLFN_CALL(&node));
	if (error != 0 || newp == NULL)
		return error;
	if (!bn->bn_writable)
		return EPERM;
	/* A target is judged against the limit as it is now. */
	if (bn->bn_value == BALLOON_V_TARGET_KIB)
		balloon_limit_refresh(sc);
	/* The core judges every value, negative ones too (and counts them). */
	mutex_enter(&sc->sc_lock);
	error = balloon_rs_set(sc->sc_rs, bn->bn_value,
	    bn->bn_kind == BALLOON_NODE_BOOL ? (flag ? 1 : 0) : quad);
	if (error == 0)
		balloon_kick(sc);
	mutex_exit(&sc->sc_lock);
	return error;
}

static int
balloon_sysctl_text(SYSCTLFN_ARGS)
{
	struct balloon_softc *sc = &balloon_softc;
	const struct balloon_node *bn = rnode->sysctl_data;
	struct sysctlnode node;
	char text[BALLOON_STATE_LEN];

	mutex_enter(&sc->sc_lock);
	(void)balloon_rs_text(sc->sc_rs, bn->bn_value, text, sizeof(text));
	mutex_exit(&sc->sc_lock);
	node = *rnode;
	node.sysctl_data = text;
	node.sysctl_size = sizeof(text);
	return sysctl_lookup(SYSCTLFN_CALL(&node));
}

/* Creates the nodes of one table under parent. */
static int
balloon_sysctl_table(struct balloon_softc *sc,
    const struct sysctlnode **parent, const struct balloon_node *table,
    size_t n, bool hotplug)
{
	const struct balloon_node *bn;
	int error, flags;
	size_t i;

	for (i = 0; i < n; i++) {
		bn = &table[i];
		flags = bn->bn_writable ? CTLFLAG_READWRITE : CTLFLAG_READONLY;
		/* A kernel that cannot grow: hotplug stays off, read-only. */
		if (bn->bn_value == BALLOON_V_HOTPLUG &&
		    bn->bn_kind == BALLOON_NODE_BOOL && !hotplug)
			flags = CTLFLAG_READONLY;
		/*
		 * sysctl_createv() is a macro that pastes its type argument
		 * into a function name (sys/sysctl.h 1.236): each call names
		 * its CTLTYPE_* literally.
		 */
		switch (bn->bn_kind) {
		case BALLOON_NODE_QUAD:
			error = sysctl_createv(&sc->sc_sysctllog, 0, parent,
			    NULL, flags | CTLFLAG_UNSIGNED, CTLTYPE_QUAD,
			    bn->bn_name, bn->bn_desc, balloon_sysctl_value, 0,
			    __UNCONST(bn), 0, CTL_CREATE, CTL_EOL);
			break;
		case BALLOON_NODE_BOOL:
			error = sysctl_createv(&sc->sc_sysctllog, 0, parent,
			    NULL, flags, CTLTYPE_BOOL, bn->bn_name, bn->bn_desc,
			    balloon_sysctl_value, 0, __UNCONST(bn), 0,
			    CTL_CREATE, CTL_EOL);
			break;
		default:
			error = sysctl_createv(&sc->sc_sysctllog, 0, parent,
			    NULL, flags, CTLTYPE_STRING, bn->bn_name,
			    bn->bn_desc, balloon_sysctl_text, 0, __UNCONST(bn),
			    BALLOON_STATE_LEN, CTL_CREATE, CTL_EOL);
			break;
		}
		if (error != 0)
			return error;
	}
	return 0;
}

static int
balloon_sysctl_init(struct balloon_softc *sc, bool hotplug)
{
	const struct sysctlnode *root, *stats;
	int error;

	/* Descriptions are given literally: SYSCTL_DESCR() may be NULL. */
	error = sysctl_createv(&sc->sc_sysctllog, 0, NULL, &root,
	    CTLFLAG_READONLY, CTLTYPE_NODE, "balloon",
	    "Xen memory balloon (balloon.kmod)",
	    NULL, 0, NULL, 0, CTL_HW, CTL_CREATE, CTL_EOL);
	if (error == 0)
		error = balloon_sysctl_table(sc, &root, balloon_nodes,
		    __arraycount(balloon_nodes), hotplug);
	if (error == 0)
		error = sysctl_createv(&sc->sc_sysctllog, 0, &root, &stats,
		    CTLFLAG_READONLY, CTLTYPE_NODE, "stats",
		    "Counters since the module was loaded",
		    NULL, 0, NULL, 0, CTL_CREATE, CTL_EOL);
	if (error == 0)
		error = balloon_sysctl_table(sc, &stats, balloon_stat_nodes,
		    __arraycount(balloon_stat_nodes), hotplug);
	return error;
}

/* --- load and unload --- */

/* Starts the worker thread (joined by balloon_stop()). */
static int
balloon_worker_start(struct balloon_softc *sc)
{

	return kthread_create(PRI_NONE, KTHREAD_MPSAFE | KTHREAD_MUSTJOIN,
	    NULL, balloon_worker, sc, &sc->sc_worker, "balloon");
}

/*
 * Stops the watch, then the worker thread; nothing else runs after.
 * Either may be missing (a failed start, at load or on a refused unload's
 * restart): only what runs is stopped.
 */
static void
balloon_stop(struct balloon_softc *sc)
{

	balloon_watch_stop(sc);
	mutex_enter(&sc->sc_lock);
	sc->sc_dying = true;
	cv_broadcast(&sc->sc_cv);
	mutex_exit(&sc->sc_lock);
	if (sc->sc_worker != NULL)
		(void)kthread_join(sc->sc_worker);
	sc->sc_worker = NULL;
}

/*
 * The kernel growth interfaces of docs/kernel-growth.md section 6, looked
 * up by name in the kernel's own symbol table ("netbsd", globals only) and
 * never linked against, so that the module loads on stock kernels. No
 * stock kernel has them; plug is used only when every name of the mode's
 * set resolves (all or nothing).
 */
static const char *const balloon_growth_pv[] = {
	"uvm_physseg_hotplug_add", "uvm_physseg_hotplug_remove",
	"xpmap_p2m_limit", "xpmap_p2m_grow",
};
static const char *const balloon_growth_pvh[] = {
	"uvm_physseg_hotplug_add", "uvm_physseg_hotplug_remove",
	"pmap_growdirectmap", "xenmem_alloc_pa", "xenmem_free_pa",
};

/*
 * Decides whether this kernel can take a plug and, if not, why (the
 * first reason of docs/kernel-growth.md section 8 that applies).
 */
static enum balloon_growth
balloon_growth_probe(bool pv, bool uvm_hotplug)
{
	const char *const *set = pv ? balloon_growth_pv : balloon_growth_pvh;
	size_t n = pv ? __arraycount(balloon_growth_pv) :
	    __arraycount(balloon_growth_pvh);
	unsigned long addr[__arraycount(balloon_growth_pvh)];
	const char *missing = NULL;
	size_t i, found = 0;

	memset(&balloon_growth, 0, sizeof(balloon_growth));
	for (i = 0; i < n; i++) {
		if (ksyms_getval("netbsd", set[i], &addr[i],
		    KSYMS_EXTERN) == 0)
			found++;
		else if (missing == NULL)
			missing = set[i];
	}
	if (found != 0 && found != n)
		printf("%s: kernel growth interfaces incomplete (%s missing), "
		    "using none\n", BALLOON_XNAME, missing);
	if (pv && (!uvm_hotplug || found != n))
		return BALLOON_GROWTH_PV_P2M;
	if (!pv && !uvm_hotplug)
		return BALLOON_GROWTH_NO_UVM_HOTPLUG;
	if (!pv && found != n)
		return BALLOON_GROWTH_PVH_DIRECT_MAP;
	/*
	 * The prototypes of kernel-growth.md sections 3-5: the names are
	 * the contract (section 6).
	 */
	balloon_growth.hotplug_add = (int (*)(paddr_t, psize_t))addr[0];
	balloon_growth.hotplug_remove = (int (*)(paddr_t, psize_t))addr[1];
	if (pv) {
		balloon_growth.p2m_limit = (paddr_t (*)(void))addr[2];
		balloon_growth.p2m_grow = (int (*)(paddr_t))addr[3];
	} else {
		balloon_growth.growdirectmap = (int (*)(paddr_t))addr[2];
		balloon_growth.xenmem_alloc =
		    (paddr_t (*)(u_long, u_long, bool))addr[3];
		balloon_growth.xenmem_free = (void (*)(paddr_t, u_long))addr[4];
	}
	return BALLOON_GROWTH_AVAILABLE;
}

/* The reason in the load line, or NULL when growth is available. */
static const char *
balloon_growth_reason(enum balloon_growth g)
{

	switch (g) {
	case BALLOON_GROWTH_AVAILABLE:
		return NULL;
	case BALLOON_GROWTH_PV_P2M:
		return "PV: the p2m ends at boot memory";
	case BALLOON_GROWTH_NO_UVM_HOTPLUG:
		return "kernel lacks options UVM_HOTPLUG";
	default:
		return "PVH: the direct map ends at boot memory "
		    "(x86/pmap.c pmap_init_directmap)";
	}
}

/*
 * The memory map libxl gives a PVH domain at creation (XENMEM_memory_map;
 * libxl_x86.c domain_construct_memmap, xen-project/xen @c447b730): RAM,
 * an E820_RESERVED entry for the special pages ending at
 * X86_HVM_END_SPECIAL_REGION, which the domain builder populates
 * (xg_dom_x86.c alloc_magic_pages_hvm), one E820_NVS entry per ACPI
 * module, also populated (xg_dom_core.c populate_acpi_pages), and
 * reserved device memory of a passthrough, which is never populated.
 * Entries have the layout of the BIOS E820 call, as x86_machdep.c reads
 * them for a PV kernel.
 */
struct balloon_e820 {
	uint64_t	addr;
	uint64_t	size;
	uint32_t	type;
} __packed;

#define BALLOON_E820_MAX	128
#define BALLOON_E820_RESERVED	2
#define BALLOON_E820_NVS	4
#define BALLOON_SPECIAL_END	0xff000000ULL	/* X86_HVM_END_SPECIAL_REGION */

/*
 * Pages Xen populated for a PVH domain outside its RAM, by the map: what
 * its reservation counts and memory/target does not, however the target
 * moved while the module was not loaded. 0 without a map (ENOSYS) or
 * memory for it; the core then falls back on static-max and the targets.
 */
static uint64_t
balloon_outside_ram_pages(void)
{
	struct xen_memory_map mm;
	struct balloon_e820 *map, *e;
	uint64_t pages = 0, end;
	unsigned int i;

	map = kmem_alloc(BALLOON_E820_MAX * sizeof(*map), KM_NOSLEEP);
	if (map == NULL)
		return 0;
	mm.nr_entries = BALLOON_E820_MAX;
	set_xen_guest_handle(mm.buffer, map);
	if (HYPERVISOR_memory_op(XENMEM_memory_map, &mm) == 0) {
		for (i = 0; i < MIN(mm.nr_entries, BALLOON_E820_MAX); i++) {
			e = &map[i];
			end = e->addr + e->size;
			if (end < e->addr)
				continue;
			if (e->type == BALLOON_E820_NVS ||
			    (e->type == BALLOON_E820_RESERVED &&
			    end == BALLOON_SPECIAL_END))
				pages += (end + PAGE_SIZE - 1) / PAGE_SIZE -
				    e->addr / PAGE_SIZE;
		}
	}
	kmem_free(map, BALLOON_E820_MAX * sizeof(*map));
	return pages;
}

/* Fills in what the core needs to know about this domain. */
static int
balloon_boot_info(struct balloon_boot_info *bi, bool hotplug)
{
	struct balloon_frame_range *seg;
	long cur, max;
	uint64_t top = 0;
	size_t i;

	memset(bi, 0, sizeof(*bi));
	bi->mode = vm_guest == VM_GUEST_XENPV ?
	    BALLOON_GUEST_PV : BALLOON_GUEST_PVH;
	cur = balloon_reservation_op(XENMEM_current_reservation);
	max = balloon_reservation_op(XENMEM_maximum_reservation);
	if (cur <= 0 || max <= 0) {
		printf("%s: cannot read the reservation (%ld, %ld)\n",
		    BALLOON_XNAME, cur, max);
		return EIO;
	}
	bi->reservation_pages = (uint64_t)cur;
	bi->max_reservation_pages = (uint64_t)max;
	bi->freemin_pages = (uint64_t)MAX(uvmexp.freemin, 0);
	if (bi->mode == BALLOON_GUEST_PVH)
		bi->outside_ram_pages = balloon_outside_ram_pages();
	bi->growth = balloon_growth_probe(bi->mode == BALLOON_GUEST_PV, hotplug);
	balloon_dmap_probe(bi->mode == BALLOON_GUEST_PVH);
	bi->nsegments = hotplug ?
	    balloon_physseg_walk_hotplug(bi->segments,
		BALLOON_MAX_BOOT_SEGMENTS) :
	    balloon_physseg_walk_array(bi->segments,
		BALLOON_MAX_BOOT_SEGMENTS);
	if (bi->nsegments == 0 || bi->nsegments > BALLOON_MAX_BOOT_SEGMENTS) {
		printf("%s: %llu memory segments, cannot manage them\n",
		    BALLOON_XNAME, (unsigned long long)bi->nsegments);
		return ENOSPC;
	}
	for (i = 0; i < bi->nsegments; i++) {
		seg = &bi->segments[i];
		top = MAX(top, seg->end_pfn);
	}
	if (bi->mode == BALLOON_GUEST_PV) {
#ifdef BALLOON_PV_P2M
		/*
		 * The p2m table the domain builder set up covers the boot
		 * nr_pages, in whole pages of entries; nothing beyond it
		 * can be mapped, and every frame under it may be in use.
		 */
		const uint64_t per = PAGE_SIZE / sizeof(unsigned long);

		bi->frame_limit_pfn =
		    (xen_start_info.nr_pages + per - 1) / per * per;
		bi->plug_floor_pfn = xen_start_info.nr_pages;
		/* Kernel-assisted: the reserved p2m (kernel-growth.md 4.2). */
		if (balloon_growth.p2m_limit != NULL)
			bi->frame_limit_pfn = balloon_growth.p2m_limit();
#endif
	} else {
		bi->frame_limit_pfn = top + bi->max_reservation_pages;
		bi->plug_floor_pfn = top;
	}
	return 0;
}

/*
 * A PVH domain built with memory < maxmem runs on populate-on-demand: its
 * memory map reaches maxmem, Xen backs only memory, and Xen crashes the
 * domain when the guest touches more than that ("out of PoD memory",
 * xen/arch/x86/mm/p2m-pod.c p2m_pod_demand_populate, xen-project/xen
 * @c447b730). The worker gives the difference back at once; INIT waits
 * for it, as Linux's balloon_wait_finish() holds up boot
 * (drivers/xen/balloon.c, torvalds/linux @965c0aaa), so that whatever
 * rc(8) starts after modload finds the domain safe. It stops waiting after
 * BALLOON_POD_STALL_MS without progress, and says so.
 */
static void
balloon_pod_wait(struct balloon_softc *sc, uint64_t left)
{
	uint64_t last, since, now;

	if (left == 0)
		return;
	mutex_enter(&sc->sc_lock);
	last = left;
	since = balloon_uptime_ms();
	while (left != 0) {
		(void)cv_timedwait(&sc->sc_cv, &sc->sc_lock,
		    MAX((int)mstohz(BALLOON_POD_POLL_MS), 1));
		left = 0;
		(void)balloon_rs_get(sc->sc_rs, BALLOON_V_POD_OWED_KIB, &left);
		now = balloon_uptime_ms();
		if (left != last) {
			last = left;
			since = now;
		} else if (now - since >= BALLOON_POD_STALL_MS) {
			printf("%s: populate-on-demand: %llu KiB still to give "
			    "back, no progress for %u s; not waiting longer\n",
			    BALLOON_XNAME, (unsigned long long)left,
			    BALLOON_POD_STALL_MS / 1000);
			break;
		}
	}
	mutex_exit(&sc->sc_lock);
	if (left == 0)
		printf("%s: populate-on-demand: initial balloon-down "
		    "finished\n", BALLOON_XNAME);
}

static int
balloon_init(void)
{
	struct balloon_softc *sc = &balloon_softc;
	struct balloon_boot_info *bi;
	char staticmax[BALLOON_XS_VALUE_LEN];
	uint64_t pod_kib;
	unsigned long sym;
	bool hotplug, growth;
	int error;

	if (vm_guest != VM_GUEST_XENPV && vm_guest != VM_GUEST_XENPVH &&
	    vm_guest != VM_GUEST_XENPVHVM) {
		printf("%s: not a Xen PV or PVH guest, not loading\n",
		    BALLOON_XNAME);
		return ENODEV;
	}
#ifndef BALLOON_PV_P2M
	if (vm_guest == VM_GUEST_XENPV) {
		printf("%s: this module is built for GENERIC (PVH/HVM guests); "
		    "a PV domain needs the amd64-xen build, not loading\n",
		    BALLOON_XNAME);
		return ENODEV;
	}
#endif
#if defined(_KERNEL) && defined(XENPV)
	if (vm_guest != VM_GUEST_XENPV) {
		printf("%s: this module is built for XEN3_DOMU (PV guests), "
		    "not loading\n", BALLOON_XNAME);
		return ENODEV;
	}
#endif
	if (device_find_by_xname(BALLOON_XNAME) != NULL) {
		printf("%s: the kernel's own balloon driver is attached, "
		    "not loading\n", BALLOON_XNAME);
		return EEXIST;
	}
	/* Only kernels with options UVM_HOTPLUG have this tree root. */
	hotplug = ksyms_getval(NULL, "uvm_physseg_graph", &sym,
	    KSYMS_ANY) == 0;

	memset(sc, 0, sizeof(*sc));
	mutex_init(&sc->sc_lock, MUTEX_DEFAULT, IPL_NONE);
	cv_init(&sc->sc_cv, "balloon");

	/* KM_NOSLEEP, as the core's heap: short of memory, the load fails. */
	bi = kmem_zalloc(sizeof(*bi), KM_NOSLEEP);
	if (bi == NULL) {
		printf("%s: no memory for the boot information\n",
		    BALLOON_XNAME);
		error = ENOMEM;
		goto fail_lock;
	}
	error = balloon_boot_info(bi, hotplug);
	if (error == 0) {
		error = balloon_rs_attach(bi, &sc->sc_rs);
		if (error != 0)
			printf("%s: cannot set up the bookkeeping: error %d\n",
			    BALLOON_XNAME, error);
	}
	memset(staticmax, 0, sizeof(staticmax));
	if (error == 0 && xenbus_read(NULL, "memory", "static-max", staticmax,
	    sizeof(staticmax) - 1) != 0)
		snprintf(staticmax, sizeof(staticmax), "unknown");
	if (error == 0)
		printf("%s: %s guest, %llu KiB of %llu KiB maximum "
		    "(memory/static-max %s), hotplug %s%s%s\n", BALLOON_XNAME,
		    bi->mode == BALLOON_GUEST_PV ? "PV" : "PVH",
		    (unsigned long long)bi->reservation_pages * (PAGE_SIZE / 1024),
		    (unsigned long long)bi->max_reservation_pages *
		    (PAGE_SIZE / 1024), staticmax,
		    bi->growth == BALLOON_GROWTH_AVAILABLE ? "available" :
		    "unavailable (",
		    bi->growth == BALLOON_GROWTH_AVAILABLE ? "" :
		    balloon_growth_reason(bi->growth),
		    bi->growth == BALLOON_GROWTH_AVAILABLE ? "" : ")");
	growth = bi->growth == BALLOON_GROWTH_AVAILABLE;
	/* Before the worker starts: what the domain owes PoD at load. */
	pod_kib = 0;
	if (error == 0)
		(void)balloon_rs_get(sc->sc_rs, BALLOON_V_POD_OWED_KIB,
		    &pod_kib);
	if (pod_kib != 0)
		printf("%s: populate-on-demand: %llu KiB of the memory map are "
		    "not backed by Xen; giving them back before anything "
		    "touches them\n", BALLOON_XNAME,
		    (unsigned long long)pod_kib);
	kmem_free(bi, sizeof(*bi));
	if (error != 0)
		goto fail_lock;
	balloon_limit_refresh(sc);
	balloon_load_target(sc);

	error = balloon_sysctl_init(sc, growth);
	if (error != 0) {
		printf("%s: cannot create hw.balloon: error %d\n",
		    BALLOON_XNAME, error);
		goto fail_sysctl;
	}
	/*
	 * The watch before the worker: once the worker runs it may have
	 * frames of a step in hand (a PoD debt, or a target clamped at load),
	 * and nothing after it may fail. A target the watch delivers first
	 * waits in the core for the worker.
	 */
	error = balloon_watch_start(sc, false);
	if (error != 0) {
		printf("%s: cannot watch memory/target: error %d\n",
		    BALLOON_XNAME, error);
		goto fail_watch;
	}
	error = balloon_worker_start(sc);
	if (error != 0) {
		printf("%s: cannot start the worker: error %d\n",
		    BALLOON_XNAME, error);
		goto fail_watch;
	}
	error = balloon_advertise();
	if (error != 0)
		printf("%s: cannot write control/feature-balloon: error %d\n",
		    BALLOON_XNAME, error);
	balloon_pod_wait(sc, pod_kib);
	return 0;

fail_watch:
	balloon_stop(sc);
fail_sysctl:
	sysctl_teardown(&sc->sc_sysctllog);
	balloon_rs_detach(sc->sc_rs);
	sc->sc_rs = NULL;
fail_lock:
	cv_destroy(&sc->sc_cv);
	mutex_destroy(&sc->sc_lock);
	return error;
}

/* A failure of the shim's own, logged by the core within its budget. */
static void
balloon_shim_failed(struct balloon_softc *sc, enum balloon_shim_failure what,
    int error)
{

	mutex_enter(&sc->sc_lock);
	balloon_rs_shim_failed(sc->sc_rs, what, error, balloon_uptime_ms());
	mutex_exit(&sc->sc_lock);
}

static int
balloon_fini(void)
{
	struct balloon_softc *sc = &balloon_softc;
	int error, restart;

	if (balloon_watch_stop(sc) != 0) {
		/*
		 * A callback of ours may still run: unloading now would let
		 * it run in freed code. Stay loaded and watch again.
		 */
		balloon_shim_failed(sc, BALLOON_FAIL_WATCH_BARRIER, EBUSY);
		if ((restart = balloon_watch_start(sc, true)) != 0)
			balloon_shim_failed(sc, BALLOON_FAIL_WATCH_RESTART,
			    restart);
		return EBUSY;
	}

	/*
	 * Give every ballooned page back. The worker thread stays, parked
	 * between two steps (sc_hold) while the release steps in its place,
	 * so a refused unload needs no new thread (kthread_create may fail,
	 * and a module left without its worker would never move again). The
	 * release runs without sc_lock, like a step: sysctl goes on.
	 */
	mutex_enter(&sc->sc_lock);
	sc->sc_hold = true;
	while (sc->sc_stepping)
		cv_wait(&sc->sc_cv, &sc->sc_lock);
	mutex_exit(&sc->sc_lock);
	error = balloon_rs_release(sc->sc_rs, balloon_uptime_ms());
	mutex_enter(&sc->sc_lock);
	sc->sc_hold = false;
	if (error == 0)
		sc->sc_dying = true;
	balloon_kick(sc);
	mutex_exit(&sc->sc_lock);
	if (error != 0) {
		/*
		 * Stay loaded and working: watch memory/target again. The
		 * core has logged why.
		 */
		if ((restart = balloon_watch_start(sc, true)) != 0)
			balloon_shim_failed(sc, BALLOON_FAIL_WATCH_RESTART,
			    restart);
		mutex_enter(&sc->sc_lock);
		balloon_kick(sc);
		mutex_exit(&sc->sc_lock);
		return error;
	}
	(void)kthread_join(sc->sc_worker);
	sc->sc_worker = NULL;
	/* No balloon driver runs any more (see balloon_advertise()). */
	(void)xenbus_rm(NULL, "control", "feature-balloon");
	sysctl_teardown(&sc->sc_sysctllog);
	balloon_rs_detach(sc->sc_rs);
	sc->sc_rs = NULL;
	cv_destroy(&sc->sc_cv);
	mutex_destroy(&sc->sc_lock);
	printf("%s: unloaded\n", BALLOON_XNAME);
	return 0;
}

/* MODULE_CMD_STAT: one line on where the driver stands. */
static int
balloon_stat(void)
{
	struct balloon_softc *sc = &balloon_softc;
	char state[BALLOON_STATE_LEN];
	uint64_t cur = 0, tgt = 0, bal = 0;

	mutex_enter(&sc->sc_lock);
	(void)balloon_rs_get(sc->sc_rs, BALLOON_V_CURRENT_KIB, &cur);
	(void)balloon_rs_get(sc->sc_rs, BALLOON_V_TARGET_KIB, &tgt);
	(void)balloon_rs_get(sc->sc_rs, BALLOON_V_BALLOONED_KIB, &bal);
	(void)balloon_rs_text(sc->sc_rs, BALLOON_T_STATE, state,
	    sizeof(state));
	mutex_exit(&sc->sc_lock);
	printf("%s: %llu KiB, target %llu KiB, %llu KiB ballooned, %s\n",
	    BALLOON_XNAME, (unsigned long long)cur, (unsigned long long)tgt,
	    (unsigned long long)bal, state);
	return 0;
}

static int
balloon_modcmd(modcmd_t cmd, void *arg)
{

	(void)arg;
	switch (cmd) {
	case MODULE_CMD_INIT:
		return balloon_init();
	case MODULE_CMD_FINI:
		return balloon_fini();
	case MODULE_CMD_STAT:
		return balloon_stat();
	case MODULE_CMD_AUTOUNLOAD:
		return EBUSY;	/* only an administrator unloads it */
	default:
		return ENOTTY;
	}
}
