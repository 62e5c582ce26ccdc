/*	SPDX-License-Identifier: BSD-2-Clause	*/

/*
 * The boot segment walker for kernels with options UVM_HOTPLUG (handles are pointers).
 * See balloon_shim.h for why there are two.
 */

/* Select the pointer handle of kernels with options UVM_HOTPLUG. */
#define UVM_HOTPLUG 1
#include "balloon_kernel.h"
#include "balloon_shim.h"

size_t
balloon_physseg_walk_hotplug(struct balloon_frame_range *r, size_t max)
{
	uvm_physseg_t seg;
	size_t n = 0;

	for (seg = uvm_physseg_get_first(); uvm_physseg_valid_p(seg);
	    seg = uvm_physseg_get_next(seg)) {
		if (n < max) {
			r[n].start_pfn = uvm_physseg_get_start(seg);
			r[n].end_pfn = uvm_physseg_get_end(seg);
		}
		n++;
	}
	return n;
}
