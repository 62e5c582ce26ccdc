//! The panic handler: a Rust panic in the kernel becomes `panic(9)` with
//! the message, never an unwind. The core is written not to panic on any
//! input; this is for the bug we did not foresee.

use balloon_sys::balloon_shim_panic;
use core::fmt::{self, Write};
use core::panic::PanicInfo;

/// A fixed buffer the message is formatted into: a panic must not allocate.
struct MessageBuf {
    bytes: [u8; 256],
    len: usize,
}

impl Write for MessageBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.bytes.len() - self.len;
        let n = s.len().min(room);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let mut buf = MessageBuf {
        bytes: [0; 256],
        len: 0,
    };
    // A truncated message is still worth printing; ignore the error.
    let _ = write!(buf, "{}", info);
    // SAFETY: buf.bytes[..buf.len] is initialised and outlives the call,
    // which does not return.
    unsafe { balloon_shim_panic(buf.bytes.as_ptr().cast(), buf.len) }
}
