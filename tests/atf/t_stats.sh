# SPDX-License-Identifier: BSD-2-Clause
#
# hw.balloon.stats against what happened: pages moved, hypercalls,
# targets accepted, clamped, refused and given up, short steps, retries
# and the last error under injected faults.

. "$(atf_get_srcdir)/h_balloon.subr"

# snap prefix: saves every numeric counter as ${prefix}_<name>, from one
# "sysctl hw.balloon.stats".
snap()
{
	b_run sysctl hw.balloon.stats >"$B_DIR/stats" 2>"$B_DIR/b-err" ||
	    atf_fail "sysctl hw.balloon.stats failed: $(cat "$B_DIR/b-err")"
	sed -n "s/^hw\.balloon\.stats\.\([a-z_]*\) = \([0-9][0-9]*\)\$/${1}_\1=\2/p" \
	    "$B_DIR/stats" >"$B_DIR/stats.sh"
	[ $(($(wc -l <"$B_DIR/stats.sh"))) -eq 15 ] ||
	    atf_fail "not 15 numeric counters: $(cat "$B_DIR/stats")"
	. "$B_DIR/stats.sh"
}

# delta name: prints the change of counter name between snapshots s0, s1.
delta()
{
	eval echo \$\(\( s1_$1 - s0_$1 \)\)
}

# expect_delta name value: the counter moved by exactly value.
expect_delta()
{
	_d=$(delta "$1")
	[ "$_d" -eq "$2" ] || atf_fail "stats.$1 moved by $_d, expected $2"
}

atf_test_case down_up_counts cleanup
down_up_counts_head()
{
	atf_set "require.user" "root"
	atf_set descr "After 128 MiB down and back up the counters match:" \
	    "pages inflated and deflated, hypercalls, targets accepted"
}
down_up_counts_body()
{
	b_start
	b_require_room_below $B_STEP

	# 512 frames a step: one 2 MiB extent, or 512 single frames where
	# there is none; one hypercall either way.
	b_set hw.balloon.batch 512
	snap s0
	b_target $((B_BOOT - B_STEP))
	b_expect hw.balloon.current $((B_BOOT - B_STEP))
	b_target "$B_BOOT"
	b_expect hw.balloon.current "$B_BOOT"
	snap s1

	pages=$((B_STEP / 4))
	expect_delta pages_inflated $pages
	expect_delta pages_deflated $pages
	expect_delta pages_scrubbed $pages
	expect_delta targets_accepted 2
	for n in short_results retries targets_clamped targets_refused \
	    targets_given_up segments_plugged segments_unplugged frames_lost; do
		expect_delta $n 0
	done
	b_expect hw.balloon.stats.last_errno 0
	b_expect hw.balloon.stats.last_error none
	# One hypercall per batch of 512 frames at the least, each way.
	h=$(delta hypercalls)
	b_assert "hypercalls" "$h" -ge $((2 * pages / 512))
	if b_have_sim; then
		# Nothing falls short in the simulated domU: exactly that.
		b_assert "hypercalls" "$h" -eq $((2 * pages / 512))
	fi
}
down_up_counts_cleanup()
{
	b_stop
}

atf_test_case hypercalls_follow_batch cleanup
hypercalls_follow_batch_head()
{
	atf_set "require.user" "root"
	atf_set descr "hw.balloon.batch is the most frames per" \
	    "hypercall (a 2 MiB extent counts 512): larger batches, fewer" \
	    "hypercalls"
}
hypercalls_follow_batch_body()
{
	b_start
	b_require_room_below $B_STEP

	pages=$((B_STEP / 4))
	b_set hw.balloon.batch 8192
	snap s0
	b_target $((B_BOOT - B_STEP))
	snap s1
	expect_delta pages_inflated $pages
	h=$(delta hypercalls)
	b_assert "hypercalls in batches of 8192" "$h" -ge $((pages / 8192))
	b_assert "hypercalls in batches of 8192" "$h" -lt $((pages / 512))

	b_set hw.balloon.batch 64
	snap s0
	b_target "$B_BOOT"
	snap s1
	expect_delta pages_deflated $pages
	h=$(delta hypercalls)
	b_assert "hypercalls in batches of 64" "$h" -ge $((pages / 64))
	if b_have_sim; then
		b_assert "hypercalls in batches of 64" "$h" -eq $((pages / 64))
	fi
}
hypercalls_follow_batch_cleanup()
{
	b_stop
}

atf_test_case inflate_short_results cleanup
inflate_short_results_head()
{
	atf_set "require.user" "root"
	atf_set descr "When Xen takes fewer frames than asked, each step" \
	    "counts as short, retries follow, and after retry_max the" \
	    "target is given up"
}
inflate_short_results_body()
{
	b_require_sim "needs the simulator's fault injection (decrease_limit)"
	b_start
	b_require_room_below 12288

	b_expect hw.balloon.retry_max 4
	# decrease_limit counts extents, as Xen's nr_done does: single
	# frames (a batch under 512) make it 100 frames a step.
	b_set hw.balloon.batch 256
	b_check -- sim fault decrease_limit 100
	snap s0
	b_target $((B_BOOT - 8192))
	snap s1
	b_expect hw.balloon.state "cancelled: retries exhausted (page allocation or decrease_reservation fell short)"
	# Five steps (the first and four retries), 100 frames each.
	expect_delta short_results 5
	expect_delta retries 4
	expect_delta targets_given_up 1
	expect_delta pages_inflated 500
	b_expect hw.balloon.current $((B_BOOT - 2000))
	b_expect hw.balloon.ballooned 2000
	b_get e hw.balloon.stats.last_errno
	b_assert "stats.last_errno" "$e" -ne 0
	b_check -s exit:0 -o match:'^[A-Z]+ \([0-9]+\) in inflate$' -e empty \
	    -- sysctl -n hw.balloon.stats.last_error
	b_check -s exit:0 -o match:"^balloon0: giving up on target $((B_BOOT - 8192)) KiB at $((B_BOOT - 2000)) KiB: retries exhausted" \
	    -e empty -- dmesg -t

	# Once Xen takes everything again: the same target, written again,
	# changes nothing (it would defeat the back-off); a new one is
	# reached.
	b_check -- sim fault clear
	snap s0
	b_target $((B_BOOT - 8192))
	b_expect hw.balloon.state "cancelled: retries exhausted (page allocation or decrease_reservation fell short)"
	b_target $((B_BOOT - 12288))
	snap s1
	b_expect hw.balloon.state idle
	b_expect hw.balloon.current $((B_BOOT - 12288))
	expect_delta pages_inflated $(((12288 - 2000) / 4))
	expect_delta short_results 0
	expect_delta targets_given_up 0
}
inflate_short_results_cleanup()
{
	b_stop
}

atf_test_case deflate_host_oom cleanup
deflate_host_oom_head()
{
	atf_set "require.user" "root"
	atf_set descr "With no free memory on the host, deflating waits and" \
	    "retries (ENOMEM in deflate); with retry_max 0 it never gives" \
	    "up and finishes once memory is there"
}
deflate_host_oom_body()
{
	b_require_sim "needs the simulator's host memory control (sim" \
	    "host-free)"
	b_start

	b_target $((B_BOOT - B_STEP))
	b_check -- sim host-free 0
	b_set hw.balloon.retry_max 0
	snap s0
	b_set hw.balloon.target "$B_BOOT"
	b_wait_sysctl hw.balloon.stats.retries -ge $((s0_retries + 3))
	# Between two retries the worker says "deflating" for the length of
	# a step (with 2 MiB extents, a try at order 9 and one at order 0):
	# wait, bounded, for it to be back to waiting.
	b_wait_sysctl hw.balloon.state = "waiting: host has no free memory"
	b_expect hw.balloon.current $((B_BOOT - B_STEP))
	b_expect hw.balloon.stats.last_errno 12
	b_expect hw.balloon.stats.last_error "ENOMEM (12) in deflate"

	b_check -- sim host-free 1g
	b_wait_sysctl hw.balloon.current -eq "$B_BOOT"
	b_wait_state_settled
	snap s1
	b_expect hw.balloon.state idle
	expect_delta targets_given_up 0
	expect_delta pages_deflated $((B_STEP / 4))
	r=$(delta retries)
	s=$(delta short_results)
	b_assert "retries" "$r" -ge 3
	b_assert "short results" "$s" -eq "$r"
	# The last error stays until another step fails.
	b_expect hw.balloon.stats.last_error "ENOMEM (12) in deflate"
}
deflate_host_oom_cleanup()
{
	b_stop
}

atf_test_case given_up_after_retries cleanup
given_up_after_retries_head()
{
	atf_set "require.user" "root"
	atf_set descr "With retry_max 2 a deflate that keeps falling short is" \
	    "given up after two retries; writing a knob re-arms it"
}
given_up_after_retries_body()
{
	b_require_sim "needs the simulator's host memory control (sim" \
	    "host-free)"
	b_start

	b_target $((B_BOOT - B_STEP))
	b_check -- sim host-free 0
	b_set hw.balloon.retry_max 2
	snap s0
	b_target "$B_BOOT"
	snap s1
	b_expect hw.balloon.state \
	    "cancelled: retries exhausted (host has no free memory)"
	b_expect hw.balloon.current $((B_BOOT - B_STEP))
	expect_delta retries 2
	expect_delta short_results 3
	expect_delta targets_given_up 1
	expect_delta pages_deflated 0
	b_expect hw.balloon.stats.last_error "ENOMEM (12) in deflate"
	b_check -s exit:0 -o match:"^balloon0: giving up on target $B_BOOT KiB at $((B_BOOT - B_STEP)) KiB: retries exhausted" \
	    -e empty -- dmesg -t

	# Host memory back and a knob written: the driver tries again.
	b_check -- sim host-free 1g
	b_set hw.balloon.retry_max 4
	b_wait_state_settled
	b_expect hw.balloon.state idle
	b_expect hw.balloon.current "$B_BOOT"
	b_expect hw.balloon.stats.targets_given_up $((s0_targets_given_up + 1))
}
given_up_after_retries_cleanup()
{
	b_stop
}

atf_test_case low_memory_guard cleanup
low_memory_guard_head()
{
	atf_set "require.user" "root"
	atf_set descr "Inflation takes no pages while the kernel's free" \
	    "memory is low: it waits ('waiting: low memory') and goes on" \
	    "once memory is freed"
}
low_memory_guard_body()
{
	b_require_sim "needs the simulator's memory pressure control (sim" \
	    "kernel-alloc)"
	b_start

	b_check -s exit:0 -o ignore -e empty -- sim kernel-alloc 4g
	b_set hw.balloon.retry_max 0
	snap s0
	b_set hw.balloon.target $((B_BOOT - B_STEP))
	b_wait_sysctl hw.balloon.stats.retries -ge $((s0_retries + 2))
	snap s1
	b_expect hw.balloon.state "waiting: low memory"
	b_expect hw.balloon.current "$B_BOOT"
	expect_delta pages_inflated 0
	# Not an error of a step: last_error does not change.
	b_expect hw.balloon.stats.last_error none

	b_check -s exit:0 -o ignore -e empty -- sim kernel-free 4g
	b_wait_sysctl hw.balloon.current -eq $((B_BOOT - B_STEP))
	b_wait_state_settled
	b_expect hw.balloon.state idle
}
low_memory_guard_cleanup()
{
	b_stop
}

atf_test_case xenstore_counts cleanup
xenstore_counts_head()
{
	atf_set "require.user" "root"
	atf_set descr "xenstore targets: a malformed one counts in" \
	    "targets_refused and changes nothing, an out-of-range one counts" \
	    "in targets_clamped and targets_accepted"
}
xenstore_counts_body()
{
	b_require_sim "a domU cannot write its own memory/target; dom0 does"
	b_start

	snap s0
	b_check -- xenstore-write memory/target 512M
	b_wait_sysctl hw.balloon.stats.targets_refused -eq \
	    $((s0_targets_refused + 1))
	snap s1
	expect_delta targets_accepted 0
	expect_delta targets_clamped 0
	expect_delta pages_inflated 0
	b_expect hw.balloon.target "$B_BOOT"
	b_expect hw.balloon.current "$B_BOOT"
	b_expect hw.balloon.state idle

	snap s0
	b_check -- xenstore-write memory/target 0
	b_wait_sysctl hw.balloon.stats.targets_accepted -eq \
	    $((s0_targets_accepted + 1))
	b_wait_state_settled
	snap s1
	expect_delta targets_clamped 1
	expect_delta targets_refused 0
	b_expect hw.balloon.target "$B_MIN"
	b_expect hw.balloon.current "$B_MIN"
	expect_delta pages_inflated $(((B_BOOT - B_MIN) / 4))
}
xenstore_counts_cleanup()
{
	b_stop
}

atf_test_case sysctl_refused_counts cleanup
sysctl_refused_counts_head()
{
	atf_set "require.user" "root"
	atf_set descr "hw.balloon.target writes outside [min, max] count in" \
	    "targets_refused, not in targets_accepted"
}
sysctl_refused_counts_body()
{
	b_start

	snap s0
	b_check -s exit:1 -o empty -e not-empty -- \
	    sysctl -w hw.balloon.target=$((B_MIN - 4))
	b_check -s exit:1 -o empty -e not-empty -- \
	    sysctl -w hw.balloon.target=$((B_MAX + 4))
	snap s1
	expect_delta targets_refused 2
	expect_delta targets_accepted 0
	expect_delta targets_clamped 0
	b_expect hw.balloon.target "$B_BOOT"
}
sysctl_refused_counts_cleanup()
{
	b_stop
}

atf_init_test_cases()
{
	atf_add_test_case down_up_counts
	atf_add_test_case hypercalls_follow_batch
	atf_add_test_case inflate_short_results
	atf_add_test_case deflate_host_oom
	atf_add_test_case given_up_after_retries
	atf_add_test_case low_memory_guard
	atf_add_test_case xenstore_counts
	atf_add_test_case sysctl_refused_counts
}
