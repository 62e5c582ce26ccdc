// SPDX-License-Identifier: BSD-2-Clause
//! Command line: `kobjcheck [check] [options] OBJECT...` and
//! `kobjcheck fix-plt32 OBJECT...`. See `kobjcheck --help`.

use std::collections::BTreeSet;
use std::process::ExitCode;

use kobjcheck::check::{self, Config};
use kobjcheck::elf::{self, ElfObject};
use kobjcheck::{disasm, reloc, symlist};

const USAGE: &str = "\
usage: kobjcheck [check] [options] OBJECT...
       kobjcheck fix-plt32 OBJECT...

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
compute S + A - P when no PLT exists, as in a kernel module.";

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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
