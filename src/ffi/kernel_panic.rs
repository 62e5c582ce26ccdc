//! The panic handler: a Rust panic in the kernel becomes `panic(9)` with
//! the message and where it happened, never an unwind. The core is written
//! not to panic on any input; this is for the bug we did not foresee.
//!
//! No `core::fmt` here. Formatting calls through pointers (the writer's
//! vtable, each argument's `fmt`), which would put every formatting
//! routine, and any panic inside one, on the panic path's stack; a panic
//! from here would call this handler again. So the handler copies the
//! message when it is a plain string (every panic the compiler inserts:
//! overflow, division by zero, `unwrap` on `None`, `expect`), writes the
//! file and line itself, and says so when a message had arguments (an
//! index out of bounds, say) that it does not show. `kobjcheck stack`
//! measures this path with the rest.

use balloon_sys::balloon_shim_panic;
use core::panic::PanicInfo;

/// A fixed buffer the message is written into: a panic must not allocate.
struct MessageBuf {
    bytes: [u8; 256],
    len: usize,
}

impl MessageBuf {
    /// Appends what fits. Nothing here can panic.
    fn push(&mut self, s: &str) {
        let free = self.bytes.get_mut(self.len..).unwrap_or_default();
        let n = free.len().min(s.len());
        for (d, &b) in free.iter_mut().zip(s.as_bytes()) {
            *d = b;
        }
        self.len = self.len.saturating_add(n);
    }

    /// Appends `v` in decimal.
    fn push_decimal(&mut self, mut v: u32) {
        let mut digits = [0u8; 10];
        let mut start = digits.len();
        for d in digits.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            start = start.saturating_sub(1);
            v /= 10;
            if v == 0 {
                break;
            }
        }
        if let Some(s) = digits
            .get(start..)
            .and_then(|d| core::str::from_utf8(d).ok())
        {
            self.push(s);
        }
    }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let mut buf = MessageBuf {
        bytes: [0; 256],
        len: 0,
    };
    buf.push(
        info.message()
            .as_str()
            .unwrap_or("panic (message arguments not shown)"),
    );
    if let Some(loc) = info.location() {
        buf.push(" at ");
        buf.push(loc.file());
        buf.push(":");
        buf.push_decimal(loc.line());
    }
    // SAFETY: buf.bytes[..buf.len] is initialised and outlives the call,
    // which does not return.
    unsafe { balloon_shim_panic(buf.bytes.as_ptr().cast(), buf.len) }
}
