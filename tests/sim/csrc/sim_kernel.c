/*	SPDX-License-Identifier: BSD-2-Clause	*/

/*
 * The C half of the simulated NetBSD kernel (tests/sim).
 *
 * Rust has no stable variadic functions, so the variadic kernel entry
 * points (printf(9) as sim_kernel_printf, panic(9), kthread_create(9),
 * sysctl_createv(9)) live here: they format or collect their arguments
 * and hand them to the Rust model (sim_rs_*). So do the TAILQ helpers for
 * struct pglist and the kthread trampoline that gives kthread_exit(9) its
 * "never returns" meaning with setjmp/longjmp.
 *
 * kthread_exit assumption: between sim_kthread_trampoline() (called by
 * the Rust thread spawner) and kthread_exit() there are only C frames:
 * the kthread function itself and C functions it calls. longjmp across
 * Rust frames would skip their destructors, so a kthread function must
 * never call kthread_exit from inside a Rust callee. The balloon shim's
 * worker calls into the Rust core and returns to C before exiting, which
 * satisfies this.
 */

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

#include "balloon_host_kernel.h"

/* The Rust model (tests/sim/src). */
void	sim_rs_printf(const char *);
__dead void sim_rs_panic(const char *);
int	sim_rs_kthread_create(int, int, void (*)(void *), void *, lwp_t **,
	    const char *);
int	sim_rs_xenbus_write(const char *, const char *, const char *);
int	sim_rs_sysctl_create(struct sysctllog **, int,
	    const struct sysctlnode **, const struct sysctlnode **, int, int,
	    const char *, const char *, sysctlfn, u_quad_t, void *, size_t,
	    const int *, int);

/* Host formatting into a malloc'd buffer; NULL only if malloc fails. */
static char *
sim_vformat(const char *fmt, va_list ap)
{
	va_list ap2;
	char *buf;
	int n;

	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		n = 0;
	buf = malloc((size_t)n + 1);
	if (buf == NULL)
		return NULL;
	vsnprintf(buf, (size_t)n + 1, fmt, ap);
	return buf;
}

void
sim_kernel_printf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	s = sim_vformat(fmt, ap);
	va_end(ap);
	sim_rs_printf(s != NULL ? s : "(sim: printf buffer allocation failed)\n");
	free(s);
}

void
panic(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	s = sim_vformat(fmt, ap);
	va_end(ap);
	sim_rs_panic(s != NULL ? s : fmt);
}

int
kthread_create(pri_t pri, int flags, struct cpu_info *ci,
    void (*func)(void *), void *arg, lwp_t **newlp, const char *fmt, ...)
{
	va_list ap;
	char *name;
	int error;

	(void)ci;
	if (fmt == NULL)
		panic("kthread_create: fmt is NULL");	/* kthread.9 */
	va_start(ap, fmt);
	name = sim_vformat(fmt, ap);
	va_end(ap);
	if (name == NULL)
		return EAGAIN;
	error = sim_rs_kthread_create(pri, flags, func, arg, newlp, name);
	free(name);
	return error;
}

#define SIM_SYSCTL_MAXDEPTH	16

int
sysctl_createv(struct sysctllog **log, int cflags,
    const struct sysctlnode **rnode, const struct sysctlnode **cnode,
    int flags, int type, const char *name, const char *desc, sysctlfn func,
    u_quad_t qv, void *newp, size_t newlen, ...)
{
	va_list ap;
	int mib[SIM_SYSCTL_MAXDEPTH];
	int n, v;

	va_start(ap, newlen);
	for (n = 0;; n++) {
		v = va_arg(ap, int);
		if (v == CTL_EOL)
			break;
		if (n == SIM_SYSCTL_MAXDEPTH) {
			va_end(ap);
			return EINVAL;
		}
		mib[n] = v;
	}
	va_end(ap);
	return sim_rs_sysctl_create(log, cflags, rnode, cnode, flags, type,
	    name, desc, func, qv, newp, newlen, mib, n);
}

/*
 * xenbus_printf (xenbus_xs.c 1.9.2.1): formats the value and writes it as
 * xenbus_write does; 0 or a positive errno.
 */
int
xenbus_printf(struct xenbus_transaction *t, const char *dir,
    const char *node, const char *fmt, ...)
{
	va_list ap;
	char *s;
	int error;

	(void)t;
	va_start(ap, fmt);
	s = sim_vformat(fmt, ap);
	va_end(ap);
	if (s == NULL)
		return ENOMEM;
	error = sim_rs_xenbus_write(dir, node, s);
	free(s);
	return error;
}

/* kthread trampoline; see the assumption at the top of this file. */
static __thread jmp_buf *sim_kthread_jb;
static __thread int sim_kthread_code;

/*
 * Runs func(arg) on the calling (freshly spawned) thread. Returns the
 * kthread_exit code, or -1 if func returned without calling kthread_exit.
 */
int
sim_kthread_trampoline(void (*func)(void *), void *arg)
{
	jmp_buf jb;

	sim_kthread_jb = &jb;
	if (setjmp(jb) == 0) {
		func(arg);
		sim_kthread_jb = NULL;
		return -1;
	}
	sim_kthread_jb = NULL;
	return sim_kthread_code;
}

void
kthread_exit(int ecode)
{
	if (sim_kthread_jb == NULL)
		panic("kthread_exit called outside a kthread");
	sim_kthread_code = ecode;
	longjmp(*sim_kthread_jb, 1);
}

/* struct pglist helpers (sys/queue.h TAILQ through pageq.queue). */
void
sim_pglist_insert_tail(struct pglist *list, struct vm_page *pg)
{
	TAILQ_INSERT_TAIL(list, pg, pageq.queue);
}

/* uvm_pglist.c 1.90: uvm_pglistfree calls uvm_pagefree on every page. */
void
uvm_pglistfree(struct pglist *list)
{
	struct vm_page *pg;

	while ((pg = TAILQ_FIRST(list)) != NULL) {
		TAILQ_REMOVE(list, pg, pageq.queue);
		uvm_pagefree(pg);
	}
}

/*
 * Link anchor. The Rust model and this file are bundled into one rlib
 * archive; Rust references sim_kthread_trampoline, which pulls this
 * object in, and this table then pulls in every object defining a kernel
 * symbol of the contract, so that a C shim linked from a later archive
 * (the balloon crate's native library) finds all of them.
 */
void *const sim_kernel_symbols[] = {
	(void *)sim_kernel_printf, (void *)panic, (void *)getmicrouptime,
	(void *)kmem_alloc, (void *)kmem_zalloc, (void *)kmem_free,
	(void *)mutex_init, (void *)mutex_destroy, (void *)mutex_enter,
	(void *)mutex_exit, (void *)mutex_owned, (void *)cv_init,
	(void *)cv_destroy, (void *)cv_wait, (void *)cv_timedwait,
	(void *)cv_signal, (void *)cv_broadcast, (void *)kthread_create,
	(void *)kthread_exit, (void *)kthread_join,
	(void *)device_find_by_xname, (void *)ksyms_getval,
	(void *)sysctl_createv, (void *)sysctl_lookup, (void *)sysctl_teardown,
	(void *)uvm_pagealloc_strat, (void *)uvm_pagefree,
	(void *)uvm_pglistalloc, (void *)uvm_pglistfree,
	(void *)uvm_vm_page_to_phys, (void *)uvm_phys_to_vm_page,
	(void *)pmap_zero_page, (void *)uvm_availmem, (void *)&uvmexp,
	(void *)&physmem, (void *)&hz, (void *)&vm_guest,
	(void *)uvm_physseg_plug, (void *)uvm_physseg_unplug,
	(void *)uvm_physseg_valid_p, (void *)uvm_physseg_get_first,
	(void *)uvm_physseg_get_next, (void *)uvm_physseg_get_start,
	(void *)uvm_physseg_get_end, (void *)&xen_start_info,
	(void *)HYPERVISOR_memory_op, (void *)HYPERVISOR_mmuext_op,
	(void *)&xpmap_phys_to_machine_mapping,
	(void *)xpq_queue_machphys_update, (void *)xpq_flush_queue,
	(void *)kpreempt_disable, (void *)kpreempt_enable,
	(void *)register_xenbus_watch, (void *)unregister_xenbus_watch,
	(void *)xenbus_read, (void *)xenbus_printf, (void *)xenbus_rm,
};
