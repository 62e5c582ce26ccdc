/*	SPDX-License-Identifier: BSD-2-Clause	*/

/*
 * The body of the boot segment walkers: included once by each of
 * balloon_physseg_array.c and balloon_physseg_hotplug.c, which differ only
 * in the uvm_physseg_t they compile it against (see balloon_shim.h).
 * The includer defines BALLOON_PHYSSEG_WALK, the function's name.
 */

#ifndef BALLOON_PHYSSEG_WALK
#error "define BALLOON_PHYSSEG_WALK before including balloon_physseg_walk.h"
#endif

size_t
BALLOON_PHYSSEG_WALK(struct balloon_frame_range *r, size_t max)
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
