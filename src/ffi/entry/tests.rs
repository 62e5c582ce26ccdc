// SPDX-License-Identifier: BSD-2-Clause
//! Host tests of the entry points that need no platform: attach, text,
//! detach.

use core::mem::MaybeUninit;
use core::ptr;

use super::*;

/// A PV domain of 1 GiB in one boot segment, hotplug off.
fn boot_info() -> sys::balloon_boot_info {
    // SAFETY: balloon_boot_info is plain integers, bools and arrays of
    // them (glue.h); all zeroes is a valid value.
    let mut bi: sys::balloon_boot_info = unsafe { core::mem::zeroed() };
    bi.mode = sys::balloon_guest_mode_BALLOON_GUEST_PV;
    bi.reservation_pages = 262_144;
    bi.max_reservation_pages = 262_144;
    bi.freemin_pages = 256;
    bi.frame_limit_pfn = 262_144;
    bi.plug_floor_pfn = 262_144;
    bi.nsegments = 1;
    bi.segments[0].start_pfn = 0;
    bi.segments[0].end_pfn = 262_143;
    bi
}

/// The core of [`boot_info`]; detached by the caller.
fn attach() -> *mut sys::balloon_rs {
    let bi = boot_info();
    let mut rs = ptr::null_mut();
    // SAFETY: both pointers are valid for the call.
    assert_eq!(unsafe { balloon_rs_attach(&bi, &mut rs) }, 0);
    assert!(!rs.is_null());
    rs
}

const POISON: u8 = 0xa5;

/// `balloon_rs_text` into a poisoned buffer of `cap` bytes of which it
/// may use `len`: (returned length, the buffer).
fn text(rs: *mut sys::balloon_rs, what: sys::balloon_text, len: usize) -> (usize, [u8; 80]) {
    let mut buf = [POISON; 80];
    assert!(len <= buf.len());
    // SAFETY: `rs` is attached; `buf` is writable for `len` bytes.
    let n = unsafe { balloon_rs_text(rs, what, buf.as_mut_ptr().cast(), len) };
    (n, buf)
}

#[test]
fn text_is_nul_terminated_and_cut_to_fit() {
    let rs = attach();
    for what in [
        sys::balloon_text_BALLOON_T_STATE,
        sys::balloon_text_BALLOON_T_LAST_ERROR,
    ] {
        let (full, buf) = text(rs, what, 80);
        let whole: std::vec::Vec<u8> = buf[..full].to_vec();
        assert!(
            full >= 4,
            "{:?}",
            std::string::String::from_utf8_lossy(&whole)
        );
        assert!(!whole.contains(&0));
        assert_eq!(buf[full], 0);
        for len in 1..=full + 2 {
            let (n, buf) = text(rs, what, len);
            // The longest prefix that leaves room for the NUL.
            assert_eq!(n, full.min(len - 1), "len {len}");
            assert_eq!(&buf[..n], &whole[..n], "len {len}");
            assert_eq!(buf[n], 0, "len {len}: no NUL after the text");
            // Nothing written past `len`, nor between the NUL and `len`.
            assert!(buf[n + 1..].iter().all(|&b| b == POISON), "len {len}");
        }
    }
    // Nothing to write into: nothing written, length 0.
    let (n, buf) = text(rs, sys::balloon_text_BALLOON_T_STATE, 0);
    assert_eq!(n, 0);
    assert!(buf.iter().all(|&b| b == POISON));
    // SAFETY: `rs` came from attach and is not used again.
    unsafe { balloon_rs_detach(rs) };
}

#[test]
fn text_into_an_uninitialised_buffer() {
    // The shim passes a stack array it never initialised. Only the bytes
    // balloon_rs_text says it wrote (and the NUL) are read back.
    let rs = attach();
    let mut buf = [MaybeUninit::<u8>::uninit(); 8];
    // SAFETY: `rs` is attached; `buf` is writable for its length.
    let n = unsafe {
        balloon_rs_text(
            rs,
            sys::balloon_text_BALLOON_T_LAST_ERROR,
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert_eq!(n, 4);
    // SAFETY: the first n + 1 bytes were written by balloon_rs_text.
    let written: std::vec::Vec<u8> = buf[..=n]
        .iter()
        .map(|b| unsafe { b.assume_init() })
        .collect();
    assert_eq!(written, b"none\0");
    // A NULL core writes the empty text.
    let mut one = [MaybeUninit::<u8>::uninit(); 1];
    // SAFETY: NULL is allowed for `rs`; `one` is writable for 1 byte.
    let n = unsafe {
        balloon_rs_text(
            ptr::null_mut(),
            sys::balloon_text_BALLOON_T_STATE,
            one.as_mut_ptr().cast(),
            1,
        )
    };
    assert_eq!(n, 0);
    // SAFETY: written by balloon_rs_text.
    assert_eq!(unsafe { one[0].assume_init() }, 0);
    // SAFETY: `rs` came from attach and is not used again.
    unsafe { balloon_rs_detach(rs) };
}
