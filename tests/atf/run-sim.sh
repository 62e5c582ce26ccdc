#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
#
# run-sim.sh: runs the ATF suite against the simulated domU with kyua.
#
#	sh tests/atf/run-sim.sh [filter ...]	builds balloon-sim with cargo
#	BALLOON_SIM=/path/to/balloon-sim sh tests/atf/run-sim.sh
#	BALLOON_ATF_JOBS=1 sh tests/atf/run-sim.sh	one case at a time
#
# Filters are kyua's: a program (t_scrub) or a case (t_scrub:scrub_on);
# none runs the whole suite.
#
# Every case requires root (require.user in its metadata, as NetBSD's
# tests/modules do, since on NetBSD they load a kernel module); kyua
# skips them all for another user, so run this as root.
#
# Builds the C test programs (build.sh), runs every program of the
# Kyuafile with the suite's configuration variable balloon_sim set, prints
# the report, and exits 0 only if no case failed or broke.  kyua's results
# file and log go to a private temporary directory, kept (and named) when
# something failed.

set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

if [ -n "${BALLOON_SIM:-}" ]; then
	sim=$BALLOON_SIM
else
	(cd "$top" && cargo build -q -p balloon-sim)
	sim=${CARGO_TARGET_DIR:-$top/target}/debug/balloon-sim
fi
case $sim in
/*)	;;
*)	sim=$(pwd)/$sim ;;
esac
if [ ! -x "$sim" ]; then
	echo "run-sim.sh: $sim is not an executable" >&2
	exit 2
fi

sh "$here/build.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "run-sim.sh: not root: kyua will skip every case" \
	    "(require.user root)" >&2
fi

# Every case has its own daemon and work directory: they can run at once.
jobs=${BALLOON_ATF_JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)}

work=$(mktemp -d "${TMPDIR:-/tmp}/balloon-atf.XXXXXX")
results=$work/results.db
log=$work/kyua.log

set +e
kyua --config=none --logfile="$log" --variable="parallelism=$jobs" \
    --variable="test_suites.balloon.balloon_sim=$sim" \
    test --kyuafile="$here/Kyuafile" --results-file="$results" "$@"
status=$?
set -e

summary=$(kyua --config=none --logfile="$log" report \
    --results-file="$results" --results-filter= | grep '^Test cases: ' || :)
case $summary in
*" 0 broken, 0 failed")
	;;
*)
	# The failed and broken cases with their output, without the
	# environment dump that opens a verbose report.
	echo
	kyua --config=none --logfile="$log" report \
	    --results-file="$results" --verbose \
	    --results-filter=broken,failed |
	    awk '/^===> /{ skip = ($0 == "===> Execution context") } !skip'
	;;
esac
echo
kyua --config=none --logfile="$log" report --results-file="$results" \
    --results-filter=skipped,xfail,broken,failed

# "Test cases: N total, S skipped, X expected failures, B broken, F failed"
bad=$(echo "$summary" |
    sed -n 's/.* \([0-9][0-9]*\) broken, \([0-9][0-9]*\) failed.*/\1 \2/p')
if [ -z "$bad" ]; then
	echo "run-sim.sh: cannot read kyua's summary: $summary" >&2
	status=1
elif [ "$bad" != "0 0" ]; then
	status=1
fi
if [ "$status" -ne 0 ]; then
	echo "run-sim.sh: FAILED; kyua's results and log are in $work" >&2
	exit 1
fi
rm -rf "$work"
echo "run-sim.sh: all cases passed or were skipped ($sim)"
