#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
#
# Issue 13's benchmark in one command. Runs, in release builds:
#  1. the bookkeeping bench (the core's frame store against the peer-style
#     models: ns/page inflate and deflate for each frame order and size,
#     memory per ballooned GiB and per GiB of span);
#  2. the extents bench (hypercalls and uvm_pglistalloc calls per GiB in
#     the simulated domU: contiguous, fragmented guest, host without 2 MiB
#     chunks);
#  3. the whole-stack bench (balloon.kmod in the simulated domU against
#     memset and the kernel's per-page zeroing, and the simulator's own
#     memory per page);
# then one line of ratios gathered from the three.
#
# usage: tests/bench/run.sh
# environment:
#   BOOKKEEPING_GIB    sizes for 1 (default 1,16,64,256,1024)
#   BOOKKEEPING_ORDER  one frame order for 1 (default all)
#   STACK_ARGS         arguments for 3 (default
#                      "--sizes 1024,8192,65536 --runs 3 --modes pv,pvh")
#
# Everything runs on this Linux host; the module runs in the simulated
# domU, never on NetBSD or under Xen.
set -eu
cd "$(dirname "$0")/../.."

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== 1. bookkeeping (cargo bench --bench bookkeeping)"
cargo bench -q --bench bookkeeping 2>&1 | tee "$out/bookkeeping"
echo "== 2. 2 MiB extents (cargo bench -p balloon-sim --bench extents)"
cargo bench -q -p balloon-sim --bench extents 2>&1 | tee "$out/extents"
echo "== 3. whole stack (cargo bench -p balloon-sim --bench stack)"
# shellcheck disable=SC2086 # STACK_ARGS is a list of arguments
cargo bench -q -p balloon-sim --bench stack -- \
    ${STACK_ARGS:---sizes 1024,8192,65536 --runs 3 --modes pv,pvh} 2>&1 |
    tee "$out/stack"

echo "== ratios"
grep '^ratios' "$out/bookkeeping" || echo "bookkeeping: no ratios line"
awk '$2 == "contiguous" && $3 == "down" {
	if ($4 > h) h = $4; if ($5 > p) p = $5; n++
} END {
	if (n) printf "ratios (extents): contiguous, worst per GiB down: %.1f hypercalls, %.1f uvm_pglistalloc (goal <= 4)\n", h, p
	else print "extents: no contiguous rows"
}' "$out/extents"
grep '^ratios' "$out/stack" | sed 's/^ratios/ratios (whole stack)/' ||
    echo "stack: no ratios line"
