// SPDX-License-Identifier: BSD-2-Clause
//! The checks: what makes a relocatable object unfit for the NetBSD amd64
//! module loader or for kernel context. Each finding is one line of text.

use std::collections::{BTreeMap, BTreeSet};

use crate::disasm::FpuUse;
use crate::elf::{
    ElfObject, Relocation, Section, EM_X86_64, ET_REL, SHF_ALLOC, SHF_EXECINSTR, SHF_TLS,
    SHF_WRITE, SHN_ABS, SHN_COMMON, SHT_NOBITS, SHT_PROGBITS, SHT_X86_64_UNWIND, STB_GLOBAL,
    STB_WEAK, STT_FILE, STT_SECTION, STT_TLS,
};
use crate::reloc;

/// Prefixes a defined global symbol of the module may carry when none
/// are configured: the Rust entry points, the shim functions the Rust core
/// calls, and the module's own `balloon_modcmd`.
pub const DEFAULT_GLOBAL_PREFIXES: [&str; 3] = ["balloon_rs_", "balloon_shim_", "balloon_mod"];

/// At most this many instruction findings are printed one by one.
const MAX_FPU_LINES: usize = 20;

/// What an object is checked against.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Accept R_X86_64_PLT32 (only if every targeted loader applies it).
    pub allow_plt32: bool,
    /// Exported kernel symbols and the header declaring each.
    pub kernel_symbols: BTreeMap<String, String>,
    /// Further symbols an undefined reference may name (shim functions).
    pub allowed_undefined: BTreeSet<String>,
    /// Prefixes an undefined reference may carry instead.
    pub allowed_undefined_prefixes: Vec<String>,
    /// Prefixes a defined global symbol must carry.
    pub global_prefixes: Vec<String>,
}

/// Allocated bytes by kind, in the sense of size(1) plus a split-out
/// read-only data figure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizes {
    /// Executable sections.
    pub text: u64,
    /// Read-only, non-executable allocated sections.
    pub rodata: u64,
    /// Writable sections with file contents.
    pub data: u64,
    /// Writable sections without file contents.
    pub bss: u64,
}

/// The outcome of checking one object.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Why the object cannot be loaded; empty when it passes.
    pub refusals: Vec<String>,
    /// Things worth knowing that do not stop loading.
    pub warnings: Vec<String>,
    /// Allocated section sizes.
    pub sizes: Sizes,
}

/// Computes the allocated sizes of `obj`.
pub fn sizes(obj: &ElfObject) -> Sizes {
    let mut s = Sizes::default();
    for sec in obj.sections.iter().filter(|s| s.flags & SHF_ALLOC != 0) {
        if sec.flags & SHF_EXECINSTR != 0 {
            s.text += sec.size;
        } else if sec.kind == SHT_NOBITS {
            s.bss += sec.size;
        } else if sec.flags & SHF_WRITE != 0 {
            s.data += sec.size;
        } else {
            s.rodata += sec.size;
        }
    }
    s
}

fn is_debug_section(name: &str) -> bool {
    name.starts_with(".debug")
        || name.starts_with(".zdebug")
        || name.starts_with(".stab")
        || name.starts_with(".gnu.debuglto")
}

fn is_unwind_section(s: &Section) -> bool {
    s.kind == SHT_X86_64_UNWIND
        || s.name == ".eh_frame"
        || s.name == ".eh_frame_hdr"
        || s.name == ".gcc_except_table"
        || s.name.starts_with(".gcc_except_table.")
}

fn location(obj: &ElfObject, r: &Relocation) -> String {
    format!("{}+{:#x}", obj.section_name(r.target), r.offset)
}

fn check_header(obj: &ElfObject, out: &mut Vec<String>) -> bool {
    let mut ok = true;
    if obj.file_type != ET_REL {
        out.push(format!(
            "not a relocatable object (e_type {}, ET_REL expected): kernel modules are linked with -r",
            obj.file_type
        ));
        ok = false;
    }
    if obj.machine != EM_X86_64 {
        out.push(format!(
            "not an x86-64 object (e_machine {}, EM_X86_64 expected)",
            obj.machine
        ));
        ok = false;
    }
    ok
}

fn check_sections(obj: &ElfObject, report: &mut Report) {
    for s in obj.sections.iter().skip(1) {
        if s.flags & SHF_TLS != 0 || s.name.starts_with(".tdata") || s.name.starts_with(".tbss") {
            report.refusals.push(format!(
                "TLS section `{}`: kernel modules have no thread-local storage",
                s.name
            ));
        } else if is_debug_section(&s.name) {
            report.refusals.push(format!(
                "debug section `{}` present: the module loader would load it; strip it (objcopy --strip-debug)",
                s.name
            ));
        } else if is_unwind_section(s) {
            report.refusals.push(format!(
                "unwind section `{}` present: nothing unwinds in the kernel; discard it",
                s.name
            ));
        } else if s.kind == SHT_PROGBITS && s.flags & SHF_ALLOC == 0 && s.size > 0 {
            report.warnings.push(format!(
                "non-allocated section `{}` ({} bytes) is carried in the module; consider discarding it",
                s.name, s.size
            ));
        }
    }
}

fn check_relocations(obj: &ElfObject, cfg: &Config, report: &mut Report) {
    // One line per offending type: how many, and the first place.
    let mut by_kind: BTreeMap<u32, (usize, &Relocation)> = BTreeMap::new();
    for r in &obj.relocations {
        // Relocations of discarded debug/unwind sections are reported with
        // their section already.
        let target = obj.sections.get(r.target);
        if target.is_some_and(|t| is_debug_section(&t.name) || is_unwind_section(t)) {
            continue;
        }
        if reloc::loader_accepts(r.kind, cfg.allow_plt32) {
            continue;
        }
        by_kind.entry(r.kind).or_insert((0, r)).0 += 1;
    }
    for (kind, (count, first)) in by_kind {
        let name = reloc::name(kind);
        let place = format!(
            "{} {}, first at {} against `{}`",
            count,
            if count == 1 { "entry" } else { "entries" },
            location(obj, first),
            obj.symbol_label(first.symbol)
        );
        let msg = if reloc::is_tls(kind) {
            format!("TLS relocation {name} ({place}): kernel modules have no thread-local storage")
        } else if kind == reloc::R_PLT32 {
            format!(
                "relocation {name} ({place}) is not applied by the NetBSD amd64 module loader (kobj_machdep.c rev. 1.6); rewrite it with `kobjcheck fix-plt32`, or pass --allow-plt32 if every target kernel applies it"
            )
        } else if name.contains("GOT") || name.contains("PLTOFF") {
            format!(
                "relocation {name} ({place}) is not applied by the NetBSD amd64 module loader: GOT-relative code; build with a static relocation model (-fno-pic / relocation-model=static)"
            )
        } else {
            format!("relocation {name} ({place}) is not applied by the NetBSD amd64 module loader")
        };
        report.refusals.push(msg);
    }
}

fn has_prefix(name: &str, prefixes: &[String]) -> bool {
    prefixes.iter().any(|p| name.starts_with(p.as_str()))
}

fn check_symbols(obj: &ElfObject, cfg: &Config, report: &mut Report) {
    let global_prefixes: Vec<String> = if cfg.global_prefixes.is_empty() {
        DEFAULT_GLOBAL_PREFIXES
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        cfg.global_prefixes.clone()
    };
    for s in obj.symbols.iter().skip(1) {
        if s.kind == STT_FILE || s.kind == STT_SECTION {
            continue;
        }
        if s.kind == STT_TLS {
            report.refusals.push(format!(
                "TLS symbol `{}`: kernel modules have no thread-local storage",
                s.name
            ));
            continue;
        }
        if s.shndx == SHN_COMMON {
            report.refusals.push(format!(
                "common symbol `{}`: give it storage (compile with -fno-common, or link with -d)",
                s.name
            ));
            continue;
        }
        if s.is_undefined() {
            if s.bind == STB_WEAK {
                report.refusals.push(format!(
                    "undefined weak symbol `{}`: the module loader refuses undefined weak symbols",
                    s.name
                ));
            } else if !cfg.kernel_symbols.contains_key(&s.name)
                && !cfg.allowed_undefined.contains(&s.name)
                && !has_prefix(&s.name, &cfg.allowed_undefined_prefixes)
            {
                report.refusals.push(format!(
                    "undefined symbol `{}` is neither a listed kernel symbol nor a shim function: the module loader could not resolve it",
                    s.name
                ));
            }
            continue;
        }
        if s.bind != STB_GLOBAL && s.bind != STB_WEAK {
            continue;
        }
        if s.shndx == SHN_ABS && s.name.is_empty() {
            continue;
        }
        if let Some(header) = cfg.kernel_symbols.get(&s.name) {
            report.refusals.push(format!(
                "defined global symbol `{}` is also a kernel symbol ({header}): it would clash at load time",
                s.name
            ));
        } else if !has_prefix(&s.name, &global_prefixes) {
            report.refusals.push(format!(
                "defined global symbol `{}` does not start with an allowed module prefix ({}) and could clash with a kernel symbol",
                s.name,
                global_prefixes.join(", ")
            ));
        }
    }
}

/// Runs every check that needs only the parsed file.
pub fn check_object(obj: &ElfObject, cfg: &Config) -> Report {
    let mut report = Report {
        sizes: sizes(obj),
        ..Report::default()
    };
    if !check_header(obj, &mut report.refusals) {
        return report;
    }
    check_sections(obj, &mut report);
    check_relocations(obj, cfg, &mut report);
    check_symbols(obj, cfg, &mut report);
    report
}

/// Turns instruction findings into refusal lines (capped).
pub fn fpu_refusals(found: &[FpuUse]) -> Vec<String> {
    let mut out: Vec<String> = found
        .iter()
        .take(MAX_FPU_LINES)
        .map(|f| {
            format!(
                "floating-point/SIMD instruction at {}+{:#x}: `{}` (no SSE/AVX/x87/MMX in kernel code)",
                f.section,
                u64::from_str_radix(&f.address, 16).unwrap_or(0),
                f.text
            )
        })
        .collect();
    if found.len() > MAX_FPU_LINES {
        out.push(format!(
            "floating-point/SIMD instructions: {} more not listed",
            found.len() - MAX_FPU_LINES
        ));
    }
    out
}
