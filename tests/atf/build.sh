#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
#
# build.sh: builds the ATF test programs next to their sources, as
# bsd.test.mk would (see the Makefile, for NetBSD's tests/ tree): each
# shell program t_x from t_x.sh with an atf-sh interpreter line put in
# front, each C program t_x from t_x.c against atf-c.  The Atffile and
# Kyuafile list the programs by those names.  Portable sh: Debian
# (atf-sh, libatf-dev, kyua) and NetBSD with the comp set.
#
#	sh tests/atf/build.sh		CC, CFLAGS, LDFLAGS are honoured

set -eu

srcdir=$(cd "$(dirname "$0")" && pwd)
cc=${CC:-cc}

# The programs, as the Makefile's TESTS_SH and TESTS_C name them.
tests_sh=$(sed -n 's/^TESTS_SH+*=[[:space:]]*//p' "$srcdir/Makefile")
tests_c=$(sed -n 's/^TESTS_C+*=[[:space:]]*//p' "$srcdir/Makefile")

# bsd.test.mk writes #! /usr/bin/atf-sh; elsewhere atf-sh may live in
# another directory.
atf_sh=$(command -v atf-sh 2>/dev/null || echo /usr/bin/atf-sh)

for prog in $tests_sh; do
	echo "atf-sh: $srcdir/$prog from $prog.sh"
	{
		echo "#! $atf_sh"
		cat "$srcdir/$prog.sh"
	} >"$srcdir/$prog.tmp"
	chmod +x "$srcdir/$prog.tmp"
	mv "$srcdir/$prog.tmp" "$srcdir/$prog"
done

if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists atf-c; then
	atf_cflags=$(pkg-config --cflags atf-c)
	atf_libs=$(pkg-config --libs atf-c)
else
	# NetBSD's base system has atf-c in /usr/include and /usr/lib.
	atf_cflags=
	atf_libs=-latf-c
fi

for prog in $tests_c; do
	echo "$cc -o $srcdir/$prog $srcdir/$prog.c"
	# shellcheck disable=SC2086 # the flags are word lists
	$cc ${CFLAGS:--O2 -g} -Wall -Wextra $atf_cflags \
	    -o "$srcdir/$prog" "$srcdir/$prog.c" ${LDFLAGS:-} $atf_libs
done
