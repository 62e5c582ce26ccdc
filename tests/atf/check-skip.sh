#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
#
# check-skip.sh: the suite's own test of a NetBSD convention (tests/
# modules): on a NetBSD Xen domU whose kernel cannot load balloon.kmod,
# every case skips, with the reason, instead of failing.  It runs the
# programs in their NetBSD mode (BALLOON_MODE=netbsd) with stand-ins for
# sysctl, modstat, modload and modunload first on PATH: a Xen domU
# (machdep.xen.suspend exists) whose modload refuses the module.  Run as
# root (every case requires it).  Exits 0 when no case passed, failed
# or broke and t_load's cases name the reason.

set -eu

here=$(cd "$(dirname "$0")" && pwd)
sh "$here/build.sh" >/dev/null

work=$(mktemp -d "${TMPDIR:-/tmp}/balloon-skip.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/bin"
: >"$work/balloon.kmod"

cat >"$work/bin/sysctl" <<'EOS'
#!/bin/sh
# A Xen domU: machdep.xen.suspend exists; nothing else is asked for.
for a in "$@"; do
	case $a in
	machdep.xen.suspend)	echo 0; exit 0 ;;
	esac
done
echo "sysctl: stand-in: $*" >&2
exit 1
EOS
cat >"$work/bin/modstat" <<'EOS'
#!/bin/sh
echo "NAME            CLASS      SOURCE     REFS  SIZE     REQUIRES"
EOS
cat >"$work/bin/modload" <<'EOS'
#!/bin/sh
echo "modload: $1: Exec format error" >&2
exit 1
EOS
cat >"$work/bin/modunload" <<'EOS'
#!/bin/sh
echo "modunload: $1: No such file or directory" >&2
exit 1
EOS
chmod +x "$work/bin/"*

set +e
PATH=$work/bin:$PATH BALLOON_MODE=netbsd BALLOON_KMOD=$work/balloon.kmod \
    kyua --config=none --logfile="$work/kyua.log" test \
    --kyuafile="$here/Kyuafile" --results-file="$work/results.db" \
    >"$work/out" 2>&1
set -e
summary=$(kyua --config=none --logfile="$work/kyua.log" report \
    --results-file="$work/results.db" --results-filter= 2>&1 |
    grep '^Test cases: ' || :)
echo "$summary"
status=0
case $summary in
*" total, "*)	;;
*)	echo "check-skip.sh: no kyua summary"; cat "$work/out"; status=1 ;;
esac
total=$(echo "$summary" | sed -n 's/^Test cases: \([0-9]*\) total, \([0-9]*\) skipped.*/\1 \2/p')
if [ "${total% *}" != "${total#* }" ] || [ "${total% *}" = 0 ]; then
	echo "check-skip.sh: not every case skipped"
	cat "$work/out"
	status=1
fi
loads=$(grep -c "^t_load:.*->  *skipped: cannot load $work/balloon.kmod: modload: .*Exec format error" \
    "$work/out" || :)
if [ "$loads" -lt 3 ]; then
	echo "check-skip.sh: t_load's cases do not say why they skip"
	grep '^t_load:' "$work/out" || :
	status=1
fi
exit $status
