/*	SPDX-License-Identifier: BSD-2-Clause	*/

/*
 * Host stand-ins for the NetBSD kernel interfaces balloon.kmod uses.
 *
 * netbsd-glue/balloon_kernel.h includes this file instead of the real
 * NetBSD headers when _KERNEL is not defined, so that the same shim
 * compiles on Linux and runs inside the simulated domU (tests/sim), which
 * defines every function and variable declared here.
 *
 * The names and types follow the NetBSD headers and manual pages named
 * beside each group (revisions in docs/kernel-interfaces.md). Where the
 * real header has a static inline (xpmap_*) or a macro (uvm_pagealloc,
 * VM_PAGE_TO_PHYS, mstohz, MODULE) the stand-in has the same name with
 * the same meaning. Structures carry only the members the shim uses;
 * members named sim_* are the simulator's own and the shim never touches
 * them. Values of constants the shim only passes through are the real
 * ones where they were read, else marked "host only".
 */

#ifndef _BALLOON_HOST_KERNEL_H_
#define _BALLOON_HOST_KERNEL_H_

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

/* sys/types.h */
typedef uint64_t	paddr_t;
typedef uint64_t	psize_t;
typedef uint64_t	vaddr_t;
typedef int64_t		voff_t;
typedef uint64_t	u_quad_t;
typedef unsigned int	u_int;
typedef unsigned long	u_long;
typedef int		pri_t;

#define __dead		__attribute__((__noreturn__))
#define __unused	__attribute__((__unused__))
#define __packed	__attribute__((__packed__))
#define __printflike(f, a)	__attribute__((__format__(__printf__, f, a)))

/* sys/errno.h: NetBSD's values, not the host's. */
#define EPERM		1
#define ENOENT		2
#define EIO		5
#define ENXIO		6
#define ENOMEM		12
#define EFAULT		14
#define EBUSY		16
#define EEXIST		17
#define ENODEV		19
#define EINVAL		22
#define ENOTTY		25
#define ENOSPC		28
#define ERANGE		34
#define EAGAIN		35
#define EWOULDBLOCK	EAGAIN
#define EOPNOTSUPP	45
#define EFTYPE		79

/* sys/param.h, machine/param.h (amd64) */
#define PAGE_SHIFT	12
#define PAGE_SIZE	(1 << PAGE_SHIFT)
#define atop(x)		((paddr_t)(x) >> PAGE_SHIFT)
#define ptoa(x)		((paddr_t)(x) << PAGE_SHIFT)
extern int hz;
#define mstohz(ms)	((unsigned int)(((ms) + 0UL) * hz / 1000))
#define MIN(a, b)	((a) < (b) ? (a) : (b))
#define MAX(a, b)	((a) > (b) ? (a) : (b))
#define __arraycount(a)	(sizeof(a) / sizeof((a)[0]))
/* As sys/cdefs.h: drops const to hand a pointer to an API taking void *. */
#define __UNCONST(a)	((void *)(unsigned long)(const void *)(a))

/* sys/systm.h; the libc functions of the same names serve on the host. */
void	*memset(void *, int, size_t);
void	*memcpy(void *, const void *, size_t);
int	 snprintf(char *, size_t, const char *, ...) __printflike(3, 4);
/*
 * The kernel's printf(9) writes to the message buffer (dmesg). On the
 * host the name belongs to libc, so the shim's calls are routed to the
 * simulator's message buffer under another name.
 */
#define printf	sim_kernel_printf
void	 sim_kernel_printf(const char *, ...) __printflike(1, 2);
void	 panic(const char *, ...) __dead __printflike(1, 2);

/* sys/time.h: getmicrouptime(9) */
struct timeval;
#include <sys/time.h>
void	 getmicrouptime(struct timeval *);

/* sys/kmem.h: kmem(9) */
typedef unsigned int km_flag_t;
#define KM_SLEEP	0x00000001
#define KM_NOSLEEP	0x00000002
void	*kmem_alloc(size_t, km_flag_t);
void	*kmem_zalloc(size_t, km_flag_t);
void	 kmem_free(void *, size_t);

/* sys/mutex.h, sys/condvar.h: mutex(9), condvar(9) */
typedef struct kmutex {
	void	*sim_impl;
} kmutex_t;
typedef enum kmutex_type_t {
	MUTEX_SPIN = 0,		/* host only */
	MUTEX_ADAPTIVE = 1,	/* host only */
	MUTEX_DEFAULT = 2	/* host only */
} kmutex_type_t;
#define IPL_NONE	0x0
void	 mutex_init(kmutex_t *, kmutex_type_t, int);
void	 mutex_destroy(kmutex_t *);
void	 mutex_enter(kmutex_t *);
void	 mutex_exit(kmutex_t *);
int	 mutex_owned(const kmutex_t *);

typedef struct kcondvar {
	void	*sim_impl;
} kcondvar_t;
void	 cv_init(kcondvar_t *, const char *);
void	 cv_destroy(kcondvar_t *);
void	 cv_wait(kcondvar_t *, kmutex_t *);
int	 cv_timedwait(kcondvar_t *, kmutex_t *, int);
void	 cv_signal(kcondvar_t *);
void	 cv_broadcast(kcondvar_t *);

/* sys/kthread.h: kthread(9) */
struct lwp;
typedef struct lwp lwp_t;
struct cpu_info;
#define PRI_NONE		(-1)
#define KTHREAD_MPSAFE		0x02
#define KTHREAD_MUSTJOIN	0x10
int	 kthread_create(pri_t, int, struct cpu_info *, void (*)(void *),
	    void *, lwp_t **, const char *, ...) __printflike(7, 8);
void	 kthread_exit(int) __dead;
int	 kthread_join(lwp_t *);

/* sys/module.h: module(9) */
typedef enum modcmd {
	MODULE_CMD_INIT,
	MODULE_CMD_FINI,
	MODULE_CMD_STAT,
	MODULE_CMD_AUTOUNLOAD
} modcmd_t;
typedef enum modclass {
	MODULE_CLASS_ANY,
	MODULE_CLASS_MISC,
	MODULE_CLASS_VFS,
	MODULE_CLASS_DRIVER,
	MODULE_CLASS_EXEC,
	MODULE_CLASS_SECMODEL,
	MODULE_CLASS_BUFQ
} modclass_t;
/* What the simulator's modload finds: the name and the modcmd. */
struct sim_modinfo {
	const char	*mi_name;
	modclass_t	 mi_class;
	const char	*mi_required;
	int		(*mi_modcmd)(modcmd_t, void *);
};
#define MODULE(class, name, required)					\
	static int name##_modcmd(modcmd_t, void *);			\
	const struct sim_modinfo name##_modinfo = {			\
		#name, class, required, name##_modcmd			\
	}

/* sys/device.h: device_find_by_xname(9) */
struct device;
typedef struct device *device_t;
device_t device_find_by_xname(const char *);

/* sys/ksyms.h */
#define KSYMS_EXTERN	0x0000	/* sys/ksyms.h: global symbols only */
#define KSYMS_ANY	0x0200	/* host only */
int	 ksyms_getval(const char *, const char *, unsigned long *, int);

/* sys/sysctl.h: sysctl(9) */
#define CTL_EOL		(-1)
#define CTL_CREATE	(-3)	/* host only */
#define CTL_HW		6
#define CTLTYPE_NODE	1
#define CTLTYPE_INT	2
#define CTLTYPE_STRING	3
#define CTLTYPE_QUAD	4
#define CTLTYPE_STRUCT	5
#define CTLTYPE_BOOL	6
#define CTLFLAG_READONLY	0x00000000
#define CTLFLAG_READWRITE	0x00000070
#define CTLFLAG_PERMANENT	0x00000200
#define CTLFLAG_UNSIGNED	0x00080000
#define SYSCTL_NAMELEN	32
struct lwp;
struct sysctlnode;
#define SYSCTLFN_PROTO	const int *, u_int, void *, size_t *, const void *, \
	size_t, const int *, struct lwp *, const struct sysctlnode *
#define SYSCTLFN_ARGS	const int *name, u_int namelen, void *oldp,	\
	size_t *oldlenp, const void *newp, size_t newlen,		\
	const int *oname, struct lwp *l, const struct sysctlnode *rnode
#define SYSCTLFN_CALL(node)	name, namelen, oldp, oldlenp, newp,	\
	newlen, oname, l, node
typedef int (*sysctlfn)(SYSCTLFN_PROTO);
struct sysctlnode {
	uint32_t	 sysctl_flags;
	int32_t		 sysctl_num;
	char		 sysctl_name[SYSCTL_NAMELEN];
	void		*sysctl_data;
	size_t		 sysctl_size;
	sysctlfn	 sysctl_func;
	const char	*sysctl_desc;
	void		*sim_node;
};
struct sysctllog;
int	 sysctl_createv(struct sysctllog **, int, const struct sysctlnode **,
	    const struct sysctlnode **, int, int, const char *, const char *,
	    sysctlfn, u_quad_t, void *, size_t, ...);
int	 sysctl_lookup(SYSCTLFN_PROTO);
void	 sysctl_teardown(struct sysctllog **);

/* uvm/uvm_extern.h, uvm/uvm_page.h, uvm/uvm_pglist.h */
struct uvm_object;
struct vm_anon;
struct vm_page {
	union {
		TAILQ_ENTRY(vm_page) queue;
	} pageq;
};
TAILQ_HEAD(pglist, vm_page);
#define UVM_PGA_USERESERVE	0x0001
#define UVM_PGA_ZERO		0x0002
#define UVM_PGA_STRAT_NORMAL	0
struct vm_page *uvm_pagealloc_strat(struct uvm_object *, voff_t,
	    struct vm_anon *, int, int, int);
#define uvm_pagealloc(obj, off, anon, flags)				\
	uvm_pagealloc_strat((obj), (off), (anon), (flags),		\
	    UVM_PGA_STRAT_NORMAL, 0)
void	 uvm_pagefree(struct vm_page *);
int	 uvm_pglistalloc(psize_t, paddr_t, paddr_t, paddr_t, paddr_t,
	    struct pglist *, int, int);
void	 uvm_pglistfree(struct pglist *);
paddr_t	 uvm_vm_page_to_phys(const struct vm_page *);
struct vm_page *uvm_phys_to_vm_page(paddr_t);
#define VM_PAGE_TO_PHYS(pg)	uvm_vm_page_to_phys(pg)
#define PHYS_TO_VM_PAGE(pa)	uvm_phys_to_vm_page(pa)
void	 pmap_zero_page(paddr_t);
int	 uvm_availmem(bool);
struct uvmexp {
	int	npages;
	int	free;
	int	freemin;
	int	freetarg;
};
extern struct uvmexp uvmexp;
extern psize_t physmem;

/*
 * uvm/uvm_physseg.h: uvm_hotplug(9). The handle is a pointer in kernels
 * with options UVM_HOTPLUG and an int in the others; a module sees
 * whichever its translation unit selects, so each walker of the segment
 * list is compiled for one kind (netbsd-glue/balloon_physseg_*.c).
 */
#ifdef UVM_HOTPLUG
struct uvm_physseg;
typedef struct uvm_physseg *uvm_physseg_t;
#define UVM_PHYSSEG_TYPE_INVALID	NULL
#else
typedef int uvm_physseg_t;
#define UVM_PHYSSEG_TYPE_INVALID	(-1)
#endif
bool	 uvm_physseg_plug(paddr_t, size_t, uvm_physseg_t *);
bool	 uvm_physseg_unplug(paddr_t, size_t);
bool	 uvm_physseg_valid_p(uvm_physseg_t);
uvm_physseg_t uvm_physseg_get_first(void);
uvm_physseg_t uvm_physseg_get_next(uvm_physseg_t);
paddr_t	 uvm_physseg_get_start(uvm_physseg_t);
paddr_t	 uvm_physseg_get_end(uvm_physseg_t);

/* x86/cpu.h: which kind of guest this kernel runs as */
typedef enum {
	VM_GUEST_NO = 0,
	VM_GUEST_VM,
	VM_GUEST_XENPV,
	VM_GUEST_XENPVH,
	VM_GUEST_XENHVM,
	VM_GUEST_XENPVHVM
} vm_guest_t;
extern vm_guest_t vm_guest;

/* Xen public headers: xen.h, memory.h (xen-project/xen @946c9ff4) */
typedef unsigned long	xen_pfn_t;
typedef unsigned long	xen_ulong_t;
typedef uint16_t	domid_t;
#define DOMID_SELF	((domid_t)0x7FF0U)
#define XENMEM_increase_reservation	0
#define XENMEM_decrease_reservation	1
#define XENMEM_current_reservation	3
#define XENMEM_maximum_reservation	4
#define XENMEM_populate_physmap		6
#define XENMEM_memory_map		9
typedef struct {
	xen_pfn_t	*p;
} __guest_handle_xen_pfn_t;
typedef struct {
	void		*p;
} __guest_handle_void;
/* memory.h: the map the toolstack set (XENMEM_set_memory_map). */
struct xen_memory_map {
	unsigned int	 nr_entries;
	__guest_handle_void buffer;
};
#define set_xen_guest_handle(hnd, val)	do { (hnd).p = (val); } while (0)
struct xen_memory_reservation {
	__guest_handle_xen_pfn_t extent_start;
	xen_ulong_t	 nr_extents;
	unsigned int	 extent_order;
	unsigned int	 mem_flags;
	domid_t		 domid;
};
/*
 * xen.h: MMUEXT_CLEAR_PAGE, a PV guest's way to have Xen zero one of its
 * pages (what a XENPV kernel's pmap_zero_page does: x86/pmap.c 1.414,
 * xen_pagezero in x86_xpmap.c). Layout as in xen.h: cmd, then two
 * 8-byte unions.
 */
#define MMUEXT_CLEAR_PAGE	16
struct mmuext_op {
	unsigned int	 cmd;
	union {
		xen_pfn_t	 mfn;
		unsigned long	 linear_addr;
	} arg1;
	union {
		unsigned int	 nr_ents;
		const void	*vcpumask;
		xen_pfn_t	 src_mfn;
	} arg2;
};
/* start_info: only the member the shim reads. */
struct start_info {
	unsigned long	nr_pages;
};
extern struct start_info xen_start_info;

/* sys/lwp.h, kern_synch.c: keep the thread on its CPU. */
void	 kpreempt_disable(void);
void	 kpreempt_enable(void);

/* xen/hypervisor.h, amd64/hypercalls.h: static inlines in the kernel. */
int	 HYPERVISOR_memory_op(unsigned int, void *);
int	 HYPERVISOR_mmuext_op(struct mmuext_op *, int, int *, domid_t);

/* xen/xenpmap.h: the PV p2m table and its inline helpers. */
#define INVALID_P2M_ENTRY	(~0UL)
extern unsigned long *xpmap_phys_to_machine_mapping;
void	 xpq_queue_machphys_update(paddr_t, paddr_t);
void	 xpq_flush_queue(void);

static inline paddr_t
xpmap_ptom_masked(paddr_t ppa)
{
	return ptoa(xpmap_phys_to_machine_mapping[atop(ppa)]);
}

static inline void
xpmap_ptom_map(paddr_t ppa, paddr_t mpa)
{
	xpmap_phys_to_machine_mapping[atop(ppa)] = atop(mpa);
}

static inline void
xpmap_ptom_unmap(paddr_t ppa)
{
	xpmap_phys_to_machine_mapping[atop(ppa)] = INVALID_P2M_ENTRY;
}

/* xen/xenbus.h (netbsd-10: node_sz, reads into the caller's buffer) */
struct xenbus_transaction;
struct xenbus_device;
struct xenbus_watch {
	SLIST_ENTRY(xenbus_watch) watch_next;
	char		*node;
	size_t		 node_sz;
	void		(*xbw_callback)(struct xenbus_watch *, const char **,
			    unsigned int);
	struct xenbus_device *xbw_dev;
};
int	 register_xenbus_watch(struct xenbus_watch *);
void	 unregister_xenbus_watch(struct xenbus_watch *);
int	 xenbus_read(struct xenbus_transaction *, const char *, const char *,
	    char *, size_t);
/* xenbus.h 1.13 (2011); unchanged in the xenbus_xs.c of netbsd-10 use. */
int	 xenbus_rm(struct xenbus_transaction *, const char *, const char *);
int	 xenbus_printf(struct xenbus_transaction *, const char *, const char *,
	    const char *, ...) __printflike(4, 5);

/*
 * memset(9) through the amd64 direct map (x86/pmap.h 1.134
 * PMAP_DIRECT_MAP, pmap.c 1.414 pmap_init_directmap) writes guest frames.
 * The simulated domU's direct map is a range of the kernel half of the
 * address space, which no host process has mapped, so every memset of
 * the code under test goes to a stand-in that applies the zeroing rules
 * for a destination inside it (tests/sim/src/dmap.rs) and is the host's
 * memset for any other. Defined last, after every host header that
 * declares memset.
 */
void	*sim_kernel_memset(void *, int, size_t);
#define memset(d, c, n)	sim_kernel_memset((d), (c), (n))

#endif /* _BALLOON_HOST_KERNEL_H_ */
