# SPDX-License-Identifier: BSD-2-Clause
#
# The hw.balloon sysctl tree: every node, its description, its default,
# every writable knob written and restored, the bounds of each, read-only
# nodes, and refusals that change nothing.

. "$(atf_get_srcdir)/h_balloon.subr"

top_leaves="ballooned batch current hotplug max min plugged retry_delay_max
    retry_max scrub state target toolstack_offset unplug"
stat_leaves="frames_lost hypercalls last_errno last_error messages_suppressed
    pages_deflated pages_inflated pages_scrubbed retries segments_plugged
    segments_unplugged short_results targets_accepted targets_clamped
    targets_given_up targets_refused"
ro_quads="current max ballooned plugged toolstack_offset"

# Every leaf's full name, sorted.
all_leaves()
{
	{
		for n in $top_leaves; do echo "hw.balloon.$n"; done
		for n in $stat_leaves; do echo "hw.balloon.stats.$n"; done
	} | sort
}

# refuse name value errtext: "sysctl -w name=value" fails with the given
# strerror text and the value stays what it was.
refuse()
{
	b_get _r_before "$1"
	b_check -s exit:1 -o empty -e inline:"sysctl: $1: $3\n" -- \
	    sysctl -w "$1=$2"
	b_expect "$1" "$_r_before"
}

# refuse_nan name value: sysctl(8) itself refuses value as not a number
# (the wording names the value on NetBSD and the node in the simulator).
refuse_nan()
{
	b_get _r_before "$1"
	b_check -s exit:1 -o empty -e match:'^sysctl: .*not a number$' -- \
	    sysctl -w "$1=$2"
	b_expect "$1" "$_r_before"
}

# accept name value [reads]: "sysctl -w name=value" succeeds, prints
# "name: old -> new", and name then reads reads (default value).  (The
# new value shown is the one written on NetBSD, where sysctl(8) prints
# what it parsed, and the one read back in the simulator; they differ
# when the driver rounds.)
accept()
{
	b_get _a_before "$1"
	_a_now=${3:-$2}
	# sysctl(8) shows the value as it parsed it (a bool as 0 or 1); the
	# node may round it.
	_a_shown=$2
	case $1 in
	hw.balloon.scrub|hw.balloon.unplug|hw.balloon.hotplug)
		_a_shown=$_a_now ;;
	esac
	b_check -s exit:0 -o match:"^$1: $_a_before -> $_a_shown\$" \
	    -e empty -- sysctl -w "$1=$2"
	b_expect "$1" "$_a_now"
}

# The tree minus the counters a refused target write moves.
snapshot()
{
	b_run sysctl hw.balloon >"$1" 2>"$B_DIR/b-err" ||
	    atf_fail "sysctl hw.balloon failed: $(cat "$B_DIR/b-err")"
	grep -v '^hw\.balloon\.stats\.targets_refused = ' "$1" >"$1.x"
	mv "$1.x" "$1"
}

atf_test_case nodes_exist cleanup
nodes_exist_head()
{
	atf_set "require.user" "root"
	atf_set descr "hw.balloon has exactly the documented leaves, each" \
	    "with a value of its kind"
}
nodes_exist_body()
{
	b_start

	b_check -s exit:0 -o save:tree -e empty -- sysctl hw.balloon
	sed -n 's/^\(hw\.balloon\.[a-z_.]*\) = .*/\1/p' tree | sort >names
	all_leaves >expected
	atf_check -s exit:0 -o empty -e empty diff -u expected names
	# (wc pads its count on BSD; $((...)) takes the number.)
	lines=$(($(wc -l <tree)))
	b_assert "lines of sysctl hw.balloon" "$lines" -eq $(($(wc -l <expected)))

	for n in $top_leaves; do
		b_get v "hw.balloon.$n"
		case $n in
		scrub|hotplug|unplug)
			case $v in
			0|1)	;;
			*)	atf_fail "hw.balloon.$n is $v, not a bool" ;;
			esac ;;
		state)
			case $v in
			idle|inflating|deflating|plugging|unplugging) ;;
			"waiting: "?*|"cancelled: "?*) ;;
			*)	atf_fail "hw.balloon.state is '$v'" ;;
			esac ;;
		*)
			echo "$v" | grep -Eq '^[0-9]+$' ||
			    atf_fail "hw.balloon.$n is '$v', not a number" ;;
		esac
	done
	for n in $stat_leaves; do
		v=$(b_sysctl_n "hw.balloon.stats.$n") ||
		    atf_fail "cannot read hw.balloon.stats.$n"
		if [ "$n" = last_error ]; then
			[ -n "$v" ] || atf_fail "stats.last_error is empty"
			continue
		fi
		echo "$v" | grep -Eq '^[0-9]+$' ||
		    atf_fail "hw.balloon.stats.$n is '$v', not a number"
	done

	# A node is not a leaf: its leaves are listed below it.
	b_check -s exit:0 -o match:'^hw\.balloon\.stats\.hypercalls = ' \
	    -o not-match:'^hw\.balloon\.current = ' -e empty -- \
	    sysctl hw.balloon.stats
	b_check -s not-exit:0 -o empty -e not-empty -- \
	    sysctl -n hw.balloon.nonexistent
}
nodes_exist_cleanup()
{
	b_stop
}

atf_test_case descriptions cleanup
descriptions_head()
{
	atf_set "require.user" "root"
	atf_set descr "sysctl -d describes every leaf of hw.balloon"
}
descriptions_body()
{
	b_start

	for n in $(all_leaves); do
		b_check -s exit:0 -o save:desc -e empty -- sysctl -d "$n"
		atf_check -s exit:0 -o ignore -e empty \
		    grep -E "^$n: [^ ].{8,}$" desc
		atf_check -s exit:1 -o empty -e empty \
		    grep -F '(no description)' desc
		b_assert "lines of sysctl -d $n" $(($(wc -l <desc))) -eq 1
	done
	# sysctl -d on a node describes the nodes below it.
	b_check -s exit:0 -o save:sdesc -e empty -- sysctl -d hw.balloon.stats
	atf_check -s exit:0 -o ignore -e empty \
	    grep -E '^hw\.balloon\.stats\.pages_inflated: .{8,}$' sdesc
}
descriptions_cleanup()
{
	b_stop
}

atf_test_case defaults cleanup
defaults_head()
{
	atf_set "require.user" "root"
	atf_set descr "Right after load the knobs have their documented" \
	    "defaults and the counters are at zero"
}
defaults_body()
{
	b_start

	b_expect hw.balloon.batch 65536
	b_expect hw.balloon.retry_delay_max 32000
	b_expect hw.balloon.retry_max 4
	b_expect hw.balloon.scrub 1
	# Off by default (balloonkmod.4): segments added through the
	# kernel growth interfaces stay unless it is set.
	b_expect hw.balloon.unplug 0
	if b_hotplug_available; then
		b_expect hw.balloon.hotplug 1
	else
		b_expect hw.balloon.hotplug 0
	fi
	b_expect hw.balloon.state idle
	b_expect hw.balloon.target "$B_BOOT"
	b_expect hw.balloon.plugged 0
	b_expect hw.balloon.ballooned $((B_LOAD_KIB - B_BOOT))
	b_assert "hw.balloon.min" "$B_MIN" -gt 0
	b_assert "hw.balloon.min" "$B_MIN" -le "$B_BOOT"
	b_assert "hw.balloon.max" "$B_MAX" -ge "$B_BOOT"

	# The safe floor: at least the piecewise minimum of the boot size
	# (the UVM free minimum plus 1 MiB may be larger).
	mib=$((B_LOAD_KIB / 1024))
	if [ $mib -lt 128 ]; then
		floor=$(((8 + mib / 2) * 1024))
	elif [ $mib -lt 512 ]; then
		floor=$(((40 + mib / 4) * 1024))
	elif [ $mib -lt 2048 ]; then
		floor=$(((104 + mib / 8) * 1024))
	else
		floor=$(((296 + mib / 32) * 1024))
	fi
	if b_have_sim; then
		# The simulated domU's boot segment is exactly its memory,
		# and its free minimum is small.
		b_expect hw.balloon.min $floor
		# The limit is Xen's maximum (raised by b_start to
		# static-max + 1 MiB with xl mem-max), never above
		# memory/static-max.
		v=$(b_run xenstore-read memory/static-max)
		b_expect hw.balloon.max "$v"
	else
		# UVM's segments leave out what the kernel image holds.
		b_assert "hw.balloon.min" "$B_MIN" -ge $((floor * 9 / 10))
	fi

	for n in frames_lost last_errno messages_suppressed retries \
	    segments_plugged segments_unplugged short_results \
	    targets_clamped targets_given_up targets_refused; do
		b_expect "hw.balloon.stats.$n" 0
	done
	b_expect hw.balloon.stats.last_error none
	b_get acc hw.balloon.stats.targets_accepted
	if b_have_sim; then
		# One: memory/target, read when the watch was registered.
		b_assert "stats.targets_accepted" "$acc" -eq 1
		for n in pages_inflated pages_deflated pages_scrubbed \
		    hypercalls; do
			b_expect "hw.balloon.stats.$n" 0
		done
	else
		b_assert "stats.targets_accepted" "$acc" -le 1
	fi
}
defaults_cleanup()
{
	b_stop
}

atf_test_case knobs_read_write cleanup
knobs_read_write_head()
{
	atf_set "require.user" "root"
	atf_set descr "Every writable knob can be read, written, read back" \
	    "and restored"
}
knobs_read_write_body()
{
	b_start
	b_require_room_below $B_STEP

	for k in batch:256 retry_delay_max:5000 retry_max:9 scrub:0 unplug:0 \
	    min:$((B_MIN + 4096)); do
		n=hw.balloon.${k%%:*}
		b_get old "$n"
		accept "$n" "${k#*:}"
		accept "$n" "$old"
	done
	if b_hotplug_available; then
		accept hw.balloon.hotplug 0
		accept hw.balloon.hotplug 1
	fi

	accept hw.balloon.target $((B_BOOT - B_STEP))
	b_wait_state_settled
	b_expect hw.balloon.current $((B_BOOT - B_STEP))
	accept hw.balloon.target "$B_BOOT"
	b_wait_state_settled
	b_expect hw.balloon.current "$B_BOOT"
	b_expect hw.balloon.state idle
}
knobs_read_write_cleanup()
{
	b_stop
}

atf_test_case batch_bounds cleanup
batch_bounds_head()
{
	atf_set "require.user" "root"
	atf_set descr "hw.balloon.batch takes 1 to 65536 and refuses 0 and" \
	    "65537 with EPERM"
}
batch_bounds_body()
{
	b_start

	refuse hw.balloon.batch 0 "Operation not permitted"
	refuse hw.balloon.batch 65537 "Operation not permitted"
	refuse hw.balloon.batch 18446744073709551615 "Invalid argument"
	accept hw.balloon.batch 1
	accept hw.balloon.batch 65536
	refuse hw.balloon.batch 65537 "Operation not permitted"
	b_expect hw.balloon.batch 65536
	accept hw.balloon.batch 512

	# A batch of 1 still gets there, one frame a hypercall.
	b_require_room_below 4096
	accept hw.balloon.batch 1
	b_get h0 hw.balloon.stats.hypercalls
	b_target $((B_BOOT - 4096))
	b_expect hw.balloon.current $((B_BOOT - 4096))
	b_get h1 hw.balloon.stats.hypercalls
	b_assert "hypercalls for 1024 frames in batches of 1" \
	    $((h1 - h0)) -ge 1024
}
batch_bounds_cleanup()
{
	b_stop
}

atf_test_case min_bounds cleanup
min_bounds_head()
{
	atf_set "require.user" "root"
	atf_set descr "hw.balloon.min refuses values below the safe floor" \
	    "or above max with EPERM, rounds up to pages, and raises the" \
	    "target in force"
}
min_bounds_body()
{
	b_start
	b_require_room_below $B_STEP

	floor=$B_MIN
	refuse hw.balloon.min $((floor - 4)) "Operation not permitted"
	refuse hw.balloon.min 0 "Operation not permitted"
	refuse hw.balloon.min $((B_MAX + 4)) "Operation not permitted"
	refuse hw.balloon.min $((B_MAX + 1)) "Operation not permitted"
	refuse hw.balloon.min -4096 "Invalid argument"
	# Rounded up to whole pages.
	accept hw.balloon.min $((floor - 1)) $floor
	accept hw.balloon.min $((floor + 1)) $((floor + 4))
	accept hw.balloon.min $floor

	# A floor above the target raises the target in force; lowering
	# it again brings the old target back.
	b_target $((B_BOOT - B_STEP))
	b_expect hw.balloon.current $((B_BOOT - B_STEP))
	accept hw.balloon.min $((B_BOOT - B_STEP / 2))
	b_expect hw.balloon.target $((B_BOOT - B_STEP / 2))
	b_wait_state_settled
	b_expect hw.balloon.current $((B_BOOT - B_STEP / 2))
	refuse hw.balloon.target $((B_BOOT - B_STEP)) "Operation not permitted"
	accept hw.balloon.min $floor
	b_expect hw.balloon.target $((B_BOOT - B_STEP))
	b_wait_state_settled
	b_expect hw.balloon.current $((B_BOOT - B_STEP))
}
min_bounds_cleanup()
{
	b_stop
}

atf_test_case retry_bounds cleanup
retry_bounds_head()
{
	atf_set "require.user" "root"
	atf_set descr "retry_delay_max takes 1 to 86400000 ms, retry_max 0" \
	    "to 4294967295; others are refused with EPERM"
}
retry_bounds_body()
{
	b_start

	refuse hw.balloon.retry_delay_max 0 "Operation not permitted"
	refuse hw.balloon.retry_delay_max 86400001 "Operation not permitted"
	accept hw.balloon.retry_delay_max 1
	accept hw.balloon.retry_delay_max 86400000
	accept hw.balloon.retry_delay_max 32000

	refuse hw.balloon.retry_max 4294967296 "Operation not permitted"
	accept hw.balloon.retry_max 0
	accept hw.balloon.retry_max 4294967295
	accept hw.balloon.retry_max 4
}
retry_bounds_cleanup()
{
	b_stop
}

atf_test_case bools cleanup
bools_head()
{
	atf_set "require.user" "root"
	atf_set descr "scrub, unplug and hotplug read 0 or 1; sysctl(8)" \
	    "writes any non-zero number as 1 and refuses what is not a number"
}
bools_body()
{
	b_start

	bools="scrub unplug"
	b_hotplug_available && bools="$bools hotplug"
	for b in $bools; do
		n=hw.balloon.$b
		accept "$n" 0
		accept "$n" 1
		accept "$n" 0
		accept "$n" 2 1
		accept "$n" 0
		accept "$n" 0x10 1
		refuse_nan "$n" abc
		refuse_nan "$n" ""
		refuse_nan "$n" "1 "
		b_expect "$n" 1
	done
}
bools_cleanup()
{
	b_stop
}

atf_test_case readonly_nodes cleanup
readonly_nodes_head()
{
	atf_set "require.user" "root"
	atf_set descr "Writes to read-only nodes fail with EPERM and change" \
	    "nothing"
}
readonly_nodes_body()
{
	b_start

	for n in $ro_quads; do
		refuse "hw.balloon.$n" 0 "Operation not permitted"
		refuse "hw.balloon.$n" 4096 "Operation not permitted"
	done
	refuse hw.balloon.state idle "Operation not permitted"
	refuse hw.balloon.state "inflating" "Operation not permitted"
	for n in $stat_leaves; do
		refuse "hw.balloon.stats.$n" 0 "Operation not permitted"
	done
	refuse hw.balloon.stats.last_error none "Operation not permitted"
}
readonly_nodes_cleanup()
{
	b_stop
}

atf_test_case target_write cleanup
target_write_head()
{
	atf_set "require.user" "root"
	atf_set descr "hw.balloon.target takes values between min and max," \
	    "rounded down to pages, and refuses others with EPERM, counted" \
	    "in stats.targets_refused"
}
target_write_body()
{
	b_start
	b_require_room_below $B_STEP

	b_get acc0 hw.balloon.stats.targets_accepted
	b_get ref0 hw.balloon.stats.targets_refused
	accept hw.balloon.target $((B_BOOT - B_STEP + 3)) $((B_BOOT - B_STEP))
	b_wait_state_settled
	b_expect hw.balloon.current $((B_BOOT - B_STEP))
	b_expect hw.balloon.state idle

	refuse hw.balloon.target $((B_MIN - 4)) "Operation not permitted"
	refuse hw.balloon.target 0 "Operation not permitted"
	refuse hw.balloon.target $((B_MAX + 4)) "Operation not permitted"
	b_expect hw.balloon.current $((B_BOOT - B_STEP))
	b_expect hw.balloon.state idle
	b_expect hw.balloon.stats.targets_refused $((ref0 + 3))
	b_expect hw.balloon.stats.targets_accepted $((acc0 + 1))

	# The floor itself is accepted.  Only the simulated domU is taken
	# down to it: a real one may well run short of memory first.
	accept hw.balloon.target "$B_MIN"
	if b_have_sim; then
		b_wait_state_settled
		b_expect hw.balloon.current "$B_MIN"
	fi
	accept hw.balloon.target "$B_BOOT"
	b_wait_state_settled
	b_expect hw.balloon.current "$B_BOOT"
	b_expect hw.balloon.stats.targets_accepted $((acc0 + 3))
	b_expect hw.balloon.stats.targets_refused $((ref0 + 3))
}
target_write_cleanup()
{
	b_stop
}

atf_test_case refusals_change_nothing cleanup
refusals_change_nothing_head()
{
	atf_set "require.user" "root"
	atf_set descr "A battery of refused writes leaves the whole tree as" \
	    "it was, but for stats.targets_refused"
}
refusals_change_nothing_body()
{
	b_start

	b_get ref0 hw.balloon.stats.targets_refused
	snapshot before
	for w in batch=0 batch=65537 min=0 min=$((B_MAX + 4)) \
	    retry_delay_max=0 retry_delay_max=86400001 \
	    retry_max=4294967296 current=0 max=0 ballooned=4096 \
	    plugged=4096 stats.pages_inflated=1 stats.hypercalls=0 \
	    target=0 target=$((B_MAX + 4)); do
		b_check -s exit:1 -o empty \
		    -e match:'^sysctl: hw\.balloon\..*: Operation not permitted$' \
		    -- sysctl -w "hw.balloon.$w"
	done
	# (A negative target is left to t_badinput, which knows how it is
	# counted.)
	for w in batch=-1 min=-1 retry_max=-1 retry_delay_max=-5; do
		b_check -s exit:1 -o empty \
		    -e match:'^sysctl: hw\.balloon\..*: Invalid argument$' \
		    -- sysctl -w "hw.balloon.$w"
	done
	for w in batch=x min=1G retry_max=4k target=512M target= scrub=on; do
		b_check -s exit:1 -o empty -e match:'not a number$' \
		    -- sysctl -w "hw.balloon.$w"
	done
	snapshot after
	atf_check -s exit:0 -o empty -e empty diff -u before after
	# target=0 and target=max+4 reached the driver and were counted.
	b_expect hw.balloon.stats.targets_refused $((ref0 + 2))
}
refusals_change_nothing_cleanup()
{
	b_stop
}

atf_init_test_cases()
{
	atf_add_test_case nodes_exist
	atf_add_test_case descriptions
	atf_add_test_case defaults
	atf_add_test_case knobs_read_write
	atf_add_test_case batch_bounds
	atf_add_test_case min_bounds
	atf_add_test_case retry_bounds
	atf_add_test_case bools
	atf_add_test_case readonly_nodes
	atf_add_test_case target_write
	atf_add_test_case refusals_change_nothing
}
