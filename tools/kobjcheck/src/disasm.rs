// SPDX-License-Identifier: BSD-2-Clause
//! Finds floating-point and SIMD instructions (SSE, AVX, AVX-512, x87,
//! MMX) in the output of `objdump -d`. Kernel code must not touch that
//! state: NetBSD does not save it around kernel code that is not wrapped
//! in fpu_kern_enter().

use std::process::Command;

/// One instruction the kernel must not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FpuUse {
    /// Section the instruction is in.
    pub section: String,
    /// Address (offset in the section for a relocatable object).
    pub address: String,
    /// The instruction as objdump printed it.
    pub text: String,
}

/// Instruction prefixes objdump prints as separate words.
const PREFIXES: &[&str] = &[
    "cs", "ds", "es", "fs", "gs", "ss", "data16", "data32", "addr16", "addr32", "lock", "rep",
    "repe", "repz", "repne", "repnz", "notrack", "bnd", "xacquire", "xrelease", "rex", "rex.w",
    "rex.r", "rex.x", "rex.b", "rex.wr", "rex.wx", "rex.wb", "rex.rx", "rex.rb", "rex.xb",
    "rex.wrx", "rex.wrb", "rex.wxb", "rex.rxb", "rex.wrxb", "{disp8}", "{disp32}", "{vex}",
    "{vex3}", "{evex}",
];

/// Mnemonics that touch FPU/SIMD state without naming a SIMD register.
const STATE_MNEMONICS: &[&str] = &[
    "emms",
    "femms",
    "ldmxcsr",
    "stmxcsr",
    "vldmxcsr",
    "vstmxcsr",
    "vzeroupper",
    "vzeroall",
    "xsave",
    "xsave64",
    "xsaveopt",
    "xsaveopt64",
    "xsavec",
    "xsavec64",
    "xsaves",
    "xsaves64",
    "xrstor",
    "xrstor64",
    "xrstors",
    "xrstors64",
];

/// Whether a register operand names SIMD or x87 state: %xmmN, %ymmN,
/// %zmmN, %mmN, %st / %st(N), or an AVX-512 mask register %kN.
fn names_fpu_register(operands: &str) -> bool {
    let b = operands.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            i += 1;
            continue;
        }
        let rest = &operands[i + 1..];
        let digit_after = |p: &str| {
            rest.strip_prefix(p)
                .and_then(|r| r.chars().next())
                .is_some_and(|c| c.is_ascii_digit())
        };
        if digit_after("xmm") || digit_after("ymm") || digit_after("zmm") || digit_after("mm") {
            return true;
        }
        if let Some(r) = rest.strip_prefix("st") {
            // %st, %st(1); not %sp/%ss/...
            if r.is_empty() || r.starts_with('(') || r.starts_with(',') || r.starts_with(' ') {
                return true;
            }
        }
        if digit_after("k") {
            return true;
        }
        i += 1;
    }
    false
}

/// Whether one instruction (mnemonic and operands, prefixes allowed)
/// uses FPU or SIMD state.
pub fn instruction_uses_fpu(insn: &str) -> bool {
    let mut words = insn.split_whitespace().peekable();
    while let Some(w) = words.peek() {
        if PREFIXES.contains(&w.to_ascii_lowercase().as_str()) {
            words.next();
        } else {
            break;
        }
    }
    let Some(mnemonic) = words.next() else {
        return false;
    };
    let mnemonic = mnemonic.to_ascii_lowercase();
    // Every x87 instruction (fld, fstp, fadd, fnstcw, fxsave, ...) starts
    // with 'f'; no integer instruction does.
    if mnemonic.starts_with('f') || STATE_MNEMONICS.contains(&mnemonic.as_str()) {
        return true;
    }
    let operands: String = words.collect::<Vec<_>>().join(" ");
    let operands = operands.split('#').next().unwrap_or("");
    names_fpu_register(operands)
}

/// Scans `objdump -d` output (AT&T syntax, with or without raw bytes).
pub fn scan_objdump_output(text: &str) -> Vec<FpuUse> {
    let mut out = Vec::new();
    let mut section = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Disassembly of section ") {
            section = rest.trim_end_matches(':').to_string();
            continue;
        }
        // Instruction lines: "  addr:\t[bytes\t]insn".
        let Some((addr, rest)) = line.split_once(":\t") else {
            continue;
        };
        let addr = addr.trim();
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        let fields: Vec<&str> = rest.split('\t').collect();
        // With raw bytes the instruction is the last tab field; a line with
        // only bytes (a continuation) has a single field of hex pairs.
        let insn = if fields.len() >= 2 {
            fields[fields.len() - 1]
        } else {
            let f = fields[0].trim();
            if f.split_whitespace()
                .all(|w| w.len() == 2 && w.chars().all(|c| c.is_ascii_hexdigit()))
            {
                continue;
            }
            f
        };
        if instruction_uses_fpu(insn) {
            out.push(FpuUse {
                section: section.clone(),
                address: addr.to_string(),
                text: insn.split_whitespace().collect::<Vec<_>>().join(" "),
            });
        }
    }
    out
}

/// Runs `objdump -d` on `path` and scans its output.
pub fn scan_file(objdump: &str, path: &str) -> Result<Vec<FpuUse>, String> {
    let out = Command::new(objdump)
        .args(["-d", "--no-show-raw-insn", "-M", "att", path])
        .output()
        .map_err(|e| format!("cannot run `{objdump}`: {e} (install binutils)"))?;
    if !out.status.success() {
        return Err(format!(
            "`{objdump} -d {path}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(scan_objdump_output(&String::from_utf8_lossy(&out.stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_simd_and_x87() {
        for i in [
            "movss (%rdi),%xmm0",
            "vmovdqu %ymm1,(%rax)",
            "vpaddd %zmm1,%zmm2,%zmm3",
            "movq %mm0,%rax",
            "fldt 0x8(%rsp)",
            "fstp %st(1)",
            "fnstcw -0x2(%rsp)",
            "ldmxcsr (%rax)",
            "emms",
            "kmovw %k1,%eax",
            "data16 movaps %xmm0,(%rsp)",
        ] {
            assert!(instruction_uses_fpu(i), "{i}");
        }
    }

    #[test]
    fn passes_integer_code() {
        for i in [
            "mov %rsp,%rbp",
            "cs nopw 0x0(%rax,%rax,1)",
            "rep stos %al,%es:(%rdi)",
            "mov %fs:0x28,%rax",
            "call 0 <foo>",
            "mfence",
            "lock cmpxchg %rsi,(%rdi)",
            "mov %ss,%eax",
            "movzbl %sil,%eax",
            "ret",
        ] {
            assert!(!instruction_uses_fpu(i), "{i}");
        }
    }

    #[test]
    fn parses_objdump_lines() {
        let text = "\nfoo.o:     file format elf64-x86-64\n\n\nDisassembly of section .text:\n\n\
                    0000000000000000 <f>:\n   0:\tf3 0f 10 07          \tmovss  (%rdi),%xmm0\n\
                    \x20  4:\tc3                   \tret\n\n\
                    Disassembly of section .text.g:\n\n0000000000000000 <g>:\n   0:\tmov    %rdi,%rax\n";
        let found = scan_objdump_output(text);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].section, ".text");
        assert_eq!(found[0].address, "0");
        assert_eq!(found[0].text, "movss (%rdi),%xmm0");
    }
}
