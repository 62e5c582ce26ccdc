#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
#
# The compile gate: every netbsd-glue/*.c compiled against real NetBSD
# kernel headers (10.1 and 11, as fetch-trees.sh builds them) for each
# module flavour (xenpv, pvh), with the flags of a module build
# (modules/balloon/kmod-flags.inc) and -Werror. Then the symbol check:
# the undefined symbols of the objects of each flavour, read with nm,
# must all be in modules/balloon/kernel-symbols.txt for that flavour,
# and every symbol listed there for it must be used by some object.
# Every global the objects define must start with balloon_.
#
# usage: gate.sh [--self-test] [--rust-object FILE]
#        gate.sh --flags TREE FLAVOUR
#   --self-test         also compile each tests/kernel-headers/known-bad/*.c
#                       the same way; each must be refused (the gate's own
#                       test: it fails if a known-bad file passes)
#   --rust-object FILE  count the prelinked Rust core's undefined symbols
#                       too (it needs only balloon_shim_*, which the shim
#                       defines), and link and check balloon.kmod
#   --flags TREE FLAVOUR  lay out that tree x flavour and print the whole
#                       compile command line after the compiler (what
#                       modules/balloon/Makefile uses without bsd.kmodule.mk)
# Prints a table and "gate: N passed, M failed"; exit 1 on any failure.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
moddir=$top/modules/balloon
hdrs=${BALLOON_HEADERS:-$top/target/netbsd-headers}
work=$hdrs/gate
CC=${GATE_CC:-clang}
NM=${NM:-nm}

self_test=no
rust_obj=""
flags_for=""
while [ $# -gt 0 ]; do
	case $1 in
	--flags) flags_for="$2 $3"; shift 3 ;;
	--self-test) self_test=yes; shift ;;
	--rust-object) rust_obj=$2; shift 2 ;;
	-h|--help) sed -n '3,22p' "$0"; exit 0 ;;
	*) echo "gate.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done

sh "$here/fetch-trees.sh" >&2

# One value of kmod-flags.inc.
flag() { sed -n "s/^$1=[[:space:]]*//p" "$moddir/kmod-flags.inc"; }
cflags="$(flag BALLOON_KMOD_CFLAGS) $(flag BALLOON_KMOD_CWARNFLAGS)"
cppflags="$(flag BALLOON_KMOD_CPPFLAGS) $(flag BALLOON_XEN_CPPFLAGS)"

# Headers a kernel build reads from $S but NetBSD does not install: each
# becomes a file that includes the project's one declarations file.
KERNEL_ONLY="sys/cpu_data.h machine/cpufunc.h sys/systm.h lib/libkern/libkern.h sys/kthread.h
sys/kernel.h sys/timevar.h sys/vmem.h uvm/uvm_physseg.h xen/hypervisor.h xen/xen.h
xen/xenbus.h xen/xenpmap.h"
# Headers the installed ones include under _KERNEL that the shim uses
# nothing from: empty here (a use would fail the compile, not pass it).
KERNEL_ONLY_UNUSED="machine/pic.h sys/spl.h sys/timearith.h uvm/pmap/pmap_pvt.h
sys/kernhist.h"

# Lays out the include directory of one tree x flavour.
prepare() {
	dir=$work/$1-$2
	rm -rf "$dir"
	mkdir -p "$dir/kernel-only" "$dir/obj"
	for h in $KERNEL_ONLY; do
		if [ -e "$hdrs/$1/include/$h" ]; then
			echo "gate.sh: $1 installs $h now; drop it from KERNEL_ONLY" >&2
			exit 1
		fi
		mkdir -p "$dir/kernel-only/$(dirname "$h")"
		printf '#include <netbsd-kernel-only.h>\n' >"$dir/kernel-only/$h"
	done
	for h in $KERNEL_ONLY_UNUSED; do
		mkdir -p "$dir/kernel-only/$(dirname "$h")"
		printf '/* not installed; nothing of it is used */\n' \
		    >"$dir/kernel-only/$h"
	done
	# A kernel build sees $S and $S/arch: directories (sys/, uvm/, x86/,
	# ...), never the top-level userland headers of /usr/include
	# (<stdint.h> and the like). Expose only the directories.
	mkdir -p "$dir/kview"
	for d in "$hdrs/$1/include"/*/; do
		ln -s "$d" "$dir/kview/$(basename "$d")"
	done
	sh "$moddir/gen-opt-headers.sh" "$2" "$dir/opt"
}

# The compile flags for tree $1, flavour $2 (after the compiler's name).
kflags() {
	dir=$work/$1-$2
	case $2 in
	xenpv) fl=$(flag BALLOON_FLAVOUR_XENPV_CPPFLAGS) ;;
	pvh) fl=$(flag BALLOON_FLAVOUR_PVH_CPPFLAGS) ;;
	*) echo "gate.sh: flavour must be xenpv or pvh" >&2; exit 2 ;;
	esac
	# zig's copy of sys/param.h leaves __NetBSD_Version__ to the
	# compiler (its one patch); a real tree defines the release's.
	case $1 in
	netbsd-10.1) ver=1001000000 ;;
	netbsd-11) ver=1100000000 ;;
	*) echo "gate.sh: tree must be netbsd-10.1 or netbsd-11" >&2; exit 2 ;;
	esac
	echo "--target=x86_64-unknown-netbsd $cflags $cppflags $fl" \
	    "-D__NetBSD_Version__=$ver -I$dir/opt -I$top/netbsd-glue" \
	    "-isystem $dir/kernel-only -isystem $here -isystem $dir/kview" \
	    "-isystem $hdrs/xen-public"
}

# Compiles $4 for tree $1, flavour $2 into $3; output in $3.log.
compile() {
	# shellcheck disable=SC2046
	$CC $(kflags "$1" "$2") -c "$4" -o "$3" >"$3.log" 2>&1
}

if [ -n "$flags_for" ]; then
	# shellcheck disable=SC2086
	set -- $flags_for
	kflags "$1" "$2" >/dev/null
	prepare "$1" "$2"
	kflags "$1" "$2"
	exit 0
fi

passed=0
failed=0
pass() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); }
row() { printf '%-28s %-12s %-6s %s\n' "$1" "$2" "$3" "$4"; }

echo "== compile gate: clang $($CC --version | sed -n 's/.*clang version \([0-9.]*\).*/\1/p;q'), -Werror"
row "file" "tree" "flav." "result"
for tree in netbsd-10.1 netbsd-11; do
	for fv in xenpv pvh; do
		prepare "$tree" "$fv"
		for src in "$top"/netbsd-glue/*.c; do
			name=$(basename "$src" .c)
			obj=$work/$tree-$fv/obj/$name.o
			if compile "$tree" "$fv" "$obj" "$src"; then
				row "$name.c" "$tree" "$fv" "ok"
				pass
			else
				row "$name.c" "$tree" "$fv" "FAILED"
				sed 's/^/    /' "$obj.log" | head -n 40
				fail
			fi
		done
	done
done

# The symbol check, per flavour over both trees.
listed() {	# symbols kernel-symbols.txt allows for flavour $1
	awk -F '\t' -v f="$1" '!/^#/ && NF >= 2 {
		n = split($2, a, ","); for (i = 1; i <= n; i++)
			if (a[i] == f || a[i] == "all") print $1 }' \
	    "$moddir/kernel-symbols.txt" | sort -u
}
echo "== kernel symbols (modules/balloon/kernel-symbols.txt)"
for fv in xenpv pvh; do
	objs=$(ls "$work"/netbsd-*-"$fv"/obj/*.o 2>/dev/null || :)
	[ -n "$objs" ] || continue
	# shellcheck disable=SC2086
	$NM -u $objs | awk 'NF == 2 && $1 == "U" { print $2 }' | sort -u \
	    >"$work/$fv.undef"
	# shellcheck disable=SC2086
	$NM -g --defined-only $objs | awk 'NF == 3 { print $3 }' | sort -u \
	    >"$work/$fv.defined"
	if [ -n "$rust_obj" ]; then
		$NM -u "$rust_obj" | awk 'NF == 2 && $1 == "U" { print $2 }' |
		    sort -u >>"$work/$fv.undef"
		sort -u -o "$work/$fv.undef" "$work/$fv.undef"
	fi
	# The Rust core's entry points (glue.h) are the module's own.
	sed -n 's/^.*[[:space:]*]\(balloon_rs_[a-z_]*\)(.*/\1/p' \
	    "$top/netbsd-glue/glue.h" >>"$work/$fv.defined"
	if [ -n "$rust_obj" ]; then
		$NM -g --defined-only "$rust_obj" | awk 'NF == 3 { print $3 }' \
		    >>"$work/$fv.defined"
	fi
	sort -u -o "$work/$fv.defined" "$work/$fv.defined"
	# What the module defines itself is not needed from the kernel.
	comm -23 "$work/$fv.undef" "$work/$fv.defined" >"$work/$fv.needed"
	listed "$fv" >"$work/$fv.listed"
	bad=no
	for s in $(comm -23 "$work/$fv.needed" "$work/$fv.listed"); do
		echo "$fv: needs $s, which kernel-symbols.txt does not list for $fv"
		bad=yes
	done
	for s in $(comm -13 "$work/$fv.needed" "$work/$fv.listed"); do
		echo "$fv: kernel-symbols.txt lists $s for $fv, but no object uses it"
		bad=yes
	done
	for s in $(grep -v '^balloon_' "$work/$fv.defined" || :); do
		echo "$fv: defines global $s, which does not start with balloon_"
		bad=yes
	done
	if [ $bad = no ]; then
		echo "$fv: $(wc -l <"$work/$fv.needed") kernel symbols, all listed; every listed one used"
		pass
	else
		fail
	fi
done

# The whole module per tree x flavour, linked as bsd.kmodule.mk links it,
# checked by kobjcheck against the flavour's list (relocations the loader
# applies, no FPU/SIMD, no TLS, no debug sections, symbols).
KOBJCHECK=${KOBJCHECK:-$top/tools/kobjcheck/target/release/kobjcheck}
if [ -n "$rust_obj" ] && [ -x "$KOBJCHECK" ]; then
	echo "== balloon.kmod per tree and flavour (ld -r, kobjcheck --flavour)"
	for tree in netbsd-10.1 netbsd-11; do
		for fv in xenpv pvh; do
			dir=$work/$tree-$fv
			ls "$dir"/obj/*.o >/dev/null 2>&1 || continue
			"$KOBJCHECK" fix-plt32 "$dir"/obj/*.o >/dev/null
			kmod=$dir/balloon.kmod
			if ${LD:-ld} -r -d -nostdlib -m elf_x86_64 \
			    -T "$moddir/kmodule.ld" -o "$kmod" "$dir"/obj/*.o \
			    "$rust_obj" >"$kmod.log" 2>&1 &&
			    "$KOBJCHECK" check --flavour "$fv" \
			    --kernel-symbols "$moddir/kernel-symbols.txt" \
			    $(flag BALLOON_GLOBAL_PREFIXES) "$kmod" \
			    >>"$kmod.log" 2>&1
			then
				row "balloon.kmod" "$tree" "$fv" "ok ($(sed -n 's/.*sizes: //p' "$kmod.log"))"
				pass
			else
				row "balloon.kmod" "$tree" "$fv" "REFUSED"
				sed 's/^/    /' "$kmod.log"
				fail
			fi
		done
	done
fi

if [ $self_test = yes ]; then
	echo "== the gate's own test: known-bad sources must be refused"
	for src in "$here"/known-bad/*.c; do
		name=$(basename "$src" .c)
		obj=$work/netbsd-10.1-xenpv/obj/bad-$name.o
		refused=no
		if ! compile netbsd-10.1 xenpv "$obj" "$src"; then
			refused="compile error"
		else
			for s in $($NM -u "$obj" | awk '$1 == "U" { print $2 }'); do
				grep -qx "$s" "$work/xenpv.listed" ||
				    refused="undefined $s"
			done
		fi
		if [ "$refused" = no ]; then
			row "known-bad/$name.c" "netbsd-10.1" "xenpv" "ACCEPTED (gate broken)"
			fail
		else
			row "known-bad/$name.c" "netbsd-10.1" "xenpv" "refused: $refused"
			pass
		fi
		rm -f "$obj"
	done
fi

echo "gate: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
