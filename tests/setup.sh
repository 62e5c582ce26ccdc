#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
#
# Installs what building and testing balloon.kmod needs on a fresh Debian
# machine with rustup: C toolchain and binutils (the shim, the object
# checker's test objects), libclang (bindgen), ATF and kyua (the acceptance
# suite in tests/atf: atf-sh, atf-c, kyua), mandoc (lints balloonkmod.4),
# python3 (the anita driver's tests), the Rust components and the pinned
# nightly that builds core/alloc for the NetBSD kernel target.
# Safe to run again; skips what is already there.
set -eu

APT_PACKAGES="gcc binutils clang libclang-dev pkg-config atf-sh libatf-dev kyua mandoc bmake"
# The compile gate fetches NetBSD headers with pip (tests/kernel-headers);
# bmake runs modules/balloon/Makefile as NetBSD make would.
NIGHTLY="${BALLOON_TOOLCHAIN:-nightly-2026-05-19}"

missing=""
for p in $APT_PACKAGES; do
	dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "setup: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq $missing >/dev/null
fi

command -v python3 >/dev/null 2>&1 || {
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq && apt-get install -y -qq python3 >/dev/null
}
python3 -m pip --version >/dev/null 2>&1 || {
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null
}
# The NetBSD 10.1/11 header trees and Xen's public headers for the gate.
sh "$(dirname "$0")/kernel-headers/fetch-trees.sh"

rustup component add clippy rustfmt >/dev/null 2>&1 || rustup component add clippy rustfmt
rustup target add x86_64-unknown-none >/dev/null
if ! rustup run "$NIGHTLY" rustc --version >/dev/null 2>&1 ||
    ! [ -d "$(rustup run "$NIGHTLY" rustc --print sysroot)/lib/rustlib/src/rust/library" ]; then
	echo "setup: installing $NIGHTLY with rust-src"
	rustup toolchain install "$NIGHTLY" --profile minimal --component rust-src
fi
echo "setup: ready ($(rustc --version); kernel builds with $NIGHTLY)"
