/*	SPDX-License-Identifier: BSD-2-Clause	*/

/*
 * balloon_kernel.h: the one place the shim gets kernel interfaces from.
 *
 * In a kernel build (_KERNEL, bsd.kmodule.mk) this pulls in the real
 * NetBSD and Xen headers. Otherwise it pulls in the host stand-ins of the
 * simulated domU (tests/sim/include/balloon_host_kernel.h), which declare
 * the same names with the same types, so the shim compiles unchanged on
 * Linux and runs there against the simulator.
 */

#ifndef _BALLOON_KERNEL_H_
#define _BALLOON_KERNEL_H_

#ifdef _KERNEL
#include <sys/param.h>
#include <sys/types.h>
#include <sys/systm.h>
#include <sys/condvar.h>
#include <sys/device.h>
#include <sys/errno.h>
#include <sys/kmem.h>
#include <sys/kthread.h>
#include <sys/ksyms.h>
#include <sys/module.h>
#include <sys/mutex.h>
#include <sys/queue.h>
#include <sys/sysctl.h>
#include <sys/time.h>

#include <uvm/uvm_extern.h>
#include <uvm/uvm_page.h>
#include <uvm/uvm_physseg.h>

#include <x86/cpu.h>

#include <xen/hypervisor.h>
#include <xen/xen.h>
#include <xen/xenbus.h>
#ifdef XENPV
#include <xen/xenpmap.h>
#endif
#include <xen/include/public/memory.h>
#else
#include <balloon_host_kernel.h>
#endif

/*
 * BALLOON_PV_P2M: this build can run in a PV domain, keeping the p2m
 * and telling Xen the m2p. A XENPV kernel (XEN3_DOMU) has the p2m
 * helpers (x86_xpmap.c); GENERIC, which PVH and HVM guests boot, does
 * not link them, so its module leaves them out and refuses a PV guest.
 * The simulated domU runs both modes from one build.
 */
#if !defined(_KERNEL) || defined(XENPV)
#define BALLOON_PV_P2M	1
#endif

#endif /* _BALLOON_KERNEL_H_ */
