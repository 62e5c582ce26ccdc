/*	SPDX-License-Identifier: BSD-2-Clause	*/
/* Walks the segment list as a UVM_HOTPLUG module would (pointer handles). */
#define UVM_HOTPLUG
#include "balloon_host_kernel.h"

int
simtest_walk_hotplug(uint64_t *starts, uint64_t *ends, int max)
{
	uvm_physseg_t s;
	int n = 0;

	for (s = uvm_physseg_get_first(); uvm_physseg_valid_p(s) && n < max;
	    s = uvm_physseg_get_next(s), n++) {
		starts[n] = uvm_physseg_get_start(s);
		ends[n] = uvm_physseg_get_end(s);
	}
	if (s != UVM_PHYSSEG_TYPE_INVALID && n < max)
		return -1;
	return n;
}
