# SPDX-License-Identifier: BSD-2-Clause
#
# Scrubbing: with hw.balloon.scrub on (the default) every page is zeroed
# before it goes to Xen.  The scrub-on cases check both the driver's own
# count (stats.pages_scrubbed) and, in the simulator, what Xen received
# (sim stat dirty_pages_given): a build that skips zeroing fails them.

. "$(atf_get_srcdir)/h_balloon.subr"

# scrub_on_case: balloons down 64 MiB with scrub on and checks that every
# page given to Xen was zeroed.
scrub_on_case()
{
	b_require_room_below $((B_STEP / 2))
	b_expect hw.balloon.scrub 1

	b_get inf0 hw.balloon.stats.pages_inflated
	b_get scr0 hw.balloon.stats.pages_scrubbed
	if b_have_sim; then
		b_stat dirty0 dirty_pages_given
		b_stat clean0 clean_pages_given
	fi
	b_target $((B_BOOT - B_STEP / 2))
	b_expect hw.balloon.state idle
	b_expect hw.balloon.current $((B_BOOT - B_STEP / 2))

	pages=$((B_STEP / 2 / 4))
	b_get inf1 hw.balloon.stats.pages_inflated
	b_get scr1 hw.balloon.stats.pages_scrubbed
	b_assert "pages inflated" $((inf1 - inf0)) -eq $pages
	b_assert "pages scrubbed (= pages inflated)" $((scr1 - scr0)) -eq \
	    $((inf1 - inf0))
	if b_have_sim; then
		# What Xen got: every page zero, none with content.
		b_stat dirty1 dirty_pages_given
		b_stat clean1 clean_pages_given
		b_assert "pages given to Xen unzeroed" $((dirty1 - dirty0)) \
		    -eq 0
		b_assert "zeroed pages given to Xen" $((clean1 - clean0)) \
		    -eq $pages
	fi
}

atf_test_case scrub_on cleanup
scrub_on_head()
{
	atf_set "require.user" "root"
	atf_set descr "With scrub on (the default) every page given to Xen" \
	    "is zeroed first and counted in pages_scrubbed"
}
scrub_on_body()
{
	b_start
	scrub_on_case
}
scrub_on_cleanup()
{
	b_stop
}

atf_test_case scrub_on_pvh cleanup
scrub_on_pvh_head()
{
	atf_set "require.user" "root"
	atf_set descr "Scrubbing in a PVH guest (frames given by guest frame" \
	    "number, no p2m): every page zeroed"
}
scrub_on_pvh_body()
{
	b_start --pvh
	scrub_on_case
}
scrub_on_pvh_cleanup()
{
	b_stop
}

atf_test_case scrub_on_plugged cleanup
scrub_on_plugged_head()
{
	atf_set "require.user" "root"
	atf_set descr "Pages of a plugged segment are zeroed too before they" \
	    "go back to Xen"
}
scrub_on_plugged_body()
{
	b_start --pvh --kernel assisted
	b_require_hotplug
	b_require_room_above $B_STEP
	# Unplug is off by default; this case is about shrinking by it.
	b_set hw.balloon.unplug 1

	b_target $((B_LOAD_KIB + B_STEP))
	b_expect hw.balloon.plugged "$B_STEP"
	if b_have_sim; then
		# Give the new memory content, as a kernel would.
		b_check -s exit:0 -o ignore -e empty -- sim kernel-alloc 64m
		b_check -s exit:0 -o ignore -e empty -- sim kernel-free 64m
		b_stat dirty0 dirty_pages_given
	fi
	b_get inf0 hw.balloon.stats.pages_inflated
	b_get scr0 hw.balloon.stats.pages_scrubbed
	b_target "$B_LOAD_KIB"
	b_wait_sysctl hw.balloon.plugged -eq 0
	b_get inf1 hw.balloon.stats.pages_inflated
	b_get scr1 hw.balloon.stats.pages_scrubbed
	b_assert "pages inflated" $((inf1 - inf0)) -eq $((B_STEP / 4))
	b_assert "pages scrubbed" $((scr1 - scr0)) -eq $((B_STEP / 4))
	if b_have_sim; then
		b_stat dirty1 dirty_pages_given
		b_assert "pages given to Xen unzeroed" $((dirty1 - dirty0)) \
		    -eq 0
	fi
}
scrub_on_plugged_cleanup()
{
	b_stop
}

atf_test_case scrub_off cleanup
scrub_off_head()
{
	atf_set "require.user" "root"
	atf_set descr "With scrub off pages go to Xen as they are and none" \
	    "is counted as scrubbed"
}
scrub_off_body()
{
	b_start
	b_require_room_below $((B_STEP / 2))

	b_set hw.balloon.scrub 0
	b_get inf0 hw.balloon.stats.pages_inflated
	b_get scr0 hw.balloon.stats.pages_scrubbed
	if b_have_sim; then
		b_stat dirty0 dirty_pages_given
		b_stat clean0 clean_pages_given
	fi
	b_target $((B_BOOT - B_STEP / 2))
	b_expect hw.balloon.current $((B_BOOT - B_STEP / 2))

	pages=$((B_STEP / 2 / 4))
	b_get inf1 hw.balloon.stats.pages_inflated
	b_get scr1 hw.balloon.stats.pages_scrubbed
	b_assert "pages inflated" $((inf1 - inf0)) -eq $pages
	b_assert "pages scrubbed" $((scr1 - scr0)) -eq 0
	if b_have_sim; then
		# The simulated kernel's pages all hold something, so every
		# one reaches Xen with its content: what scrubbing prevents.
		b_stat dirty1 dirty_pages_given
		b_stat clean1 clean_pages_given
		b_assert "pages given to Xen" \
		    $((dirty1 - dirty0 + clean1 - clean0)) -eq $pages
		b_assert "pages given to Xen unzeroed" $((dirty1 - dirty0)) \
		    -gt 0
	fi
}
scrub_off_cleanup()
{
	b_stop
}

atf_test_case scrub_back_on cleanup
scrub_back_on_head()
{
	atf_set "require.user" "root"
	atf_set descr "Turning scrub back on zeroes every page from then on"
}
scrub_back_on_body()
{
	b_start
	b_require_room_below $B_STEP

	b_set hw.balloon.scrub 0
	b_target $((B_BOOT - B_STEP / 2))
	b_set hw.balloon.scrub 1
	b_expect hw.balloon.scrub 1

	b_get inf0 hw.balloon.stats.pages_inflated
	b_get scr0 hw.balloon.stats.pages_scrubbed
	if b_have_sim; then
		b_stat dirty0 dirty_pages_given
	fi
	b_target $((B_BOOT - B_STEP))
	b_get inf1 hw.balloon.stats.pages_inflated
	b_get scr1 hw.balloon.stats.pages_scrubbed
	b_assert "pages inflated" $((inf1 - inf0)) -eq $((B_STEP / 2 / 4))
	b_assert "pages scrubbed" $((scr1 - scr0)) -eq $((inf1 - inf0))
	if b_have_sim; then
		b_stat dirty1 dirty_pages_given
		b_assert "pages given to Xen unzeroed" $((dirty1 - dirty0)) \
		    -eq 0
	fi
}
scrub_back_on_cleanup()
{
	b_stop
}

atf_test_case scrub_under_short_steps cleanup
scrub_under_short_steps_head()
{
	atf_set "require.user" "root"
	atf_set descr "When Xen takes only part of a batch, the pages it did" \
	    "take were zeroed all the same"
}
scrub_under_short_steps_body()
{
	b_require_sim "needs the simulator's fault injection (decrease_limit)"
	b_start

	b_check -- sim fault decrease_limit 100
	b_stat dirty0 dirty_pages_given
	b_stat clean0 clean_pages_given
	b_get inf0 hw.balloon.stats.pages_inflated
	b_get scr0 hw.balloon.stats.pages_scrubbed
	b_target $((B_BOOT - 8192))
	b_get inf1 hw.balloon.stats.pages_inflated
	b_get scr1 hw.balloon.stats.pages_scrubbed
	b_stat dirty1 dirty_pages_given
	b_stat clean1 clean_pages_given
	b_assert "pages inflated" $((inf1 - inf0)) -gt 0
	b_assert "pages given to Xen unzeroed" $((dirty1 - dirty0)) -eq 0
	b_assert "zeroed pages given to Xen" $((clean1 - clean0)) -eq \
	    $((inf1 - inf0))
	# Pages zeroed and then not taken went back to the kernel, zeroed:
	# the count may run ahead of what Xen got, never behind.
	b_assert "pages scrubbed" $((scr1 - scr0)) -ge $((inf1 - inf0))
}
scrub_under_short_steps_cleanup()
{
	b_stop
}

atf_init_test_cases()
{
	atf_add_test_case scrub_on
	atf_add_test_case scrub_on_pvh
	atf_add_test_case scrub_on_plugged
	atf_add_test_case scrub_off
	atf_add_test_case scrub_back_on
	atf_add_test_case scrub_under_short_steps
}
