/*	SPDX-License-Identifier: BSD-2-Clause	*/

/*
 * Known bad, for the gate's own test: a kernel build uses -nostdinc, so
 * <stdint.h> does not exist there (kernel code takes the fixed-width
 * types from <sys/types.h>). The gate must refuse this file.
 */

#include <stdint.h>
#include "balloon_kernel.h"

uint64_t	balloon_bad_stdint(void);

uint64_t
balloon_bad_stdint(void)
{

	return UINT64_MAX;
}
