/*	SPDX-License-Identifier: BSD-2-Clause	*/

/*
 * balloon_shim.h: declarations shared by the shim's own files, not seen
 * by Rust (that is glue.h).
 */

#ifndef _BALLOON_SHIM_H_
#define _BALLOON_SHIM_H_

#include "glue.h"

/*
 * Walk UVM's segments into ranges; returns how many there are (at most
 * max are stored). The handle type of uvm_physseg(9) differs between
 * kernels with and without options UVM_HOTPLUG, so there is one walker
 * compiled for each and INIT calls the one for the running kernel.
 */
size_t	balloon_physseg_walk_hotplug(struct balloon_frame_range *, size_t);
size_t	balloon_physseg_walk_array(struct balloon_frame_range *, size_t);

#endif /* _BALLOON_SHIM_H_ */
