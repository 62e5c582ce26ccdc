/*	SPDX-License-Identifier: BSD-2-Clause	*/

/*
 * Known bad, for the gate's own test: a symbol no NetBSD kernel exports
 * under this name (the module loader would refuse the module). The gate
 * must refuse this file through the symbol check.
 */

#include "balloon_kernel.h"

void	balloon_bad_symbol(void);
void	xen_balloon_grow_p2m(unsigned long);

void
balloon_bad_symbol(void)
{

	xen_balloon_grow_p2m(1);
}
