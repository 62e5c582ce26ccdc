#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
#
# Every check balloon.kmod has, in the order a failure is cheapest to read:
# formatting, lints, the manual page, the core built for a bare-metal
# target (no std leaks), all Rust tests (core, simulated domU, control
# interface, object checker), the anita driver's tests, the ATF suite with
# kyua against the simulated domU, the suite on a NetBSD that cannot load
# the module (every case skips), the suite's own test (a build that does
# not scrub must fail the scrub case), the soak (a seeded random walk of
# at least 10^5 hypercalls with every fault) and its own test (the same
# broken build must fail it), the kernel Rust object built and checked as
# the NetBSD module loader would take it, and the compile gate (the shim
# against real NetBSD 10.1 and 11 kernel headers). The kernel Rust
# object's deepest stack per entry point is held to 4 KiB.
# Ends with one line "tests: N passed, M failed" over all test runs.
set -eu
# A failing command before `| tee` must fail the step, not vanish.
set -o pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT

step() { echo "== $*"; }

step "rustfmt"
cargo fmt --all --check
cargo fmt --manifest-path tools/kobjcheck/Cargo.toml --check

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --manifest-path tools/kobjcheck/Cargo.toml --all-targets -- -D warnings

status=0

step "balloonkmod.4: mandoc -Tlint"
# Cross-references to NetBSD pages (modload(8), uvm_hotplug(9), ...)
# cannot be found on a Linux host; every other message is a failure.
lint=$(mandoc -Tlint -Ios=NetBSD modules/balloon/balloonkmod.4 2>&1 |
    grep -v -e 'referenced manual not found' -e 'mandoc.db' || :)
if [ -n "$lint" ]; then
	echo "$lint"
	status=1
fi

step "core for x86_64-unknown-none (no_std)"
cargo build --lib --target x86_64-unknown-none

step "tests"
cargo test --workspace --no-fail-fast 2>&1 | tee -a "$log" || status=1
cargo test --manifest-path tools/kobjcheck/Cargo.toml 2>&1 | tee -a "$log" || status=1

step "anita driver: plan and parsing tests"
if python3 -m unittest discover -s tests/anita -p 'test_*.py' >"$log.py" 2>&1; then
	py_failed=0
else
	py_failed=$(sed -n 's/^FAILED (\(.*\))$/\1/p' "$log.py" |
	    tr ',' '\n' | awk -F= '{ n += $2 } END { print n + 0 }')
	[ "$py_failed" -gt 0 ] || py_failed=1
	status=1
fi
tail -n 3 "$log.py"
py_ran=$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\}.*/\1/p' "$log.py")
echo "test result: ok. $(( ${py_ran:-0} - py_failed )) passed; $py_failed failed (python)" >>"$log"
rm -f "$log.py"

# Sums kyua's "Test cases: N total, S skipped, X expected failures,
# B broken, F failed" into the log: skipped cases count as neither.
kyua_tally() {
	sed -n 's/^Test cases: \([0-9]*\) total, \([0-9]*\) skipped, \([0-9]*\) expected failures, \([0-9]*\) broken, \([0-9]*\) failed.*/\1 \2 \3 \4 \5/p' "$1" |
	    awk '{ printf "test result: kyua. %d passed; %d failed\n", $1 - $2 - $3 - $4 - $5, $4 + $5 }' >>"$log"
}

step "ATF suite (kyua) against the simulated domU"
cargo build -q -p balloon-sim
BALLOON_SIM=target/debug/balloon-sim sh tests/atf/run-sim.sh 2>&1 | tee "$log.kyua" || status=1
grep -q '^Test cases: ' "$log.kyua" || status=1
kyua_tally "$log.kyua"
rm -f "$log.kyua"

step "ATF suite on a NetBSD whose kernel cannot load the module: every case skips"
if sh tests/atf/check-skip.sh >"$log.skip" 2>&1; then
	cat "$log.skip"
	echo "test result: ok. 1 passed; 0 failed" >>"$log"
else
	cat "$log.skip"
	status=1
	echo "test result: FAILED. 0 passed; 1 failed" >>"$log"
fi
rm -f "$log.skip"

step "the suite's own test: a build that does not scrub must fail t_scrub"
cargo build -q -p balloon-sim --features balloon/test-break-scrub --target-dir target/broken-scrub
if BALLOON_SIM=target/broken-scrub/debug/balloon-sim sh tests/atf/run-sim.sh t_scrub \
    >"$log.broken" 2>&1; then
	echo "FAILED: t_scrub passed against a module that does not scrub"
	status=1
	echo "test result: FAILED. 0 passed; 1 failed" >>"$log"
elif grep -q '^Test cases: .* [1-9][0-9]* failed' "$log.broken"; then
	grep -E '^t_scrub:.*->  *failed' "$log.broken" || :
	echo "ok: the scrub case fails against the broken build"
	echo "test result: ok. 1 passed; 0 failed" >>"$log"
else
	cat "$log.broken"
	echo "FAILED: the broken-build run did not end in a failed case"
	status=1
	echo "test result: FAILED. 0 passed; 1 failed" >>"$log"
fi
rm -f "$log.broken"

step "soak: a seeded random walk with every fault, at least 100000 hypercalls"
cargo build -q --profile soak -p balloon-sim
soakdir=$(mktemp -d)
if target/soak/balloon-sim soak --seed 1 --runs 4 --hypercalls 100000 --quiet \
    --out "$soakdir" >"$log.soak" 2>&1; then
	echo "test result: ok. 1 passed; 0 failed" >>"$log"
else
	status=1
	echo "test result: FAILED. 0 passed; 1 failed" >>"$log"
fi
cat "$log.soak"
rm -rf "$soakdir" "$log.soak"

step "the soak's own test: a build that does not scrub must fail it"
soakdir=$(mktemp -d)
if target/broken-scrub/debug/balloon-sim soak --seed 1 --hypercalls 20000 --quiet \
    --shrink-time 60 --out "$soakdir" >"$log.soak" 2>&1; then
	cat "$log.soak"
	echo "FAILED: the soak passed against a module that does not scrub"
	status=1
	echo "test result: FAILED. 0 passed; 1 failed" >>"$log"
elif grep -q 'reached Xen unzeroed while hw.balloon.scrub was 1' "$log.soak" &&
    grep -q '^soak: a short scenario that fails the same way' "$log.soak"; then
	grep -E 'unzeroed|^soak: a short' "$log.soak" | head -n 2
	echo "ok: the soak finds the broken build and shrinks the case"
	echo "test result: ok. 1 passed; 0 failed" >>"$log"
else
	cat "$log.soak"
	echo "FAILED: the soak did not report the unzeroed pages"
	status=1
	echo "test result: FAILED. 0 passed; 1 failed" >>"$log"
fi
rm -rf "$soakdir" "$log.soak"

step "kernel Rust object, checked"
modules/balloon/build-rust-object.sh || status=1

step "kernel Rust object: deepest stack of each balloon_rs_* entry point within 4 KiB"
if [ -f out/balloon_rs.o ] && tools/kobjcheck/target/release/kobjcheck stack \
    --budget 4096 out/balloon_rs.o >"$log.stack" 2>&1; then
	grep -E ': (deepest|OK)' "$log.stack"
	echo "test result: ok. 1 passed; 0 failed" >>"$log"
else
	cat "$log.stack" 2>/dev/null || :
	echo "FAILED: kernel Rust object over 4096 bytes of stack, recursive, or not built"
	echo "test result: FAILED. 0 passed; 1 failed" >>"$log"
	status=1
fi
rm -f "$log.stack"

step "compile gate: the shim against NetBSD 10.1 and netbsd-11 kernel headers, both flavours"
rust_obj=""
[ -f out/balloon_rs.o ] && rust_obj="--rust-object out/balloon_rs.o"
# shellcheck disable=SC2086
sh tests/kernel-headers/gate.sh --self-test $rust_obj 2>&1 | tee "$log.gate" || status=1
sed -n 's/^gate: \([0-9]*\) passed, \([0-9]*\) failed$/test result: gate. \1 passed; \2 failed/p' \
    "$log.gate" >>"$log"
grep -q '^gate: [0-9]* passed, 0 failed$' "$log.gate" || status=1
rm -f "$log.gate"

step "modules/balloon/Makefile under bmake (no bsd.kmodule.mk: the header trees), both flavours"
for fv in xenpv pvh; do
	obj=$PWD/target/bmake-$fv
	rm -rf "$obj" && mkdir -p "$obj"
	if bmake -C modules/balloon MAKEOBJDIR="$obj" BALLOON_FLAVOUR=$fv \
	    BALLOON_CARGO_TARGET_DIR="$PWD/target" >"$obj.log" 2>&1 &&
	    [ -f "$obj/balloon.kmod.checked" ]; then
		echo "ok: bmake BALLOON_FLAVOUR=$fv: $(grep 'balloon.kmod: sizes' "$obj.log")"
		echo "test result: ok. 1 passed; 0 failed" >>"$log"
	else
		tail -n 30 "$obj.log"
		echo "FAILED: bmake BALLOON_FLAVOUR=$fv"
		echo "test result: FAILED. 0 passed; 1 failed" >>"$log"
		status=1
	fi
done

totals=$(awk '/^test result: /{ for (i = 1; i <= NF; i++) {
	if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
	END { printf "%d %d", p, f }' "$log")
passed=${totals% *}
failed=${totals#* }
echo "tests: ${passed:-0} passed, ${failed:-0} failed"
exit $status
