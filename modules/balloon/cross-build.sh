#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
#
# Cross-builds balloon.kmod on Linux: the Rust core (build-rust-object.sh),
# the C shim in netbsd-glue/ compiled with clang for x86_64-unknown-netbsd
# against a NetBSD source tree's kernel headers, one `ld -r` into
# balloon.kmod, then tools/kobjcheck on the result.
#
# usage: NETBSDSRCDIR=/path/to/netbsd/src modules/balloon/cross-build.sh [--out DIR]
#
# Without NETBSDSRCDIR (or without netbsd-glue/*.c) it says what is missing
# and builds and checks only the Rust object (exit 0 if that passes).
# Environment: NETBSDSRCDIR, CLANG (default clang), LD, OBJCOPY, OBJDUMP,
# BALLOON_FLAVOUR (xenpv, the default: XEN3_DOMU; or pvh: GENERIC as a
# PVH/HVM guest), BALLOON_TOOLCHAIN. The flags are kmod-flags.inc's, as
# the NetBSD Makefile and the CI compile gate use them.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out="$top/out"
while [ $# -gt 0 ]; do
	case $1 in
	--out) out=$2; shift 2 ;;
	-h|--help) sed -n '3,15p' "$0"; exit 0 ;;
	*) echo "cross-build.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
case $out in /*) ;; *) out="$(pwd)/$out" ;; esac
mkdir -p "$out"

CLANG=${CLANG:-clang}
LD=${LD:-ld}
flavour=${BALLOON_FLAVOUR:-xenpv}
flag() { sed -n "s/^$1=[[:space:]]*//p" "$here/kmod-flags.inc"; }
case $flavour in
xenpv) fl=$(flag BALLOON_FLAVOUR_XENPV_CPPFLAGS) ;;
pvh) fl=$(flag BALLOON_FLAVOUR_PVH_CPPFLAGS) ;;
*) echo "cross-build: BALLOON_FLAVOUR must be xenpv or pvh" >&2; exit 2 ;;
esac
say() { echo "cross-build: $*"; }

# 1. The Rust core, prelinked and checked.
"$here/build-rust-object.sh" --out "$out/balloon_rs.o"

# 2. What the C half needs.
srcs=$(ls "$top"/netbsd-glue/*.c 2>/dev/null || true)
S=${NETBSDSRCDIR:+$NETBSDSRCDIR/sys}
missing=""
if [ -z "${NETBSDSRCDIR:-}" ]; then
	missing="NETBSDSRCDIR is not set"
elif [ ! -f "$S/sys/param.h" ] || [ ! -d "$S/arch/amd64/include" ] ||
     [ ! -d "$S/arch/xen/include" ]; then
	missing="NETBSDSRCDIR=$NETBSDSRCDIR does not hold a NetBSD source tree (no sys/sys/param.h, sys/arch/amd64/include or sys/arch/xen/include)"
elif [ -z "$srcs" ]; then
	missing="netbsd-glue/ has no .c files yet"
fi
if [ -n "$missing" ]; then
	say "$missing."
	say "Built and checked only the Rust object: $out/balloon_rs.o"
	say "For balloon.kmod, point NETBSDSRCDIR at a NetBSD 10 or -current source tree"
	say "(only its sys/ and common/include/ are read), e.g.:"
	say "  NETBSDSRCDIR=\$HOME/netbsd-src modules/balloon/cross-build.sh"
	say "and have clang ($CLANG) and binutils installed."
	exit 0
fi
command -v "$CLANG" >/dev/null 2>&1 || { echo "cross-build: $CLANG not found (apt-get install clang)" >&2; exit 1; }

# 3. The include links NetBSD's bsd.klinks.mk makes for an amd64 Xen build.
inc="$out/include"
rm -rf "$inc"
mkdir -p "$inc/xen-ma"
ln -s "$S/arch/amd64/include" "$inc/machine"
ln -s "$S/arch/amd64/include" "$inc/amd64"
ln -s "$S/arch/i386/include" "$inc/i386"
ln -s "$S/arch/x86/include" "$inc/x86"
ln -s "$S/arch/xen/include" "$inc/xen"
ln -s "$S/arch/amd64/include" "$inc/xen-ma/machine"

sh "$here/gen-opt-headers.sh" "$flavour" "$out/opt"
cflags="--target=x86_64-unknown-netbsd $(flag BALLOON_KMOD_CFLAGS)
	$(flag BALLOON_KMOD_CWARNFLAGS)"
cppflags="$(flag BALLOON_KMOD_CPPFLAGS) $(flag BALLOON_XEN_CPPFLAGS) $fl
	-I$inc -I$inc/xen-ma -I$out/opt -I$top/netbsd-glue
	-isystem $S -isystem $S/arch -isystem $S/../common/include"
if [ -d "$S/external/mit/xen-include-public/dist" ]; then
	cppflags="$cppflags -I$S/external/mit/xen-include-public/dist"
fi

# 4. Compile the shim; rewrite PLT32 like the Rust object (see building.md).
kobjcheck=${KOBJCHECK:-$top/tools/kobjcheck/target/release/kobjcheck}
objs=""
for src in $srcs; do
	obj="$out/$(basename "${src%.c}").o"
	say "cc $(basename "$src")"
	# shellcheck disable=SC2086
	"$CLANG" $cflags $cppflags -c "$src" -o "$obj"
	"$kobjcheck" fix-plt32 "$obj" >/dev/null
	objs="$objs $obj"
done

# 5. One relocatable object, as bsd.kmodule.mk links it (-r -d, data and
#    bss merged, .comment dropped).
# shellcheck disable=SC2086
"$LD" -r -d -nostdlib -m elf_x86_64 -T "$here/kmodule.ld" -o "$out/balloon.kmod" \
	$objs "$out/balloon_rs.o"
say "wrote $out/balloon.kmod"

# 6. Check it: undefined symbols must be exported kernel symbols.
"$kobjcheck" check --flavour "$flavour" \
	--kernel-symbols "$here/kernel-symbols.txt" \
	$(flag BALLOON_GLOBAL_PREFIXES) "$out/balloon.kmod"
