# SPDX-License-Identifier: BSD-2-Clause
#
# Growing past boot memory by plugging UVM segments (hw.balloon.hotplug)
# and shrinking back by unplugging them (hw.balloon.unplug); kernels
# without options UVM_HOTPLUG.

. "$(atf_get_srcdir)/h_balloon.subr"

atf_test_case hotplug_on cleanup
hotplug_on_head()
{
	atf_set "require.user" "root"
	atf_set descr "With hotplug on (the default) a PVH domain grows past" \
	    "its boot memory"
}
hotplug_on_body()
{
	b_start --pvh --kernel assisted
	b_require_hotplug
	b_require_room_above $B_STEP

	b_expect hw.balloon.hotplug 1
	b_target $((B_LOAD_KIB + B_STEP))
	b_expect hw.balloon.state idle
	b_expect hw.balloon.current $((B_LOAD_KIB + B_STEP))
	b_get v hw.balloon.plugged
	b_assert "hw.balloon.plugged" "$v" -gt 0
	b_get v hw.balloon.stats.segments_plugged
	b_assert "stats.segments_plugged" "$v" -gt 0
}
hotplug_on_cleanup()
{
	b_stop
}

atf_test_case deflate_before_plug cleanup
deflate_before_plug_head()
{
	atf_set "require.user" "root"
	atf_set descr "Growing takes ballooned pages back before it plugs" \
	    "anything new"
}
deflate_before_plug_body()
{
	b_start --pvh --kernel assisted
	b_require_hotplug
	b_require_room_below $B_STEP
	b_require_room_above $B_STEP

	b_target $((B_BOOT - B_STEP))
	b_get def0 hw.balloon.stats.pages_deflated
	b_target $((B_LOAD_KIB + B_STEP))
	b_expect hw.balloon.state idle
	b_expect hw.balloon.current $((B_LOAD_KIB + B_STEP))
	b_expect hw.balloon.ballooned 0
	b_expect hw.balloon.plugged "$B_STEP"
	b_get def1 hw.balloon.stats.pages_deflated
	b_assert "pages deflated before plugging" $((def1 - def0)) -eq \
	    $(((B_LOAD_KIB - B_BOOT + B_STEP) / 4))
}
deflate_before_plug_cleanup()
{
	b_stop
}

atf_test_case hotplug_off cleanup
hotplug_off_head()
{
	atf_set "require.user" "root"
	atf_set descr "With hotplug off a target above boot memory ends in" \
	    "'cancelled: target above boot memory and hotplug off'; turning" \
	    "it on again resumes"
}
hotplug_off_body()
{
	b_start --pvh --kernel assisted
	b_require_hotplug
	b_require_room_below $B_STEP
	b_require_room_above $B_STEP

	b_set hw.balloon.hotplug 0
	b_expect hw.balloon.hotplug 0
	b_target $((B_BOOT - B_STEP))
	b_get gu0 hw.balloon.stats.targets_given_up

	# Ballooned memory still comes back; only the growth past it stops.
	b_target $((B_LOAD_KIB + B_STEP))
	b_expect hw.balloon.state \
	    "cancelled: target above boot memory and hotplug off"
	b_expect hw.balloon.current "$B_LOAD_KIB"
	b_expect hw.balloon.ballooned 0
	b_expect hw.balloon.plugged 0
	b_expect hw.balloon.stats.segments_plugged 0
	b_expect hw.balloon.stats.targets_given_up $((gu0 + 1))
	b_check -s exit:0 -o match:"^balloon0: giving up on target $((B_LOAD_KIB + B_STEP)) KiB at $B_LOAD_KIB KiB: target above boot memory and hotplug off\$" \
	    -e empty -- dmesg -t

	# Writing the knob re-arms the driver.
	b_set hw.balloon.hotplug 1
	b_wait_state_settled
	b_expect hw.balloon.state idle
	b_expect hw.balloon.current $((B_LOAD_KIB + B_STEP))
	b_expect hw.balloon.plugged "$B_STEP"
	b_expect hw.balloon.stats.targets_given_up $((gu0 + 1))
}
hotplug_off_cleanup()
{
	b_stop
}

atf_test_case no_uvm_hotplug cleanup
no_uvm_hotplug_head()
{
	atf_set "require.user" "root"
	atf_set descr "On a kernel without UVM_HOTPLUG hotplug reads 0, is" \
	    "read-only (EPERM), and the domain stops at boot memory"
}
no_uvm_hotplug_body()
{
	# PVH in the simulator, where PV would stop at boot memory anyway;
	# on NetBSD, whatever the domU is.
	if b_have_sim; then
		b_start --pvh --no-hotplug
	else
		b_start --no-hotplug
	fi
	b_require_room_above $B_STEP

	b_check -s exit:0 -o match:'^balloon0: PVH? guest, .*, hotplug unavailable \((kernel lacks options UVM_HOTPLUG|PV: the p2m ends at boot memory)\)$' \
	    -e empty -- dmesg -t
	b_expect hw.balloon.hotplug 0
	b_check -s exit:1 -o empty \
	    -e inline:"sysctl: hw.balloon.hotplug: Operation not permitted\n" \
	    -- sysctl -w hw.balloon.hotplug=1
	b_check -s exit:1 -o empty \
	    -e inline:"sysctl: hw.balloon.hotplug: Operation not permitted\n" \
	    -- sysctl -w hw.balloon.hotplug=0
	b_expect hw.balloon.hotplug 0

	b_target $((B_LOAD_KIB + B_STEP))
	b_get st hw.balloon.state
	case $st in
	"clipped: kernel lacks options UVM_HOTPLUG"|\
	"clipped: PV: the p2m ends at boot memory") ;;
	*)	atf_fail "hw.balloon.state: $st" ;;
	esac
	b_expect hw.balloon.current "$B_LOAD_KIB"
	b_expect hw.balloon.plugged 0
	b_expect hw.balloon.stats.targets_given_up 0

	# Within boot memory it works as ever.
	b_require_room_below $B_STEP
	b_target $((B_BOOT - B_STEP))
	b_expect hw.balloon.state idle
	b_expect hw.balloon.current $((B_BOOT - B_STEP))
}
no_uvm_hotplug_cleanup()
{
	b_stop
}

atf_test_case unplug_on_shrink cleanup
unplug_on_shrink_head()
{
	atf_set "require.user" "root"
	atf_set descr "Shrinking back to boot memory unplugs the fully" \
	    "ballooned plugged segment"
}
unplug_on_shrink_body()
{
	b_start --pvh --kernel assisted
	b_require_hotplug
	b_require_room_above $B_STEP
	# Unplug is off by default; this case is about shrinking by it.
	b_set hw.balloon.unplug 1

	b_target $((B_LOAD_KIB + B_STEP))
	b_expect hw.balloon.plugged "$B_STEP"
	b_get un0 hw.balloon.stats.segments_unplugged
	b_target "$B_LOAD_KIB"
	b_wait_sysctl hw.balloon.plugged -eq 0
	b_wait_state_settled
	b_expect hw.balloon.state idle
	b_expect hw.balloon.current "$B_LOAD_KIB"
	b_expect hw.balloon.ballooned 0
	b_get un1 hw.balloon.stats.segments_unplugged
	b_assert "stats.segments_unplugged" $((un1 - un0)) -eq 1
	if b_have_sim; then
		b_stat v segments
		b_assert "UVM segments" "$v" -eq 1
		b_stat v memory_kib
		b_assert "memory_kib" "$v" -eq "$B_LOAD_KIB"
		b_check -s exit:0 -o inline:"consistent\n" -e empty -- sim check
	fi
}
unplug_on_shrink_cleanup()
{
	b_stop
}

atf_test_case unplug_newest_first cleanup
unplug_newest_first_head()
{
	atf_set "require.user" "root"
	atf_set descr "Shrinking takes the newest plugged segment first and" \
	    "unplugs only segments whose every page is ballooned"
}
unplug_newest_first_body()
{
	b_start --pvh --kernel assisted
	b_require_hotplug
	b_require_room_above $((2 * B_STEP + B_STEP / 2))
	# Unplug is off by default; this case is about shrinking by it.
	b_set hw.balloon.unplug 1

	# Three segments: 128 MiB, 128 MiB, 64 MiB.
	b_target $((B_LOAD_KIB + 2 * B_STEP + B_STEP / 2))
	b_expect hw.balloon.stats.segments_plugged 3
	b_expect hw.balloon.plugged $((2 * B_STEP + B_STEP / 2))

	# Half a segment less: the 64 MiB one goes.
	b_target $((B_LOAD_KIB + 2 * B_STEP))
	b_wait_sysctl hw.balloon.plugged -eq $((2 * B_STEP))
	b_expect hw.balloon.stats.segments_unplugged 1
	b_expect hw.balloon.ballooned 0

	# Half of the next one: ballooned, not unplugged.
	b_target $((B_LOAD_KIB + B_STEP + B_STEP / 2))
	b_expect hw.balloon.state idle
	b_expect hw.balloon.plugged $((2 * B_STEP))
	b_expect hw.balloon.ballooned $((B_STEP / 2))
	b_expect hw.balloon.stats.segments_unplugged 1

	# The rest of it: now it goes.
	b_target $((B_LOAD_KIB + B_STEP))
	b_wait_sysctl hw.balloon.plugged -eq "$B_STEP"
	b_expect hw.balloon.ballooned 0
	b_expect hw.balloon.stats.segments_unplugged 2
	b_expect hw.balloon.current $((B_LOAD_KIB + B_STEP))
}
unplug_newest_first_cleanup()
{
	b_stop
}

atf_test_case unplug_off cleanup
unplug_off_head()
{
	atf_set "require.user" "root"
	atf_set descr "With unplug off a fully ballooned segment stays" \
	    "plugged; turning unplug on removes it"
}
unplug_off_body()
{
	b_start --pvh --kernel assisted
	b_require_hotplug
	b_require_room_above $B_STEP

	b_target $((B_LOAD_KIB + B_STEP))
	b_set hw.balloon.unplug 0
	b_target "$B_LOAD_KIB"
	b_expect hw.balloon.state idle
	b_expect hw.balloon.current "$B_LOAD_KIB"
	b_expect hw.balloon.plugged "$B_STEP"
	b_expect hw.balloon.ballooned "$B_STEP"
	b_expect hw.balloon.stats.segments_unplugged 0
	if b_have_sim; then
		b_stat v segments
		b_assert "UVM segments" "$v" -eq 2
	fi

	b_set hw.balloon.unplug 1
	b_wait_sysctl hw.balloon.plugged -eq 0
	b_wait_state_settled
	b_expect hw.balloon.ballooned 0
	b_expect hw.balloon.current "$B_LOAD_KIB"
	b_expect hw.balloon.stats.segments_unplugged 1
	if b_have_sim; then
		b_stat v segments
		b_assert "UVM segments" "$v" -eq 1
	fi
}
unplug_off_cleanup()
{
	b_stop
}

atf_test_case plug_fails cleanup
plug_fails_head()
{
	atf_set "require.user" "root"
	atf_set descr "A plug that keeps failing is retried, then given up" \
	    "with the reason; nothing is lost and a new target succeeds"
}
plug_fails_body()
{
	b_require_sim "needs the simulator's fault injection (plug_fail)"
	b_start --pvh --kernel assisted
	b_require_room_above $B_STEP

	b_check -- sim fault plug_fail on
	b_target $((B_LOAD_KIB + B_STEP))
	b_expect hw.balloon.state \
	    "cancelled: retries exhausted (segment could not be plugged)"
	b_expect hw.balloon.current "$B_LOAD_KIB"
	b_expect hw.balloon.plugged 0
	b_expect hw.balloon.stats.segments_plugged 0
	b_expect hw.balloon.stats.frames_lost 0
	b_expect hw.balloon.stats.targets_given_up 1
	b_expect hw.balloon.stats.retries 4
	b_expect hw.balloon.stats.short_results 5
	b_expect hw.balloon.stats.last_error "ENOMEM (12) in plug"
	b_stat v memory_kib
	b_assert "memory_kib after failed plugs" "$v" -eq "$B_LOAD_KIB"
	b_check -s exit:0 -o inline:"consistent\n" -e empty -- sim check

	# The same target again changes nothing; a new one re-arms.
	b_check -- sim fault clear
	b_target $((B_LOAD_KIB + B_STEP))
	b_expect hw.balloon.state \
	    "cancelled: retries exhausted (segment could not be plugged)"
	b_target "$B_LOAD_KIB"
	b_target $((B_LOAD_KIB + B_STEP))
	b_expect hw.balloon.state idle
	b_expect hw.balloon.plugged "$B_STEP"
	b_expect hw.balloon.current $((B_LOAD_KIB + B_STEP))
}
plug_fails_cleanup()
{
	b_stop
}

atf_test_case unplug_fails cleanup
unplug_fails_head()
{
	atf_set "require.user" "root"
	atf_set descr "An unplug that fails leaves the segment plugged and" \
	    "ballooned; a knob that changes unplugs it"
}
unplug_fails_body()
{
	b_require_sim "needs the simulator's fault injection (unplug_fail)"
	b_start --pvh --kernel assisted
	b_require_room_above $B_STEP
	# Unplug is off by default; this case is about shrinking by it.
	b_set hw.balloon.unplug 1

	b_target $((B_LOAD_KIB + B_STEP))
	b_check -- sim fault unplug_fail on
	b_target "$B_LOAD_KIB"
	b_expect hw.balloon.current "$B_LOAD_KIB"
	b_expect hw.balloon.plugged "$B_STEP"
	b_expect hw.balloon.ballooned "$B_STEP"
	b_expect hw.balloon.stats.segments_unplugged 0
	b_expect hw.balloon.stats.last_error "EBUSY (16) in unplug"
	b_get v hw.balloon.stats.short_results
	b_assert "stats.short_results" "$v" -ge 1

	# Writing what hw.balloon.unplug already is changes nothing; a
	# change re-arms and the unplug is tried again.
	b_check -- sim fault clear
	b_set hw.balloon.unplug 1
	b_expect hw.balloon.plugged "$B_STEP"
	b_set hw.balloon.unplug 0
	b_set hw.balloon.unplug 1
	b_wait_sysctl hw.balloon.plugged -eq 0
	b_expect hw.balloon.ballooned 0
	b_expect hw.balloon.stats.segments_unplugged 1
	b_check -s exit:0 -o inline:"consistent\n" -e empty -- sim check
}
unplug_fails_cleanup()
{
	b_stop
}

atf_init_test_cases()
{
	atf_add_test_case hotplug_on
	atf_add_test_case deflate_before_plug
	atf_add_test_case hotplug_off
	atf_add_test_case no_uvm_hotplug
	atf_add_test_case unplug_on_shrink
	atf_add_test_case unplug_newest_first
	atf_add_test_case unplug_off
	atf_add_test_case plug_fails
	atf_add_test_case unplug_fails
}
