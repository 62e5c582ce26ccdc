/*	SPDX-License-Identifier: BSD-2-Clause	*/

/*
 * The boot segment walker for kernels without options UVM_HOTPLUG (handles are array indices).
 * See balloon_shim.h for why there are two.
 */

#include "balloon_kernel.h"
#include "balloon_shim.h"

#define BALLOON_PHYSSEG_WALK	balloon_physseg_walk_array
#include "balloon_physseg_walk.h"
