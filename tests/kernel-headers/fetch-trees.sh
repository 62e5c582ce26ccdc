#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
#
# Builds the NetBSD header trees the compile gate (gate.sh) compiles the
# shim against, under $BALLOON_HEADERS (default target/netbsd-headers):
#
#   netbsd-10.1/   NetBSD 10.1's installed /usr/include, _KERNEL parts kept,
#                  as the ziglang 0.15.2 wheel carries it (generic-netbsd
#                  overlaid with x86_64-netbsd-none; sys/param.h 1.722.2.10)
#   netbsd-11/     the same from ziglang 0.17.1 (the netbsd-11 branch)
#   xen-public/    Xen's public interface headers laid out as NetBSD's
#                  sys/external/mit/xen-include-public/dist has them
#                  (xen/include/public/...), from Debian's libxen-dev
#
# The wheels are pinned by version and SHA-256 and fetched with pip from
# the Python package index; libxen-dev with apt-get download. Nothing is
# installed. Safe to run again: a tree that is complete is kept.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out=${BALLOON_HEADERS:-$top/target/netbsd-headers}
mkdir -p "$out/dl"

say() { echo "kernel-headers: $*"; }

# version  sha256  tree
WHEELS="0.15.2 806316453d1ede7174ed3fefb8e5348154629089c3bb5fe812dfd0e172fac130 netbsd-10.1
0.17.1 ea6cc5d87b033cf0aedfbc8f9549a908cae6c50ac31f1698188fa48a74524b54 netbsd-11"
PLATFORM=manylinux_2_12_x86_64

echo "$WHEELS" | while read -r ver sum tree; do
	[ -f "$out/$tree/.complete" ] && continue
	whl=$(ls "$out"/dl/ziglang-"$ver"-*.whl 2>/dev/null | head -n 1 || :)
	if [ -z "$whl" ]; then
		say "downloading ziglang $ver (NetBSD headers for $tree)"
		python3 -m pip download --quiet --no-deps --only-binary=:all: \
		    --platform "$PLATFORM" --dest "$out/dl" "ziglang==$ver"
		whl=$(ls "$out"/dl/ziglang-"$ver"-*.whl | head -n 1)
	fi
	got=$(sha256sum "$whl" | cut -d' ' -f1)
	if [ "$got" != "$sum" ]; then
		say "$whl: SHA-256 $got, expected $sum" >&2
		rm -f "$whl"
		exit 1
	fi
	rm -rf "$out/$tree" "$out/$tree.tmp"
	mkdir -p "$out/$tree.tmp"
	# Only the two NetBSD directories amd64 uses; the wheel is a whole
	# toolchain.
	python3 - "$whl" "$out/$tree.tmp" <<'PY'
import sys, zipfile
keep = ("ziglang/lib/libc/include/generic-netbsd/",
        "ziglang/lib/libc/include/x86_64-netbsd-none/")
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith(keep)])
PY
	inc="$out/$tree.tmp/ziglang/lib/libc/include"
	mkdir -p "$out/$tree/include"
	# What /usr/include on NetBSD/amd64 holds: the machine-independent
	# part, then amd64's (machine -> amd64 included).
	cp -R "$inc/generic-netbsd/." "$out/$tree/include/"
	# generic-netbsd/machine holds other ports' files; amd64's machine/
	# is in x86_64-netbsd-none.
	rm -rf "$out/$tree/include/machine"
	cp -R "$inc/x86_64-netbsd-none/." "$out/$tree/include/"
	rm -rf "$out/$tree.tmp"
	head -n 1 "$out/$tree/include/sys/param.h" >"$out/$tree/.complete"
	say "$tree: $(cat "$out/$tree/.complete")"
done

if [ ! -f "$out/xen-public/.complete" ]; then
	deb=$(ls "$out"/dl/libxen-dev_*.deb 2>/dev/null | head -n 1 || :)
	if [ -z "$deb" ]; then
		say "downloading Debian's libxen-dev (Xen public headers)"
		(cd "$out/dl" && apt-get download libxen-dev >/dev/null 2>&1) || {
			apt-get update -qq >/dev/null
			(cd "$out/dl" && apt-get download libxen-dev >/dev/null 2>&1)
		}
		deb=$(ls "$out"/dl/libxen-dev_*.deb | head -n 1)
	fi
	rm -rf "$out/xen-public" "$out/xen-public.tmp"
	dpkg-deb -x "$deb" "$out/xen-public.tmp"
	mkdir -p "$out/xen-public/xen/include"
	mv "$out/xen-public.tmp/usr/include/xen" \
	    "$out/xen-public/xen/include/public"
	rm -rf "$out/xen-public.tmp"
	basename "$deb" >"$out/xen-public/.complete"
	say "xen-public: $(cat "$out/xen-public/.complete")"
fi
