// SPDX-License-Identifier: BSD-2-Clause
//! Command line: `kobjcheck [check] [options] OBJECT...` and
//! `kobjcheck fix-plt32 OBJECT...`. See `kobjcheck --help`.

use std::collections::BTreeSet;
use std::process::ExitCode;

use kobjcheck::check::{self, Config};
use kobjcheck::elf::{self, ElfObject};
use kobjcheck::{disasm, reloc, stack, symlist};

const USAGE: &str = "\
usage: kobjcheck [check] [options] OBJECT...
       kobjcheck fix-plt32 OBJECT...
       kobjcheck stack [--budget BYTES] [stack options] OBJECT...

check: refuse what the NetBSD amd64 module loader or kernel context cannot
take: a file that is not an ELF64 little-endian x86-64 relocatable object,
relocation types kobj_reloc() does not apply, undefined symbols outside the
allowed lists, undefined weak symbols, defined globals without the module's
prefix, TLS, SSE/AVX/x87/MMX instructions, debug and unwind sections.
Prints text/rodata/data/bss sizes. Exit 0 when every object passes, 1 on any
refusal, 2 on a usage or I/O error.

options:
  --kernel-symbols FILE     exported kernel symbols, lines of
                            `symbol<TAB>flavours<TAB>defining file`
  --flavour F               only the kernel symbols listed for flavour F
                            (xenpv or pvh)
  --allow-list FILE         more allowed undefined symbols, one per line
  --allow-from-header FILE  allow the functions FILE declares whose names
                            start with the header prefix
  --header-prefix PREFIX    prefix for --allow-from-header (balloon_shim_)
  --allow-undef-prefix P    allow undefined symbols starting with P
  --global-prefix P         defined globals must start with one of these
                            (default: balloon_rs_ balloon_shim_ balloon_mod)
  --allow-plt32             accept R_X86_64_PLT32 (only if every targeted
                            kernel's loader applies it)
  --objdump PATH            objdump to run (default $OBJDUMP or objdump)
  --no-disasm               skip the instruction scan

fix-plt32: rewrite every R_X86_64_PLT32 into R_X86_64_PC32 in place. Both
compute S + A - P when no PLT exists, as in a kernel module.

stack: the deepest stack use of the call chains from each entry point
(functions whose names start with an entry prefix), from objdump -dr and
objdump -r: frames from every instruction that moves %rsp, calls and tail
jumps through their relocations, indirect calls to every address-taken
function but at most N of them on one chain. Prints a table of entry
point, bytes and deepest chain. Exit 1 on recursion, an unbounded frame or
a figure over the budget.

stack options:
  --budget BYTES            fail when an entry point needs more
  --entry-prefix P          entry points (default: balloon_)
  --indirect-depth N        indirect calls followed on one chain (default 6)
  --objdump PATH            objdump to run (default $OBJDUMP or objdump)
  --cxxfilt PATH            demangler for the table (default $CXXFILT or
                            c++filt; names stay mangled if it fails)";

struct Options {
    cfg: Config,
    objdump: Option<String>,
    files: Vec<String>,
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}

fn read_text(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut cfg = Config::default();
    let mut objdump = Some(std::env::var("OBJDUMP").unwrap_or_else(|_| "objdump".to_string()));
    let mut headers = Vec::new();
    let mut kernel_lists = Vec::new();
    let mut flavour = None;
    let mut header_prefix = "balloon_shim_".to_string();
    let mut files = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--kernel-symbols" => kernel_lists.push(value(a)?),
            "--flavour" => flavour = Some(value(a)?),
            "--allow-list" => {
                let path = value(a)?;
                cfg.allowed_undefined
                    .extend(symlist::parse_plain_list(&read_text(&path)?));
            }
            "--allow-from-header" => headers.push(value(a)?),
            "--header-prefix" => header_prefix = value(a)?,
            "--allow-undef-prefix" => cfg.allowed_undefined_prefixes.push(value(a)?),
            "--global-prefix" => cfg.global_prefixes.push(value(a)?),
            "--allow-plt32" => cfg.allow_plt32 = true,
            "--objdump" => objdump = Some(value(a)?),
            "--no-disasm" => objdump = None,
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown option {s}")),
            s => files.push(s.to_string()),
        }
    }
    for path in kernel_lists {
        let list = symlist::parse_kernel_symbols(&read_text(&path)?, flavour.as_deref())
            .map_err(|e| format!("{path}: {e}"))?;
        cfg.kernel_symbols.extend(list);
    }
    for h in headers {
        let found = symlist::functions_in_header(&read_text(&h)?, &header_prefix);
        if found.is_empty() {
            return Err(format!(
                "{h}: declares no function starting with {header_prefix}"
            ));
        }
        cfg.allowed_undefined.extend(found);
    }
    if files.is_empty() {
        return Err("no object given".to_string());
    }
    Ok(Options {
        cfg,
        objdump,
        files,
    })
}

/// Checks one file; returns the number of refusals or an I/O error.
fn check_file(path: &str, opts: &Options) -> Result<usize, String> {
    let data = read(path)?;
    let refused = |msg: &str| println!("kobjcheck: {path}: refused: {msg}");
    let obj = match ElfObject::parse(&data) {
        Ok(o) => o,
        Err(e) => {
            refused(&e.to_string());
            return Ok(1);
        }
    };
    let mut report = check::check_object(&obj, &opts.cfg);
    if obj.file_type == elf::ET_REL && obj.machine == elf::EM_X86_64 {
        if let Some(objdump) = &opts.objdump {
            let found = disasm::scan_file(objdump, path)?;
            report.refusals.extend(check::fpu_refusals(&found));
        }
    }
    for w in &report.warnings {
        println!("kobjcheck: {path}: warning: {w}");
    }
    for r in &report.refusals {
        refused(r);
    }
    let s = report.sizes;
    println!(
        "kobjcheck: {path}: sizes: text {} rodata {} data {} bss {} bytes (size(1) text = {})",
        s.text,
        s.rodata,
        s.data,
        s.bss,
        s.text + s.rodata
    );
    let relocs: BTreeSet<u32> = obj.relocations.iter().map(|r| r.kind).collect();
    let names: Vec<String> = relocs.iter().map(|&k| reloc::name(k)).collect();
    println!(
        "kobjcheck: {path}: relocation types: {}",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(" ")
        }
    );
    if report.refusals.is_empty() {
        println!("kobjcheck: {path}: OK");
    } else {
        println!("kobjcheck: {path}: {} refusal(s)", report.refusals.len());
    }
    Ok(report.refusals.len())
}

fn fix_plt32(files: &[String]) -> Result<(), String> {
    if files.is_empty() {
        return Err("no object given".to_string());
    }
    for path in files {
        let mut data = read(path)?;
        let n = elf::rewrite_relocation_type(&mut data, reloc::R_PLT32, reloc::R_PC32)
            .map_err(|e| format!("{path}: {e}"))?;
        if n > 0 {
            std::fs::write(path, &data).map_err(|e| format!("cannot write {path}: {e}"))?;
        }
        println!("kobjcheck: {path}: rewrote {n} R_X86_64_PLT32 relocation(s) to R_X86_64_PC32");
    }
    Ok(())
}

/// Indirect calls a chain is followed through unless told otherwise.
/// The core has no trait objects or function pointers of its own; its
/// indirect calls are core::fmt's, and a formatting chain makes: one for
/// fmt::write's call of the argument's fmt; one per nested value, since a
/// derive(Debug) may format each field through `&dyn Debug` (the deepest
/// value the core formats is a WorkerError holding a SegmentError holding
/// a PfnRange of Pfns of u64: four); one for the writer. Nothing formats
/// with `{:#?}`, so no PadAdapter between writers; a Display using write!
/// (State, LastError) nests less. Six, whatever the compiler calls
/// directly; the panic handler formats nothing.
const DEFAULT_INDIRECT_DEPTH: u32 = 6;

struct StackOptions {
    budget: Option<u64>,
    prefixes: Vec<String>,
    indirect_depth: u32,
    objdump: String,
    cxxfilt: String,
    files: Vec<String>,
}

fn parse_stack_options(args: &[String]) -> Result<StackOptions, String> {
    let mut o = StackOptions {
        budget: None,
        prefixes: Vec::new(),
        indirect_depth: DEFAULT_INDIRECT_DEPTH,
        objdump: std::env::var("OBJDUMP").unwrap_or_else(|_| "objdump".to_string()),
        cxxfilt: std::env::var("CXXFILT").unwrap_or_else(|_| "c++filt".to_string()),
        files: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let number = |name: &str, v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: not a number: {v}"))
        };
        match a.as_str() {
            "--budget" => o.budget = Some(number(a, value(a)?)?),
            "--entry-prefix" => o.prefixes.push(value(a)?),
            "--indirect-depth" => {
                o.indirect_depth =
                    u32::try_from(number(a, value(a)?)?).map_err(|_| format!("{a}: too large"))?
            }
            "--objdump" => o.objdump = value(a)?,
            "--cxxfilt" => o.cxxfilt = value(a)?,
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown option {s}")),
            s => o.files.push(s.to_string()),
        }
    }
    if o.prefixes.is_empty() {
        o.prefixes.push("balloon_".to_string());
    }
    if o.files.is_empty() {
        return Err("no object given".to_string());
    }
    Ok(o)
}

/// Joins the links of a chain, writing a run of a repeated stretch once:
/// `[a > b] x4`.
fn fold_repeats(links: &[String]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < links.len() {
        // The stretch starting here that repeats most often back to back
        // (the longest such stretch on a tie).
        let mut best = (1, 1);
        for len in 1..=(links.len() - i) / 2 {
            let mut times = 1;
            while i + (times + 1) * len <= links.len()
                && links[i..i + len] == links[i + times * len..i + (times + 1) * len]
            {
                times += 1;
            }
            if times > 1 && times * len > best.0 * best.1 {
                best = (len, times);
            }
        }
        let (len, times) = best;
        if times > 1 {
            let block = links[i..i + len].concat();
            out.push_str(&format!(" [{}] x{times}", block.trim_start()));
        } else {
            out.push_str(&links[i]);
        }
        i += len * times;
    }
    out
}

/// Measures one file; returns whether it passes.
fn stack_file(path: &str, o: &StackOptions) -> Result<bool, String> {
    let listing = stack::read_listing(&o.objdump, path)?;
    let a = stack::analyse(&listing, &o.prefixes, o.indirect_depth);
    let mut names: Vec<String> = a.names.clone();
    names.extend(a.recursion.iter().flatten().cloned());
    let short = stack::display_names(&names, Some(&o.cxxfilt));
    let show = |n: &str| short.get(n).cloned().unwrap_or_else(|| n.to_string());
    let say = |m: &str| println!("kobjcheck: stack: {path}: {m}");
    if a.entries.is_empty() {
        say(&format!(
            "no function starts with {}",
            o.prefixes.join(" or ")
        ));
        return Ok(false);
    }
    say(&format!(
        "frames from every instruction that moves %rsp; calls and tail jumps from relocations; \
         indirect calls reach the {} address-taken functions, at most {} on one chain{}",
        a.address_taken.len(),
        a.indirect_depth,
        if a.indirect_cut {
            " (chains through more are not covered)"
        } else {
            ""
        }
    ));
    let width = a
        .entries
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(0)
        .max(11);
    println!(
        "{:width$}  {:>6}  deepest chain: function bytes, > call, >> tail jump, >* through a pointer",
        "entry point", "bytes"
    );
    let mut ok = true;
    let mut deepest: Option<&stack::EntryResult> = None;
    for e in &a.entries {
        let chain: Vec<String> = e
            .chain
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let arrow = match (i, l.indirect, l.tail) {
                    (0, _, _) => "",
                    (_, true, _) => " >* ",
                    (_, _, true) => " >> ",
                    _ => " > ",
                };
                if l.external && l.indirect {
                    format!("{arrow}(deeper: not followed) {}", l.bytes)
                } else if l.external && l.name.ends_with("(nested panic)") {
                    format!("{arrow}{} {}", show(&l.name), l.bytes)
                } else if l.external {
                    format!("{arrow}{} {} (undefined)", show(&l.name), l.bytes)
                } else {
                    format!("{arrow}{} {}", show(&l.name), l.bytes)
                }
            })
            .collect();
        let bytes = format!("{}{}", e.bytes, if e.recursive { "+" } else { "" });
        println!("{:width$}  {:>6}  {}", e.name, bytes, fold_repeats(&chain));
        if deepest.is_none_or(|d| e.bytes > d.bytes) {
            deepest = Some(e);
        }
    }
    let by_depth: Vec<String> = (0..=8)
        .map(|d| {
            let deepest = stack::analyse(&listing, &o.prefixes, d)
                .entries
                .iter()
                .map(|e| e.bytes)
                .max()
                .unwrap_or(0);
            format!("{d}: {deepest}")
        })
        .collect();
    say(&format!(
        "deepest figure by indirect calls followed: {}",
        by_depth.join(", ")
    ));
    if !a.external.is_empty() {
        let ext: Vec<&str> = a.external.iter().map(String::as_str).collect();
        say(&format!(
            "not counted: the stack of undefined functions called ({})",
            ext.join(" ")
        ));
    }
    for (f, why) in &a.unbounded {
        say(&format!("unbounded frame: {}: {why}", show(f)));
        ok = false;
    }
    for cycle in &a.recursion {
        let mut names: Vec<String> = cycle.iter().map(|n| show(n)).collect();
        if let Some(first) = names.first().cloned() {
            names.push(first);
        }
        let from: Vec<&str> = a
            .entries
            .iter()
            .filter(|e| e.recursive)
            .map(|e| e.name.as_str())
            .collect();
        say(&format!(
            "recursion: {} (reachable from {}); figures marked + count one pass",
            names.join(" > "),
            from.join(", ")
        ));
        ok = false;
    }
    if let Some(d) = deepest {
        let verdict = match o.budget {
            Some(b) if d.bytes > b => {
                ok = false;
                format!("; budget {b}: over")
            }
            Some(b) => format!("; budget {b}: within"),
            None => String::new(),
        };
        say(&format!("deepest {} bytes ({}){verdict}", d.bytes, d.name));
    }
    say(if ok { "OK" } else { "FAILED" });
    Ok(ok)
}

fn stack_main(args: &[String]) -> ExitCode {
    let o = match parse_stack_options(args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("kobjcheck: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut ok = true;
    for f in &o.files {
        match stack_file(f, &o) {
            Ok(pass) => ok &= pass,
            Err(e) => {
                eprintln!("kobjcheck: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("stack") {
        return stack_main(&args[1..]);
    }
    let (cmd, rest) = match args.first().map(String::as_str) {
        Some("fix-plt32") => ("fix-plt32", &args[1..]),
        Some("check") => ("check", &args[1..]),
        _ => ("check", &args[..]),
    };
    if cmd == "fix-plt32" {
        return match fix_plt32(rest) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kobjcheck: {e}");
                ExitCode::from(2)
            }
        };
    }
    let opts = match parse_options(rest) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("kobjcheck: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut refusals = 0;
    for f in &opts.files {
        match check_file(f, &opts) {
            Ok(n) => refusals += n,
            Err(e) => {
                eprintln!("kobjcheck: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if refusals == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
