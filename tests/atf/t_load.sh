# SPDX-License-Identifier: BSD-2-Clause
#
# Loading and unloading balloon.kmod: modload, modstat, a refused second
# load, and an unload that gives every ballooned page back and leaves
# nothing behind.

. "$(atf_get_srcdir)/h_balloon.subr"

# The sysctl variable a loaded module always has.
probe=hw.balloon.current

# In the simulator: the module left no kernel memory, thread, sysctl node
# or page behind, the reservation is back at $1 KiB, and the simulated
# kernel and Xen agree frame by frame.
sim_clean_after_unload()
{
	b_stat v kmem_bytes;		b_assert "kmem_bytes" "$v" -eq 0
	b_stat v kmem_allocations;	b_assert "kmem_allocations" "$v" -eq 0
	b_stat v kthreads;		b_assert "kthreads" "$v" -eq 0
	b_stat v leaked_sysctl_nodes;	b_assert "leaked_sysctl_nodes" "$v" -eq 0
	b_stat v module_pages;		b_assert "module_pages" "$v" -eq 0
	b_stat v memory_kib;	b_assert "memory_kib" "$v" -eq "$1"
	b_check -s exit:0 -o inline:"consistent\n" -e empty -- sim check
}

atf_test_case load_unload cleanup
load_unload_head()
{
	atf_set "require.user" "root"
	atf_set descr "modload makes hw.balloon and a modstat entry appear," \
	    "modunload takes them away"
}
load_unload_body()
{
	b_start --no-modload

	b_check -s exit:0 -o not-match:'^balloon[[:space:]]' -e empty -- modstat
	b_check -s not-exit:0 -o empty -e not-empty -- sysctl -n $probe

	b_check -s exit:0 -o empty -e empty -- modload balloon
	b_check -s exit:0 -o match:'^balloon[[:space:]]' -e empty -- modstat
	b_check -s exit:0 -o match:'^balloon[[:space:]]' -e empty -- \
	    modstat balloon
	b_check -s exit:0 -o match:'^[0-9]+$' -e empty -- sysctl -n $probe
	b_check -s exit:0 -o match:'^balloon0: PVH? guest, [0-9]+ KiB of [0-9]+ KiB maximum \(memory/static-max [^)]+\), hotplug (available|unavailable \(.+\))$' \
	    -e empty -- dmesg -t
	b_wait_state_settled

	b_check -s exit:0 -o empty -e empty -- modunload balloon
	b_check -s exit:0 -o not-match:'^balloon[[:space:]]' -e empty -- modstat
	b_check -s not-exit:0 -o empty -e not-empty -- sysctl -n $probe
	b_check -s not-exit:0 -o empty -e not-empty -- sysctl hw.balloon
	b_check -s exit:0 -o match:'^balloon0: unloaded$' -e empty -- dmesg -t
}
load_unload_cleanup()
{
	b_stop
}

atf_test_case load_twice cleanup
load_twice_head()
{
	atf_set "require.user" "root"
	atf_set descr "A second modload fails with EEXIST and leaves the" \
	    "loaded module working"
}
load_twice_body()
{
	b_start

	b_get before hw.balloon.stats.targets_accepted
	b_dmesg_count loads0 '^balloon0: '
	b_check -s exit:1 -o empty -e match:'^modload: (.*: )?File exists$' -- \
	    modload balloon
	b_check -s exit:0 -o match:'^balloon[[:space:]]' -e empty -- modstat
	n=$(b_run modstat | grep -c '^balloon[[:space:]]')
	b_assert "modstat lines for balloon" "$n" -eq 1
	# The refused load got no further than the module framework: the
	# driver said nothing.
	b_dmesg_count loads1 '^balloon0: '
	b_assert "balloon0 messages" "$loads1" -eq "$loads0"

	# The first instance still works: it takes and reaches a target.
	b_require_room_below $B_STEP
	b_target $((B_BOOT - B_STEP))
	b_expect hw.balloon.state idle
	b_expect hw.balloon.current $((B_BOOT - B_STEP))
	b_expect hw.balloon.stats.targets_accepted $((before + 1))
}
load_twice_cleanup()
{
	b_stop
}

atf_test_case unload_not_loaded cleanup
unload_not_loaded_head()
{
	atf_set "require.user" "root"
	atf_set descr "modunload of a module that is not loaded fails with" \
	    "ENOENT"
}
unload_not_loaded_body()
{
	b_start --no-modload

	b_check -s exit:1 -o empty \
	    -e match:'^modunload: (balloon: )?No such file or directory$' -- \
	    modunload balloon
}
unload_not_loaded_cleanup()
{
	b_stop
}

atf_test_case unload_gives_back cleanup
unload_gives_back_head()
{
	atf_set "require.user" "root"
	atf_set descr "After ballooning down, modunload succeeds, gives every" \
	    "page back and leaves nothing behind"
}
unload_gives_back_body()
{
	b_start
	b_require_room_below $B_STEP

	b_target $((B_BOOT - B_STEP))
	b_expect hw.balloon.state idle
	b_expect hw.balloon.current $((B_BOOT - B_STEP))
	b_expect hw.balloon.ballooned $((B_LOAD_KIB - B_BOOT + B_STEP))
	if b_have_sim; then
		b_stat v memory_kib
		b_assert "reservation while ballooned" "$v" -eq \
		    $((B_BOOT - B_STEP))
		b_stat v module_pages
		b_assert "module_pages while ballooned" "$v" -eq \
		    $((B_STEP / 4))
		b_stat v kthreads
		b_assert "kthreads while loaded" "$v" -eq 1
	fi

	b_check -s exit:0 -o empty -e empty -- modunload balloon
	b_check -s not-exit:0 -o empty -e not-empty -- sysctl -n $probe
	b_check -s exit:0 -o not-match:'^balloon[[:space:]]' -e empty -- modstat
	b_check -s exit:0 -o match:'^balloon0: unloaded$' -e empty -- dmesg -t
	if b_have_sim; then
		sim_clean_after_unload $B_LOAD_KIB
	fi
}
unload_gives_back_cleanup()
{
	b_stop
}

atf_test_case unload_busy cleanup
unload_busy_head()
{
	atf_set "require.user" "root"
	atf_set descr "modunload fails with EBUSY while Xen cannot give the" \
	    "ballooned memory back; the module keeps working and unloads" \
	    "cleanly once Xen can"
}
unload_busy_body()
{
	b_require_sim "needs the simulator's host memory control (sim" \
	    "host-free)"
	b_start

	b_target $((B_BOOT - B_STEP))
	b_expect hw.balloon.ballooned $B_STEP
	b_check -- sim host-free 0

	b_check -s exit:1 -o empty -e match:'^modunload: (balloon: )?Device busy$' \
	    -- modunload balloon
	b_check -s exit:0 -o match:"^balloon0: $B_STEP KiB still ballooned: Xen gave no more back\$" \
	    -e empty -- dmesg -t
	b_check -s exit:0 -o match:'^balloon[[:space:]]' -e empty -- modstat
	# Still at work: it follows a new target (down needs no host memory).
	b_target $((B_BOOT - 2 * B_STEP))
	b_expect hw.balloon.state idle
	b_expect hw.balloon.current $((B_BOOT - 2 * B_STEP))
	b_stat v kthreads
	b_assert "kthreads after the refused unload" "$v" -eq 1

	b_check -- sim host-free 1g
	b_check -s exit:0 -o empty -e empty -- modunload balloon
	b_check -s not-exit:0 -o empty -e not-empty -- sysctl -n $probe
	sim_clean_after_unload $B_BOOT
}
unload_busy_cleanup()
{
	b_stop
}

atf_test_case unload_after_hotplug cleanup
unload_after_hotplug_head()
{
	atf_set "require.user" "root"
	atf_set descr "modunload after growing past boot memory: plugged" \
	    "segments in use stay, the reservation stays, nothing leaks"
}
unload_after_hotplug_body()
{
	b_start --pvh --kernel assisted
	b_require_hotplug
	b_require_room_above $B_STEP

	b_target $((B_LOAD_KIB + B_STEP))
	b_expect hw.balloon.state idle
	b_expect hw.balloon.plugged $B_STEP

	b_check -s exit:0 -o empty -e empty -- modunload balloon
	b_check -s not-exit:0 -o empty -e not-empty -- sysctl -n $probe
	if b_have_sim; then
		# The plugged segment is in use by the kernel: it stays.
		sim_clean_after_unload $((B_LOAD_KIB + B_STEP))
		b_stat v segments
		b_assert "segments after unload" "$v" -eq 2
	fi
}
unload_after_hotplug_cleanup()
{
	b_stop
}

atf_test_case reload_cycles cleanup
reload_cycles_head()
{
	atf_set "require.user" "root"
	atf_set descr "Five load, balloon, unload cycles in a row, each clean"
}
reload_cycles_body()
{
	b_start
	b_require_room_below $B_STEP

	b_check -s exit:0 -o empty -e empty -- modunload balloon
	i=1
	while [ $i -le 5 ]; do
		b_check -s exit:0 -o empty -e empty -- modload balloon
		b_wait_state_settled
		b_expect hw.balloon.current $B_BOOT
		# (Zero unless the toolstack's target is below boot memory.)
		b_expect hw.balloon.stats.pages_inflated \
		    $(((B_LOAD_KIB - B_BOOT) / 4))
		b_target $((B_BOOT - B_STEP / 4 * i))
		b_expect hw.balloon.ballooned \
		    $((B_LOAD_KIB - B_BOOT + B_STEP / 4 * i))
		b_check -s exit:0 -o empty -e empty -- modunload balloon
		if b_have_sim; then
			sim_clean_after_unload $B_LOAD_KIB
		fi
		i=$((i + 1))
	done
	b_dmesg_count n '^balloon0: unloaded$'
	b_assert "unload messages" "$n" -ge 6
}
reload_cycles_cleanup()
{
	b_stop
}

atf_test_case refused_beside_builtin cleanup
refused_beside_builtin_head()
{
	atf_set "require.user" "root"
	atf_set descr "modload fails with EEXIST, says why and leaves" \
	    "nothing behind when the kernel's own balloon0 is attached"
}
refused_beside_builtin_body()
{
	b_require_sim "needs a kernel whose own balloon driver is attached;" \
	    "tests/anita disables it at the userconf prompt"
	b_start --no-modload --builtin-balloon

	b_check -s exit:1 -o empty -e match:'^modload: (.*: )?File exists$' -- \
	    modload balloon
	b_check -s exit:0 -o match:"own balloon driver is attached" \
	    -e empty -- dmesg -t
	b_check -s exit:1 -o empty -e not-empty -- sysctl hw.balloon
	b_check -s exit:0 -o save:stat -e empty -- sim stat
	for line in "kmem_bytes 0" "kthreads 0" "leaked_sysctl_nodes 0"; do
		atf_check -s exit:0 -o ignore -e empty grep -qx "$line" stat
	done
}
refused_beside_builtin_cleanup()
{
	b_stop
}

atf_test_case xen_guest_pvh cleanup
xen_guest_pvh_head()
{
	atf_set descr "A PVH domU is recognised as Xen though only XENPV" \
	    "kernels have machdep.xen.suspend"
}
xen_guest_pvh_body()
{
	b_require_sim "this case needs a PVH domU; the simulator boots one"
	b_start --pvh --no-modload

	b_check -s not-exit:0 -o empty -e not-empty -- \
	    sysctl -n machdep.xen.suspend
	b_check -s exit:0 -o not-empty -e empty -- sysctl -n machdep.xen.version
	b_is_xen_guest "$B_RUN" || atf_fail "a PVH domU was not recognised"
}
xen_guest_pvh_cleanup()
{
	b_stop
}

atf_test_case dmesg_stamps cleanup
dmesg_stamps_head()
{
	atf_set descr "dmesg prints the kernel's time stamp before each" \
	    "balloon0 line; dmesg -t leaves it out"
}
dmesg_stamps_body()
{
	b_start

	b_check -s exit:0 \
	    -o match:'^\[ *[0-9]+\.[0-9]{6}\] balloon0: PVH? guest, ' \
	    -o not-match:'^balloon0: ' -e empty -- dmesg
	b_check -s exit:0 -o match:'^balloon0: PVH? guest, ' \
	    -o not-match:'^\[' -e empty -- dmesg -t
}
dmesg_stamps_cleanup()
{
	b_stop
}

atf_init_test_cases()
{
	atf_add_test_case load_unload
	atf_add_test_case load_twice
	atf_add_test_case unload_not_loaded
	atf_add_test_case unload_gives_back
	atf_add_test_case unload_busy
	atf_add_test_case unload_after_hotplug
	atf_add_test_case reload_cycles
	atf_add_test_case refused_beside_builtin
	atf_add_test_case xen_guest_pvh
	atf_add_test_case dmesg_stamps
}
