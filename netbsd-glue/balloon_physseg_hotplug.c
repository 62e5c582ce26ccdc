/*	SPDX-License-Identifier: BSD-2-Clause	*/

/*
 * The boot segment walker for kernels with options UVM_HOTPLUG (handles are pointers).
 * See balloon_shim.h for why there are two.
 */

/* Select the pointer handle of kernels with options UVM_HOTPLUG. */
#define UVM_HOTPLUG 1
#include "balloon_kernel.h"
#include "balloon_shim.h"

#define BALLOON_PHYSSEG_WALK	balloon_physseg_walk_hotplug
#include "balloon_physseg_walk.h"
