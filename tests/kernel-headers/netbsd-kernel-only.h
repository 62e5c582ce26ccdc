/*	SPDX-License-Identifier: BSD-2-Clause	*/

/*
 * netbsd-kernel-only.h: declarations of the NetBSD kernel interfaces the
 * shim uses whose headers NetBSD does not install in /usr/include, so
 * the installed header trees of the compile gate (tests/kernel-headers/
 * gate.sh) lack them. Only what the shim uses; every other name comes
 * from the real installed headers.
 *
 * The gate makes one small file per missing header (sys/systm.h,
 * xen/xenbus.h, ...) that includes this one, so the shim's #include
 * lines stay those of a real kernel build. A real module build never
 * sees this file: it reads $S (NETBSDSRCDIR/sys).
 *
 * Each declaration names, on its line or the block's first line, the
 * NetBSD file it was read from and the revision seen. "read:" means the
 * header text itself; "use:" means only callers of that era were
 * readable (the index holds few netbsd-10 revisions of sys/arch/xen);
 * docs/kernel-interfaces.md says which is which. Written here, not
 * copied.
 */

#ifndef _BALLOON_NETBSD_KERNEL_ONLY_H_
#define _BALLOON_NETBSD_KERNEL_ONLY_H_

#include <sys/types.h>
#include <sys/time.h>
#include <sys/device.h>
#include <sys/queue.h>

/*
 * --- sys/cpu_data.h ---
 * x86/cpu.h embeds struct cpu_data in struct cpu_info, and the inlines of
 * the installed sys/lwp.h reach into it, so every _KERNEL compile needs
 * it complete. Only the members those inlines use are here, not the
 * real layout: the gate compiles and reads symbols, it never runs what
 * it builds. The shim must not use cpu_info fields itself (curcpu() and
 * curlwp internals); the gate could not check such a use.
 */
#include <sys/sched.h>
struct cpu_data {
	struct schedstate_percpu cpu_schedstate;
	struct lwp	*cpu_idlelwp;
};
#define	ci_schedstate	ci_data.cpu_schedstate

/* --- sys/systm.h and lib/libkern/libkern.h --- */
/* read: sys/systm.h 1.268 (2015; kernel printf returns void) */
typedef int	(*copyin_t)(const void *, void *, size_t);
typedef int	(*copyout_t)(const void *, void *, size_t);
void	printf(const char *, ...) __printflike(1, 2);
int	snprintf(char *, size_t, const char *, ...) __printflike(3, 4);
void	panic(const char *, ...) __dead __printflike(1, 2);
/* read: sys/systm.h 1.268 "Preemption control" (defined in kern_synch.c) */
void	kpreempt_disable(void);
void	kpreempt_enable(void);
/* read: lib/libkern/libkern.h 1.144 (2021-12-31), the non-sanitizer case */
void	*memset(void *, int, size_t);
void	*memcpy(void *, const void *, size_t);
size_t	strlen(const char *);
#define	memset(d, v, l)		__builtin_memset(d, v, l)
#define	memcpy(d, s, l)		__builtin_memcpy(d, s, l)
#define	strlen(a)		__builtin_strlen(a)

/* --- machine/cpufunc.h (x86/lock.h's spin back-off hook) --- */
void	x86_pause(void);	/* read: x86/cpufunc.h, prototype */

/* --- sys/vmem.h (types uvm_extern.h's kmem prototypes use) --- */
/* read: sys/vmem.h typedefs (revision line not seen) */
typedef struct vmem vmem_t;
typedef unsigned int vm_flag_t;
typedef uintptr_t vmem_addr_t;
typedef size_t vmem_size_t;

/* --- sys/kernel.h --- */
extern int hz;		/* use: mstohz() in the installed sys/param.h reads it */

/* --- sys/timevar.h --- */
/* read: sys/timevar.h, prototype only (revision line not seen) */
void	getmicrouptime(struct timeval *);

/*
 * --- sys/kthread.h ---
 * flags read: the KTHREAD_* block as kthread.h has carried it since
 * KTHREAD_MUSTJOIN (seen in two NetBSD-derived trees; netbsd-10 revision
 * line not seen); prototypes: kthread(9) and kern_kthread.c use.
 */
#define	KTHREAD_IDLE	0x01
#define	KTHREAD_MPSAFE	0x02
#define	KTHREAD_INTR	0x04
#define	KTHREAD_TS	0x08
#define	KTHREAD_MUSTJOIN 0x10
int	kthread_create(pri_t, int, struct cpu_info *, void (*)(void *),
	    void *, lwp_t **, const char *, ...) __printflike(7, 8);
void	kthread_exit(int) __dead;
int	kthread_join(lwp_t *);

/* --- uvm/uvm_physseg.h (read: 1.8.2.2; unchanged in uvm_physseg.c 1.18) --- */
#if defined(UVM_HOTPLUG)
typedef struct uvm_physseg *uvm_physseg_t;
#define	UVM_PHYSSEG_TYPE_INVALID	NULL
#else
typedef int uvm_physseg_t;
#define	UVM_PHYSSEG_TYPE_INVALID	-1
#endif
bool	uvm_physseg_valid_p(uvm_physseg_t);
paddr_t	uvm_physseg_get_start(uvm_physseg_t);
paddr_t	uvm_physseg_get_end(uvm_physseg_t);
uvm_physseg_t uvm_physseg_get_first(void);
uvm_physseg_t uvm_physseg_get_next(uvm_physseg_t);
bool	uvm_physseg_plug(paddr_t, size_t, uvm_physseg_t *);
bool	uvm_physseg_unplug(paddr_t, size_t);

/* --- xen/xenbus.h (use: xenbus_probe.c 1.58.6.1, netbsd-10) --- */
struct xenbus_device;
struct xenbus_transaction;
struct xenbus_watch {
	SLIST_ENTRY(xenbus_watch) watch_next;
	char	*node;
	size_t	 node_sz;		/* netbsd-10: set with node */
	void	(*xbw_callback)(struct xenbus_watch *, const char **,
		    unsigned int);
	struct xenbus_device *xbw_dev;
};
/* netbsd-10: reads into the caller's buffer; 0 or a positive errno */
int	xenbus_read(struct xenbus_transaction *, const char *, const char *,
	    char *, size_t);
int	xenbus_read_ull(struct xenbus_transaction *, const char *,
	    const char *, unsigned long long *, int);
int	register_xenbus_watch(struct xenbus_watch *);
void	unregister_xenbus_watch(struct xenbus_watch *);
/* read: xenbus.h 1.13 (2011); xenbus_xs.c 1.9.2.1: 0 or a positive errno */
int	xenbus_rm(struct xenbus_transaction *, const char *, const char *);
int	xenbus_printf(struct xenbus_transaction *, const char *, const char *,
	    const char *, ...) __printflike(4, 5);

/* --- xen/hypervisor.h (read: 1.54, 2022-05-25) and hypercalls.h --- */
/*
 * hypervisor.h 1.54 includes these three generated files with no guard;
 * a module build must provide them (modules/balloon/gen-opt-headers.sh).
 */
#include "opt_xen.h"
#include "isa.h"
#include "pci.h"
#include <xen/include/public/xen.h>
#include <xen/include/public/memory.h>
/*
 * read: amd64/hypercalls.h 1.2.16.2: a static inline whose asm calls
 * into hypercall_page; declared here as what it is to a caller. Kept a
 * function so the symbol check sees hypercall_page, which the inline
 * needs from the kernel.
 */
extern char hypercall_page[];
static __inline int
HYPERVISOR_memory_op(unsigned int cmd, void *arg)
{
	long ret;
	register unsigned long a1 __asm__("rdi") = cmd;
	register unsigned long a2 __asm__("rsi") = (unsigned long)arg;

	__asm__ volatile("call hypercall_page + %c[off]"
	    : "=a"(ret), "+r"(a1), "+r"(a2)
	    : [off] "i"(__HYPERVISOR_memory_op * 32)
	    : "memory");
	return (int)ret;
}
#ifdef XENPV
/*
 * amd64/hypercalls.h: HYPERVISOR_mmuext_op(op, count, success_count,
 * domid), _hypercall4 (rdi, rsi, rdx, r10); struct mmuext_op and
 * MMUEXT_CLEAR_PAGE are Xen's public xen.h. Used by XENPV builds only.
 */
static __inline int
HYPERVISOR_mmuext_op(struct mmuext_op *op, int count, int *success_count,
    domid_t domid)
{
	long ret;
	register unsigned long a1 __asm__("rdi") = (unsigned long)op;
	register unsigned long a2 __asm__("rsi") = (unsigned long)count;
	register unsigned long a3 __asm__("rdx") =
	    (unsigned long)success_count;
	register unsigned long a4 __asm__("r10") = (unsigned long)domid;

	__asm__ volatile("call hypercall_page + %c[off]"
	    : "=a"(ret), "+r"(a1), "+r"(a2), "+r"(a3), "+r"(a4)
	    : [off] "i"(__HYPERVISOR_mmuext_op * 32)
	    : "memory");
	return (int)ret;
}
/* defined in x86/x86/x86_xpmap.c, which only XENPV kernels link */
union start_info_union {		/* read: hypervisor.h 1.54 */
	start_info_t start_info;
	char padding[512];
};
extern union start_info_union start_info_union;
#define	xen_start_info	(start_info_union.start_info)
#endif

/* --- xen/xenpmap.h (read: 1.39.12.1; XENPV only) --- */
#ifdef XENPV
#define	INVALID_P2M_ENTRY	(~0UL)
extern unsigned long *xpmap_phys_to_machine_mapping;
/* static inlines there; macros here so PGSHIFT is known at the use */
#define	xpmap_ptom_map(ppa, mpa)					\
	((void)(xpmap_phys_to_machine_mapping[(ppa) >> PGSHIFT] =	\
	    (mpa) >> PGSHIFT))
#define	xpmap_ptom_unmap(ppa)						\
	((void)(xpmap_phys_to_machine_mapping[(ppa) >> PGSHIFT] =	\
	    INVALID_P2M_ENTRY))
void	xpq_queue_machphys_update(paddr_t, paddr_t);
void	xpq_flush_queue(void);
#endif

#endif /* _BALLOON_NETBSD_KERNEL_ONLY_H_ */
