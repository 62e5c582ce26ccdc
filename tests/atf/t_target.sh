# SPDX-License-Identifier: BSD-2-Clause
#
# Targets: down and back up through sysctl, xl mem-set and xenstore
# memory/target; above boot memory a PVH guest grows by hot-plugged
# segments and a PV guest gives up.

. "$(atf_get_srcdir)/h_balloon.subr"

# wait_target kib: waits until the driver has read a target of kib from
# xenstore, then until it has settled.
wait_target()
{
	b_wait_sysctl hw.balloon.target = "$1"
	b_wait_state_settled
}

atf_test_case sysctl_down_up cleanup
sysctl_down_up_head()
{
	atf_set "require.user" "root"
	atf_set descr "hw.balloon.target down by 128 MiB and back: current" \
	    "follows, ballooned shows the difference"
}
sysctl_down_up_body()
{
	b_start
	b_require_room_below $B_STEP

	b_dmesg_count at0 '^balloon0: at target: '
	b_target $((B_BOOT - B_STEP))
	b_expect hw.balloon.state idle
	b_expect hw.balloon.target $((B_BOOT - B_STEP))
	b_expect hw.balloon.current $((B_BOOT - B_STEP))
	b_expect hw.balloon.ballooned $((B_LOAD_KIB - B_BOOT + B_STEP))
	b_expect hw.balloon.plugged 0
	b_check -s exit:0 -o match:"^balloon0: at target: $((B_BOOT - B_STEP)) KiB \\($((B_LOAD_KIB - B_BOOT + B_STEP)) KiB ballooned\\)\$" \
	    -e empty -- dmesg -t
	if b_have_sim; then
		b_stat v memory_kib
		b_assert "memory_kib" "$v" -eq $((B_BOOT - B_STEP))
	fi

	b_target "$B_BOOT"
	b_expect hw.balloon.state idle
	b_expect hw.balloon.current "$B_BOOT"
	b_expect hw.balloon.ballooned $((B_LOAD_KIB - B_BOOT))
	b_dmesg_count at1 '^balloon0: at target: '
	b_assert "new 'at target' messages" $((at1 - at0)) -eq 2
	if b_have_sim; then
		b_stat v memory_kib
		b_assert "memory_kib" "$v" -eq "$B_BOOT"
		b_check -s exit:0 -o inline:"consistent\n" -e empty -- sim check
	fi
}
sysctl_down_up_cleanup()
{
	b_stop
}

atf_test_case xl_mem_set cleanup
xl_mem_set_head()
{
	atf_set "require.user" "root"
	atf_set descr "xl mem-set from dom0 (xenstore memory/target) takes" \
	    "the domain down and back up"
}
xl_mem_set_body()
{
	b_require_sim "xl runs in dom0, not in the domU under test"
	b_start

	b_check -- xl mem-set domU $(((B_BOOT - B_STEP) / 1024))m
	b_check -s exit:0 -o inline:"$((B_BOOT - B_STEP))\n" -e empty -- \
	    xenstore-read memory/target
	# As a toolstack watching from outside would: current reaches it.
	b_wait_current $((B_BOOT - B_STEP))
	b_wait_state_settled
	b_expect hw.balloon.state idle
	b_expect hw.balloon.target $((B_BOOT - B_STEP))
	b_check -s exit:0 \
	    -o match:"^domU +1 +$(((B_BOOT - B_STEP) / 1024)) " -e empty -- \
	    xl list

	# No suffix means MiB, as with xl.
	b_check -- xl mem-set $((B_BOOT / 1024))
	wait_target "$B_BOOT"
	b_expect hw.balloon.current "$B_BOOT"
	b_expect hw.balloon.ballooned 0
	b_expect hw.balloon.stats.targets_clamped 0
}
xl_mem_set_cleanup()
{
	b_stop
}

atf_test_case xenstore_target cleanup
xenstore_target_head()
{
	atf_set "require.user" "root"
	atf_set descr "A KiB count written to xenstore memory/target is" \
	    "followed, rounded down to pages"
}
xenstore_target_body()
{
	b_require_sim "a domU cannot write its own memory/target; dom0 does"
	b_start

	b_check -- xenstore-write memory/target $((B_BOOT - B_STEP + 2))
	wait_target $((B_BOOT - B_STEP))
	b_expect hw.balloon.current $((B_BOOT - B_STEP))
	b_check -- xenstore-write memory/target "$B_BOOT"
	wait_target "$B_BOOT"
	b_expect hw.balloon.current "$B_BOOT"
	b_expect hw.balloon.state idle
}
xenstore_target_cleanup()
{
	b_stop
}

atf_test_case last_writer_wins cleanup
last_writer_wins_head()
{
	atf_set "require.user" "root"
	atf_set descr "sysctl and xenstore both set the target; the later" \
	    "write counts"
}
last_writer_wins_body()
{
	b_require_sim "a domU cannot write its own memory/target; dom0 does"
	b_start

	b_target $((B_BOOT - B_STEP))
	b_check -- xenstore-write memory/target $((B_BOOT - B_STEP / 2))
	wait_target $((B_BOOT - B_STEP / 2))
	b_expect hw.balloon.current $((B_BOOT - B_STEP / 2))
	b_target $((B_BOOT - B_STEP / 4))
	b_expect hw.balloon.current $((B_BOOT - B_STEP / 4))
	# xenstore still says what it said: the sysctl write did not touch it.
	b_check -s exit:0 -o inline:"$((B_BOOT - B_STEP / 2))\n" -e empty -- \
	    xenstore-read memory/target
}
last_writer_wins_cleanup()
{
	b_stop
}

atf_test_case same_target_again cleanup
same_target_again_head()
{
	atf_set "require.user" "root"
	atf_set descr "Writing the target the domain is at is accepted and" \
	    "moves nothing"
}
same_target_again_body()
{
	b_start

	b_get acc0 hw.balloon.stats.targets_accepted
	b_get h0 hw.balloon.stats.hypercalls
	b_check -s exit:0 -o inline:"hw.balloon.target: $B_BOOT -> $B_BOOT\n" \
	    -e empty -- sysctl -w hw.balloon.target="$B_BOOT"
	b_wait_state_settled
	b_expect hw.balloon.state idle
	b_expect hw.balloon.current "$B_BOOT"
	b_expect hw.balloon.stats.hypercalls "$h0"
	b_expect hw.balloon.stats.targets_accepted $((acc0 + 1))
}
same_target_again_cleanup()
{
	b_stop
}

atf_test_case above_boot_pvh cleanup
above_boot_pvh_head()
{
	atf_set "require.user" "root"
	atf_set descr "PVH: a target above boot memory is reached with a" \
	    "hot-plugged segment"
}
above_boot_pvh_body()
{
	b_start --pvh --kernel assisted
	b_require_hotplug
	b_require_room_above $B_STEP

	b_get plugs0 hw.balloon.stats.segments_plugged
	b_target $((B_LOAD_KIB + B_STEP))
	b_expect hw.balloon.state idle
	b_expect hw.balloon.current $((B_LOAD_KIB + B_STEP))
	b_expect hw.balloon.ballooned 0
	# One segment, exactly as large as needed (128 MiB is the largest).
	b_expect hw.balloon.plugged "$B_STEP"
	b_expect hw.balloon.stats.segments_plugged $((plugs0 + 1))
	b_expect hw.balloon.stats.targets_given_up 0
	if b_have_sim; then
		b_stat v memory_kib
		b_assert "memory_kib" "$v" -eq $((B_LOAD_KIB + B_STEP))
		b_stat v segments
		b_assert "UVM segments" "$v" -eq 2
		b_check -s exit:0 -o inline:"consistent\n" -e empty -- sim check
	fi

	# More than one segment's worth: 128 MiB segments, then the rest.
	b_require_room_above $((2 * B_STEP + B_STEP / 2))
	b_target $((B_LOAD_KIB + 2 * B_STEP + B_STEP / 2))
	b_expect hw.balloon.state idle
	b_expect hw.balloon.current $((B_LOAD_KIB + 2 * B_STEP + B_STEP / 2))
	b_expect hw.balloon.plugged $((2 * B_STEP + B_STEP / 2))
	b_expect hw.balloon.stats.segments_plugged $((plugs0 + 3))
}
above_boot_pvh_cleanup()
{
	b_stop
}

atf_test_case above_boot_pv cleanup
above_boot_pv_head()
{
	atf_set "require.user" "root"
	atf_set descr "PV on a stock kernel: a target above boot memory is" \
	    "clipped at boot memory, 'clipped: PV: the p2m ends at boot memory'"
}
above_boot_pv_body()
{
	b_start --pv
	b_require_room_above $B_STEP

	b_get gu0 hw.balloon.stats.targets_given_up
	b_target $((B_LOAD_KIB + B_STEP))
	b_expect hw.balloon.state "clipped: PV: the p2m ends at boot memory"
	b_expect hw.balloon.target $((B_LOAD_KIB + B_STEP))
	b_expect hw.balloon.current "$B_LOAD_KIB"
	b_expect hw.balloon.plugged 0
	b_expect hw.balloon.stats.segments_plugged 0
	b_expect hw.balloon.stats.targets_given_up "$gu0"
	b_check -s exit:0 -o match:"^balloon0: target $((B_LOAD_KIB + B_STEP)) KiB clipped to $B_LOAD_KIB KiB: PV: the p2m ends at boot memory\$" \
	    -e empty -- dmesg -t

	# Back within boot memory it works again.
	b_require_room_below $B_STEP
	b_target $((B_BOOT - B_STEP))
	b_expect hw.balloon.state idle
	b_expect hw.balloon.current $((B_BOOT - B_STEP))
	b_target "$B_LOAD_KIB"
	b_expect hw.balloon.state idle
	b_expect hw.balloon.current "$B_LOAD_KIB"
	b_expect hw.balloon.stats.targets_given_up "$gu0"
}
above_boot_pv_cleanup()
{
	b_stop
}

atf_init_test_cases()
{
	atf_add_test_case sysctl_down_up
	atf_add_test_case xl_mem_set
	atf_add_test_case xenstore_target
	atf_add_test_case last_writer_wins
	atf_add_test_case same_target_again
	atf_add_test_case above_boot_pvh
	atf_add_test_case above_boot_pv
}
