// SPDX-License-Identifier: BSD-2-Clause
//! The control interface of the simulated domU: commands that read like
//! the real tools, so one script drives a NetBSD domU and this simulator.
//!
//! Each command is an argument vector and gives a [`Reply`]: an exit
//! status, standard output and standard error, as the real program would.
//! Inside the domU: `modload`, `modunload`, `modstat`, `sysctl`,
//! `xenstore-read`, `xenstore-write`, `xenstore-rm`, `dmesg`. On the dom0
//! side: `xl mem-set`, `xl list`. Simulator-only commands start with `sim`
//! (fault injection, stall points, host memory, waiting, simulated time,
//! invariants, leak accounting), and `expect` asserts a value.
//!
//! A console takes commands from several threads at once (the daemon
//! serves each client on its own thread), as a real domU takes a sysctl
//! while modunload runs.
//!
//! The output formats follow NetBSD's programs: sysctl(8) as in
//! sbin/sysctl/sysctl.c 1.157.2.1 (`name = value`, every quad printed
//! unsigned; `name: old -> new` on writes with the new value as parsed;
//! `name: description` with -d, for the nodes below a node; parse errors
//! name the value, `sysctl: 12k: not a number`; kernel errors name the
//! node, `sysctl: hw.balloon.batch: Invalid argument`; an unknown name
//! is `third level name 'x' in 'hw.balloon.x' is invalid`), other tools
//! as `program: what: strerror`. Values are parsed as those programs
//! parse them: sysctl(8) with strtouq in base 0 (leading white space and
//! a sign allowed), xl with parse_mem_size_kb (xen tools/xl: a decimal
//! with one optional suffix b, k, m, g or t; no suffix is MiB).

use std::io::Write as _;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::regex::Regex;
use crate::{balloon_module, Domain, MemOp, SysctlValue};

/// How long `sim settle` waits at most by default (real time).
const SETTLE_DEFAULT: Duration = Duration::from_secs(30);
/// Simulated time a settled state must last for `sim settle`.
const SETTLE_CONFIRM: Duration = Duration::from_secs(1);

/// What a command printed and how it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    /// Exit status: 0 success, 1 failure, 2 usage error.
    pub status: i32,
    /// Standard output.
    pub out: String,
    /// Standard error.
    pub err: String,
}

impl Reply {
    fn ok(out: String) -> Reply {
        Reply {
            status: 0,
            out,
            err: String::new(),
        }
    }
    fn fail(err: String) -> Reply {
        Reply {
            status: 1,
            out: String::new(),
            err: err + "\n",
        }
    }
    fn usage(err: &str) -> Reply {
        Reply {
            status: 2,
            out: String::new(),
            err: format!("usage: {err}\n"),
        }
    }
}

/// NetBSD's strerror(3) text for the numbers the module and the simulated
/// kernel return (lib/libc/gen/errlist.c wording).
pub fn strerror(e: i32) -> String {
    match e {
        1 => "Operation not permitted".into(),
        2 => "No such file or directory".into(),
        5 => "Input/output error".into(),
        12 => "Cannot allocate memory".into(),
        16 => "Device busy".into(),
        17 => "File exists".into(),
        19 => "Operation not supported by device".into(),
        21 => "Is a directory".into(),
        22 => "Invalid argument".into(),
        28 => "No space left on device".into(),
        34 => "Result too large".into(),
        35 => "Resource temporarily unavailable".into(),
        45 => "Operation not supported".into(),
        79 => "Inappropriate file type or format".into(),
        _ => format!("Unknown error: {e}"),
    }
}

/// NetBSD errno numbers by name, for `sim` commands and scripts.
const ENOENT: i32 = 2;
const EINVAL: i32 = 22;
const ERANGE: i32 = 34;

/// xl's memory size syntax, in KiB: a decimal with at most one suffix
/// (b, k, m, g, t, any case); none means MiB. Like xl, a value that does
/// not parse is refused; unlike xl's strtoll, overflow is refused too.
pub fn parse_xl_size_kib(s: &str) -> Option<u64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let shift = match s[digits..].to_ascii_lowercase().as_str() {
        "t" => 30,
        "g" => 20,
        "" | "m" => 10,
        "k" => 0,
        "b" => return Some(n >> 10),
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// A span of simulated time for `sim sleep`: a decimal with one unit,
/// ms, s, m or h (none: seconds).
pub fn parse_sim_duration(s: &str) -> Option<Duration> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n: u64 = s.get(..digits)?.parse().ok()?;
    let ms = match &s[digits..] {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.checked_mul(ms)?))
}

/// An errno for `sim fault`: a number or a name (EIO, ENOMEM, ...).
pub fn parse_errno(s: &str) -> Option<i32> {
    const NAMES: &[(&str, i32)] = &[
        ("EPERM", 1),
        ("ENOENT", 2),
        ("ESRCH", 3),
        ("EIO", 5),
        ("E2BIG", 7),
        ("EAGAIN", 35),
        ("ENOMEM", 12),
        ("EACCES", 13),
        ("EFAULT", 14),
        ("EBUSY", 16),
        ("EEXIST", 17),
        ("ENODEV", 19),
        ("EINVAL", 22),
        ("ENOSPC", 28),
        ("ERANGE", 34),
    ];
    if let Some(&(_, e)) = NAMES.iter().find(|(n, _)| *n == s) {
        return Some(e);
    }
    s.parse::<i32>().ok().filter(|&e| e > 0)
}

/// xenstore-write's reading of a value (tools/xenstore xs_lib.c
/// unsanitise_value): `\t`, `\n`, `\r`, `\\`, `\xHH` and up to three
/// octal digits after a backslash stand for that byte, so a value can
/// hold any byte, NUL included; other characters stand for themselves.
pub fn xenstore_unsanitise(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        i += 1;
        if c != b'\\' || i >= b.len() {
            out.push(c);
            continue;
        }
        let e = b[i];
        i += 1;
        match e {
            b't' => out.push(b'\t'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b'x' => {
                let n = b[i..]
                    .iter()
                    .take(2)
                    .take_while(|d| d.is_ascii_hexdigit())
                    .count();
                let v = std::str::from_utf8(&b[i..i + n])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .unwrap_or(0);
                i += n;
                out.push(v);
            }
            b'0'..=b'7' => {
                let n = 1 + b[i..]
                    .iter()
                    .take(2)
                    .take_while(|d| (b'0'..=b'7').contains(d))
                    .count();
                let v = b[i - 1..i - 1 + n]
                    .iter()
                    .fold(0u32, |a, d| a * 8 + u32::from(d - b'0'));
                i += n - 1;
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    out
}

/// xenstore-read's printing of a value (xs_lib.c sanitise_value):
/// printable ASCII but `\` as is, `\t \n \r \\` escaped, bytes below 010 as
/// `\ooo`, the rest as `\xHH`.
pub fn xenstore_sanitise(v: &[u8]) -> String {
    let mut out = String::new();
    for &c in v {
        match c {
            b'\t' => out += "\\t",
            b'\n' => out += "\\n",
            b'\r' => out += "\\r",
            b'\\' => out += "\\\\",
            b' '..=b'~' => out.push(c as char),
            c if c < 0o10 => out += &format!("\\{c:03o}"),
            c => out += &format!("\\x{c:02x}"),
        }
    }
    out
}

/// What sysctl(8) makes of the text of a number: strtouq in
/// base 0 (0x hex, 0 octal), leading white space and a sign allowed,
/// nothing after the digits. Err is the errno-like reason.
pub fn parse_sysctl_number(s: &str) -> Result<i128, i32> {
    let t = s.trim_start_matches([' ', '\t', '\n']);
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, digits) = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        (16, h)
    } else if t.len() > 1 && t.starts_with('0') {
        (8, &t[1..])
    } else {
        (10, t)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(EINVAL);
    }
    let v = u128::from_str_radix(digits, radix).map_err(|_| ERANGE)?;
    if v > u128::from(u64::MAX) {
        return Err(ERANGE);
    }
    let v = v as i128;
    Ok(if neg { -v } else { v })
}

/// A value as sysctl(8) prints it.
pub fn show(v: &SysctlValue) -> String {
    match v {
        SysctlValue::Int(x) => x.to_string(),
        // sysctl(8) prints every quad with PRIu64.
        SysctlValue::Quad(x) => (*x as u64).to_string(),
        SysctlValue::Bool(x) => u8::from(*x).to_string(),
        SysctlValue::String(s) => s.clone(),
    }
}

/// Splits a line into words: white space separates, single and double
/// quotes group, `#` at the start of a word begins a comment.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                cur.get_or_insert_with(String::new);
            }
            (None, '#') if cur.is_none() => break,
            (None, c) if c.is_whitespace() => {
                if let Some(w) = cur.take() {
                    words.push(w);
                }
            }
            (None, c) => cur.get_or_insert_with(String::new).push(c),
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    words.extend(cur);
    Ok(words)
}

/// A console on one simulated domU.
pub struct Console {
    domain: Domain,
    /// Show progress on a terminal while waiting.
    progress: bool,
    /// What `sim invariants` remembers between two calls.
    inv: Mutex<InvariantState>,
}

/// The state `sim invariants` compares against: the counters and figures
/// of its previous call.
#[derive(Default)]
struct InvariantState {
    /// `module_loads` of the load the counters below belong to.
    load: u64,
    counters: Vec<(String, u64)>,
    dirty_given: u64,
    /// hw.balloon.scrub was 1 at the last check.
    scrub_on: bool,
    /// hw.balloon.scrub was written (or the module loaded) since then.
    scrub_touched: bool,
}

/// Simulated time `sim invariants` waits to see that an idle driver makes
/// no hypercall: longer than the longest back-off the soak sets.
const IDLE_WATCH: Duration = Duration::from_secs(40);

impl Console {
    /// A console on `domain`. With `progress`, waits draw a status line
    /// on standard error (for a terminal); otherwise they print one line.
    pub fn new(domain: Domain, progress: bool) -> Console {
        Console {
            domain,
            progress,
            inv: Mutex::new(InvariantState {
                scrub_touched: true,
                ..InvariantState::default()
            }),
        }
    }

    fn inv(&self) -> MutexGuard<'_, InvariantState> {
        self.inv.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The domain.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// Runs one command line (see [`split_words`]). An empty line or a
    /// comment succeeds with no output.
    pub fn run_line(&self, line: &str) -> Reply {
        match split_words(line) {
            Ok(w) if w.is_empty() => Reply::default(),
            Ok(w) => self.run(&w),
            Err(e) => Reply::usage(&e),
        }
    }

    /// Runs one command.
    pub fn run(&self, argv: &[String]) -> Reply {
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        match args.as_slice() {
            ["modload", rest @ ..] => self.modload(rest),
            ["modunload", rest @ ..] => self.modunload(rest),
            ["modstat", rest @ ..] => self.modstat(rest),
            ["sysctl", rest @ ..] => self.sysctl(rest),
            ["xl", rest @ ..] => self.xl(rest),
            ["xenstore-read", rest @ ..] => self.xenstore_read(rest),
            ["xenstore-write", rest @ ..] => self.xenstore_write(rest),
            ["xenstore-rm", rest @ ..] => self.xenstore_rm(rest),
            ["expect", rest @ ..] => self.expect(rest),
            ["dmesg", rest @ ..] => self.dmesg(rest),
            ["sim", rest @ ..] => self.sim(rest),
            [] => Reply::default(),
            [cmd, ..] => Reply {
                status: 127,
                out: String::new(),
                err: format!("{cmd}: not found\n"),
            },
        }
    }

    /// Runs a scenario: one command per line, `#` comments, a leading `!`
    /// for a command that must fail, a leading `?` for one whose status
    /// does not matter. Each command is echoed after `$ ` with what it
    /// printed. Stops at the first command that does not end as expected
    /// (an `expect` that does not hold among them) and says which line it
    /// was and why.
    pub fn run_script(&self, text: &str, out: &mut dyn std::io::Write) -> Result<usize, String> {
        let mut ran = 0;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let (want, cmd) = match line.as_bytes().first() {
                Some(b'!') => (Some(false), line[1..].trim_start()),
                Some(b'?') => (None, line[1..].trim_start()),
                _ => (Some(true), line),
            };
            let words = split_words(cmd).map_err(|e| format!("line {}: {e}", i + 1))?;
            if words.is_empty() {
                continue;
            }
            let r = self.run(&words);
            let _ = writeln!(out, "$ {line}");
            let _ = write!(out, "{}{}", r.out, r.err);
            let _ = out.flush();
            ran += 1;
            match (want, r.status) {
                (None, _) | (Some(true), 0) => {}
                (Some(false), s) if s != 0 => {}
                (Some(true), s) => {
                    let why = r.err.lines().last().unwrap_or("").trim();
                    return Err(format!(
                        "line {}: `{cmd}` failed with status {s}{}{why}",
                        i + 1,
                        if why.is_empty() { "" } else { ": " }
                    ));
                }
                (Some(false), _) => {
                    return Err(format!("line {}: `{cmd}` succeeded but must fail", i + 1))
                }
            }
        }
        Ok(ran)
    }

    // ---- modules ----

    fn module_name(arg: &str) -> Option<&'static str> {
        let base = arg.rsplit('/').next().unwrap_or(arg);
        matches!(base, "balloon" | "balloon.kmod").then_some("balloon")
    }

    fn modload(&self, args: &[&str]) -> Reply {
        let [arg] = args else {
            return Reply::usage("modload module");
        };
        let Some(_) = Self::module_name(arg) else {
            return Reply::fail(format!("modload: {arg}: {}", strerror(ENOENT)));
        };
        match self.domain.modload(balloon_module()) {
            Ok(()) => Reply::default(),
            Err(e) => Reply::fail(format!("modload: {arg}: {}", strerror(e))),
        }
    }

    fn modunload(&self, args: &[&str]) -> Reply {
        let [arg] = args else {
            return Reply::usage("modunload module");
        };
        if Self::module_name(arg).is_none() || !self.loaded() {
            return Reply::fail(format!("modunload: {arg}: {}", strerror(ENOENT)));
        }
        match self.domain.modunload() {
            Ok(()) => Reply::default(),
            Err(e) => Reply::fail(format!("modunload: {arg}: {}", strerror(e))),
        }
    }

    fn loaded(&self) -> bool {
        self.domain.modstat().iter().any(|m| m == "balloon")
    }

    fn modstat(&self, args: &[&str]) -> Reply {
        let want = match args {
            [] => None,
            [name] | ["-n", name] => Some(*name),
            _ => return Reply::usage("modstat [-n] [name]"),
        };
        let mods: Vec<String> = self
            .domain
            .modstat()
            .into_iter()
            .filter(|m| want.is_none_or(|w| w == m))
            .collect();
        if let (Some(w), true) = (want, mods.is_empty()) {
            return Reply::fail(format!("modstat: {w}: {}", strerror(ENOENT)));
        }
        let mut out =
            String::from("NAME            CLASS      SOURCE     REFS  SIZE     REQUIRES\n");
        for m in mods {
            out += &format!("{m:<15} driver     filesys    0     -        -\n");
        }
        Reply::ok(out)
    }

    // ---- sysctl ----

    /// The leaves at or below `name`, or `name` itself when it is a leaf.
    fn leaves(&self, name: &str) -> Vec<String> {
        if self.domain.sysctl_read(name).is_ok() {
            return vec![name.to_string()];
        }
        self.domain
            .sysctl_list(&format!("{name}."))
            .into_iter()
            .filter(|n| self.domain.sysctl_read(n).is_ok())
            .collect()
    }

    /// An unknown name, in sysctlparseerror's words: which level of the
    /// name was not found.
    fn no_such(&self, name: &str) -> Reply {
        const LEVEL: [&str; 6] = ["top", "second", "third", "fourth", "fifth", "sixth"];
        let parts: Vec<&str> = name.split('.').collect();
        let exists = |prefix: &str| {
            self.domain.sysctl_describe(prefix).is_some()
                || !self.domain.sysctl_list(&format!("{prefix}.")).is_empty()
        };
        let level = (1..=parts.len())
            .find(|&k| !exists(&parts[..k].join(".")))
            .map_or(parts.len() - 1, |k| k - 1);
        Reply::fail(format!(
            "sysctl: {} level name '{}' in '{name}' is invalid",
            LEVEL.get(level).unwrap_or(&"deeper"),
            parts[level]
        ))
    }

    fn sysctl(&self, args: &[&str]) -> Reply {
        let mut values_only = false;
        let mut describe = false;
        let mut write = false;
        let mut names = Vec::new();
        for a in args {
            match *a {
                "-n" => values_only = true,
                "-d" => describe = true,
                "-w" => write = true,
                s if s.starts_with('-') && s.len() > 1 => {
                    return Reply::usage("sysctl [-dnw] name[=value] ...")
                }
                s => names.push(s),
            }
        }
        if names.is_empty() {
            return Reply::usage("sysctl [-dnw] name[=value] ...");
        }
        let mut reply = Reply::default();
        for arg in names {
            let r = match (write, arg.split_once('=')) {
                (true, Some((name, value))) => self.sysctl_write(name, value, values_only),
                (true, None) => Reply::usage("sysctl -w name=value"),
                (false, _) if describe => self.sysctl_describe(arg, values_only),
                (false, _) => self.sysctl_read(arg, values_only),
            };
            reply.out += &r.out;
            reply.err += &r.err;
            reply.status = reply.status.max(r.status);
        }
        reply
    }

    fn sysctl_read(&self, name: &str, values_only: bool) -> Reply {
        let leaves = self.leaves(name);
        if leaves.is_empty() {
            return self.no_such(name);
        }
        let mut out = String::new();
        for n in leaves {
            match self.domain.sysctl_read(&n) {
                Ok(v) if values_only => out += &format!("{}\n", show(&v)),
                Ok(v) => out += &format!("{n} = {}\n", show(&v)),
                Err(e) => return Reply::fail(format!("sysctl: {n}: {}", strerror(e))),
            }
        }
        Reply::ok(out)
    }

    fn sysctl_describe(&self, name: &str, values_only: bool) -> Reply {
        let mut names = self.domain.sysctl_list(&format!("{name}."));
        // A node's own description is not printed, only its children's.
        if names.is_empty() {
            names.push(name.to_string());
        }
        let mut out = String::new();
        for n in names {
            let Some(d) = self.domain.sysctl_describe(&n) else {
                return self.no_such(&n);
            };
            if values_only {
                out += &format!("{d}\n");
            } else {
                out += &format!("{n}: {d}\n");
            }
        }
        Reply::ok(out)
    }

    /// As sysctl(8)'s write_number (sbin/sysctl/sysctl.c 1.157.2.1):
    /// strtouq in base 0, the value named in parse errors, an int checked
    /// to fit, a bool any non-zero value, and on success `name: old ->
    /// new` with the value as parsed (`-n`: the new value alone).
    fn sysctl_write(&self, name: &str, text: &str, values_only: bool) -> Reply {
        let old = match self.domain.sysctl_read(name) {
            Ok(v) => v,
            Err(_) if self.leaves(name).len() > 1 => {
                return Reply::fail(format!("sysctl: {name}: {}", strerror(21)))
            }
            Err(_) => return self.no_such(name),
        };
        let new = if let SysctlValue::String(_) = old {
            SysctlValue::String(text.to_string())
        } else {
            // strtouq: a negative value wraps modulo 2^64.
            let q = match parse_sysctl_number(text) {
                Ok(v) if v < 0 => (v as i64) as u64,
                Ok(v) => v as u64,
                Err(ERANGE) => return Reply::fail(format!("sysctl: {text}: {}", strerror(ERANGE))),
                Err(_) => return Reply::fail(format!("sysctl: {text}: not a number")),
            };
            match old {
                SysctlValue::Int(_) => match q >> 32 {
                    0 | 0xffff_ffff => SysctlValue::Int(q as u32 as i32),
                    _ => return Reply::fail(format!("sysctl: {text}: {}", strerror(ERANGE))),
                },
                SysctlValue::Bool(_) => SysctlValue::Bool(q != 0),
                _ => SysctlValue::Quad(q as i64),
            }
        };
        if name == "hw.balloon.scrub" {
            self.inv().scrub_touched = true;
        }
        match self.domain.sysctl_write(name, new.clone()) {
            Ok(()) if values_only => Reply::ok(format!("{}\n", show(&new))),
            Ok(()) => Reply::ok(format!("{name}: {} -> {}\n", show(&old), show(&new))),
            Err(e) => Reply::fail(format!("sysctl: {name}: {}", strerror(e))),
        }
    }

    /// dmesg(8) as sbin/dmesg/dmesg.c 1.27.40.2 prints the message
    /// buffer: each line's kernel stamp re-printed as `"[% 5jd.%6.6ld] "`
    /// (six digits, the kernel's seven rounded), or with -t no stamp at
    /// all (the stamp and the blanks after it are skipped).
    fn dmesg(&self, args: &[&str]) -> Reply {
        let quiet = match args {
            [] => false,
            ["-t"] => true,
            _ => {
                return Reply {
                    status: 1,
                    out: String::new(),
                    err: "Usage: dmesg [-dTt] [-M core] [-N system]\n".into(),
                }
            }
        };
        let mut out = String::new();
        for raw in self.domain.dmesg_msgbuf() {
            let Some((stamp, text)) = split_stamp(&raw) else {
                out += &format!("{raw}\n");
                continue;
            };
            if !quiet {
                out += &stamp;
            }
            out += text;
            out.push('\n');
        }
        Reply::ok(out)
    }

    // ---- dom0 and xenstore ----

    fn xl(&self, args: &[&str]) -> Reply {
        // xl_mem.c @7a2b0d11: libxl logs why, then xl says what failed.
        let libxl = |func: &str, e: crate::XlError, xl: String| {
            Reply::fail(format!(
                "libxl: error: libxl_mem.c: {func}: Domain 1:{}\n{xl}",
                e.0
            ))
        };
        match args {
            ["mem-set", size] | ["mem-set", _, size] => {
                let Some(kib) = parse_xl_size_kib(size) else {
                    return Reply::fail(format!("invalid memory size: {size}"));
                };
                match self.domain.try_xl_mem_set(kib) {
                    Ok(()) => Reply::default(),
                    Err(e) => libxl(
                        "libxl_set_memory_target",
                        e,
                        format!("cannot set domid 1 dynamic max memory to : {size}"),
                    ),
                }
            }
            ["mem-max", _, size] => {
                let Some(kib) = parse_xl_size_kib(size) else {
                    return Reply::fail(format!("invalid memory size: {size}"));
                };
                match self.domain.xl_mem_max(kib) {
                    Ok(()) => Reply::default(),
                    Err(e) => libxl(
                        "libxl_domain_setmaxmem",
                        e,
                        format!("cannot set domid 1 static max memory to : {size}"),
                    ),
                }
            }
            ["list"] => {
                let kib = self.domain.reservation() * 4;
                Reply::ok(format!(
                    "Name                                        ID   Mem VCPUs\tState\tTime(s)\n\
                     domU                                         1 {:>5}     1     -b----       0.0\n",
                    kib / 1024
                ))
            }
            _ => Reply::usage("xl mem-set [domain] size | xl mem-max domain size | xl list"),
        }
    }

    /// A domU's xenstore path relative to its home, as the shim uses it.
    fn relative(path: &str) -> &str {
        path.strip_prefix("/local/domain/1/").unwrap_or(path)
    }

    /// xenstored's rule for a path (tools/xenstore is_valid_nodename):
    /// letters, digits and `-/_@`, no empty component; and xs_talkv's:
    /// a request carries at most XENSTORE_PAYLOAD_MAX (4096) bytes
    /// (xen/include/public/io/xs_wire.h), E2BIG beyond.
    fn xenstore_ok(path: &str, value_len: usize) -> bool {
        !path.is_empty()
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-/_@".contains(&b))
            && !path.contains("//")
            && !path.ends_with('/')
            && path.len() + 1 + value_len <= 4096
    }

    fn xenstore_read(&self, args: &[&str]) -> Reply {
        let [path] = args else {
            return Reply::usage("xenstore-read path");
        };
        let v = Self::xenstore_ok(path, 0)
            .then(|| self.domain.xenstore_read_bytes(Self::relative(path)))
            .flatten();
        match v {
            Some(v) => Reply::ok(format!("{}\n", xenstore_sanitise(&v))),
            None => Reply::fail(format!("xenstore-read: couldn't read path {path}")),
        }
    }

    fn xenstore_write(&self, args: &[&str]) -> Reply {
        let [path, value] = args else {
            return Reply::usage("xenstore-write path value");
        };
        let bytes = xenstore_unsanitise(value);
        if !Self::xenstore_ok(path, bytes.len()) {
            return Reply::fail(format!("xenstore-write: could not write path {path}"));
        }
        self.domain
            .xenstore_write_bytes(Self::relative(path), &bytes);
        Reply::default()
    }

    fn xenstore_rm(&self, args: &[&str]) -> Reply {
        let [path] = args else {
            return Reply::usage("xenstore-rm path");
        };
        if !Self::xenstore_ok(path, 0) {
            return Reply::fail(format!("xenstore-rm: could not remove path {path}"));
        }
        self.domain.xenstore_rm(Self::relative(path));
        Reply::default()
    }

    // ---- simulator-only ----

    fn sim(&self, args: &[&str]) -> Reply {
        match args {
            ["ping"] => Reply::ok("pong\n".into()),
            ["resume"] => {
                self.domain.resume();
                Reply::default()
            }
            // xl save then xl restore as one step (saverestore.rs).
            ["save-restore"] => match self.domain.save_restore() {
                Ok(r) => Reply::ok(format!(
                    "saved {} frames, left out {} ({} unmapped){}\n",
                    r.saved,
                    r.lost.len() as u64 + r.unmapped,
                    r.unmapped,
                    if r.nr_pages == 0 {
                        String::new()
                    } else {
                        format!(", arch.max_pfn {:#x}, nr_pages {}", r.max_pfn, r.nr_pages)
                    }
                )),
                Err(e) => Reply::fail(format!("sim save-restore: the domain crashed: {e}")),
            },
            ["growth"] => {
                let g = self.domain.growth_stats();
                Reply::ok(format!(
                    "p2m_end {:#x}\ndirect_end {:#x}\nhot_segments {}\narray_bytes {}\n\
                     calls {:?}\n",
                    g.p2m_end, g.direct_end, g.hot_segments, g.array_bytes, g.calls
                ))
            }
            ["settle"] => self.settle(SETTLE_DEFAULT),
            ["settle", secs] => match secs.parse::<u64>() {
                Ok(s) => self.settle(Duration::from_secs(s)),
                Err(_) => Reply::usage("sim settle [seconds]"),
            },
            ["sleep", time] => match parse_sim_duration(time) {
                Some(d) => self.sleep(d),
                None => Reply::usage(
                    "sim sleep TIME (simulated: 30s, 500ms, 2m, 1h; no unit is seconds)",
                ),
            },
            ["check"] => match self.domain.check() {
                Ok(()) => Reply::ok("consistent\n".into()),
                Err(e) => Reply::fail(format!("sim check: {e}")),
            },
            ["invariants"] => self.invariants(),
            ["stat"] => Reply::ok(
                self.domain
                    .snapshot()
                    .lines()
                    .into_iter()
                    .map(|(k, v)| format!("{k} {v}\n"))
                    .chain(host_rss_kib().map(|kib| format!("host_rss_kib {kib}\n")))
                    .collect(),
            ),
            ["host-free", size] => match parse_xl_size_kib(size) {
                Some(kib) => {
                    self.domain.set_host_free(kib / 4);
                    Reply::default()
                }
                None => Reply::fail(format!("sim host-free: invalid size {size}")),
            },
            ["kernel-alloc", size] => match parse_xl_size_kib(size) {
                Some(kib) => Reply::ok(format!("{} KiB\n", self.domain.kernel_alloc(kib / 4) * 4)),
                None => Reply::fail(format!("sim kernel-alloc: invalid size {size}")),
            },
            ["kernel-free", size] => match parse_xl_size_kib(size) {
                Some(kib) => Reply::ok(format!("{} KiB\n", self.domain.kernel_free(kib / 4) * 4)),
                None => Reply::fail(format!("sim kernel-free: invalid size {size}")),
            },
            ["fault", rest @ ..] => self.fault(rest),
            ["stall"] => Reply::ok(crate::stall::describe()),
            ["stall", name] | ["stall", name, _] => {
                let skip = match args.get(2).map(|n| n.parse::<u64>()) {
                    None => 0,
                    Some(Ok(n)) => n,
                    Some(Err(_)) => return Reply::usage("sim stall POINT [CALLS-TO-LET-THROUGH]"),
                };
                match crate::stall::point(name) {
                    Some(p) => {
                        crate::stall::arm(p, skip);
                        Reply::default()
                    }
                    None => Reply::fail(format!(
                        "sim stall: no stall point {name}; there are {}",
                        crate::stall::POINTS.join(", ")
                    )),
                }
            }
            ["stalled"] => self.stalled(Duration::from_secs(10)),
            ["stalled", time] => match parse_sim_duration(time) {
                Some(d) => self.stalled(d),
                None => {
                    Reply::usage("sim stalled [TIME] (real time: 10s, 200ms; no unit is seconds)")
                }
            },
            ["release"] => {
                crate::stall::release();
                Reply::default()
            }
            ["watches-delivered"] => self.watches_delivered(Duration::from_secs(10)),
            ["watches-delivered", time] => match parse_sim_duration(time) {
                Some(d) => self.watches_delivered(d),
                None => Reply::usage(
                    "sim watches-delivered [TIME] (real time: 10s, 200ms; no unit is seconds)",
                ),
            },
            ["sysctl-raw", name, hex] => {
                let Some(bytes) = decode_hex(hex) else {
                    return Reply::usage("sim sysctl-raw name hexbytes");
                };
                if *name == "hw.balloon.scrub" {
                    self.inv().scrub_touched = true;
                }
                match self.domain.sysctl_write_raw(name, &bytes) {
                    Ok(()) => Reply::default(),
                    Err(e) => Reply::fail(format!("sysctl: {name}: {}", strerror(e))),
                }
            }
            _ => Reply::usage(
                "sim ping | resume | settle [s] | sleep TIME | check | invariants | stat | \
                 host-free size | kernel-alloc size | kernel-free size | \
                 fault [name value | clear] | stall [POINT [N]] | stalled [s] | release | \
                 sysctl-raw name hex",
            ),
        }
    }

    /// Waits `d` of simulated time: `d` divided by the time scale of real
    /// time, in sleeps that end when the simulated clock has got there.
    fn sleep(&self, d: Duration) -> Reply {
        let end = self.domain.uptime() + d;
        let scale = self.domain.config().time_scale.max(1);
        loop {
            let now = self.domain.uptime();
            if now >= end {
                return Reply::default();
            }
            std::thread::sleep((end - now) / scale + Duration::from_micros(10));
        }
    }

    /// Waits, at most `limit` of real time, until the xenwatch thread has
    /// delivered every queued watch event (none queued, none in a
    /// callback). A watch callback reads the node when it runs, not when
    /// it was written (the shim's `xenbus_read` of memory/target), so
    /// whether a callback sees a write or the next one depends on when
    /// xenwatch runs; a scenario that must replay the same way puts this
    /// between the two.
    fn watches_delivered(&self, limit: Duration) -> Reply {
        if self.domain.wait_until(|v| v.watches_quiet(), limit) {
            Reply::default()
        } else {
            Reply::fail(format!(
                "sim watches-delivered: watch events still pending after {} ms",
                limit.as_millis()
            ))
        }
    }

    fn stalled(&self, limit: Duration) -> Reply {
        let held = crate::stall::wait_stalled(limit);
        if held.is_empty() {
            return Reply::fail(format!(
                "sim stalled: no thread reached an armed stall point within {} ms",
                limit.as_millis()
            ));
        }
        Reply::ok(
            held.iter()
                .map(|(p, t)| format!("{p}: thread {t}\n"))
                .collect(),
        )
    }

    fn fault(&self, args: &[&str]) -> Reply {
        let count = |v: &str| -> Result<Option<u64>, ()> {
            match v {
                "off" => Ok(None),
                n => n.parse().map(Some).map_err(|_| ()),
            }
        };
        let flag = |v: &str| -> Result<bool, ()> {
            match v {
                "on" | "1" => Ok(true),
                "off" | "0" => Ok(false),
                _ => Err(()),
            }
        };
        let errno = |v: &str| -> Result<Option<i32>, ()> {
            match v {
                "off" => Ok(None),
                e => parse_errno(e).map(Some).ok_or(()),
            }
        };
        let mut f = self.domain.faults_mut();
        let r = match args {
            [] => {
                return Reply::ok(format!("{:?}\n", *f));
            }
            ["clear"] => {
                *f = Default::default();
                Ok(())
            }
            ["decrease_limit", v] => count(v).map(|c| f.decrease_limit = c),
            ["increase_limit", v] => count(v).map(|c| f.increase_limit = c),
            ["populate_limit", v] => count(v).map(|c| f.populate_limit = c),
            ["pagealloc_fail_after", v] => count(v).map(|c| f.pagealloc_fail_after = c),
            ["pglistalloc_fail_after", v] => count(v).map(|c| f.pglistalloc_fail_after = c),
            ["sysctl_create_fail_after", v] => count(v).map(|c| f.sysctl_create_fail_after = c),
            ["plug_fail", v] => flag(v).map(|b| f.plug_fail = b),
            ["unplug_fail", v] => flag(v).map(|b| f.unplug_fail = b),
            ["suspend_veto", v] => flag(v).map(|b| f.suspend_veto = b),
            ["xenmem_fail", v] => flag(v).map(|b| f.xenmem_fail = b),
            ["kmem_nosleep_fail", v] => flag(v).map(|b| f.kmem_nosleep_fail = b),
            ["kmem_nosleep_fail_after", v] => count(v).map(|c| f.kmem_nosleep_fail_after = c),
            ["xenstore_read_error", v] => errno(v).map(|e| f.xenstore_read_error = e),
            ["kthread_create_error", v] => errno(v).map(|e| f.kthread_create_error = e),
            ["watch_register_error", v] => errno(v).map(|e| f.watch_register_error = e),
            ["memory_op", op, v] => match (MemOp::from_name(op), errno(v)) {
                (Some(op), Ok(Some(e))) => {
                    f.memory_op_errors.insert(op, e);
                    Ok(())
                }
                (Some(op), Ok(None)) => {
                    f.memory_op_errors.remove(&op);
                    Ok(())
                }
                _ => Err(()),
            },
            _ => Err(()),
        };
        match r {
            Ok(()) => Reply::default(),
            Err(()) => Reply::usage(
                "sim fault [clear | decrease_limit|increase_limit|populate_limit|\
                 pagealloc_fail_after|pglistalloc_fail_after|sysctl_create_fail_after|\
                 kmem_nosleep_fail_after N|off | \
                 plug_fail|unplug_fail|kmem_nosleep_fail on|off | \
                 xenstore_read_error|kthread_create_error|watch_register_error ERRNO|off | \
                 memory_op increase_reservation|decrease_reservation|current_reservation|\
                 maximum_reservation|populate_physmap ERRNO|off]",
            ),
        }
    }

    // ---- assertions ----

    /// `expect NAME OP VALUE`: NAME is a sysctl variable, `stat.KEY` (a
    /// key of `sim stat`) or `dmesg`; OP is ==, !=, <, <=, >, >= (numbers
    /// compared as numbers, otherwise == and != compare text), ~ or !~ (a
    /// regular expression, see [`crate::regex`]). For dmesg, `~ RE` holds
    /// when some line matches and `!~ RE` when none does. VALUE is the
    /// rest of the line (words joined by one space).
    fn expect(&self, args: &[&str]) -> Reply {
        const USAGE: &str = "expect NAME|stat.KEY|dmesg ==|!=|<|<=|>|>=|~|!~ VALUE";
        let [name, op, rest @ ..] = args else {
            return Reply::usage(USAGE);
        };
        if rest.is_empty() && !matches!(*op, "~" | "!~" | "==" | "!=") {
            return Reply::usage(USAGE);
        }
        let want = rest.join(" ");
        if *name == "dmesg" {
            let re = match Regex::new(&want) {
                Ok(re) => re,
                Err(e) => {
                    return Reply::fail(format!("expect: bad regular expression {want:?}: {e}"))
                }
            };
            let lines = self.domain.dmesg();
            let hit = lines.iter().find(|l| re.is_match(l));
            return match (*op, hit) {
                ("~", Some(_)) | ("!~", None) => Reply::default(),
                ("~", None) => Reply::fail(format!(
                    "expect: no dmesg line matches /{want}/ ({} lines; the last: {:?})",
                    lines.len(),
                    lines.last().map_or("", String::as_str)
                )),
                ("!~", Some(l)) => {
                    Reply::fail(format!("expect: a dmesg line matches /{want}/: {l:?}"))
                }
                _ => Reply::usage(USAGE),
            };
        }
        let actual = if let Some(key) = name.strip_prefix("stat.") {
            match self.domain.snapshot().get(key) {
                Some(v) => v,
                None => return Reply::fail(format!("expect: sim stat has no key {key}")),
            }
        } else {
            match self.domain.sysctl_read(name) {
                Ok(v) => show(&v),
                Err(e) => return Reply::fail(format!("expect: {name}: {}", strerror(e))),
            }
        };
        let holds = match *op {
            "~" | "!~" => match Regex::new(&want) {
                Ok(re) => re.is_match(&actual) == (*op == "~"),
                Err(e) => return Reply::fail(format!("expect: bad regular expression {want:?}: {e}")),
            },
            _ => match (actual.parse::<i128>(), want.parse::<i128>()) {
                (Ok(a), Ok(w)) => match *op {
                    "==" => a == w,
                    "!=" => a != w,
                    "<" => a < w,
                    "<=" => a <= w,
                    ">" => a > w,
                    ">=" => a >= w,
                    _ => return Reply::usage(USAGE),
                },
                _ => match *op {
                    "==" => actual == want,
                    "!=" => actual != want,
                    "<" | "<=" | ">" | ">=" => {
                        return Reply::fail(format!(
                            "expect: {name} is {actual:?}; {op} compares numbers, and {want:?} or it is not one"
                        ))
                    }
                    _ => return Reply::usage(USAGE),
                },
            },
        };
        if holds {
            Reply::default()
        } else {
            Reply::fail(format!("expect: {name} is {actual}, expected {op} {want}"))
        }
    }

    /// The soak's checks, after a settle: the model's frame-by-frame check
    /// (frames backed for a failed plug may wait outside any segment);
    /// with the module loaded, `current` equal to Xen's reservation as the
    /// driver counts it (less hw.balloon.toolstack_offset),
    /// `frames_lost` 0, `ballooned` equal to the pages the module holds,
    /// no counter lower than at the previous check of the same load, no
    /// page given to Xen unzeroed while scrubbing stayed on, and no
    /// hypercall in 40 s of simulated time while the driver is idle or
    /// has given up; with it unloaded, nothing of it left behind.
    fn invariants(&self) -> Reply {
        let mut errs = Vec::new();
        // Frames backed for a failed plug may wait, outside any segment,
        // for Xen to take them back; `current` against the reservation
        // below finds any the driver forgot.
        if let Err(e) = self.domain.check_allowing_unplugged_backed_frames() {
            errs.push(format!("sim check: {}", e.replace('\n', "; ")));
        }
        let loaded = self.loaded();
        let before = self.domain.snapshot();
        if !loaded {
            for (what, v) in [
                ("kmem bytes", before.kmem_bytes),
                ("kernel threads", before.kthreads),
                ("module pages", before.module_pages),
                ("sysctl nodes", before.leaked_sysctl_nodes),
                ("xenbus watches", before.watches),
            ] {
                if v != 0 {
                    errs.push(format!("module unloaded but {v} {what} left"));
                }
            }
            self.inv().scrub_touched = true;
            return self.invariants_result(errs);
        }
        let quad = |n: &str| -> Option<u64> {
            match self.domain.sysctl_read(n) {
                Ok(SysctlValue::Quad(v)) => Some(v as u64),
                Ok(SysctlValue::Bool(b)) => Some(u64::from(b)),
                _ => None,
            }
        };
        let state = match self.domain.sysctl_read("hw.balloon.state") {
            Ok(SysctlValue::String(s)) => s,
            other => return Reply::fail(format!("sim invariants: hw.balloon.state: {other:?}")),
        };
        let settled =
            state == "idle" || state.starts_with("cancelled") || state.starts_with("clipped");
        if !settled {
            errs.push(format!(
                "not settled: hw.balloon.state is {state:?} (run sim settle first)"
            ));
        }
        // Figures of the driver against the model, taken with nothing moving.
        let current = quad("hw.balloon.current").unwrap_or(0);
        let ballooned = quad("hw.balloon.ballooned").unwrap_or(0);
        let lost = quad("hw.balloon.stats.frames_lost").unwrap_or(0);
        let snap = self.domain.snapshot();
        // What xl counts: Xen's reservation less the pages the toolstack
        // populated outside RAM (a PVH guest's special pages). The driver
        // must agree, so hw.balloon.toolstack_offset must be those pages
        // (it reads them from XENMEM_memory_map at load).
        let offset = quad("hw.balloon.toolstack_offset").unwrap_or(0);
        let counted = snap.memory * 4;
        if let Some(p) = self.domain.pod_stats() {
            // Populate-on-demand (pod.rs): the driver counts its memory
            // map (offset 0); once the PoD cache covers every entry,
            // Xen's reservation is that plus the special pages.
            if p.entries > p.cache {
                errs.push(format!(
                    "populate-on-demand: {} entries on a cache of {} pages: a touch can crash \
                     the domain",
                    p.entries, p.cache
                ));
            }
        }
        if current != counted {
            errs.push(format!(
                "hw.balloon.current {current} KiB != {counted} KiB as xl counts it (Xen's \
                 reservation {} KiB less the special pages; hw.balloon.toolstack_offset {offset} KiB)",
                snap.reservation * 4
            ));
        }
        if lost != 0 {
            errs.push(format!("hw.balloon.stats.frames_lost is {lost}"));
        }
        if ballooned != snap.module_pages * 4 {
            errs.push(format!(
                "hw.balloon.ballooned {ballooned} KiB != {} KiB of pages the module holds",
                snap.module_pages * 4
            ));
        }
        let counters: Vec<(String, u64)> = self
            .domain
            .sysctl_list("hw.balloon.stats.")
            .into_iter()
            .filter(|n| n != "hw.balloon.stats.last_errno")
            .filter_map(|n| match self.domain.sysctl_read(&n) {
                Ok(SysctlValue::Quad(v)) => Some((n, v as u64)),
                _ => None,
            })
            .collect();
        let scrub_on = quad("hw.balloon.scrub") == Some(1);
        {
            let mut inv = self.inv();
            if inv.load == snap.module_loads {
                for (n, v) in &counters {
                    if let Some((_, old)) = inv.counters.iter().find(|(m, _)| m == n) {
                        if v < old {
                            errs.push(format!("{n} went down from {old} to {v}"));
                        }
                    }
                }
                if inv.scrub_on
                    && scrub_on
                    && !inv.scrub_touched
                    && snap.dirty_given > inv.dirty_given
                {
                    errs.push(format!(
                        "{} pages reached Xen unzeroed while hw.balloon.scrub was 1",
                        snap.dirty_given - inv.dirty_given
                    ));
                }
            }
            inv.load = snap.module_loads;
            inv.counters = counters;
            inv.dirty_given = snap.dirty_given;
            inv.scrub_on = scrub_on;
            inv.scrub_touched = false;
        }
        if settled {
            // A watch event still queued (a resume or save-restore fires
            // every watch again) refreshes the limit with a hypercall:
            // that is the driver at work, not idle. Bounded wait.
            let _ = self
                .domain
                .wait_until(|v| v.watches_quiet(), Duration::from_secs(30));
            let calls = self.domain.snapshot().hypercalls;
            let _ = self.sleep(IDLE_WATCH);
            let after = self.domain.snapshot().hypercalls;
            if after != calls {
                errs.push(format!(
                    "{} hypercalls in {} s of simulated time while {state}",
                    after - calls,
                    IDLE_WATCH.as_secs()
                ));
            }
        }
        self.invariants_result(errs)
    }

    fn invariants_result(&self, errs: Vec<String>) -> Reply {
        if errs.is_empty() {
            Reply::ok("invariants hold\n".into())
        } else {
            Reply::fail(format!("sim invariants: {}", errs.join("; ")))
        }
    }

    /// Waits until hw.balloon.state is idle, cancelled or clipped with no
    /// kernel thread woken and not yet back at work (a worker kicked by a
    /// sysctl write or a load still reads as it was), at most `limit`, and
    /// still is one simulated second later with nothing moved.
    fn settle(&self, limit: Duration) -> Reply {
        let start = Instant::now();
        // A target written just before is the module's to take first.
        if !self.domain.wait_until(|v| v.watches_quiet(), limit) {
            return Reply::fail("sim settle: xenstore watch events still pending".into());
        }
        let first = self.read_quad("hw.balloon.current");
        loop {
            let state = match self.domain.sysctl_read("hw.balloon.state") {
                Ok(SysctlValue::String(s)) => s,
                _ => return Reply::fail("sim settle: the module is not loaded".into()),
            };
            let current = self.read_quad("hw.balloon.current");
            let target = self.read_quad("hw.balloon.target");
            let secs = start.elapsed().as_secs_f64().max(1e-3);
            let rate = current.abs_diff(first) as f64 / 1024.0 / secs;
            // A kicked worker that has not yet asked the core, or a new one
            // that has not yet taken its first step, still reads as it
            // was: wait until every kernel thread is back in its wait.
            let done =
                (state == "idle" || state.starts_with("cancelled") || state.starts_with("clipped"))
                    && self.quiet()
                    && self.still_settled(&state);
            if self.progress {
                let mut e = std::io::stderr();
                let _ = write!(
                    e,
                    "\r\x1b[K{current} KiB of target {target} KiB, {rate:.0} MiB/s, {state}"
                );
                if done {
                    let _ = writeln!(e);
                }
                let _ = e.flush();
            }
            if done {
                return Reply::ok(format!(
                    "settled: current {current} KiB, target {target} KiB, {state} ({} ms)\n",
                    start.elapsed().as_millis()
                ));
            }
            if start.elapsed() >= limit {
                return Reply::fail(format!(
                    "sim settle: still {state} after {} s (current {current} KiB, target {target} KiB)",
                    limit.as_secs()
                ));
            }
            // Woken when the reservation or the module's pages change, or
            // after 2 ms at most (a state change alone wakes nobody).
            let (r, m) = (
                self.domain.reservation(),
                self.domain.pages_owned_by_module(),
            );
            self.domain.wait_until(
                |v| v.reservation() != r || v.module_pages() != m,
                Duration::from_millis(2),
            );
        }
    }

    /// Every kernel thread waits on a condvar and none has been woken
    /// without getting back to work yet.
    fn quiet(&self) -> bool {
        self.domain.pending_wakeups() == 0 && self.domain.kthreads_running() == 0
    }

    /// A settled state that lasts: no wake-up pending, and one simulated
    /// second later the same state with nothing moved.
    fn still_settled(&self, state: &str) -> bool {
        let (r, m) = (
            self.domain.reservation(),
            self.domain.pages_owned_by_module(),
        );
        let _ = self.sleep(SETTLE_CONFIRM);
        let again = match self.domain.sysctl_read("hw.balloon.state") {
            Ok(SysctlValue::String(s)) => s,
            _ => return false,
        };
        again == state
            && self.quiet()
            && self.domain.reservation() == r
            && self.domain.pages_owned_by_module() == m
    }

    fn read_quad(&self, name: &str) -> u64 {
        match self.domain.sysctl_read(name) {
            Ok(SysctlValue::Quad(v)) => v as u64,
            _ => 0,
        }
    }
}

/// Splits a message-buffer line into the stamp as dmesg(8) prints it and
/// the text after the stamp and its blanks (dmesg.c 1.27.40.2: sscanf
/// "[%jd.%ld]", the fraction scaled from however many digits the kernel
/// printed to nanoseconds, then `"[% 5jd.%6.6ld] "`). None when the line
/// has no stamp.
fn split_stamp(raw: &str) -> Option<(String, &str)> {
    let body = raw.strip_prefix('[')?;
    let close = body.find(']')?;
    let (sec, frac) = body[..close].trim_start().split_once('.')?;
    let sec: i64 = sec.parse().ok()?;
    let scale = frac.len() as u32;
    let fsec: i64 = frac.parse().ok()?;
    let text = body[close + 1..].trim_start_matches(' ');
    let micro = if scale > 6 {
        let nsec = fsec * 10i64.checked_pow(9u32.checked_sub(scale)?)?;
        format!("{:06}", (nsec + 499) / 1000)
    } else {
        format!(
            "{:0>w$}{}",
            fsec,
            "000000".get(..(6 - scale) as usize)?,
            w = scale as usize
        )
    };
    Some((format!("[{:>5}.{micro}] ", format!(" {sec}")), text))
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s == "-" {
        return Some(Vec::new());
    }
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The simulator's own resident memory (VmRSS of /proc/self/status, KiB):
/// what simulating the domain costs the host (issue 13 goal 5).
fn host_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xl_sizes_follow_parse_mem_size_kb() {
        assert_eq!(parse_xl_size_kib("512"), Some(512 * 1024));
        assert_eq!(parse_xl_size_kib("512m"), Some(512 * 1024));
        assert_eq!(parse_xl_size_kib("512M"), Some(512 * 1024));
        assert_eq!(parse_xl_size_kib("2g"), Some(2 * 1024 * 1024));
        assert_eq!(parse_xl_size_kib("1t"), Some(1 << 30));
        assert_eq!(parse_xl_size_kib("4096k"), Some(4096));
        assert_eq!(parse_xl_size_kib("1048576b"), Some(1024));
        for bad in [
            "",
            "m",
            "12mb",
            "-1",
            " 1",
            "1 m",
            "0x10",
            "99999999999999999999",
        ] {
            assert_eq!(parse_xl_size_kib(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sysctl_numbers_parse_like_strtoumax_base_0() {
        assert_eq!(parse_sysctl_number("42"), Ok(42));
        assert_eq!(parse_sysctl_number("  42"), Ok(42));
        assert_eq!(parse_sysctl_number("0x10"), Ok(16));
        assert_eq!(parse_sysctl_number("010"), Ok(8));
        assert_eq!(parse_sysctl_number("0"), Ok(0));
        assert_eq!(parse_sysctl_number("-1"), Ok(-1));
        assert_eq!(
            parse_sysctl_number("18446744073709551615"),
            Ok(u64::MAX as i128)
        );
        assert_eq!(parse_sysctl_number("18446744073709551616"), Err(ERANGE));
        for bad in ["", "abc", "42 ", "42k", "4 2", "08", "0x", "-"] {
            assert_eq!(parse_sysctl_number(bad), Err(EINVAL), "{bad:?}");
        }
    }

    #[test]
    fn words_split_with_quotes_and_comments() {
        assert_eq!(
            split_words("xenstore-write memory/target '512 k' # a comment").unwrap(),
            ["xenstore-write", "memory/target", "512 k"]
        );
        assert_eq!(split_words("a \"\" b").unwrap(), ["a", "", "b"]);
        assert!(split_words("# only").unwrap().is_empty());
        assert!(split_words("a 'b").is_err());
    }

    #[test]
    fn dmesg_reprints_the_kernel_stamp_as_dmesg_8_does() {
        // The kernel's seven digits, rounded to six.
        assert_eq!(
            split_stamp("[   1.2345678] balloon0: unloaded"),
            Some(("[    1.234568] ".to_string(), "balloon0: unloaded"))
        );
        assert_eq!(
            split_stamp("[ 12345.0000004] x"),
            Some(("[ 12345.000000] ".to_string(), "x"))
        );
        // A kernel printing six digits or fewer: padded with zeros.
        assert_eq!(
            split_stamp("[   3.25] y"),
            Some(("[    3.250000] ".to_string(), "y"))
        );
        assert_eq!(split_stamp("balloon0: no stamp"), None);
    }

    #[test]
    fn hex_decodes_bytes() {
        assert_eq!(decode_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex("-"), Some(vec![]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
    }
}
