#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
#
# Every check balloon.kmod has, in the order a failure is cheapest to read:
# formatting, lints, the core built for a bare-metal target (no std leaks),
# all Rust tests (core, simulated domU, object checker), and the kernel
# Rust object built and checked as the NetBSD module loader would take it.
# Ends with one line "tests: N passed, M failed" over all test runs.
set -eu
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

step "core for x86_64-unknown-none (no_std)"
cargo build --lib --target x86_64-unknown-none

step "tests"
status=0
cargo test --workspace 2>&1 | tee -a "$log" || status=1
cargo test --manifest-path tools/kobjcheck/Cargo.toml 2>&1 | tee -a "$log" || status=1

step "kernel Rust object, checked"
modules/balloon/build-rust-object.sh || status=1

totals=$(awk '/^test result: /{ for (i = 1; i <= NF; i++) {
	if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
	END { printf "%d %d", p, f }' "$log")
passed=${totals% *}
failed=${totals#* }
echo "tests: ${passed:-0} passed, ${failed:-0} failed"
exit $status
