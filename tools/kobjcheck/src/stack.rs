// SPDX-License-Identifier: BSD-2-Clause
//! The deepest stack use of the call chains that start at a module's entry
//! points, measured from the object's code (`objdump -dr`) and its data
//! relocations (`objdump -r`).
//!
//! What is measured, and what is assumed:
//!
//! - **Frames.** Every function's instructions are walked from its entry
//!   along fall-through and branches inside the function (jump tables
//!   included: their targets are the relocations that point into the
//!   function's interior), tracking how far %rsp is below its value at
//!   entry: `push` (8 bytes; `pushw` 2), `pop`, `sub`/`add $N,%rsp`,
//!   `lea N(%rsp),%rsp`, `and $-A,%rsp` (counted as A more bytes),
//!   `enter`, and the frame-pointer pair `mov %rsp,%rbp` ...
//!   `mov %rbp,%rsp`/`leave`/`lea N(%rbp),%rsp`. Any other write to %rsp
//!   (`sub %rax,%rsp`, `mov %rax,%rsp`, a loop that keeps pushing) makes
//!   the frame unbounded, which fails the check. Code the walk does not
//!   reach is counted at the function's deepest point.
//! - **A function's figure** is its return address (8 bytes) plus the
//!   deepest of: its own deepest point, and at each call site the depth
//!   there plus the callee's figure. A tail jump to another function
//!   reuses the return address: depth there plus the callee's figure
//!   minus 8. An entry point's figure therefore counts the return address
//!   its caller pushed.
//! - **Direct calls and jumps** are resolved through their relocation
//!   (`S + A` plus the distance from the relocated field to the end of the
//!   instruction) or, without one, through the address objdump prints.
//!   Any call or jump to another function counts, conditional jumps too.
//! - **Undefined symbols** (kernel functions; shim functions when only the
//!   Rust object is given) are outside the object: they are listed, and
//!   their own stack use is not in the figures.
//! - **Indirect calls** (`call *...`, and `jmp *...` that is not a jump
//!   table) may reach any *address-taken* function: one whose first byte
//!   a relocation other than a direct call's or jump's points at (vtables,
//!   `fmt::Argument` function pointers, callbacks given to the kernel).
//!   The object carries no types, so every indirect call reaches every
//!   such function. In Rust that closes cycles through `core::fmt` that no
//!   real run takes: a writer's `write_str`, called through
//!   `&mut dyn Write`, could be any `Debug::fmt`, which calls a writer
//!   again. Taken alone the rule proves nothing (every entry point that
//!   formats would be unbounded). The bound used instead: **a chain goes
//!   through at most `indirect_depth` indirect calls**; an indirect call
//!   past that counts its return address only. Chains through more
//!   indirect calls are not covered. A real formatting chain makes one
//!   indirect call for the argument's `fmt`, one per nested value whose
//!   `fmt` the compiler did not call directly, and one for the writer;
//!   the caller of [`analyse`] picks the depth and should print how the
//!   figure grows with it.
//! - **Panic handlers** (`rust_begin_unwind`): a chain enters one once.
//!   A call into a panic handler from inside one is not followed (it is
//!   counted in [`Analysis::nested_panic`]) unless it closes a cycle of
//!   calls without a pointer, which is recursion like any other.
//! - **Recursion**: a cycle of direct calls and tail jumps reachable from
//!   an entry point. It is reported by name and fails the check; figures
//!   through it count one pass. Cycles through indirect calls are what
//!   the depth bound cuts.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// One relocation record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloc {
    /// Offset of the relocated field in its section.
    pub offset: u64,
    /// Type as objdump names it (`R_X86_64_PC32`).
    pub kind: String,
    /// Symbol (a function, a section, or an undefined name).
    pub symbol: String,
    /// Addend.
    pub addend: i64,
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insn {
    /// Address (offset in the section for a relocatable object).
    pub addr: u64,
    /// Mnemonic, prefixes dropped, lower case.
    pub mnemonic: String,
    /// Operands as objdump printed them (AT&T), comment dropped.
    pub operands: String,
    /// Relocations applied inside this instruction.
    pub relocs: Vec<Reloc>,
}

/// One function: the code from its label to the next label of the section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// Symbol name as in the object (mangled).
    pub name: String,
    /// Section the function is in.
    pub section: String,
    /// Address of its first byte.
    pub start: u64,
    /// Instructions in address order.
    pub insns: Vec<Insn>,
}

/// What `objdump -dr` and `objdump -r` show of an object.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Every labelled function of every disassembled section.
    pub functions: Vec<Function>,
    /// Relocations of the sections that were not disassembled (data),
    /// with the section each is in.
    pub data_relocs: Vec<(String, Reloc)>,
}

/// Instruction prefixes objdump prints as separate words.
const PREFIXES: &[&str] = &[
    "cs", "ds", "es", "fs", "gs", "ss", "data16", "data32", "addr16", "addr32", "lock", "rep",
    "repe", "repz", "repne", "repnz", "notrack", "bnd", "xacquire", "xrelease",
];

fn parse_hex(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    if s.is_empty() {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// Splits objdump's `symbol+0x10` / `symbol-0x4` / `symbol`.
fn parse_reloc_value(v: &str) -> (String, i64) {
    let v = v.trim();
    for (i, c) in v.char_indices().rev() {
        if (c == '+' || c == '-') && i > 0 && v[i + 1..].starts_with("0x") {
            if let Some(n) = parse_hex(&v[i + 1..]) {
                let n = n as i64;
                return (v[..i].to_string(), if c == '-' { -n } else { n });
            }
        }
    }
    (v.to_string(), 0)
}

/// A relocation line of `objdump -dr`: `\t\t\t3c: R_X86_64_PC32\tsym-0x4`.
fn parse_inline_reloc(line: &str) -> Option<Reloc> {
    let t = line.trim();
    let (off, rest) = t.split_once(':')?;
    let offset = parse_hex(off)?;
    let rest = rest.trim();
    if !rest.starts_with("R_") {
        return None;
    }
    let mut words = rest.split_whitespace();
    let kind = words.next()?.to_string();
    let (symbol, addend) = parse_reloc_value(words.next().unwrap_or(""));
    Some(Reloc {
        offset,
        kind,
        symbol,
        addend,
    })
}

/// Splits an instruction into mnemonic and operands, dropping prefixes
/// and the `# comment` objdump appends.
fn split_insn(text: &str) -> (String, String) {
    let text = text.split('#').next().unwrap_or("").trim();
    let mut rest = text;
    loop {
        let (w, tail) = match rest.split_once(char::is_whitespace) {
            Some((w, t)) => (w, t.trim_start()),
            None => (rest, ""),
        };
        let lw = w.to_ascii_lowercase();
        if PREFIXES.contains(&lw.as_str()) || lw.starts_with("rex") || lw.starts_with('{') {
            if tail.is_empty() {
                // A lone prefix (`rep` before a padding byte, `cs` alone).
                return (lw, String::new());
            }
            rest = tail;
            continue;
        }
        return (lw, tail.trim().to_string());
    }
}

/// Parses `objdump -dr` output (AT&T, with or without raw bytes).
pub fn parse_disassembly(text: &str) -> Vec<Function> {
    let mut functions: Vec<Function> = Vec::new();
    let mut section = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Disassembly of section ") {
            section = rest.trim_end_matches(':').trim().to_string();
            continue;
        }
        // A label: "0000000000004ac0 <name>:".
        if let Some((addr, rest)) = line.split_once(' ') {
            if let Some(name) = rest.strip_prefix('<').and_then(|r| r.strip_suffix(">:")) {
                if let Some(start) = parse_hex(addr) {
                    functions.push(Function {
                        name: name.to_string(),
                        section: section.clone(),
                        start,
                        insns: Vec::new(),
                    });
                    continue;
                }
            }
        }
        let Some(f) = functions.last_mut() else {
            continue;
        };
        if let Some(r) = parse_inline_reloc(line) {
            // Belongs to the instruction whose bytes hold the field.
            if let Some(i) = f.insns.iter_mut().rev().find(|i| i.addr <= r.offset) {
                i.relocs.push(r);
            }
            continue;
        }
        // An instruction: "    4ac0:\tpush   %rbp" (or with raw bytes).
        let Some((addr, rest)) = line.split_once(":\t") else {
            continue;
        };
        let addr = addr.trim();
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        let Some(addr) = parse_hex(addr) else {
            continue;
        };
        let fields: Vec<&str> = rest.split('\t').collect();
        let insn = if fields.len() >= 2 {
            fields[fields.len() - 1]
        } else {
            let only = fields[0].trim();
            if only
                .split_whitespace()
                .all(|w| w.len() == 2 && w.chars().all(|c| c.is_ascii_hexdigit()))
            {
                continue; // continuation of raw bytes
            }
            only
        };
        let (mnemonic, operands) = split_insn(insn);
        if mnemonic.is_empty() || mnemonic == "..." {
            continue;
        }
        f.insns.push(Insn {
            addr,
            mnemonic,
            operands,
            relocs: Vec::new(),
        });
    }
    functions
}

/// Parses `objdump -r` output, keeping the records of sections not in
/// `skip` (the disassembled ones, whose relocations are inline).
pub fn parse_relocations(text: &str, skip: &BTreeSet<String>) -> Vec<(String, Reloc)> {
    let mut out = Vec::new();
    let mut section: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("RELOCATION RECORDS FOR [") {
            let name = rest.trim_end_matches(':').trim_end_matches(']').to_string();
            section = (!skip.contains(&name)).then_some(name);
            continue;
        }
        let Some(sec) = &section else {
            continue;
        };
        let mut words = line.split_whitespace();
        let (Some(off), Some(kind), Some(value)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let (Some(offset), true) = (parse_hex(off), kind.starts_with("R_")) else {
            continue;
        };
        let (symbol, addend) = parse_reloc_value(value);
        out.push((
            sec.clone(),
            Reloc {
                offset,
                kind: kind.to_string(),
                symbol,
                addend,
            },
        ));
    }
    out
}

/// Reads both listings of `path` with `objdump`.
pub fn read_listing(objdump: &str, path: &str) -> Result<Listing, String> {
    let run = |args: &[&str]| -> Result<String, String> {
        let out = Command::new(objdump)
            .args(args)
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run `{objdump}`: {e} (install binutils)"))?;
        if !out.status.success() {
            return Err(format!(
                "`{objdump} {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let code = run(&["-dr", "--no-show-raw-insn", "-M", "att"])?;
    let relocs = run(&["-r"])?;
    Ok(Listing::from_text(&code, &relocs))
}

impl Listing {
    /// Builds a listing from the text of `objdump -dr` and `objdump -r`.
    pub fn from_text(disassembly: &str, relocations: &str) -> Listing {
        let functions = parse_disassembly(disassembly);
        let code: BTreeSet<String> = functions.iter().map(|f| f.section.clone()).collect();
        let data_relocs = parse_relocations(relocations, &code);
        Listing {
            functions,
            data_relocs,
        }
    }
}

/// Where a call or jump goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Callee {
    /// A function of the object (index).
    Func(usize),
    /// A symbol the object does not define.
    External(String),
    /// Through a pointer.
    Indirect,
}

/// One call (or tail jump) and the depth it is made at.
#[derive(Debug, Clone)]
struct Site {
    /// Bytes below the function's entry %rsp at the call.
    depth: u64,
    /// A tail jump (reuses the return address) rather than a call.
    tail: bool,
    callee: Callee,
}

/// What the walk found in one function.
#[derive(Debug, Clone, Default)]
struct Frame {
    /// Deepest point below the entry %rsp, return address not counted.
    deepest: u64,
    sites: Vec<Site>,
    /// Why the frame cannot be bounded, if it cannot.
    unbounded: Option<String>,
}

fn is_pc_relative(kind: &str) -> bool {
    matches!(
        kind,
        "R_X86_64_PC32" | "R_X86_64_PLT32" | "R_X86_64_PC64" | "R_X86_64_PC16" | "R_X86_64_PC8"
    )
}

/// A resolved code address: (section, address).
type Loc = (String, u64);

/// The object's functions, indexed for resolving addresses.
struct Index<'a> {
    functions: &'a [Function],
    /// Per section, function starts in order with the function's index.
    by_section: BTreeMap<&'a str, Vec<(u64, usize)>>,
    by_name: BTreeMap<&'a str, usize>,
}

impl<'a> Index<'a> {
    fn new(functions: &'a [Function]) -> Index<'a> {
        let mut by_section: BTreeMap<&str, Vec<(u64, usize)>> = BTreeMap::new();
        let mut by_name = BTreeMap::new();
        for (i, f) in functions.iter().enumerate() {
            by_section
                .entry(f.section.as_str())
                .or_default()
                .push((f.start, i));
            by_name.entry(f.name.as_str()).or_insert(i);
        }
        for v in by_section.values_mut() {
            v.sort();
        }
        Index {
            functions,
            by_section,
            by_name,
        }
    }

    /// Where `symbol + value` is: a section and an offset in it, for a
    /// section symbol (`.rodata+0x20`) or a function of the object.
    fn locate(&self, symbol: &str, value: i64) -> Option<Loc> {
        if self.is_section(symbol) {
            return Some((symbol.to_string(), u64::try_from(value).ok()?));
        }
        let &i = self.by_name.get(symbol)?;
        let f = &self.functions[i];
        Some((f.section.clone(), f.start.checked_add_signed(value)?))
    }

    /// The function containing `loc`, and whether `loc` is its first byte.
    fn function_at(&self, loc: &Loc) -> Option<(usize, bool)> {
        let list = self.by_section.get(loc.0.as_str())?;
        let pos = list.partition_point(|&(s, _)| s <= loc.1);
        let &(start, i) = list.get(pos.checked_sub(1)?)?;
        // Past the last instruction of the section's last function: not code.
        let f = &self.functions[i];
        let last = f.insns.last().map_or(start, |x| x.addr);
        let next = list.get(pos).map(|&(s, _)| s);
        if next.is_none() && loc.1 > last.saturating_add(16) {
            return None;
        }
        Some((i, start == loc.1))
    }

    /// A section's name: one with code here, or any name with a leading
    /// dot (no function or data symbol of C or Rust has one).
    fn is_section(&self, name: &str) -> bool {
        self.by_section.contains_key(name) || name.starts_with('.')
    }
}

/// The address right after instruction `k` of `f` (the next instruction,
/// or the next function of the section).
fn insn_end(f: &Function, k: usize) -> Option<u64> {
    f.insns.get(k + 1).map(|n| n.addr)
}

/// Where relocation `r` in instruction `k` of `f` points.
fn reloc_target(idx: &Index, f: &Function, k: usize, r: &Reloc) -> Result<Loc, String> {
    let mut value = r.addend;
    if is_pc_relative(&r.kind) {
        // The CPU adds the field to the end of the instruction; the field
        // holds S + A - P.
        let end = insn_end(f, k).unwrap_or(r.offset + 4);
        value += i64::try_from(end.saturating_sub(r.offset)).unwrap_or(4);
    }
    idx.locate(&r.symbol, value).ok_or_else(|| r.symbol.clone())
}

/// Direct branch target written as `4ac0 <name+0x40>`.
fn printed_target(operands: &str) -> Option<u64> {
    parse_hex(operands.split_whitespace().next()?)
}

fn base_mnemonic(m: &str) -> &str {
    match m {
        "callq" => "call",
        "jmpq" => "jmp",
        "retq" => "ret",
        "pushq" => "push",
        "popq" => "pop",
        "subq" => "sub",
        "addq" => "add",
        "leaq" => "lea",
        "andq" => "and",
        "movq" => "mov",
        "leaveq" => "leave",
        "enterq" => "enter",
        other => other,
    }
}

fn is_cond_jump(m: &str) -> bool {
    m.starts_with('j') && m != "jmp"
        || matches!(m, "loop" | "loope" | "loopne" | "loopz" | "loopnz")
}

/// Operands split at top-level commas.
fn operand_list(ops: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in ops.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(ops[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = ops[start..].trim();
    if !last.is_empty() {
        out.push(last);
    }
    out
}

fn parse_imm(s: &str) -> Option<i64> {
    let s = s.strip_prefix('$')?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let v = parse_hex(s)? as i64; // 0xffff...ff80 wraps to the negative value
    Some(if neg { -v } else { v })
}

/// `disp(%reg)` with nothing else: (disp, reg).
fn parse_base_disp(s: &str) -> Option<(i64, &str)> {
    let (disp, rest) = s.split_once('(')?;
    let reg = rest.strip_suffix(')')?;
    if reg.contains(',') {
        return None;
    }
    let d = if disp.is_empty() {
        0
    } else {
        let (neg, h) = match disp.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, disp),
        };
        let v = parse_hex(h)? as i64;
        if neg {
            -v
        } else {
            v
        }
    };
    Some((d, reg))
}

fn is_rsp(op: &str) -> bool {
    matches!(op, "%rsp" | "%esp" | "%sp" | "%spl")
}

fn is_rbp(op: &str) -> bool {
    matches!(op, "%rbp" | "%ebp" | "%bp" | "%bpl")
}

/// The stack effect of one instruction on the walk state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    /// Bytes below the entry %rsp.
    depth: i64,
    /// Depth %rbp was set to with `mov %rsp,%rbp`, while %rbp holds it.
    rbp: Option<i64>,
}

/// Applies `insn` to `s`; Err names an untracked write to %rsp.
fn step_state(insn: &Insn, s: State) -> Result<State, String> {
    let m = base_mnemonic(&insn.mnemonic);
    let ops = operand_list(&insn.operands);
    let dest = ops.last().copied().unwrap_or("");
    let mut n = s;
    match m {
        "push" | "pushw" | "pushf" | "pushfq" | "pushfw" => {
            n.depth += if m.ends_with('w') { 2 } else { 8 };
            return Ok(n);
        }
        "pop" | "popw" | "popf" | "popfq" | "popfw" => {
            if is_rsp(dest) {
                return Err("pop %rsp".to_string());
            }
            if is_rbp(dest) {
                n.rbp = None;
            }
            n.depth -= if m.ends_with('w') { 2 } else { 8 };
            return Ok(n);
        }
        "leave" => {
            let Some(b) = s.rbp else {
                return Err("leave without a tracked frame pointer".to_string());
            };
            n.depth = b - 8;
            n.rbp = None;
            return Ok(n);
        }
        "enter" => {
            let size = ops.first().and_then(|o| parse_imm(o)).unwrap_or(0);
            n.depth += 8;
            n.rbp = Some(n.depth);
            n.depth += size;
            return Ok(n);
        }
        "cmp" | "cmpq" | "test" | "testq" | "bt" | "btq" => return Ok(n),
        _ => {}
    }
    if m.starts_with("xchg") && ops.iter().any(|o| is_rsp(o)) {
        return Err(format!("{} {}", insn.mnemonic, insn.operands));
    }
    if is_rsp(dest) {
        let src = ops.first().copied().unwrap_or("");
        match (m, ops.len()) {
            ("sub", 2) if parse_imm(src).is_some() => n.depth += parse_imm(src).unwrap_or(0),
            ("add", 2) if parse_imm(src).is_some() => n.depth -= parse_imm(src).unwrap_or(0),
            ("and", 2) if parse_imm(src).is_some_and(|v| v < 0) => {
                // Realignment: at most the alignment more.
                n.depth += -parse_imm(src).unwrap_or(0);
            }
            ("lea", 2) => match parse_base_disp(src) {
                Some((d, r)) if is_rsp(r) => n.depth -= d,
                Some((d, r)) if is_rbp(r) && s.rbp.is_some() => {
                    n.depth = s.rbp.unwrap_or(0) - d;
                }
                _ => return Err(format!("{} {}", insn.mnemonic, insn.operands)),
            },
            ("mov", 2) if is_rbp(src) && s.rbp.is_some() => n.depth = s.rbp.unwrap_or(0),
            _ => return Err(format!("{} {}", insn.mnemonic, insn.operands)),
        }
        return Ok(n);
    }
    if is_rbp(dest) {
        let src = ops.first().copied().unwrap_or("");
        n.rbp = if m == "mov" && ops.len() == 2 && is_rsp(src) {
            Some(s.depth)
        } else {
            None
        };
    }
    Ok(n)
}

/// How many times one instruction's entry state may grow before the walk
/// calls the frame unbounded.
const MAX_REVISITS: u32 = 64;

/// Walks function `fi` and records its deepest point and its call sites.
/// What an indirect jump reads its target from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JumpKind {
    /// A switch's table of places inside the function.
    Table,
    /// A table of function starts: a tail call through a pointer.
    Pointers,
    /// A register or a table the relocations do not show: both.
    Unknown,
}

/// Entries looked at from a jump's table base (a table indexed from 1
/// has its base before the first entry).
const TABLE_PROBE: u64 = 4;

/// Classifies the indirect jump at instruction `k` of function `fi` by the
/// table its relocation points at.
fn jump_kind(idx: &Index, tables: &BTreeMap<Loc, Loc>, fi: usize, k: usize) -> JumpKind {
    let f = &idx.functions[fi];
    let Some(r) = f.insns.get(k).and_then(|i| i.relocs.first()) else {
        return JumpKind::Unknown;
    };
    let Ok((sec, base)) = reloc_target(idx, f, k, r) else {
        return JumpKind::Unknown;
    };
    for n in 0..TABLE_PROBE {
        let Some(entry) = tables.get(&(sec.clone(), base + 8 * n)) else {
            continue;
        };
        return match idx.function_at(entry) {
            Some((t, false)) if t == fi => JumpKind::Table,
            Some((_, true)) => JumpKind::Pointers,
            _ => JumpKind::Unknown,
        };
    }
    JumpKind::Unknown
}

fn walk(idx: &Index, fi: usize, interior: &BTreeSet<u64>, tables: &BTreeMap<Loc, Loc>) -> Frame {
    let f = &idx.functions[fi];
    let mut frame = Frame::default();
    let n = f.insns.len();
    let at: BTreeMap<u64, usize> = f
        .insns
        .iter()
        .enumerate()
        .map(|(k, i)| (i.addr, k))
        .collect();
    let here = |a: u64| -> Loc { (f.section.clone(), a) };
    let mut seen: Vec<Option<State>> = vec![None; n];
    let mut visits = vec![0u32; n];
    let mut work: Vec<(usize, State)> = Vec::new();
    if n > 0 {
        work.push((
            0,
            State {
                depth: 0,
                rbp: None,
            },
        ));
    }
    // Sites by instruction, so a revisit replaces rather than adds.
    let mut sites: BTreeMap<usize, Vec<Site>> = BTreeMap::new();
    let table_targets: Vec<usize> = interior.iter().filter_map(|a| at.get(a).copied()).collect();
    while let Some((k, s)) = work.pop() {
        let s = State {
            depth: s.depth.max(0),
            ..s
        };
        match seen[k] {
            Some(old) if old.depth >= s.depth && old.rbp == s.rbp => continue,
            Some(old) => {
                visits[k] += 1;
                if visits[k] > MAX_REVISITS {
                    frame.unbounded = Some(format!(
                        "%rsp keeps moving around a loop at {:#x}",
                        f.insns[k].addr
                    ));
                    break;
                }
                let rbp = if old.rbp == s.rbp { s.rbp } else { None };
                seen[k] = Some(State {
                    depth: old.depth.max(s.depth),
                    rbp,
                });
            }
            None => seen[k] = Some(s),
        }
        let s = seen[k].unwrap_or(s);
        let insn = &f.insns[k];
        let m = base_mnemonic(&insn.mnemonic);
        let depth = u64::try_from(s.depth).unwrap_or(0);
        frame.deepest = frame.deepest.max(depth);
        let is_call = m == "call";
        let is_jmp = m == "jmp";
        let cond = is_cond_jump(m);
        if is_call || is_jmp || cond {
            let indirect = insn.operands.starts_with('*');
            let mut branch: Vec<usize> = Vec::new();
            let mut site: Option<Callee> = None;
            if indirect {
                let kind = if is_jmp {
                    jump_kind(idx, tables, fi, k)
                } else {
                    JumpKind::Pointers
                };
                if kind != JumpKind::Pointers {
                    branch.extend(&table_targets);
                }
                if kind != JumpKind::Table {
                    site = Some(Callee::Indirect);
                }
            } else {
                let target = match insn.relocs.first() {
                    Some(r) => match reloc_target(idx, f, k, r) {
                        Ok(loc) => Ok(loc),
                        Err(sym) => Err(sym),
                    },
                    None => printed_target(&insn.operands)
                        .map(here)
                        .ok_or_else(|| insn.operands.clone()),
                };
                match target {
                    Ok(loc) => match idx.function_at(&loc) {
                        Some((t, _)) if t == fi && !is_call => {
                            if let Some(&kk) = at.get(&loc.1) {
                                branch.push(kk);
                            }
                        }
                        // A jump into the middle of another function is
                        // a split-off part (gcc's `.cold`) going back to
                        // its parent, whose own walk covers that code.
                        Some((_, false)) if !is_call => {}
                        Some((t, _)) => site = Some(Callee::Func(t)),
                        None => site = Some(Callee::External(loc.0)),
                    },
                    Err(sym) => site = Some(Callee::External(sym)),
                }
            }
            if let Some(callee) = site {
                sites.insert(
                    k,
                    vec![Site {
                        depth,
                        tail: !is_call,
                        callee,
                    }],
                );
            }
            for b in branch {
                work.push((b, s));
            }
            if (is_call || cond) && k + 1 < n {
                work.push((k + 1, s));
            }
            continue;
        }
        if matches!(
            m,
            "ret" | "iret" | "iretq" | "sysret" | "sysretq" | "ud2" | "hlt" | "int3"
        ) {
            continue;
        }
        match step_state(insn, s) {
            Ok(next) => {
                let d = u64::try_from(next.depth).unwrap_or(0);
                frame.deepest = frame.deepest.max(d);
                if k + 1 < n {
                    work.push((k + 1, next));
                }
            }
            Err(what) => {
                frame.unbounded = Some(format!("{what} at {:#x}", insn.addr));
                break;
            }
        }
    }
    // Calls the walk did not reach count at the deepest point.
    for (k, insn) in f.insns.iter().enumerate() {
        if seen[k].is_some() || frame.unbounded.is_some() {
            continue;
        }
        let m = base_mnemonic(&insn.mnemonic);
        let is_call = m == "call";
        if !(is_call || m == "jmp" || is_cond_jump(m)) {
            continue;
        }
        let callee = if insn.operands.starts_with('*') {
            if !is_call && jump_kind(idx, tables, fi, k) == JumpKind::Table {
                continue;
            }
            Callee::Indirect
        } else {
            let target = match insn.relocs.first() {
                Some(r) => reloc_target(idx, f, k, r).ok(),
                None => printed_target(&insn.operands).map(here),
            };
            match target.and_then(|l| idx.function_at(&l)) {
                Some((t, _)) if t == fi => continue,
                Some((_, false)) if !is_call => continue,
                Some((t, _)) => Callee::Func(t),
                None => Callee::External(insn.operands.clone()),
            }
        };
        sites.insert(
            k,
            vec![Site {
                depth: frame.deepest,
                tail: !is_call,
                callee,
            }],
        );
    }
    frame.sites = sites.into_values().flatten().collect();
    frame
}

/// The analysis of one object.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Function names (mangled), by index.
    pub names: Vec<String>,
    /// Per entry point, in name order.
    pub entries: Vec<EntryResult>,
    /// Each recursion found: the functions of the cycle, in call order.
    pub recursion: Vec<Vec<String>>,
    /// Functions whose frame cannot be bounded, and why.
    pub unbounded: Vec<(String, String)>,
    /// Undefined functions called from a chain (their stack is not counted).
    pub external: BTreeSet<String>,
    /// Indirect call sites reachable from an entry point.
    pub indirect_sites: usize,
    /// Address-taken functions (the candidates of every indirect call).
    pub address_taken: Vec<String>,
    /// The most indirect calls a chain is followed through.
    pub indirect_depth: u32,
    /// Whether some chain reached more indirect calls than that.
    pub indirect_cut: bool,
    /// Whether some chain reached a panic handler from inside one (not
    /// followed).
    pub nested_panic: bool,
}

/// One entry point's deepest chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryResult {
    /// The entry point's name.
    pub name: String,
    /// Deepest stack use in bytes, the caller's return address included.
    pub bytes: u64,
    /// The chain: (function, bytes it adds, reached through a pointer).
    pub chain: Vec<Link>,
    /// A recursion lies on some chain from this entry point.
    pub recursive: bool,
}

/// One function of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Function name (mangled), or the undefined symbol's.
    pub name: String,
    /// Bytes it adds to the chain: its depth at the next call, or its
    /// deepest point for the last one, return address included.
    pub bytes: u64,
    /// Reached through an indirect call.
    pub indirect: bool,
    /// Reached by a tail jump.
    pub tail: bool,
    /// An undefined symbol: its own use is not known.
    pub external: bool,
}

/// A state of the search: a function, the indirect calls a chain may
/// still go through, and whether the chain is already in the panic handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    f: usize,
    k: u32,
    panicking: bool,
}

/// Best result of one state.
#[derive(Debug, Clone, Copy)]
struct Best {
    bytes: u64,
    /// The site (index into the frame's sites) and the state it leads to
    /// on the deepest chain, or None when the function's own deepest
    /// point is it.
    next: Option<(usize, Option<Key>)>,
}

struct Solver<'a> {
    frames: &'a [Frame],
    /// Every address-taken function: what an indirect call in C (or in a
    /// function whose name is not Rust-mangled) may reach.
    candidates: &'a [usize],
    /// What an indirect call in a Rust function may reach: address-taken
    /// Rust functions and functions whose address Rust code takes.
    rust_candidates: &'a [usize],
    /// Whether each function is Rust (by its mangled name).
    rust: &'a [bool],
    /// Panic handlers: entered at most once on a chain.
    handlers: &'a BTreeSet<usize>,
    memo: BTreeMap<Key, Best>,
    on_stack: Vec<Key>,
    cycles: BTreeSet<Vec<usize>>,
    /// States from which a recursion is reachable.
    recursive: BTreeSet<Key>,
    cut: bool,
    nested_panic: bool,
    external: BTreeSet<String>,
    indirect_sites: BTreeSet<(usize, usize)>,
}

impl Solver<'_> {
    /// The state a call to `t` from `from` leads to, if it is followed: a
    /// panic handler called again from inside the panic handler is not,
    /// unless that closes a cycle (recursion, reported as such).
    fn enter(&mut self, t: usize, k: u32, from: Key) -> Option<Key> {
        let handler = self.handlers.contains(&t);
        let next = Key {
            f: t,
            k,
            panicking: from.panicking || handler,
        };
        if handler && from.panicking && !self.on_stack.contains(&next) {
            self.nested_panic = true;
            return None;
        }
        Some(next)
    }

    fn solve(&mut self, key: Key) -> Best {
        if let Some(&b) = self.memo.get(&key) {
            return b;
        }
        if let Some(pos) = self.on_stack.iter().position(|&s| s == key) {
            let mut cycle: Vec<usize> = self.on_stack[pos..].iter().map(|s| s.f).collect();
            // One canonical rotation, so each cycle is reported once.
            if let Some(min) = cycle
                .iter()
                .enumerate()
                .min_by_key(|(_, &g)| g)
                .map(|(i, _)| i)
            {
                cycle.rotate_left(min);
            }
            self.cycles.insert(cycle);
            for &s in &self.on_stack[pos..] {
                self.recursive.insert(s);
            }
            return Best {
                bytes: 0,
                next: None,
            };
        }
        self.on_stack.push(key);
        let frame = &self.frames[key.f];
        let mut best = Best {
            bytes: frame.deepest + 8,
            next: None,
        };
        let mut rec = false;
        for (si, site) in frame.sites.iter().enumerate() {
            // Our return address and depth at the site; a call pushes one
            // more return address, a tail jump reuses ours.
            let own = site.depth + 8;
            let push = if site.tail { 0 } else { 8 };
            let consider = |bytes: u64, next: Option<Key>, best: &mut Best| {
                if bytes > best.bytes {
                    *best = Best {
                        bytes,
                        next: Some((si, next)),
                    };
                }
            };
            let targets: Vec<(usize, u32)> = match &site.callee {
                Callee::Func(t) => vec![(*t, key.k)],
                Callee::External(name) => {
                    self.external.insert(name.clone());
                    consider(own + push, None, &mut best);
                    continue;
                }
                Callee::Indirect => {
                    self.indirect_sites.insert((key.f, si));
                    let candidates = if self.rust[key.f] {
                        self.rust_candidates
                    } else {
                        self.candidates
                    };
                    if key.k == 0 || candidates.is_empty() {
                        self.cut |= key.k == 0;
                        consider(own + push, None, &mut best);
                        continue;
                    }
                    candidates.iter().map(|&c| (c, key.k - 1)).collect()
                }
            };
            for (t, k) in targets {
                let Some(next) = self.enter(t, k, key) else {
                    consider(own + push, None, &mut best);
                    continue;
                };
                let b = self.solve(next);
                rec |= self.recursive.contains(&next);
                // The callee's figure holds its own return address.
                consider(
                    (own + push + b.bytes).saturating_sub(8),
                    Some(next),
                    &mut best,
                );
            }
        }
        self.on_stack.pop();
        if rec {
            self.recursive.insert(key);
        }
        // Inside a recursion the figure counts one pass; it is kept as is.
        self.memo.insert(key, best);
        best
    }
}

/// A Rust function: its name is mangled (v0 `_R...` or legacy `_ZN...`).
fn is_rust(name: &str) -> bool {
    name.starts_with("_R") || name.starts_with("_ZN")
}

/// Whether relocation `r` (at instruction `k` of `f`, or in data when
/// `insn` is None) takes a function's address rather than branching to it.
fn takes_address(insn: Option<&Insn>) -> bool {
    match insn {
        None => true,
        Some(i) => {
            let m = base_mnemonic(&i.mnemonic);
            let branch = m == "call" || m == "jmp" || is_cond_jump(m);
            !branch || i.operands.starts_with('*')
        }
    }
}

/// Analyses `listing`: the deepest chain from every function whose name
/// starts with one of `entry_prefixes`, following at most `indirect_depth`
/// indirect calls on a chain.
pub fn analyse(listing: &Listing, entry_prefixes: &[String], indirect_depth: u32) -> Analysis {
    analyse_with(
        listing,
        entry_prefixes,
        indirect_depth,
        &[DEFAULT_PANIC_HANDLER.to_string()],
    )
}

/// Rust's `#[panic_handler]` is emitted under this name.
pub const DEFAULT_PANIC_HANDLER: &str = "rust_begin_unwind";

/// As [`analyse`], naming the panic handlers: functions whose name ends
/// with one of `panic_handlers`. A chain enters a panic handler once; a
/// call to one from inside one is not followed (and is counted in
/// [`Analysis::nested_panic`]), unless it closes a cycle of direct calls,
/// which is recursion like any other.
pub fn analyse_with(
    listing: &Listing,
    entry_prefixes: &[String],
    indirect_depth: u32,
    panic_handlers: &[String],
) -> Analysis {
    let functions = &listing.functions;
    let idx = Index::new(functions);
    // Every relocation that points into code: address-taken starts and
    // interior labels (jump-table targets) per function.
    let mut taken: BTreeSet<usize> = BTreeSet::new();
    // Taken by Rust code, or Rust functions (vtable entries).
    let mut taken_by_rust: BTreeSet<usize> = BTreeSet::new();
    let mut interior: BTreeMap<usize, BTreeSet<u64>> = BTreeMap::new();
    let mut note = |loc: Loc, by_rust: bool| {
        if let Some((i, at_start)) = idx.function_at(&loc) {
            if at_start {
                taken.insert(i);
                if by_rust || is_rust(&functions[i].name) {
                    taken_by_rust.insert(i);
                }
            } else {
                interior.entry(i).or_default().insert(loc.1);
            }
        }
    };
    for (_, r) in &listing.data_relocs {
        if is_pc_relative(&r.kind) {
            continue; // not a pointer a table can hold
        }
        if let Some(loc) = idx.locate(&r.symbol, r.addend) {
            note(loc, false);
        }
    }
    for f in functions {
        for (k, insn) in f.insns.iter().enumerate() {
            for r in &insn.relocs {
                if !takes_address(Some(insn)) {
                    continue;
                }
                if let Ok(loc) = reloc_target(&idx, f, k, r) {
                    note(loc, is_rust(&f.name));
                }
            }
        }
    }
    // Data words that hold code addresses: (where, what).
    let tables: BTreeMap<Loc, Loc> = listing
        .data_relocs
        .iter()
        .filter(|(_, r)| !is_pc_relative(&r.kind))
        .filter_map(|(sec, r)| Some(((sec.clone(), r.offset), idx.locate(&r.symbol, r.addend)?)))
        .collect();
    let empty = BTreeSet::new();
    let frames: Vec<Frame> = (0..functions.len())
        .map(|i| walk(&idx, i, interior.get(&i).unwrap_or(&empty), &tables))
        .collect();
    let candidates: Vec<usize> = taken.iter().copied().collect();
    let rust_candidates: Vec<usize> = taken_by_rust.iter().copied().collect();
    let rust: Vec<bool> = functions.iter().map(|f| is_rust(&f.name)).collect();
    let handlers: BTreeSet<usize> = functions
        .iter()
        .enumerate()
        .filter(|(_, f)| panic_handlers.iter().any(|h| f.name.ends_with(h.as_str())))
        .map(|(i, _)| i)
        .collect();
    let mut solver = Solver {
        frames: &frames,
        candidates: &candidates,
        rust_candidates: &rust_candidates,
        rust: &rust,
        handlers: &handlers,
        nested_panic: false,
        memo: BTreeMap::new(),
        on_stack: Vec::new(),
        cycles: BTreeSet::new(),
        recursive: BTreeSet::new(),
        cut: false,
        external: BTreeSet::new(),
        indirect_sites: BTreeSet::new(),
    };
    let mut entry_ids: Vec<usize> = functions
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            !idx.is_section(&f.name) && entry_prefixes.iter().any(|p| f.name.starts_with(p))
        })
        .map(|(i, _)| i)
        .collect();
    entry_ids.sort_by(|&a, &b| functions[a].name.cmp(&functions[b].name));
    entry_ids.dedup_by(|a, b| functions[*a].name == functions[*b].name);
    let mut entries = Vec::new();
    for &e in &entry_ids {
        let start = Key {
            f: e,
            k: indirect_depth,
            panicking: handlers.contains(&e),
        };
        let best = solver.solve(start);
        let recursive = solver.recursive.contains(&start);
        // Follow the deepest chain; the bytes of its links add up to the
        // figure (a tail-jumped function's return address is its caller's).
        let mut chain = Vec::new();
        let mut key = start;
        let (mut indirect, mut tail) = (false, false);
        let mut visited = BTreeSet::from([start]);
        loop {
            let reuse = if tail { 8 } else { 0 };
            let frame = &frames[key.f];
            let next = solver.memo.get(&key).and_then(|b| b.next);
            let bytes = match next {
                None => frame.deepest + 8,
                Some((si, _)) => frame.sites[si].depth + 8,
            };
            chain.push(Link {
                name: functions[key.f].name.clone(),
                bytes: bytes.saturating_sub(reuse),
                indirect,
                tail,
                external: false,
            });
            let Some((si, next_key)) = next else {
                break;
            };
            let site = &frame.sites[si];
            let Some(next_key) = next_key else {
                let (name, indirect) = match &site.callee {
                    Callee::External(name) => (name.clone(), false),
                    Callee::Func(t) => (format!("{} (nested panic)", functions[*t].name), false),
                    Callee::Indirect => ("(indirect call, not followed)".to_string(), true),
                };
                chain.push(Link {
                    name,
                    bytes: if site.tail { 0 } else { 8 },
                    indirect,
                    tail: site.tail,
                    external: true,
                });
                break;
            };
            indirect = site.callee == Callee::Indirect;
            tail = site.tail;
            key = next_key;
            if !visited.insert(key) {
                break; // around a recursion once
            }
        }
        entries.push(EntryResult {
            name: functions[e].name.clone(),
            bytes: best.bytes,
            chain,
            recursive,
        });
    }
    let reach: BTreeSet<usize> = solver.memo.keys().map(|key| key.f).collect();
    let unbounded = frames
        .iter()
        .enumerate()
        .filter(|(i, _)| reach.contains(i))
        .filter_map(|(i, fr)| {
            fr.unbounded
                .as_ref()
                .map(|w| (functions[i].name.clone(), w.clone()))
        })
        .collect();
    let external = solver
        .external
        .iter()
        .filter(|n| !idx.is_section(n))
        .cloned()
        .collect();
    Analysis {
        names: functions.iter().map(|f| f.name.clone()).collect(),
        entries,
        recursion: solver
            .cycles
            .iter()
            .map(|c| c.iter().map(|&i| functions[i].name.clone()).collect())
            .collect(),
        unbounded,
        external,
        indirect_sites: solver.indirect_sites.len(),
        address_taken: candidates
            .iter()
            .map(|&i| functions[i].name.clone())
            .collect(),
        indirect_depth,
        indirect_cut: solver.cut,
        nested_panic: solver.nested_panic,
    }
}

/// Short display names: demangled with `c++filt` when it runs (Rust v0
/// and C++), crate hashes and generic arguments dropped, paths cut to
/// their last two parts. Names it cannot read are kept as they are.
pub fn display_names(names: &[String], cxxfilt: Option<&str>) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = names.iter().map(|n| (n.clone(), n.clone())).collect();
    let Some(tool) = cxxfilt else {
        return out;
    };
    let mangled: Vec<&String> = names.iter().filter(|n| n.starts_with("_R")).collect();
    if mangled.is_empty() {
        return out;
    }
    let input: String = mangled.iter().map(|n| format!("{n}\n")).collect();
    let Ok(mut child) = Command::new(tool)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        return out;
    };
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(input.as_bytes());
    }
    let Ok(res) = child.wait_with_output() else {
        return out;
    };
    let text = String::from_utf8_lossy(&res.stdout);
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() == mangled.len() {
        for (m, d) in mangled.iter().zip(lines) {
            out.insert((*m).clone(), shorten(d));
        }
    }
    out
}

/// Shortens one demangled Rust name (see [`display_names`]).
pub fn shorten(name: &str) -> String {
    // Drop crate disambiguators: `balloon[1380af24f9ac5500]`.
    let mut s = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '[' {
            let rest: String = chars.clone().take_while(|&x| x != ']').collect();
            if !rest.is_empty() && rest.chars().all(|x| x.is_ascii_hexdigit()) {
                for _ in 0..=rest.len() {
                    chars.next();
                }
                continue;
            }
        }
        s.push(c);
    }
    // Drop generic arguments: every `<...>` except a leading qualified
    // path `<T as Trait>` / `<T>`.
    let mut t = String::new();
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '<' if i == 0 && depth == 0 => t.push(c),
            '<' => depth += 1,
            '>' if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            _ => t.push(c),
        }
    }
    let t = t.replace("::::", "::").trim_end_matches("::").to_string();
    let last = |p: &str| p.rsplit("::").next().unwrap_or(p).to_string();
    if let Some(rest) = t.strip_prefix('<') {
        if let Some((inner, tail)) = rest.split_once(">::") {
            let inner = match inner.split_once(" as ") {
                Some((a, b)) => format!("<{} as {}>", last(a), last(b)),
                None => last(inner),
            };
            return format!("{inner}::{}", tail.trim_start_matches("::"));
        }
    }
    let parts: Vec<&str> = t.split("::").collect();
    if parts.len() > 2 {
        parts[parts.len() - 2..].join("::")
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(code: &str, relocs: &str) -> Listing {
        Listing::from_text(code, relocs)
    }

    fn prefixes(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    fn entry<'a>(a: &'a Analysis, name: &str) -> &'a EntryResult {
        a.entries
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no entry {name} in {a:?}"))
    }

    /// Two functions in one section; the call carries a relocation
    /// against the section symbol, as in the prelinked object.
    const CALL_BY_SECTION: &str = "
x.o:     file format elf64-x86-64


Disassembly of section .text:

0000000000000000 <leaf>:
   0:\tpush   %rbx
   1:\tsub    $0x20,%rsp
   5:\tadd    $0x20,%rsp
   9:\tpop    %rbx
   a:\tret
   b:\tnopl   0x0(%rax,%rax,1)

0000000000000010 <balloon_rs_step>:
  10:\tpush   %rbp
  11:\tpush   %r15
  13:\tsub    $0x148,%rsp
  1a:\tcall   1f <balloon_rs_step+0xf>
\t\t\t1b: R_X86_64_PC32\t.text-0x4
  1f:\tcall   24 <balloon_rs_step+0x14>
\t\t\t20: R_X86_64_PC32\tballoon_shim_log-0x4
  24:\tadd    $0x148,%rsp
  2b:\tpop    %r15
  2d:\tpop    %rbp
  2e:\tret
";

    #[test]
    fn frames_from_pushes_and_sub_and_calls_through_relocations() {
        let a = analyse(&listing(CALL_BY_SECTION, ""), &prefixes(&["balloon_"]), 2);
        let e = entry(&a, "balloon_rs_step");
        // 8 (return) + 16 (pushes) + 0x148 = 352 at the call, then leaf:
        // 8 (return) + 8 (push) + 0x20 = 48.
        assert_eq!(e.bytes, 8 + 16 + 0x148 + 8 + 8 + 0x20);
        let names: Vec<&str> = e.chain.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["balloon_rs_step", "leaf"]);
        assert_eq!(e.chain[0].bytes, 8 + 16 + 0x148);
        assert_eq!(e.chain[1].bytes, 48);
        assert!(a.external.contains("balloon_shim_log"));
        assert!(a.recursion.is_empty() && a.unbounded.is_empty());
        // `leaf` does not start with the prefix: not an entry point.
        assert_eq!(a.entries.len(), 1);
    }

    #[test]
    fn tail_jump_reuses_the_return_address() {
        let code = "
Disassembly of section .text.a:

0000000000000000 <balloon_a>:
   0:\tpush   %rax
   1:\tpop    %rax
   2:\tjmp    7 <balloon_a+0x7>
\t\t\t3: R_X86_64_PLT32\tbig-0x4

Disassembly of section .text.big:

0000000000000000 <big>:
   0:\tsub    $0x400,%rsp
   7:\tadd    $0x400,%rsp
   e:\tret
";
        let a = analyse(&listing(code, ""), &prefixes(&["balloon_"]), 0);
        let e = entry(&a, "balloon_a");
        assert_eq!(e.bytes, 0x400 + 8);
        assert!(e.chain[1].tail);
        assert_eq!(e.chain[1].name, "big");
    }

    #[test]
    fn recursion_is_named() {
        let code = "
Disassembly of section .text:

0000000000000000 <balloon_rs_release>:
   0:\tpush   %rbx
   1:\tcall   6 <balloon_rs_release+0x6>
\t\t\t2: R_X86_64_PC32\tquicksort-0x4
   6:\tpop    %rbx
   7:\tret

0000000000000010 <quicksort>:
  10:\tpush   %rbp
  11:\tsub    $0x180,%rsp
  18:\tcmp    $0x20,%rsi
  1c:\tjb     28 <quicksort+0x18>
  1e:\tcall   23 <quicksort+0x13>
\t\t\t1f: R_X86_64_PC32\tquicksort-0x4
  23:\tjmp    18 <quicksort+0x8>
  28:\tadd    $0x180,%rsp
  2f:\tpop    %rbp
  30:\tret
";
        let a = analyse(&listing(code, ""), &prefixes(&["balloon_rs_"]), 0);
        assert_eq!(a.recursion, vec![vec!["quicksort".to_string()]]);
        assert!(entry(&a, "balloon_rs_release").recursive);
    }

    /// An indirect call through a vtable in .rodata: the candidates are
    /// the address-taken functions; a jump table's entries point into a
    /// function's interior and make nothing a candidate.
    const INDIRECT: &str = "
Disassembly of section .text:

0000000000000000 <balloon_rs_text>:
   0:\tpush   %rbx
   1:\tmov    0x18(%rdi),%rax
   5:\tcall   *%rax
   7:\tcmp    $0x3,%eax
   a:\tja     20 <balloon_rs_text+0x20>
   c:\tjmp    *0x0(,%rax,8)
\t\t\tf: R_X86_64_32S\t.rodata+0x10
  13:\tsub    $0x800,%rsp
  1a:\tadd    $0x800,%rsp
  20:\tpop    %rbx
  21:\tret

0000000000000030 <write_str>:
  30:\tsub    $0x58,%rsp
  34:\tcall   *0x18(%rax)
  37:\tadd    $0x58,%rsp
  3b:\tret

0000000000000040 <never_taken>:
  40:\tsub    $0x1000,%rsp
  47:\tadd    $0x1000,%rsp
  4e:\tret
";

    const INDIRECT_RELOCS: &str = "
RELOCATION RECORDS FOR [.text]:
OFFSET           TYPE              VALUE
000000000000000f R_X86_64_32S      .rodata+0x0000000000000010

RELOCATION RECORDS FOR [.rodata]:
OFFSET           TYPE              VALUE
0000000000000000 R_X86_64_64       .text+0x0000000000000030
0000000000000010 R_X86_64_64       .text+0x0000000000000013
0000000000000018 R_X86_64_64       .text+0x0000000000000020
";

    #[test]
    fn indirect_calls_reach_address_taken_functions_to_a_bounded_depth() {
        let l = listing(INDIRECT, INDIRECT_RELOCS);
        let a = analyse(&l, &prefixes(&["balloon_rs_"]), 1);
        assert_eq!(a.address_taken, ["write_str"]);
        let e = entry(&a, "balloon_rs_text");
        // Own frame: 8 + 8 + 0x800 through the jump table's target.
        // Through the pointer: 8 + 8 at the call, then write_str 8 + 0x58,
        // whose own indirect call is past the depth: 8 more.
        assert_eq!(e.bytes, 8 + 8 + 0x800);
        assert!(a.indirect_cut);
        assert_eq!(a.indirect_sites, 2);
        let a2 = analyse(&l, &prefixes(&["balloon_rs_"]), 40);
        // write_str calls itself through the pointer: each level adds
        // 8 + 0x58 = 0x60 bytes.
        let e2 = entry(&a2, "balloon_rs_text");
        assert_eq!(e2.bytes, 16 + 40 * 0x60 + 8);
        assert!(e2.chain.iter().skip(1).all(|l| l.indirect));
        assert!(
            a2.recursion.is_empty(),
            "indirect cycles are bounded, not recursion"
        );
        assert!(!a2.address_taken.contains(&"never_taken".to_string()));
    }

    #[test]
    fn frame_pointer_and_untracked_rsp_writes() {
        let code = "
Disassembly of section .text:

0000000000000000 <balloon_fp>:
   0:\tpush   %rbp
   1:\tmov    %rsp,%rbp
   4:\tand    $0xffffffffffffffc0,%rsp
   8:\tsub    $0x100,%rsp
   f:\tmov    %rbp,%rsp
  12:\tpop    %rbp
  13:\tret

0000000000000020 <balloon_alloca>:
  20:\tpush   %rbp
  21:\tmov    %rsp,%rbp
  24:\tsub    %rdi,%rsp
  27:\tleave
  28:\tret
";
        let a = analyse(&listing(code, ""), &prefixes(&["balloon_"]), 0);
        assert_eq!(entry(&a, "balloon_fp").bytes, 8 + 8 + 0x40 + 0x100);
        assert_eq!(a.unbounded.len(), 1);
        assert_eq!(a.unbounded[0].0, "balloon_alloca");
        assert!(
            a.unbounded[0].1.contains("sub %rdi,%rsp"),
            "{:?}",
            a.unbounded
        );
    }

    #[test]
    fn parses_raw_bytes_and_old_suffixes() {
        let code = "
Disassembly of section .text:

0000000000000000 <balloon_x>:
   0:\t55                   \tpushq  %rbp
   1:\t48 81 ec 00 01 00 00 \tsubq   $0x100,%rsp
   8:\te8 00 00 00 00       \tcallq  d <balloon_x+0xd>
\t\t\t9: R_X86_64_PLT32\tkmem_alloc-0x4
   d:\t48 81 c4 00 01 00 00 \taddq   $0x100,%rsp
  14:\t5d                   \tpopq   %rbp
  15:\tc3                   \tretq
";
        let a = analyse(&listing(code, ""), &prefixes(&["balloon_"]), 0);
        let e = entry(&a, "balloon_x");
        assert_eq!(e.bytes, 8 + 8 + 0x100 + 8);
        assert_eq!(e.chain.last().map(|l| l.name.as_str()), Some("kmem_alloc"));
        assert!(e.chain.last().is_some_and(|l| l.external));
    }

    #[test]
    fn unreached_calls_count_at_the_deepest_point() {
        // The call after the unconditional jump is reached only through
        // a path the walk cannot see.
        let code = "
Disassembly of section .text:

0000000000000000 <balloon_y>:
   0:\tsub    $0x30,%rsp
   4:\tadd    $0x30,%rsp
   8:\tret
   9:\tcall   e <balloon_y+0xe>
\t\t\ta: R_X86_64_PC32\tother-0x4
   e:\tud2

0000000000000010 <other>:
  10:\tpush   %rax
  11:\tpop    %rax
  12:\tret
";
        let a = analyse(&listing(code, ""), &prefixes(&["balloon_"]), 0);
        assert_eq!(entry(&a, "balloon_y").bytes, 8 + 0x30 + 8 + 8);
    }

    #[test]
    fn a_jump_through_a_table_of_function_starts_is_a_tail_call() {
        let code = "
Disassembly of section .text:

0000000000000000 <balloon_dispatch>:
   0:\tand    $0x1,%edi
   3:\tjmp    *0x0(,%rdi,8)
\t\t\t6: R_X86_64_32S\t.data+0x8

0000000000000010 <big>:
  10:\tsub    $0x700,%rsp
  17:\tadd    $0x700,%rsp
  1e:\tret
";
        let relocs = "
RELOCATION RECORDS FOR [.data]:
OFFSET           TYPE              VALUE
0000000000000008 R_X86_64_64       big
";
        let a = analyse(&listing(code, relocs), &prefixes(&["balloon_"]), 1);
        assert_eq!(a.address_taken, ["big"]);
        let e = entry(&a, "balloon_dispatch");
        assert_eq!(e.bytes, 0x700 + 8);
        assert!(e.chain[1].indirect && e.chain[1].tail);
    }

    /// Rust's indirect calls reach Rust functions and those Rust takes the
    /// address of; C callbacks handed to the kernel are not among them.
    #[test]
    fn rust_pointers_do_not_reach_c_callbacks() {
        let code = "
Disassembly of section .text:

0000000000000000 <balloon_modcmd>:
   0:\tsub    $0x800,%rsp
   7:\tadd    $0x800,%rsp
   e:\tret

0000000000000010 <balloon_rs_step>:
  10:\tjmp    15 <balloon_rs_step+0x5>
\t\t\t11: R_X86_64_PC32\t_RNvCs0_4core3fmt5write-0x4

0000000000000020 <_RNvCs0_4core3fmt5write>:
  20:\tpush   %rax
  21:\tcall   *0x18(%rsi)
  24:\tpop    %rcx
  25:\tret

0000000000000030 <_RNvCs0_7balloon3Pfn3fmt>:
  30:\tsub    $0x40,%rsp
  34:\tadd    $0x40,%rsp
  38:\tret
";
        let relocs = "
RELOCATION RECORDS FOR [.data]:
OFFSET           TYPE              VALUE
0000000000000000 R_X86_64_64       balloon_modcmd

RELOCATION RECORDS FOR [.rodata]:
OFFSET           TYPE              VALUE
0000000000000018 R_X86_64_64       .text+0x0000000000000030
";
        let a = analyse(&listing(code, relocs), &prefixes(&["balloon_rs_"]), 3);
        assert_eq!(a.address_taken.len(), 2);
        let e = entry(&a, "balloon_rs_step");
        // fmt::write: 8 + 8 at the call; Pfn::fmt: 8 + 0x40.
        assert_eq!(e.bytes, 16 + 8 + 0x40);
        assert_eq!(
            e.chain.last().map(|l| l.name.as_str()),
            Some("_RNvCs0_7balloon3Pfn3fmt")
        );
    }

    #[test]
    fn a_panic_inside_the_panic_handler_is_followed_only_as_recursion() {
        // The handler formats through a pointer; a writer that can fail
        // an allocation panics again: not followed. Its direct call to a
        // function that panics is recursion.
        let code = "
Disassembly of section .text:

0000000000000000 <balloon_rs_get>:
   0:\tpush   %rax
   1:\tcall   6 <balloon_rs_get+0x6>
\t\t\t2: R_X86_64_PC32\t_RNvCs0_7___rustc17rust_begin_unwind-0x4
   6:\tud2

0000000000000010 <_RNvCs0_7___rustc17rust_begin_unwind>:
  10:\tsub    $0x100,%rsp
  17:\tcall   *0x18(%rax)
  1a:\tud2

0000000000000020 <_RNvCs0_5alloc6String9write_str>:
  20:\tpush   %rax
  21:\tcall   26 <_RNvCs0_5alloc6String9write_str+0x6>
\t\t\t22: R_X86_64_PC32\t_RNvCs0_7___rustc17rust_begin_unwind-0x4
  26:\tud2
";
        let relocs = "
RELOCATION RECORDS FOR [.rodata]:
OFFSET           TYPE              VALUE
0000000000000018 R_X86_64_64       .text+0x0000000000000020
";
        let l = listing(code, relocs);
        let a = analyse(&l, &prefixes(&["balloon_rs_"]), 4);
        assert!(a.nested_panic);
        assert!(a.recursion.is_empty(), "{:?}", a.recursion);
        // get 16, handler 8 + 0x100, the writer 16, its call 8.
        assert_eq!(entry(&a, "balloon_rs_get").bytes, 16 + 8 + 0x100 + 16 + 8);

        let direct = code.replace(
            "  17:\tcall   *0x18(%rax)\n  1a:\tud2",
            "  17:\tcall   1c <x>\n\t\t\t18: R_X86_64_PC32\t_RNvCs0_5alloc6String9write_str-0x4\n  1c:\tud2",
        );
        assert_ne!(direct, code);
        let a = analyse(&listing(&direct, ""), &prefixes(&["balloon_rs_"]), 4);
        assert_eq!(
            a.recursion,
            [[
                "_RNvCs0_7___rustc17rust_begin_unwind",
                "_RNvCs0_5alloc6String9write_str"
            ]]
        );
        assert!(entry(&a, "balloon_rs_get").recursive);
    }

    #[test]
    fn a_jump_back_from_a_cold_part_is_not_a_call() {
        // gcc's f.cold jumps back into the middle of f.
        let code = "
Disassembly of section .text:

0000000000000000 <balloon_f>:
   0:\tsub    $0x20,%rsp
   4:\tjne    10 <balloon_f.cold>
   6:\tadd    $0x20,%rsp
   a:\tret

0000000000000010 <balloon_f.cold>:
  10:\tcall   15 <balloon_f.cold+0x5>
\t\t\t11: R_X86_64_PLT32\tabort-0x4
  15:\tjmp    6 <balloon_f+0x6>
";
        let a = analyse(&listing(code, ""), &prefixes(&["balloon_f"]), 0);
        assert!(a.recursion.is_empty(), "{:?}", a.recursion);
        // f at 0x20 tail-jumps into the cold part, which calls abort.
        assert_eq!(entry(&a, "balloon_f").bytes, 8 + 0x20 + 8);
    }

    #[test]
    fn shortens_demangled_names() {
        assert_eq!(
            shorten("<balloon[1380af24f9ac5500]::driver::Driver>::step::<balloon[1380af24f9ac5500]::ffi::platform::ShimPlatform>"),
            "Driver::step"
        );
        assert_eq!(
            shorten("core[605f13ba07697f69]::slice::sort::unstable::quicksort::quicksort::<balloon[1380af24f9ac5500]::units::Pfn, <balloon[1380af24f9ac5500]::units::Pfn as core[605f13ba07697f69]::cmp::PartialOrd>::lt>"),
            "quicksort::quicksort"
        );
        assert_eq!(
            shorten("<balloon[1380af24f9ac5500]::units::Pfn as core[605f13ba07697f69]::fmt::Debug>::fmt"),
            "<Pfn as Debug>::fmt"
        );
        assert_eq!(shorten("balloon_rs_step"), "balloon_rs_step");
    }

    #[test]
    fn reloc_values() {
        assert_eq!(
            parse_reloc_value(".text+0xe0cc"),
            (".text".to_string(), 0xe0cc)
        );
        assert_eq!(parse_reloc_value("memset-0x4"), ("memset".to_string(), -4));
        assert_eq!(parse_reloc_value("panic"), ("panic".to_string(), 0));
        assert_eq!(
            parse_reloc_value(".text+0x0000000000000d6f"),
            (".text".to_string(), 0xd6f)
        );
    }
}
