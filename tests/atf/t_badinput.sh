# SPDX-License-Identifier: BSD-2-Clause
#
# The bad-input table: what the driver does with each kind of target
# value, one test case per source (xenstore memory/target, written by
# dom0; sysctl hw.balloon.target; xl mem-set, which parses sizes itself
# before it writes memory/target).  Wrong sizes and types of raw sysctl
# writes are t_sysctl_raw's.
#
# The rules (src/policy.rs, balloon.4): a xenstore value must be plain
# decimal digits, at most one newline after; anything else is refused
# and counted in stats.targets_refused, and changes nothing.  A valid
# value is rounded down to pages and, outside [min, max], clamped and
# counted in stats.targets_clamped.  sysctl(8) parses numbers itself
# (strtouq, base 0); the driver refuses values outside [min, max] with
# EPERM (counted) and negative quads with EINVAL.

. "$(atf_get_srcdir)/h_balloon.subr"

# counters: sets acc, clamp and ref from the stats.
counters()
{
	b_get acc hw.balloon.stats.targets_accepted
	b_get clamp hw.balloon.stats.targets_clamped
	b_get ref hw.balloon.stats.targets_refused
}

# baseline: the domain back at B_BOOT, settled.
baseline()
{
	b_target "$B_BOOT"
	b_expect hw.balloon.current "$B_BOOT"
	b_expect hw.balloon.state idle
}

atf_test_case xenstore cleanup
xenstore_head()
{
	atf_set "require.user" "root"
	atf_set descr "memory/target values from dom0: malformed ones are" \
	    "refused and counted, out-of-range ones clamped and counted"
}
xenstore_body()
{
	b_require_sim "a domU cannot write its own memory/target; dom0 does"
	b_start --pvh --boot 256m --max 512m --kernel assisted

	# what|value (printf %b escapes)|expected target: refused rows
	# leave the target at B_BOOT; "floor" and "max" are clamped.
	table="refused||
refused|abc|
refused|-5|
refused|-0|
refused|+200000|
refused|18446744073709551616|
refused|99999999999999999999999|
refused| 200000|
refused|200000 |
refused|200 000|
refused|\t200000|
refused|512M|
refused|524288K|
refused|200000k|
refused|0x30d40|
refused|1.5|
refused|200000.0|
refused|200000\n\n|
refused|\n|
refused|2e5|
exact|200000|200000
exact|200001|200000
exact|200003|200000
exact|0200000|200000
exact|200000\n|200000
floor|0|
floor|1024|
floor|$((B_MIN - 4))|
max|$((B_MAX + 4))|
max|99999999999|
max|18446744073709551615|"

	printf "%s\n" "$table" >table
	while IFS='|' read -r what field want; do
		# printf %b expands \n and \t; the x keeps trailing newlines
		# from $(...).
		value=$(printf '%bx' "$field")
		value=${value%x}
		case $value in
		*"\\"*)	atf_fail "table: '$field' left a backslash" ;;
		esac
		echo "row: $what '$field'"
		counters
		b_check -- xenstore-write memory/target "$value"
		# The driver has read it once one of the counters moved.
		n=$((acc + ref))
		i=$((10 * B_POLL_HZ))
		while :; do
			b_get a hw.balloon.stats.targets_accepted
			b_get r hw.balloon.stats.targets_refused
			[ $((a + r)) -gt $n ] && break
			i=$((i - 1))
			[ $i -gt 0 ] || atf_fail "'$field': not read within 10 s"
			_b_tick
		done
		b_get c hw.balloon.stats.targets_clamped
		b_assert "'$field': targets read" $((a + r)) -eq $((n + 1))
		case $what in
		refused)
			b_assert "'$field': targets_refused" "$r" -eq $((ref + 1))
			b_expect hw.balloon.target "$B_BOOT"
			b_expect hw.balloon.state idle
			b_expect hw.balloon.current "$B_BOOT"
			;;
		exact|floor|max)
			b_assert "'$field': targets_accepted" "$a" -eq $((acc + 1))
			case $what in
			exact)	clamped=$clamp ;;
			floor)	clamped=$((clamp + 1)); want=$B_MIN ;;
			max)	clamped=$((clamp + 1)); want=$B_MAX ;;
			esac
			b_assert "'$field': targets_clamped" "$c" -eq "$clamped"
			b_expect hw.balloon.target "$want"
			b_wait_state_settled
			b_expect hw.balloon.state idle
			b_expect hw.balloon.current "$want"
			baseline
			;;
		esac
	done <table
	b_check -s exit:0 -o inline:"consistent\n" -e empty -- sim check
}
xenstore_cleanup()
{
	b_stop
}

atf_test_case xenstore_unreadable cleanup
xenstore_unreadable_head()
{
	atf_set "require.user" "root"
	atf_set descr "A memory/target that cannot be read is reported on" \
	    "the console and changes nothing; a removed one is ignored"
}
xenstore_unreadable_body()
{
	b_require_sim "needs the simulator's xenstore and fault injection"
	b_start

	counters
	b_check -- sim fault xenstore_read_error 5
	b_check -- xenstore-write memory/target $((B_BOOT - 4096))
	i=$((10 * B_POLL_HZ))
	while :; do
		b_dmesg_count n '^balloon0: cannot read memory/target: error 5$'
		[ "$n" -ge 1 ] && break
		i=$((i - 1))
		[ $i -gt 0 ] || atf_fail "no 'cannot read memory/target' message"
		_b_tick
	done
	b_check -- sim fault clear
	b_expect hw.balloon.stats.targets_accepted "$acc"
	b_expect hw.balloon.stats.targets_refused "$ref"
	b_expect hw.balloon.target "$B_BOOT"
	b_expect hw.balloon.current "$B_BOOT"

	# Removed: the watch fires, the read finds nothing, nothing is said
	# or counted.  A valid value written after it is then taken.
	b_check -- xenstore-rm memory/target
	b_check -- xenstore-write memory/target $((B_BOOT - 4096))
	b_wait_sysctl hw.balloon.target -eq $((B_BOOT - 4096))
	b_wait_state_settled
	b_expect hw.balloon.current $((B_BOOT - 4096))
	b_expect hw.balloon.stats.targets_refused "$ref"
	b_dmesg_count n '^balloon0: cannot read memory/target'
	b_assert "'cannot read' messages" "$n" -eq 1
}
xenstore_unreadable_cleanup()
{
	b_stop
}

atf_test_case sysctl cleanup
sysctl_head()
{
	atf_set "require.user" "root"
	atf_set descr "hw.balloon.target values: what sysctl(8) refuses" \
	    "never reaches the driver; the driver refuses out-of-range" \
	    "values with EPERM (counted) and negative ones with EINVAL"
}
sysctl_body()
{
	b_start
	b_require_room_below 65536

	v=$((B_BOOT - 65536))
	# what|value|errno text or expected target
	table="nan||
nan|abc|
nan|${v} |
nan|512M|
nan|${v}K|
nan|1.5|
nan|${v}-|
range|18446744073709551616|Result too large
einval|-5|Invalid argument
einval|-$v|Invalid argument
einval|18446744073709551615|Invalid argument
einval|9223372036854775808|Invalid argument
eperm|0|Operation not permitted
eperm|4|Operation not permitted
eperm|$((B_MIN - 4))|Operation not permitted
eperm|$((B_MAX + 4))|Operation not permitted
eperm|9223372036854775807|Operation not permitted
ok|$v|$v
ok|$((v + 3))|$v
ok| $v|$v
ok|+$v|$v
ok|$(printf '0x%x' $v)|$v
ok|$(printf '0%o' $v)|$v"

	printf "%s\n" "$table" >table
	while IFS='|' read -r what value want; do
		echo "row: $what '$value'"
		counters
		case $what in
		nan)
			b_check -s exit:1 -o empty \
			    -e match:'^sysctl: .*not a number$' -- \
			    sysctl -w "hw.balloon.target=$value"
			;;
		range)
			# sysctl(8)'s own strtouq overflow (NetBSD names the
			# value, the simulator the node).
			b_check -s exit:1 -o empty \
			    -e match:"^sysctl: .*: $want\$" -- \
			    sysctl -w "hw.balloon.target=$value"
			;;
		einval|eperm)
			b_check -s exit:1 -o empty \
			    -e inline:"sysctl: hw.balloon.target: $want\n" -- \
			    sysctl -w "hw.balloon.target=$value"
			;;
		ok)
			# (NetBSD's sysctl(8) shows the value it wrote, the
			# simulator's the value read back.)
			b_check -s exit:0 \
			    -o match:"^hw\.balloon\.target: $B_BOOT -> [0-9]+\$" \
			    -e empty -- sysctl -w "hw.balloon.target=$value"
			b_expect hw.balloon.target "$want"
			b_wait_state_settled
			b_expect hw.balloon.current "$want"
			b_expect hw.balloon.stats.targets_accepted $((acc + 1))
			b_expect hw.balloon.stats.targets_refused "$ref"
			baseline
			continue
			;;
		esac
		b_expect hw.balloon.target "$B_BOOT"
		b_expect hw.balloon.current "$B_BOOT"
		b_expect hw.balloon.state idle
		b_expect hw.balloon.stats.targets_accepted "$acc"
		b_expect hw.balloon.stats.targets_clamped "$clamp"
		case $what in
		nan|range)
			# sysctl(8) refused it; the kernel never saw it.
			b_expect hw.balloon.stats.targets_refused "$ref" ;;
		eperm)
			b_expect hw.balloon.stats.targets_refused $((ref + 1)) ;;
		einval)
			# Counted or not: see sysctl_negative_counted.
			;;
		esac
	done <table
}
sysctl_cleanup()
{
	b_stop
}

atf_test_case sysctl_negative_counted cleanup
sysctl_negative_counted_head()
{
	atf_set "require.user" "root"
	atf_set descr "A negative hw.balloon.target refused with EINVAL" \
	    "counts in stats.targets_refused, as balloon.4 says of every" \
	    "failed write of hw.balloon.target"
}
sysctl_negative_counted_body()
{
	b_start

	counters
	b_check -s exit:1 -o empty \
	    -e inline:"sysctl: hw.balloon.target: Invalid argument\n" -- \
	    sysctl -w hw.balloon.target=-5
	b_expect hw.balloon.target "$B_BOOT"
	b_expect hw.balloon.stats.targets_refused $((ref + 1))
}
sysctl_negative_counted_cleanup()
{
	b_stop
}

atf_test_case xl cleanup
xl_head()
{
	atf_set "require.user" "root"
	atf_set descr "xl mem-set: sizes xl cannot parse, or above the" \
	    "static maximum, never reach memory/target; those it can parse" \
	    "reach the driver in KiB"
}
xl_body()
{
	b_require_sim "xl runs in dom0, not in the domU under test"
	b_start --pvh --boot 256m --max 512m --kernel assisted

	for size in abc 12mb -1 0x10 "" " 200m" 1.5g 99999999999999999999g 8g; do
		echo "row: refused '$size'"
		counters
		b_check -s exit:1 -o empty -e not-empty -- \
		    xl mem-set domU "$size"
		# Refused by xl itself: memory/target was not written.
		b_check -s exit:0 -o inline:"$B_BOOT\n" -e empty -- \
		    xenstore-read memory/target
		b_expect hw.balloon.stats.targets_refused "$ref"
		b_expect hw.balloon.stats.targets_accepted "$acc"
	done

	for row in 200m:204800 209715200b:204800 204800k:204800 200:204800 \
	    0:floor 256m:$B_BOOT; do
		size=${row%%:*}
		want=${row#*:}
		echo "row: accepted '$size'"
		counters
		b_check -- xl mem-set domU "$size"
		kib=$want
		[ "$want" = floor ] && kib=0
		b_check -s exit:0 -o inline:"$kib\n" -e empty -- \
		    xenstore-read memory/target
		b_wait_sysctl hw.balloon.stats.targets_accepted -eq $((acc + 1))
		[ "$want" = floor ] && want=$B_MIN
		b_expect hw.balloon.target "$want"
		b_wait_state_settled
		b_expect hw.balloon.current "$want"
	done
	b_expect hw.balloon.stats.targets_clamped 1
	b_expect hw.balloon.stats.targets_refused 0
}
xl_cleanup()
{
	b_stop
}

atf_init_test_cases()
{
	atf_add_test_case xenstore
	atf_add_test_case xenstore_unreadable
	atf_add_test_case sysctl
	atf_add_test_case sysctl_negative_counted
	atf_add_test_case xl
}
