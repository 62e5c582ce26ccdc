// SPDX-License-Identifier: BSD-2-Clause
//! The control interface of the simulated domU: commands that read like
//! the real tools, so one script drives a NetBSD domU and this simulator.
//!
//! Each command is an argument vector and gives a [`Reply`]: an exit
//! status, standard output and standard error, as the real program would.
//! Inside the domU: `modload`, `modunload`, `modstat`, `sysctl`,
//! `xenstore-read`, `xenstore-write`, `xenstore-rm`, `dmesg`. On the dom0
//! side: `xl mem-set`, `xl list`. Simulator-only commands start with `sim`
//! (fault injection, host memory, waiting, invariants, leak accounting).
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
use std::time::{Duration, Instant};

use crate::{balloon_module, Domain, SysctlValue};

/// How long `sim settle` waits at most by default (real time).
const SETTLE_DEFAULT: Duration = Duration::from_secs(30);

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
}

impl Console {
    /// A console on `domain`. With `progress`, waits draw a status line
    /// on standard error (for a terminal); otherwise they print one line.
    pub fn new(domain: Domain, progress: bool) -> Console {
        Console { domain, progress }
    }

    /// The domain.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// Runs one command line (see [`split_words`]). An empty line or a
    /// comment succeeds with no output.
    pub fn run_line(&mut self, line: &str) -> Reply {
        match split_words(line) {
            Ok(w) if w.is_empty() => Reply::default(),
            Ok(w) => self.run(&w),
            Err(e) => Reply::usage(&e),
        }
    }

    /// Runs one command.
    pub fn run(&mut self, argv: &[String]) -> Reply {
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
    /// for a command that must fail. Each command is echoed after `$ `
    /// with what it printed. Stops at the first command that does not end
    /// as expected and says which line it was.
    pub fn run_script(
        &mut self,
        text: &str,
        out: &mut dyn std::io::Write,
    ) -> Result<usize, String> {
        let mut ran = 0;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let (must_fail, cmd) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim_start()),
                None => (false, line),
            };
            let words = split_words(cmd).map_err(|e| format!("line {}: {e}", i + 1))?;
            if words.is_empty() {
                continue;
            }
            let r = self.run(&words);
            let _ = writeln!(out, "$ {line}");
            let _ = write!(out, "{}{}", r.out, r.err);
            ran += 1;
            match (must_fail, r.status) {
                (false, 0) => {}
                (true, s) if s != 0 => {}
                (false, s) => {
                    return Err(format!("line {}: `{cmd}` failed with status {s}", i + 1))
                }
                (true, _) => {
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

    fn modload(&mut self, args: &[&str]) -> Reply {
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

    fn modunload(&mut self, args: &[&str]) -> Reply {
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

    fn modstat(&mut self, args: &[&str]) -> Reply {
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

    fn sysctl(&mut self, args: &[&str]) -> Reply {
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
    fn sysctl_write(&mut self, name: &str, text: &str, values_only: bool) -> Reply {
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

    fn xl(&mut self, args: &[&str]) -> Reply {
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

    fn xenstore_read(&self, args: &[&str]) -> Reply {
        let [path] = args else {
            return Reply::usage("xenstore-read path");
        };
        match self.domain.xenstore_read(Self::relative(path)) {
            Some(v) => Reply::ok(format!("{v}\n")),
            None => Reply::fail(format!("xenstore-read: couldn't read path {path}")),
        }
    }

    fn xenstore_write(&self, args: &[&str]) -> Reply {
        let [path, value] = args else {
            return Reply::usage("xenstore-write path value");
        };
        self.domain.xenstore_write(Self::relative(path), value);
        Reply::default()
    }

    fn xenstore_rm(&self, args: &[&str]) -> Reply {
        let [path] = args else {
            return Reply::usage("xenstore-rm path");
        };
        self.domain.xenstore_rm(Self::relative(path));
        Reply::default()
    }

    // ---- simulator-only ----

    fn sim(&mut self, args: &[&str]) -> Reply {
        match args {
            ["ping"] => Reply::ok("pong\n".into()),
            ["resume"] => {
                self.domain.resume();
                Reply::default()
            }
            ["settle"] => self.settle(SETTLE_DEFAULT),
            ["settle", secs] => match secs.parse::<u64>() {
                Ok(s) => self.settle(Duration::from_secs(s)),
                Err(_) => Reply::usage("sim settle [seconds]"),
            },
            ["check"] => match self.domain.check() {
                Ok(()) => Reply::ok("consistent\n".into()),
                Err(e) => Reply::fail(format!("sim check: {e}")),
            },
            ["stat"] => Reply::ok(self.stat()),
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
            ["sysctl-raw", name, hex] => {
                let Some(bytes) = decode_hex(hex) else {
                    return Reply::usage("sim sysctl-raw name hexbytes");
                };
                match self.domain.sysctl_write_raw(name, &bytes) {
                    Ok(()) => Reply::default(),
                    Err(e) => Reply::fail(format!("sysctl: {name}: {}", strerror(e))),
                }
            }
            _ => Reply::usage(
                "sim ping | resume | settle [s] | check | stat | host-free size | kernel-alloc size | \
                 kernel-free size | fault [name value | clear] | sysctl-raw name hex",
            ),
        }
    }

    fn stat(&self) -> String {
        let d = &self.domain;
        let (bytes, allocs) = d.kmem_outstanding();
        let slabs = d.slab_stats();
        format!(
            "reservation_kib {}\nmemory_kib {}\nmax_reservation_kib {}\nhost_free_kib {}\n\
             dirty_pages_given {}\nclean_pages_given {}\nkmem_bytes {bytes}\n\
             kmem_allocations {allocs}\nmodule_pages {}\nkthreads {}\nleaked_sysctl_nodes {}\n\
             segments {}\nphysseg_slabs {}\nphysseg_slab_kmem_bytes {}\n\
             physseg_slab_leaked_bytes {}\nphysseg_unlocked_changes {}\n",
            d.reservation() * 4,
            d.memory() * 4,
            d.max_reservation() * 4,
            d.host_free() * 4,
            d.dirty_frames_given(),
            d.clean_frames_given(),
            d.pages_owned_by_module(),
            d.live_kthreads(),
            d.leaked_sysctl_nodes().len(),
            d.segments().len(),
            slabs.slabs,
            slabs.bytes,
            slabs.leaked_bytes,
            slabs.unlocked_tree_changes
        )
    }

    fn fault(&mut self, args: &[&str]) -> Reply {
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
            ["plug_fail", v] => flag(v).map(|b| f.plug_fail = b),
            ["unplug_fail", v] => flag(v).map(|b| f.unplug_fail = b),
            ["kmem_nosleep_fail", v] => flag(v).map(|b| f.kmem_nosleep_fail = b),
            ["xenstore_read_error", v] => match *v {
                "off" => Ok(None),
                n => n.parse().map(Some).map_err(|_| ()),
            }
            .map(|e| f.xenstore_read_error = e),
            _ => Err(()),
        };
        match r {
            Ok(()) => Reply::default(),
            Err(()) => Reply::usage(
                "sim fault [clear | decrease_limit|increase_limit|populate_limit|\
                 pagealloc_fail_after|pglistalloc_fail_after N|off | \
                 plug_fail|unplug_fail|kmem_nosleep_fail on|off | xenstore_read_error ERRNO|off]",
            ),
        }
    }

    /// Waits until hw.balloon.state is idle or cancelled, at most `limit`.
    fn settle(&mut self, limit: Duration) -> Reply {
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
            let done =
                state == "idle" || state.starts_with("cancelled") || state.starts_with("clipped");
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
            // after 20 ms at most (a state change alone wakes nobody).
            let (r, m) = (
                self.domain.reservation(),
                self.domain.pages_owned_by_module(),
            );
            self.domain.wait_until(
                |v| v.reservation() != r || v.module_pages() != m,
                Duration::from_millis(20),
            );
        }
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
