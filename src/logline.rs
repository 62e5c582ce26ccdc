// SPDX-License-Identifier: BSD-2-Clause
//! A log line formatted into a fixed buffer, so that saying something on
//! the step path never allocates. A line longer than the buffer is cut
//! at a character boundary.

use core::fmt;

/// Bytes of a log line (the kernel's printf adds the prefix and newline).
pub const LOG_LINE_MAX: usize = 128;

/// One log line, formatted in place.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LogLine {
    buf: [u8; LOG_LINE_MAX],
    len: usize,
}

impl LogLine {
    /// The empty line.
    pub const fn new() -> LogLine {
        LogLine {
            buf: [0; LOG_LINE_MAX],
            len: 0,
        }
    }

    /// `args` formatted, cut to [`LOG_LINE_MAX`] bytes.
    pub fn format(args: fmt::Arguments<'_>) -> LogLine {
        let mut line = LogLine::new();
        // Cannot fail: write_str never reports an error.
        let _ = fmt::Write::write_fmt(&mut line, args);
        line
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        self.buf
            .get(..self.len)
            .and_then(|b| core::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

impl Default for LogLine {
    fn default() -> LogLine {
        LogLine::new()
    }
}

impl fmt::Write for LogLine {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = LOG_LINE_MAX.saturating_sub(self.len);
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        if let (Some(dst), Some(src)) = (
            self.buf.get_mut(self.len..self.len + n),
            s.as_bytes().get(..n),
        ) {
            dst.copy_from_slice(src);
            self.len += n;
        }
        Ok(())
    }
}

impl fmt::Debug for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_at_a_character_boundary() {
        let l = LogLine::format(format_args!("{} KiB", 42));
        assert_eq!(l.as_str(), "42 KiB");
        let long = "é".repeat(LOG_LINE_MAX);
        let l = LogLine::format(format_args!("x{long}"));
        assert_eq!(l.as_str().len(), LOG_LINE_MAX - 1);
        assert!(l.as_str().starts_with("xé"));
    }
}
