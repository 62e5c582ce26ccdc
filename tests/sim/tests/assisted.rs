// SPDX-License-Identifier: BSD-2-Clause
//! Issue 14 items 3 and 4 in the simulated domU: balloon.kmod grows and
//! shrinks through the kernel-assisted growth interfaces of
//! docs/kernel-growth.md, and never leaves a domain that a save and
//! restore would corrupt, on any kernel flavour.

use std::time::Duration;

use balloon_sim::{balloon_module, stall, Domain, DomainConfig, Faults, SysctlValue};

mod common;
use common::{state, KIB_PER_MIB, MIB};

const WAIT: Duration = Duration::from_secs(60);

/// Waits until the watch events were delivered and the worker is at rest.
fn settle(d: &Domain) {
    common::settle(d, WAIT);
}

fn mem_set(d: &Domain, mib: u64) {
    common::mem_set(d, mib, WAIT);
}

/// Waits until dmesg gives `why` and the worker settles, clipped for it.
fn clipped(d: &Domain, why: &str) {
    assert!(
        d.wait_until(|v| v.dmesg_contains(why), WAIT),
        "{:?}",
        d.dmesg()
    );
    settle(d);
    assert_eq!(state(d), format!("clipped: {why}"));
}

fn load(d: &Domain) {
    d.modload(balloon_module()).expect("modload");
    assert!(d.wait_until(|v| v.watch_events_delivered() >= 1, WAIT));
}

/// A save and restore that must keep every frame and not crash.
fn save_restore_clean(d: &Domain, what: &str) {
    let r = d
        .save_restore()
        .unwrap_or_else(|e| panic!("{what}: the domain crashed: {e}"));
    assert!(
        r.lost.is_empty(),
        "{what}: frames left out of the save: {r:?}"
    );
    assert_eq!(r.unmapped, 0, "{what}: {r:?}");
    d.check()
        .unwrap_or_else(|e| panic!("{what}: after restore: {e}"));
}

/// Issue 14 item 3: PV 512 MiB -> 2 GiB and back on the kernel-assisted
/// XEN3_DOMU. The p2m is grown before any frame of a segment is backed
/// (kernel-growth.md 4.3), segments are added with
/// uvm_physseg_hotplug_add and removed with uvm_physseg_hotplug_remove
/// (3.1, 3.2), which lowers physmem and frees the vm_page array; stock
/// uvm_physseg_plug is never called (the simulator panics if it is). A
/// save and restore while grown loses nothing and the domain shrinks
/// afterwards. Fails before the fix: the driver called stock
/// uvm_physseg_plug, a simulated panic on this flavour.
#[test]
fn pv_grows_512m_to_2g_and_back_across_a_save_and_restore() {
    let d = Domain::boot(
        DomainConfig::pv()
            .assisted()
            .boot_mib(512)
            .max_mib(2048)
            .host_free_mib(4096),
    );
    load(&d);
    let physmem0 = d.physmem();
    mem_set(&d, 2048);
    assert_eq!(state(&d), "idle");
    let g = d.growth_stats();
    assert!(g.calls.p2m_grow >= 1 && g.calls.hotplug_add >= 1, "{g:?}");
    assert_eq!(d.plug_calls(), 0, "stock uvm_physseg_plug was called");
    let top = d.segments().iter().map(|s| s.1).max().unwrap();
    assert!(
        g.p2m_end >= top,
        "a frame above arch.max_pfn: {g:?}, top {top:#x}"
    );
    assert_eq!(d.physmem(), physmem0 + 1536 * MIB);
    assert_eq!(d.slab_stats().slabs, 0, "no stock plug slab");
    save_restore_clean(&d, "PV grown to 2 GiB");
    // Shrink after the restore: the driver finds its frames under new MFNs.
    mem_set(&d, 1024);
    save_restore_clean(&d, "PV at 1 GiB");
    // Back to boot memory, unplugging as it goes.
    d.sysctl_write("hw.balloon.unplug", SysctlValue::Bool(true))
        .unwrap();
    mem_set(&d, 512);
    let g = d.growth_stats();
    assert_eq!(g.hot_segments, 0, "{g:?}");
    assert_eq!(g.array_bytes, 0, "remove frees the vm_page arrays");
    assert!(g.calls.hotplug_remove >= 1);
    assert_eq!(d.physmem(), physmem0, "remove lowers physmem");
    assert_eq!(d.segments().len(), 1);
    save_restore_clean(&d, "PV shrunk back");
    d.modunload().expect("modunload");
    d.check().unwrap();
}

/// Issue 14 item 3: PVH past its boot map on the kernel-assisted GENERIC.
/// Ranges come from xenmem_alloc_pa (above 4 GiB, clear of the
/// grant-mapping range a backend took), the direct map is grown before
/// the frames are populated and scrubbed (kernel-growth.md 5.1, 5.2), and
/// an unplugged range goes back with xenmem_free_pa. Fails before the
/// fix: the driver plugged right above RAM with stock uvm_physseg_plug.
#[test]
fn pvh_grows_past_its_boot_map_through_xenmem_and_unplugs() {
    let d = Domain::boot(
        DomainConfig::pvh()
            .assisted()
            .boot_mib(512)
            .max_mib(2048)
            .host_free_mib(4096),
    );
    load(&d);
    let boot_top = d.segments().iter().map(|s| s.1).max().unwrap();
    mem_set(&d, 1536);
    let g = d.growth_stats();
    let grant = g.grant.expect("the assisted PVH kernel has a grant range");
    assert!(
        g.calls.xenmem_alloc >= 1 && g.calls.growdirectmap >= 1,
        "{g:?}"
    );
    assert_eq!(d.plug_calls(), 0);
    for &(s, e) in &d.segments() {
        if e <= boot_top {
            continue;
        }
        assert!(s >= 0x10_0000, "a plugged range below 4 GiB: {s:#x}");
        assert!(s.is_multiple_of(512), "2 MiB aligned");
        assert!(e <= grant.0 || grant.1 <= s, "over the grant range");
        assert!(e <= g.direct_end, "past pmap_direct_end");
    }
    save_restore_clean(&d, "PVH grown");
    d.sysctl_write("hw.balloon.unplug", SysctlValue::Bool(true))
        .unwrap();
    mem_set(&d, 512);
    let g = d.growth_stats();
    assert_eq!(g.hot_segments, 0, "{g:?}");
    assert_eq!(
        g.calls.xenmem_free, g.calls.xenmem_alloc,
        "every range back"
    );
    save_restore_clean(&d, "PVH shrunk");
    d.modunload().expect("modunload");
    d.check().unwrap();
}

/// Issue 14 item 4: a stock kernel never plugs, so a save and restore at
/// any target, below, at and (clipped) above boot memory, keeps every
/// frame and resumes: nr_pages still equals physmem.
#[test]
fn stock_kernels_survive_save_and_restore_at_any_target() {
    for cfg in [
        DomainConfig::pv().hotplug(true),
        DomainConfig::pv().hotplug(false),
        DomainConfig::pvh().hotplug(false),
        DomainConfig::pvh().hotplug(true),
    ] {
        let d = Domain::boot(cfg.boot_mib(256).max_mib(1024).host_free_mib(2048));
        load(&d);
        for mib in [128, 256, 512, 64, 256] {
            d.xl_mem_set(mib * KIB_PER_MIB);
            assert!(d.wait_until(|v| v.watches_quiet(), WAIT));
            settle(&d);
            save_restore_clean(&d, &format!("stock at {mib} MiB"));
        }
        assert_eq!(d.plug_calls(), 0);
        d.modunload().expect("modunload");
    }
}

/// docs/kernel-growth.md section 8: when the kernel has no room left the
/// target is clipped with the real reason. Fails before the fix: the
/// state read "cancelled: no frame space left to plug into".
#[test]
fn a_full_kernel_reservation_is_named() {
    // PV: a p2m reserved for only 64 MiB past boot memory.
    let d = Domain::boot(
        DomainConfig::pv()
            .assisted()
            .boot_mib(256)
            .max_mib(1024)
            .p2m_capacity(256 + 320 * MIB)
            .host_free_mib(2048),
    );
    load(&d);
    d.xl_mem_set(1024 * KIB_PER_MIB);
    clipped(&d, "PV: the p2m reservation is full");
    save_restore_clean(&d, "PV clipped at the p2m limit");
    drop(d);
    // PVH: xenmem_alloc_pa finds no range (fault injection).
    let d = Domain::boot(
        DomainConfig::pvh()
            .assisted()
            .boot_mib(256)
            .max_mib(1024)
            .host_free_mib(2048),
    );
    load(&d);
    d.set_faults(Faults {
        xenmem_fail: true,
        ..Faults::default()
    });
    d.xl_mem_set(512 * KIB_PER_MIB);
    clipped(&d, "PVH: no physical range left to plug");
    assert_eq!(d.growth_stats().calls.hotplug_add, 0);
    d.set_faults(Faults::default());
    save_restore_clean(&d, "PVH clipped");
}

/// A save that lands while a segment is backed but not yet added (the
/// worker between its last backing step and uvm_physseg_hotplug_add):
/// the p2m was grown first, so no backed frame is above arch.max_pfn.
#[test]
fn a_save_between_backing_and_hotplug_add_loses_nothing() {
    let d = Domain::boot(
        DomainConfig::pv()
            .assisted()
            .boot_mib(256)
            .max_mib(1024)
            .host_free_mib(2048),
    );
    load(&d);
    stall::arm("physseg_plug", 0);
    d.xl_mem_set(320 * KIB_PER_MIB);
    let held = stall::wait_stalled(WAIT);
    assert_eq!(held.first().map(|h| h.0), Some("physseg_plug"), "{held:?}");
    let r = d.save_restore().expect("no crash");
    assert!(r.lost.is_empty(), "{r:?}");
    assert_eq!(r.unmapped, 0, "{r:?}");
    stall::release();
    settle(&d);
    assert_eq!(d.memory(), 320 * MIB);
    d.check().unwrap();
}

/// A suspend veto crashes the domain (xen_machdep.c xen_suspend_domain:
/// pmf_system_suspend fails, HYPERVISOR_crash); the module registers no
/// suspend handler, so without another device's veto the save goes on.
#[test]
fn a_suspend_veto_crashes_the_domain() {
    let d = Domain::boot(DomainConfig::pv().boot_mib(256).max_mib(512));
    load(&d);
    save_restore_clean(&d, "no veto");
    d.set_faults(Faults {
        suspend_veto: true,
        ..Faults::default()
    });
    let e = d.save_restore().expect_err("a veto crashes");
    assert!(e.contains("devices suspend failed"), "{e}");
    assert!(d.crashed().is_some());
    assert!(d.check().is_err(), "a crashed domain is reported");
}
