//! [`Platform`] over the C shim's kernel wrappers (glue.h).

use balloon_sys as sys;

use crate::driver::Platform;
use crate::errno::Errno;
use crate::policy::MemInfo;
use crate::units::{Mfn, Pages, Pfn, PfnRange};

/// The kernel, as the shim wraps it. Holds nothing: every call goes
/// straight to one `balloon_shim_*` function.
pub struct ShimPlatform;

/// A reservation hypercall's result: extents done, or a negative errno.
fn extents_done(r: cty::c_long) -> Result<usize, Errno> {
    if r < 0 {
        Err(Errno(i32::try_from(r.unsigned_abs()).unwrap_or(i32::MAX)))
    } else {
        Ok(usize::try_from(r).unwrap_or(usize::MAX))
    }
}

/// An errno from the shim, 0 meaning success.
fn errno_result(e: cty::c_int) -> Result<(), Errno> {
    if e == 0 {
        Ok(())
    } else {
        Err(Errno(e))
    }
}

impl Platform for ShimPlatform {
    fn alloc_pages(&mut self, out: &mut [u64], prefer: Option<PfnRange>) -> usize {
        let _shim = super::ShimCall::enter();
        let (lo, hi) = prefer.map_or((0, 0), |r| (r.start().0, r.end().0));
        // SAFETY: `out` is valid for writes of `out.len()` frames, which
        // is the count the shim is given and writes at most.
        let got = unsafe { sys::balloon_shim_pages_alloc(out.as_mut_ptr(), out.len(), lo, hi) };
        got.min(out.len())
    }

    fn free_pages(&mut self, pfns: &[u64]) {
        let _shim = super::ShimCall::enter();
        if pfns.is_empty() {
            return;
        }
        // SAFETY: `pfns` is valid for reads of `pfns.len()` frames; each
        // is a page the driver owns whose frame is backed.
        unsafe { sys::balloon_shim_pages_free(pfns.as_ptr(), pfns.len()) }
    }

    fn scrub(&mut self, pfn: Pfn) {
        self.scrub_batch(&[pfn.0]);
    }

    fn scrub_batch(&mut self, pfns: &[u64]) {
        let _shim = super::ShimCall::enter();
        // SAFETY: `pfns` is valid for reads of `pfns.len()` frames; the
        // driver owns each one's page, so zeroing them touches nothing
        // else.
        unsafe { sys::balloon_shim_pages_scrub(pfns.as_ptr(), pfns.len()) }
    }

    fn p2m_lookup(&mut self, pfn: Pfn) -> Option<Mfn> {
        let _shim = super::ShimCall::enter();
        // SAFETY: `pfn` lies in a UVM segment, all of which are below the
        // p2m capacity the shim reported at attach (frame_limit_pfn).
        let mfn = unsafe { sys::balloon_shim_p2m_lookup(pfn.0) };
        (mfn != u64::MAX).then_some(Mfn(mfn))
    }

    fn p2m_set_batch(&mut self, pfns: &[u64], mfns: &[u64]) {
        let _shim = super::ShimCall::enter();
        let n = pfns.len().min(mfns.len());
        // SAFETY: both slices hold at least `n` entries; every pfn lies in
        // a UVM segment below the p2m capacity (as for p2m_lookup), every
        // mfn was just given by Xen or read from its entry.
        unsafe { sys::balloon_shim_p2m_set_batch(pfns.as_ptr(), mfns.as_ptr(), n) }
    }

    fn p2m_clear(&mut self, pfn: Pfn) {
        let _shim = super::ShimCall::enter();
        // SAFETY: as for p2m_lookup.
        unsafe { sys::balloon_shim_p2m_clear(pfn.0) }
    }

    fn decrease_reservation(&mut self, frames: &mut [u64]) -> Result<usize, Errno> {
        let _shim = super::ShimCall::enter();
        // SAFETY: `frames` is valid for `frames.len()` entries, the
        // extent count the hypercall is given.
        extents_done(unsafe {
            sys::balloon_shim_decrease_reservation(frames.as_mut_ptr(), frames.len())
        })
    }

    fn increase_reservation(&mut self, mfns: &mut [u64]) -> Result<usize, Errno> {
        let _shim = super::ShimCall::enter();
        // SAFETY: as for decrease_reservation; Xen writes at most
        // `mfns.len()` entries.
        extents_done(unsafe {
            sys::balloon_shim_increase_reservation(mfns.as_mut_ptr(), mfns.len())
        })
    }

    fn populate_physmap(&mut self, pfns: &mut [u64]) -> Result<usize, Errno> {
        let _shim = super::ShimCall::enter();
        // SAFETY: as for increase_reservation.
        extents_done(unsafe { sys::balloon_shim_populate_physmap(pfns.as_mut_ptr(), pfns.len()) })
    }

    fn grow_reserve(&mut self, want: PfnRange) -> Result<PfnRange, Errno> {
        let _shim = super::ShimCall::enter();
        let mut start = want.start().0;
        // SAFETY: `start` is a valid, writable u64 for the call.
        errno_result(unsafe {
            sys::balloon_shim_grow_reserve(want.start().0, want.len().0, &mut start)
        })?;
        PfnRange::with_len(Pfn(start), want.len()).ok_or(Errno::ERANGE)
    }

    fn grow_unreserve(&mut self, range: PfnRange) {
        let _shim = super::ShimCall::enter();
        // SAFETY: plain values; the range is one grow_reserve returned and
        // no frame of it is backed or in a segment any more.
        unsafe { sys::balloon_shim_grow_unreserve(range.start().0, range.len().0) }
    }

    fn plug(&mut self, range: PfnRange) -> Result<(), Errno> {
        let _shim = super::ShimCall::enter();
        // SAFETY: the range is fully backed, was prepared by grow_reserve
        // and overlaps no segment (the frame space guarantees it), as
        // uvm_physseg_hotplug_add requires.
        errno_result(unsafe { sys::balloon_shim_physseg_plug(range.start().0, range.len().0) })
    }

    fn unplug(&mut self, range: PfnRange) -> Result<(), Errno> {
        let _shim = super::ShimCall::enter();
        // SAFETY: every page of the range is owned by the driver (fully
        // ballooned), as uvm_physseg_hotplug_remove requires.
        errno_result(unsafe { sys::balloon_shim_physseg_unplug(range.start().0, range.len().0) })
    }

    fn meminfo(&mut self) -> MemInfo {
        let _shim = super::ShimCall::enter();
        let mut mi = sys::balloon_meminfo::default();
        // SAFETY: `mi` is a valid, writable balloon_meminfo.
        unsafe { sys::balloon_shim_meminfo(&mut mi) };
        MemInfo {
            free: Pages(mi.free_pages),
            freetarg: Pages(mi.freetarg_pages),
            managed: Pages(mi.managed_pages),
        }
    }

    fn log(&mut self, line: &str) {
        let _shim = super::ShimCall::enter();
        // SAFETY: the shim prints `len` bytes from `msg` ("%.*s") and
        // keeps no pointer to them.
        unsafe { sys::balloon_shim_log(line.as_ptr().cast(), line.len()) }
    }
}
