#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
#
# Builds the Rust core of balloon.kmod for the NetBSD amd64 kernel and
# prelinks it into ONE relocatable object, balloon_rs.o, whose only global
# definitions are the Rust entry points (balloon_rs_*), then checks it with
# tools/kobjcheck, and prints the deepest stack use of each entry point
# (kobjcheck stack; tests/run.sh holds it to 4 KiB). Exit status is
# non-zero on any failure or refusal.
#
# usage: modules/balloon/build-rust-object.sh [--out FILE] [--keep-plt32] [--no-check]
#
# Needs: rustup toolchain $BALLOON_TOOLCHAIN (default nightly-2026-05-19)
# with the rust-src component, binutils (ld, objcopy, nm, objdump), and a
# host cargo for the checker. Environment overrides: BALLOON_TOOLCHAIN,
# CARGO_TARGET_DIR, LD, OBJCOPY, NM, OBJDUMP.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

toolchain=${BALLOON_TOOLCHAIN:-nightly-2026-05-19}
spec="$here/x86_64-netbsd-kernel.json"
target_name=x86_64-netbsd-kernel
target_dir=${CARGO_TARGET_DIR:-$top/target}
LD=${LD:-ld}
OBJCOPY=${OBJCOPY:-objcopy}
NM=${NM:-nm}
OBJDUMP=${OBJDUMP:-objdump}
export OBJDUMP

out="$top/out/balloon_rs.o"
keep_plt32=no
check=yes
while [ $# -gt 0 ]; do
	case $1 in
	--out) out=$2; shift 2 ;;
	--keep-plt32) keep_plt32=yes; shift ;;
	--no-check) check=no; shift ;;
	-h|--help) sed -n '3,16p' "$0"; exit 0 ;;
	*) echo "build-rust-object.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
case $out in /*) ;; *) out="$(pwd)/$out" ;; esac
mkdir -p "$(dirname "$out")"

say() { echo "build-rust-object: $*"; }

for tool in "$LD" "$OBJCOPY" "$NM" "$OBJDUMP"; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "build-rust-object: $tool not found (install binutils)" >&2; exit 1; }
done
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
	echo "build-rust-object: toolchain $toolchain missing; run:" >&2
	echo "  rustup toolchain install $toolchain --profile minimal --component rust-src" >&2
	exit 1
fi

# 1. The staticlib, with core and alloc rebuilt for the kernel target.
#    compiler-builtins-mem makes compiler_builtins define memcpy, memmove,
#    memset and memcmp (weak, hidden), so the object does not depend on
#    the kernel for the calls LLVM emits by itself.
say "cargo +$toolchain rustc (target $target_name)"
(cd "$top" && cargo "+$toolchain" rustc -p balloon \
	-Zbuild-std=core,alloc -Zbuild-std-features=compiler-builtins-mem \
	-Zjson-target-spec \
	--target "$spec" --release --lib --crate-type staticlib)
lib="$target_dir/$target_name/release/libballoon.a"
[ -f "$lib" ] || { echo "build-rust-object: $lib was not produced" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/balloon-rs.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 2. Drop the embedded LLVM bitcode first: GNU ld and nm would otherwise
#    hand those members to an LTO plugin of another LLVM version.
cp "$lib" "$work/lib.a"
"$OBJCOPY" -R .llvmbc -R .llvmcmd "$work/lib.a"

# 3. The crate's own members go in whole; compiler_builtins stays an
#    archive so only the members something needs (memcpy, ...) come in.
mkdir "$work/m"
members=$(cd "$work/m" && ar t ../lib.a)
crate_objs=""
for m in $members; do
	case $m in
	compiler_builtins-*) ;;
	*.o) (cd "$work/m" && ar x ../lib.a "$m"); crate_objs="$crate_objs $work/m/$m" ;;
	esac
done

# 4. Roots for garbage collection: every Rust entry point.
entries=""
if [ -n "$crate_objs" ]; then
	# shellcheck disable=SC2086
	entries=$("$NM" --defined-only -g $crate_objs 2>/dev/null |
		awk '$3 ~ /^balloon_rs_/ { print $3 }' | sort -u)
fi
roots=""
for e in $entries; do roots="$roots -u $e"; done
if [ -z "$entries" ]; then
	say "note: the crate exports no balloon_rs_* entry point yet; the object will be (nearly) empty"
	gc=""
else
	gc="--gc-sections"
fi

# 5. Prelink to one relocatable object.
# shellcheck disable=SC2086
"$LD" -r -m elf_x86_64 -T "$here/prelink.ld" $gc $roots \
	-o "$work/prelinked.o" $crate_objs "$work/lib.a"

# 6. Only balloon_rs_* stays global: localize hidden symbols (the
#    compiler_builtins memcpy & co.), then every other defined global.
"$OBJCOPY" --localize-hidden --strip-debug "$work/prelinked.o" "$work/local.o"
"$NM" --defined-only -g "$work/local.o" 2>/dev/null |
	awk '$3 !~ /^balloon_rs_/ { print $3 }' >"$work/localize.txt"
if [ -s "$work/localize.txt" ]; then
	"$OBJCOPY" --localize-symbols="$work/localize.txt" "$work/local.o"
fi
"$OBJCOPY" -R .comment -R .eh_frame -R .rela.eh_frame "$work/local.o"

# 7. The loader revision we could read does not apply R_X86_64_PLT32;
#    rewrite it to R_X86_64_PC32 (same value without a PLT).
checker_manifest="$top/tools/kobjcheck/Cargo.toml"
checker_target=${KOBJCHECK_TARGET_DIR:-$top/tools/kobjcheck/target}
if [ "$keep_plt32" = no ] || [ "$check" = yes ]; then
	say "building tools/kobjcheck"
	cargo build --quiet --release --manifest-path "$checker_manifest" \
		--target-dir "$checker_target"
fi
kobjcheck="$checker_target/release/kobjcheck"
plt32_before=$(readelf -rW "$work/local.o" | grep -c 'R_X86_64_PLT32' || true)
if [ "$keep_plt32" = no ]; then
	"$kobjcheck" fix-plt32 "$work/local.o"
fi
cp "$work/local.o" "$out"
say "wrote $out (entry points: $(echo "$entries" | wc -w); PLT32 relocations before rewrite: $plt32_before)"

# 8. Check: undefined symbols must be shim functions.
if [ "$check" = yes ]; then
	allow="--allow-undef-prefix balloon_shim_"
	if [ -f "$top/netbsd-glue/glue.h" ]; then
		allow="--allow-from-header $top/netbsd-glue/glue.h"
	else
		say "note: netbsd-glue/glue.h not there yet; allowing any balloon_shim_* undefined symbol"
	fi
	plt=""
	[ "$keep_plt32" = yes ] && plt="--allow-plt32"
	# shellcheck disable=SC2086
	"$kobjcheck" check $allow $plt --global-prefix balloon_rs_ "$out"
fi

# 9. Stack: the deepest call chain from each entry point, printed. Over a
#    budget or recursive (exit 1) does not stop the build: tests/run.sh
#    checks the figure; an error running the checker (exit 2) does.
if [ "$check" = yes ]; then
	"$kobjcheck" stack "$out" || [ $? -eq 1 ]
fi
