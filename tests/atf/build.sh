#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
#
# build.sh: compiles the C test programs of the ATF suite (t_sysctl_raw)
# next to their sources, against atf-c.  Portable sh: Debian (atf-sh,
# libatf-dev, kyua) and NetBSD with the comp set.
#
#	sh tests/atf/build.sh		CC, CFLAGS, LDFLAGS are honoured

set -eu

srcdir=$(cd "$(dirname "$0")" && pwd)
cc=${CC:-cc}

if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists atf-c; then
	atf_cflags=$(pkg-config --cflags atf-c)
	atf_libs=$(pkg-config --libs atf-c)
else
	# NetBSD's base system has atf-c in /usr/include and /usr/lib.
	atf_cflags=
	atf_libs=-latf-c
fi

progs="t_sysctl_raw"
for prog in $progs; do
	echo "$cc -o $srcdir/$prog $srcdir/$prog.c"
	# shellcheck disable=SC2086 # the flags are word lists
	$cc ${CFLAGS:--O2 -g} -Wall -Wextra $atf_cflags \
	    -o "$srcdir/$prog" "$srcdir/$prog.c" ${LDFLAGS:-} $atf_libs
done
