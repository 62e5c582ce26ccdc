/*	SPDX-License-Identifier: BSD-2-Clause	*/

/*
 * simtest: a tiny module the simulator's own tests load. It exercises
 * what the balloon shim uses: a MUSTJOIN kthread with a mutex and a
 * condvar (cv_timedwait), a sysctl subtree with a handler, a xenbus watch
 * on memory/target, kmem, and page allocation through uvm_pagealloc.
 *
 * hw.simtest.want (INT, handler, 0..4096): pages the worker should hold.
 * hw.simtest.held (INT, RO), .loops (QUAD, RO), .target (QUAD, RO: the
 * last memory/target seen by the watch), .flag (BOOL, RW), .name
 * (STRING, RW), .busy (INT, RW: FINI refuses with EBUSY), .leak (BOOL,
 * RW: FINI "forgets" its kmem and sysctl teardown).
 */

#include <stdlib.h>

#include "balloon_host_kernel.h"

MODULE(MODULE_CLASS_MISC, simtest, NULL);

#define ST_BUFSZ	128

static kmutex_t st_lock;
static kcondvar_t st_cv;
static struct sysctllog *st_log;
static lwp_t *st_lwp;
static struct pglist st_pages;
static struct xenbus_watch st_watch;
static void *st_buf;
static int st_stop, st_want, st_held, st_busy, st_in_cb;
static int64_t st_loops, st_target_kib;
static bool st_flag, st_leak;
static char st_name[16];

static void
st_watch_cb(struct xenbus_watch *w, const char **vec, unsigned int len)
{
	char buf[32];
	int64_t v = -1;

	(void)w;
	(void)vec;
	(void)len;
	mutex_enter(&st_lock);
	if (st_stop) {
		mutex_exit(&st_lock);
		return;
	}
	st_in_cb++;
	mutex_exit(&st_lock);

	if (xenbus_read(NULL, "memory", "target", buf, sizeof(buf)) == 0)
		v = strtoll(buf, NULL, 10);

	mutex_enter(&st_lock);
	st_target_kib = v;
	st_in_cb--;
	cv_broadcast(&st_cv);
	mutex_exit(&st_lock);
}

static void
st_worker(void *arg)
{
	struct vm_page *pg;
	int t;

	(void)arg;
	mutex_enter(&st_lock);
	while (!st_stop) {
		while (st_held < st_want) {
			pg = uvm_pagealloc(NULL, 0, NULL, UVM_PGA_ZERO);
			if (pg == NULL)
				break;
			TAILQ_INSERT_TAIL(&st_pages, pg, pageq.queue);
			st_held++;
		}
		while (st_held > st_want) {
			pg = TAILQ_FIRST(&st_pages);
			TAILQ_REMOVE(&st_pages, pg, pageq.queue);
			st_held--;
			uvm_pagefree(pg);
		}
		st_loops++;
		t = mstohz(1000);
		(void)cv_timedwait(&st_cv, &st_lock, t > 0 ? t : 1);
	}
	mutex_exit(&st_lock);
	kthread_exit(0);
}

static int
st_sysctl_want(SYSCTLFN_ARGS)
{
	struct sysctlnode node;
	int error, v;

	node = *rnode;
	mutex_enter(&st_lock);
	v = st_want;
	mutex_exit(&st_lock);
	node.sysctl_data = &v;
	error = sysctl_lookup(SYSCTLFN_CALL(&node));
	if (error || newp == NULL)
		return error;
	if (v < 0 || v > 4096)
		return EINVAL;
	mutex_enter(&st_lock);
	st_want = v;
	cv_signal(&st_cv);
	mutex_exit(&st_lock);
	return 0;
}

static int
st_sysctl_init(void)
{
	const struct sysctlnode *rnode = NULL, *cnode;
	int error;

	error = sysctl_createv(&st_log, 0, NULL, &rnode, 0, CTLTYPE_NODE,
	    "simtest", "simulator test module", NULL, 0, NULL, 0,
	    CTL_HW, CTL_CREATE, CTL_EOL);
	if (error)
		return error;
#define ST_NODE(flags, type, name, desc, fn, data, size)		\
	error = sysctl_createv(&st_log, 0, &rnode, &cnode, flags, type,	\
	    name, desc, fn, 0, data, size, CTL_CREATE, CTL_EOL);	\
	if (error)							\
		return error
	ST_NODE(CTLFLAG_READWRITE, CTLTYPE_INT, "want",
	    "pages the worker holds", st_sysctl_want, NULL, 0);
	ST_NODE(CTLFLAG_READONLY, CTLTYPE_INT, "held", "pages held",
	    NULL, &st_held, 0);
	ST_NODE(CTLFLAG_READONLY, CTLTYPE_QUAD, "loops", "worker loops",
	    NULL, &st_loops, 0);
	ST_NODE(CTLFLAG_READONLY, CTLTYPE_QUAD, "target",
	    "memory/target seen by the watch", NULL, &st_target_kib, 0);
	ST_NODE(CTLFLAG_READWRITE, CTLTYPE_BOOL, "flag", "a flag",
	    NULL, &st_flag, 0);
	ST_NODE(CTLFLAG_READWRITE, CTLTYPE_STRING, "name", "a name",
	    NULL, st_name, sizeof(st_name));
	ST_NODE(CTLFLAG_READWRITE, CTLTYPE_INT, "busy", "refuse unload",
	    NULL, &st_busy, 0);
	ST_NODE(CTLFLAG_READWRITE, CTLTYPE_BOOL, "leak", "leak on unload",
	    NULL, &st_leak, 0);
#undef ST_NODE
	return 0;
}

static int
st_init(void)
{
	int error;

	if (device_find_by_xname("balloon0") != NULL)
		return EEXIST;
	st_stop = st_want = st_held = st_busy = st_in_cb = 0;
	st_loops = 0;
	st_target_kib = -1;
	st_flag = st_leak = false;
	memcpy(st_name, "simtest", sizeof("simtest"));
	TAILQ_INIT(&st_pages);
	st_log = NULL;
	mutex_init(&st_lock, MUTEX_DEFAULT, IPL_NONE);
	cv_init(&st_cv, "simtest");
	st_buf = kmem_zalloc(ST_BUFSZ, KM_SLEEP);

	error = st_sysctl_init();
	if (error)
		goto fail;
	memset(&st_watch, 0, sizeof(st_watch));
	st_watch.node = (char *)(uintptr_t)"memory/target";
	st_watch.node_sz = sizeof("memory/target");
	st_watch.xbw_callback = st_watch_cb;
	error = register_xenbus_watch(&st_watch);
	if (error)
		goto fail;
	error = kthread_create(PRI_NONE, KTHREAD_MPSAFE | KTHREAD_MUSTJOIN,
	    NULL, st_worker, NULL, &st_lwp, "simtest%d", 0);
	if (error) {
		unregister_xenbus_watch(&st_watch);
		goto fail;
	}
	printf("simtest: loaded\n");
	return 0;
fail:
	sysctl_teardown(&st_log);
	kmem_free(st_buf, ST_BUFSZ);
	cv_destroy(&st_cv);
	mutex_destroy(&st_lock);
	return error;
}

static int
st_fini(void)
{
	struct vm_page *pg;

	mutex_enter(&st_lock);
	if (st_busy) {
		mutex_exit(&st_lock);
		return EBUSY;
	}
	st_stop = 1;
	cv_broadcast(&st_cv);
	mutex_exit(&st_lock);
	kthread_join(st_lwp);

	unregister_xenbus_watch(&st_watch);
	mutex_enter(&st_lock);
	while (st_in_cb > 0)
		cv_wait(&st_cv, &st_lock);
	mutex_exit(&st_lock);

	while ((pg = TAILQ_FIRST(&st_pages)) != NULL) {
		TAILQ_REMOVE(&st_pages, pg, pageq.queue);
		uvm_pagefree(pg);
	}
	st_held = 0;
	if (!st_leak) {
		sysctl_teardown(&st_log);
		kmem_free(st_buf, ST_BUFSZ);
	}
	cv_destroy(&st_cv);
	mutex_destroy(&st_lock);
	printf("simtest: unloaded\n");
	return 0;
}

static int
simtest_modcmd(modcmd_t cmd, void *arg)
{
	(void)arg;
	switch (cmd) {
	case MODULE_CMD_INIT:
		return st_init();
	case MODULE_CMD_FINI:
		return st_fini();
	default:
		return ENOTTY;
	}
}
