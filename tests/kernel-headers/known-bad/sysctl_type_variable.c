/*	SPDX-License-Identifier: BSD-2-Clause	*/

/*
 * Known bad, for the gate's own test: the mistake the shim once made.
 * sysctl_createv() is a macro (sys/sysctl.h 1.236) that pastes its type
 * argument into __sysctl_verify_<type>_arg(); a variable there names a
 * function that does not exist. The gate must refuse this file.
 */

#include "balloon_kernel.h"

int	balloon_bad_sysctl(struct sysctllog **, int);

int
balloon_bad_sysctl(struct sysctllog **log, int type)
{

	return sysctl_createv(log, 0, NULL, NULL, CTLFLAG_READONLY, type,
	    "bad", "a node whose type is a variable", NULL, 0, NULL, 0,
	    CTL_HW, CTL_CREATE, CTL_EOL);
}
