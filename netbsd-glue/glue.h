/*	SPDX-License-Identifier: BSD-2-Clause	*/

/*
 * glue.h: the one C ABI between the C shim and the Rust core of
 * balloon.kmod. sys/ generates the Rust side from this file with bindgen.
 *
 * Two directions:
 *   balloon_rs_*    Rust entry points the shim calls, from thread
 *                   context. All but balloon_rs_step and
 *                   balloon_rs_release are called with the shim's softc
 *                   lock (sc_lock) held. Those two are called WITHOUT it,
 *                   by one thread at a time (the worker thread, or unload
 *                   once the worker is parked), and take it themselves
 *                   through balloon_shim_core_lock/unlock for short
 *                   critical sections: no hypercall, scrub, page
 *                   allocation or plug runs with sc_lock held.
 *   balloon_shim_*  one small C wrapper per kernel service, called by the
 *                   core while it carries out a step. Only
 *                   balloon_shim_log and (for an inflate the bookkeeping
 *                   refused) balloon_shim_pages_free may run with sc_lock
 *                   held; none but balloon_shim_core_lock takes it.
 *
 * Units are in the names: *_pages counts 4 KiB pages, *_kib KiB, *pfn a
 * guest page frame number, *mfn a machine frame number, *_ms milliseconds.
 * Functions returning int return 0 or a NetBSD errno.
 */

#ifndef _BALLOON_GLUE_H_
#define _BALLOON_GLUE_H_

/*
 * A kernel build (-nostdinc) has no <stdint.h>: <sys/types.h> gives
 * kernel code bool, size_t and the fixed-width types. bindgen and the
 * simulated domU read this file as ordinary host C.
 */
#ifdef _KERNEL
#include <sys/types.h>
#else
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#endif

/* The most frames one step hands to a hypercall (hw.balloon.batch). */
#define BALLOON_MAX_BATCH	8192

/* Largest number of boot segments the shim reports. */
#define BALLOON_MAX_BOOT_SEGMENTS	64

/*
 * Bytes of the buffer the shim reads a xenstore value into, NUL
 * included: a KiB count has at most 20 digits, and a longer value makes
 * xenbus_read fail with ERANGE.
 */
#define BALLOON_XS_VALUE_LEN	64

/* A run of frames [start, end). */
struct balloon_frame_range {
	uint64_t	start_pfn;
	uint64_t	end_pfn;
};

/* How the guest talks to Xen about its memory. */
enum balloon_guest_mode {
	BALLOON_GUEST_PV = 1,	/* p2m kept by the guest; MFNs in hypercalls */
	BALLOON_GUEST_PVH = 2	/* auto-translated; GPFNs in hypercalls */
};

/*
 * Why the domain cannot grow past the memory it booted with (the first
 * that applies; docs/kernel-growth.md section 8), or that it can.
 */
enum balloon_growth {
	BALLOON_GROWTH_AVAILABLE = 0,	/* UVM_HOTPLUG and the growth set */
	BALLOON_GROWTH_PV_P2M = 1,	/* PV without the PV set */
	BALLOON_GROWTH_NO_UVM_HOTPLUG = 2,	/* PVH, no options UVM_HOTPLUG */
	BALLOON_GROWTH_PVH_DIRECT_MAP = 3	/* PVH, UVM_HOTPLUG, no PVH set */
};

/* What the shim found at MODULE_CMD_INIT. */
struct balloon_boot_info {
	enum balloon_guest_mode	mode;
	uint64_t	reservation_pages;	/* XENMEM_current_reservation */
	uint64_t	max_reservation_pages;	/* XENMEM_maximum_reservation */
	uint64_t	freemin_pages;		/* uvmexp.freemin */
	uint64_t	frame_limit_pfn;	/* first frame that cannot be used */
	uint64_t	plug_floor_pfn;		/* plug no frame below this */
	enum balloon_growth growth;	/* can it plug, or why not */
	uint64_t	outside_ram_pages;	/* PVH: populated, not RAM (map) */
	size_t		nsegments;
	struct balloon_frame_range segments[BALLOON_MAX_BOOT_SEGMENTS];
};

/* UVM's memory figures, in pages. */
struct balloon_meminfo {
	uint64_t	free_pages;
	uint64_t	freetarg_pages;
	uint64_t	managed_pages;		/* uvmexp.npages */
};

/* A failure of the shim's own, logged by the core (within its budget). */
enum balloon_shim_failure {
	BALLOON_FAIL_WORKER_RESTART = 1,	/* kthread_create after EBUSY */
	BALLOON_FAIL_WATCH_RESTART = 2,		/* register_xenbus_watch, same */
	BALLOON_FAIL_WATCH_BARRIER = 3		/* unload: xenwatch did not answer */
};

/* What balloon_rs_step() asks the worker thread to do next. */
enum balloon_step_status {
	BALLOON_STEP_AGAIN = 0,	/* a step was done; call again at once */
	BALLOON_STEP_SLEEP = 1,	/* sleep *wait_ms unless woken */
	BALLOON_STEP_IDLE = 2	/* sleep until woken */
};

/* Knobs and figures behind hw.balloon.*. */
enum balloon_value {
	BALLOON_V_CURRENT_KIB = 1,	/* ro */
	BALLOON_V_TARGET_KIB,		/* rw */
	BALLOON_V_MIN_KIB,		/* rw: the floor */
	BALLOON_V_MAX_KIB,		/* ro */
	BALLOON_V_BATCH,		/* rw: frames per hypercall */
	BALLOON_V_SCRUB,		/* rw: 0 or 1 */
	BALLOON_V_HOTPLUG,		/* rw: 0 or 1 */
	BALLOON_V_UNPLUG,		/* rw: 0 or 1 */
	BALLOON_V_RETRY_DELAY_MAX_MS,	/* rw */
	BALLOON_V_RETRY_MAX,		/* rw: 0 = never give up */
	BALLOON_V_BALLOONED_KIB,	/* ro */
	BALLOON_V_PLUGGED_KIB,		/* ro */
	BALLOON_V_SEGMENTS_PLUGGED,	/* ro: live plugged segments */
	BALLOON_V_STAT_INFLATED_PAGES,	/* ro, counters from here on */
	BALLOON_V_STAT_DEFLATED_PAGES,
	BALLOON_V_STAT_SCRUBBED_PAGES,
	BALLOON_V_STAT_HYPERCALLS,
	BALLOON_V_STAT_SHORT_RESULTS,
	BALLOON_V_STAT_RETRIES,
	BALLOON_V_STAT_TARGETS_ACCEPTED,
	BALLOON_V_STAT_TARGETS_CLAMPED,
	BALLOON_V_STAT_TARGETS_REFUSED,
	BALLOON_V_STAT_TARGETS_GIVEN_UP,
	BALLOON_V_STAT_PLUGS,
	BALLOON_V_STAT_UNPLUGS,
	BALLOON_V_STAT_FRAMES_LOST,
	BALLOON_V_STAT_MESSAGES_SUPPRESSED,
	BALLOON_V_STAT_LAST_ERRNO,	/* 0 when no step has failed */
	BALLOON_V_OFFSET_KIB,		/* ro: reservation beyond memory/target */
	BALLOON_V_POD_OWED_KIB		/* ro, no node: PoD balloon-down left */
};

/* Text behind hw.balloon.*. */
enum balloon_text {
	BALLOON_T_STATE = 1,		/* what the worker is doing */
	BALLOON_T_LAST_ERROR		/* "none" or "ENOMEM (12) in deflate" */
};

struct balloon_rs;	/* the core's state; opaque to C */

/* --- Rust entry points (src/ffi/entry.rs) --- */

/* Builds the core from what INIT found; *rsp is set on success. */
int	balloon_rs_attach(const struct balloon_boot_info *,
	    struct balloon_rs **rsp);
/* Frees the core. */
void	balloon_rs_detach(struct balloon_rs *);
/*
 * Carries out at most one step at now_ms; says when to call again. Called
 * without sc_lock, by the one thread allowed to step (see above).
 */
enum balloon_step_status balloon_rs_step(struct balloon_rs *, uint64_t now_ms,
	    uint64_t *wait_ms);
/*
 * The watch on memory/target fired. error is what xenbus_read returned:
 * 0, and text holds the len bytes it wrote (len at most
 * BALLOON_XS_VALUE_LEN; a NUL among them is refused), or a positive
 * errno (ENOENT is ignored, ERANGE counts as a refused target, any other
 * is logged). resync is true for the first event after the watch was
 * registered again: xenstored fires a new watch once, and that event
 * does not replace a target set with sysctl since when xenstore's value
 * is the one applied last. 0 when the target was taken, else an errno.
 */
int	balloon_rs_xenstore_event(struct balloon_rs *, int error,
	    const char *text, size_t len, bool resync, uint64_t now_ms);
/* Logs a failure of the shim's own, within the core's log budget. */
void	balloon_rs_shim_failed(struct balloon_rs *, enum balloon_shim_failure,
	    int error, uint64_t now_ms);
/*
 * The limit targets are clamped to, read afresh whenever a target arrives:
 * XENMEM_maximum_reservation now, in pages, and the text of
 * memory/static-max in KiB (NULL or len 0 when unreadable; NUL padding
 * ends it). EINVAL for a zero maximum.
 */
int	balloon_rs_set_limit(struct balloon_rs *, uint64_t max_reservation_pages,
	    const char *static_max, size_t len);
/*
 * memory/target as read at load, right after the reservation (KiB text,
 * NUL padding ends it): a PVH guest's toolstack offset is fixed from the
 * two when they agree. An errno for an unreadable value; nothing changes.
 */
int	balloon_rs_load_target(struct balloon_rs *, const char *target,
	    size_t len);
/* Reads a value; EINVAL for an unknown one. KiB sizes as xl counts them. */
int	balloon_rs_get(struct balloon_rs *, enum balloon_value, uint64_t *);
/*
 * Writes a knob as sysctl gives it (a quad is signed); EINVAL malformed
 * (negative included), EPERM out of range or read-only, EOPNOTSUPP.
 */
int	balloon_rs_set(struct balloon_rs *, enum balloon_value, int64_t);
/* A text value, NUL-terminated and cut to fit; returns its length. */
size_t	balloon_rs_text(struct balloon_rs *, enum balloon_text, char *buf,
	    size_t len);
/*
 * Gives every ballooned frame back to the domain before unload (fully
 * ballooned plugged segments are unplugged instead). 0 when nothing is
 * left ballooned; EBUSY, with the reason logged, when Xen could not give
 * all of it back. Called without sc_lock, while the worker does not step.
 */
int	balloon_rs_release(struct balloon_rs *, uint64_t now_ms);

/* --- kernel services (netbsd-glue/balloon_shim.c) --- */

/*
 * Allocates up to n pages for the balloon, from frames [lo_pfn, hi_pfn)
 * first when hi_pfn > lo_pfn; stores their frame numbers and returns how
 * many it got. The driver owns them until freed or unplugged.
 */
size_t	balloon_shim_pages_alloc(uint64_t *pfns, size_t n, uint64_t lo_pfn,
	    uint64_t hi_pfn);
/* Frees pages the driver owns (their frames backed) to UVM. */
void	balloon_shim_pages_free(const uint64_t *pfns, size_t n);
/* Zeroes n pages the driver owns. */
void	balloon_shim_pages_scrub(const uint64_t *pfns, size_t n);
/* PV: the MFN behind pfn, or UINT64_MAX when there is none. */
uint64_t balloon_shim_p2m_lookup(uint64_t pfn);
/*
 * PV: maps pfns[i] to mfns[i] in the p2m for i < n, queues their m2p
 * updates and flushes them to Xen, all on one CPU (the m2p queue is
 * per CPU: x86_xpmap.c).
 */
void	balloon_shim_p2m_set_batch(const uint64_t *pfns, const uint64_t *mfns,
	    size_t n);
/* PV: marks pfn invalid in the p2m. */
void	balloon_shim_p2m_clear(uint64_t pfn);
/*
 * XENMEM_decrease_reservation / increase_reservation / populate_physmap
 * on n order-0 extents: the number of leading extents done, or a negative
 * errno.
 */
long	balloon_shim_decrease_reservation(uint64_t *frames, size_t n);
long	balloon_shim_increase_reservation(uint64_t *mfns, size_t n);
long	balloon_shim_populate_physmap(uint64_t *pfns, size_t n);
/*
 * Kernel-assisted growth only (docs/kernel-growth.md section 7): prepares
 * the kernel for a segment of npages frames before any is backed. PV:
 * xpmap_p2m_grow(pfn + npages), *startp = pfn; PVH: xenmem_alloc_pa
 * places it (*startp) and pmap_growdirectmap maps it. 0, ERANGE when the
 * kernel has no room left, or another errno.
 */
int	balloon_shim_grow_reserve(uint64_t pfn, uint64_t npages,
	    uint64_t *startp);
/* Gives back a placement whose segment was never plugged (PVH only). */
void	balloon_shim_grow_unreserve(uint64_t pfn, uint64_t npages);
/*
 * uvm_physseg_hotplug_add / uvm_physseg_hotplug_remove (PVH: then
 * xenmem_free_pa): 0, or an errno.
 */
int	balloon_shim_physseg_plug(uint64_t pfn, uint64_t npages);
int	balloon_shim_physseg_unplug(uint64_t pfn, uint64_t npages);
/* UVM's free-memory figures now. */
void	balloon_shim_meminfo(struct balloon_meminfo *);
/* A message for the kernel log, "balloon0: " is prefixed. */
void	balloon_shim_log(const char *msg, size_t len);
/* kmem_alloc(size, KM_NOSLEEP): NULL when memory is short / kmem_free. */
void	*balloon_shim_kmem_alloc(size_t size);
void	balloon_shim_kmem_free(void *p, size_t size);
/*
 * mutex_enter / mutex_exit of the softc lock (sc_lock), for the short
 * critical sections of balloon_rs_step and balloon_rs_release.
 */
void	balloon_shim_core_lock(void);
void	balloon_shim_core_unlock(void);
/* panic(9) with the message; does not return. */
void	balloon_shim_panic(const char *msg, size_t len) __attribute__((__noreturn__));

#endif /* _BALLOON_GLUE_H_ */
