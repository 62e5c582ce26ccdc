// SPDX-License-Identifier: BSD-2-Clause
//! End-to-end tests: small objects are built at test time with `cc -c` and
//! `as` (gcc and binutils), then run through the kobjcheck binary; each
//! refusal is asserted on its message text.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use kobjcheck::elf::{self, ElfObject};
use kobjcheck::reloc;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory, removed when the test ends.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!(
        "kobjcheck-test-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst),
        name
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    Scratch(dir)
}

/// Flags that make gcc produce kernel-style code.
const KERNEL_CFLAGS: &[&str] = &[
    "-O2",
    "-fno-pic",
    "-mcmodel=kernel",
    "-mno-red-zone",
    "-fno-common",
    "-mno-sse",
    "-mno-mmx",
    "-mno-sse2",
    "-msoft-float",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-ffreestanding",
];

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiles C source with `cc -c` and the given flags.
fn cc(dir: &Path, name: &str, src: &str, flags: &[&str]) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    let o = dir.join(format!("{name}.o"));
    std::fs::write(&c, src).expect("write source");
    run(Command::new("cc")
        .args(flags)
        .arg("-c")
        .arg(&c)
        .arg("-o")
        .arg(&o));
    o
}

/// Assembles AT&T source with `as`.
fn asm(dir: &Path, name: &str, src: &str, flags: &[&str]) -> PathBuf {
    let s = dir.join(format!("{name}.s"));
    let o = dir.join(format!("{name}.o"));
    std::fs::write(&s, src).expect("write source");
    run(Command::new("as").args(flags).arg(&s).arg("-o").arg(&o));
    o
}

fn kernel_symbols(dir: &Path) -> PathBuf {
    let p = dir.join("kernel-symbols.txt");
    std::fs::write(
        &p,
        "# test list\nkmem_alloc\txenpv,pvh\tkern/subr_kmem.c\n\
         kmem_free\txenpv,pvh\tkern/subr_kmem.c\npanic\txenpv,pvh\tkern/subr_prf.c\n\
         xpq_flush_queue\txenpv\tarch/xen/x86/x86_xpmap.c\n",
    )
    .expect("write list");
    p
}

struct Outcome {
    code: i32,
    text: String,
}

fn kobjcheck(args: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_kobjcheck"))
        .args(args)
        .output()
        .expect("run kobjcheck");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Outcome {
        code: out.status.code().unwrap_or(-1),
        text,
    }
}

fn check(dir: &Path, obj: &Path, extra: &[&str]) -> Outcome {
    let list = kernel_symbols(dir);
    let mut args = vec![
        "check",
        "--kernel-symbols",
        list.to_str().expect("utf-8 path"),
        "--global-prefix",
        "balloon_",
    ];
    args.extend_from_slice(extra);
    args.push(obj.to_str().expect("utf-8 path"));
    kobjcheck(&args)
}

fn assert_refused(o: &Outcome, needle: &str) {
    assert_eq!(o.code, 1, "expected a refusal, got:\n{}", o.text);
    assert!(
        o.text
            .lines()
            .any(|l| l.contains(": refused: ") && l.contains(needle)),
        "no refusal line containing `{needle}` in:\n{}",
        o.text
    );
}

const CLEAN_C: &str = "\
typedef unsigned long size_t;
void *kmem_alloc(size_t, int);
void kmem_free(void *, size_t);
static int counter;
int balloon_rs_probe(int n) {
    void *p = kmem_alloc(64, 0);
    if (p == 0) return -1;
    kmem_free(p, 64);
    counter += n;
    return counter * 3;
}
";

#[test]
fn accepts_a_clean_object_after_plt32_rewrite() {
    let dir = scratch("clean");
    let o = cc(&dir, "clean", CLEAN_C, KERNEL_CFLAGS);
    // gcc's calls carry R_X86_64_PLT32, which the loader we read refuses.
    let before = check(&dir, &o, &[]);
    assert_refused(&before, "R_X86_64_PLT32");
    assert!(
        before.text.contains("fix-plt32"),
        "the PLT32 refusal should say how to fix it:\n{}",
        before.text
    );
    // Accepted as is with --allow-plt32 ...
    let allowed = check(&dir, &o, &["--allow-plt32"]);
    assert_eq!(allowed.code, 0, "{}", allowed.text);
    // ... and after rewriting PLT32 to PC32.
    let fixed = kobjcheck(&["fix-plt32", o.to_str().unwrap()]);
    assert_eq!(fixed.code, 0, "{}", fixed.text);
    assert!(fixed.text.contains("to R_X86_64_PC32"), "{}", fixed.text);
    let after = check(&dir, &o, &[]);
    assert_eq!(after.code, 0, "{}", after.text);
    assert!(after.text.contains(": OK"), "{}", after.text);
    assert!(after.text.contains("sizes: text "), "{}", after.text);
}

#[test]
fn refuses_gotpcrel() {
    let dir = scratch("gotpcrel");
    let o = asm(
        &dir,
        "got",
        ".text\n.globl balloon_rs_got\nballoon_rs_got:\n\
         movq kmem_alloc@GOTPCREL(%rip), %rax\nret\n",
        &["-mrelax-relocations=no"],
    );
    let out = check(&dir, &o, &["--allow-plt32"]);
    assert_refused(&out, "relocation R_X86_64_GOTPCREL (1 entry");
    assert_refused(&out, "not applied by the NetBSD amd64 module loader");
}

#[test]
fn refuses_sse_instruction() {
    let dir = scratch("sse");
    let o = asm(
        &dir,
        "sse",
        ".text\n.globl balloon_rs_sse\nballoon_rs_sse:\n\
         movss (%rdi), %xmm0\nmovss %xmm0, (%rsi)\nret\n",
        &[],
    );
    let out = check(&dir, &o, &[]);
    assert_refused(
        &out,
        "floating-point/SIMD instruction at .text+0x0: `movss (%rdi),%xmm0`",
    );
}

#[test]
fn refuses_x87_instruction() {
    let dir = scratch("x87");
    let o = asm(
        &dir,
        "x87",
        ".text\n.globl balloon_rs_x87\nballoon_rs_x87:\nfldt 8(%rsp)\nfstp %st(0)\nret\n",
        &[],
    );
    let out = check(&dir, &o, &[]);
    assert_refused(&out, "`fldt 0x8(%rsp)`");
}

#[test]
fn refuses_unknown_undefined_symbol() {
    let dir = scratch("undef");
    let o = cc(
        &dir,
        "undef",
        "int not_a_kernel_function(int);\n\
         int balloon_rs_call(int x) { return not_a_kernel_function(x) + 1; }\n",
        KERNEL_CFLAGS,
    );
    let out = check(&dir, &o, &["--allow-plt32"]);
    assert_refused(
        &out,
        "undefined symbol `not_a_kernel_function` is neither a listed kernel symbol nor a shim function",
    );
}

#[test]
fn flavour_limits_the_kernel_symbols() {
    let dir = scratch("flavour");
    let o = cc(
        &dir,
        "flavour",
        "void xpq_flush_queue(void);\n\
         void balloon_rs_flush(void) { xpq_flush_queue(); }\n",
        KERNEL_CFLAGS,
    );
    let pv = check(&dir, &o, &["--allow-plt32", "--flavour", "xenpv"]);
    assert_eq!(pv.code, 0, "{}", pv.text);
    // GENERIC links no x86_xpmap.c: the same object is refused for pvh.
    let pvh = check(&dir, &o, &["--allow-plt32", "--flavour", "pvh"]);
    assert_refused(
        &pvh,
        "undefined symbol `xpq_flush_queue` is neither a listed kernel symbol nor a shim function",
    );
}

#[test]
fn allows_shim_functions_from_a_header() {
    let dir = scratch("header");
    let o = cc(
        &dir,
        "shim",
        "void balloon_shim_panic(const char *, unsigned long);\n\
         void balloon_rs_die(void) { balloon_shim_panic(\"x\", 1); }\n",
        KERNEL_CFLAGS,
    );
    let h = dir.join("glue.h");
    std::fs::write(
        &h,
        "/* glue */\nvoid balloon_shim_panic(const char *msg, unsigned long len);\n",
    )
    .unwrap();
    let refused = kobjcheck(&["check", "--allow-plt32", o.to_str().unwrap()]);
    assert_eq!(refused.code, 1, "{}", refused.text);
    let ok = kobjcheck(&[
        "check",
        "--allow-plt32",
        "--allow-from-header",
        h.to_str().unwrap(),
        "--global-prefix",
        "balloon_rs_",
        o.to_str().unwrap(),
    ]);
    assert_eq!(ok.code, 0, "{}", ok.text);
}

#[test]
fn refuses_tls() {
    let dir = scratch("tls");
    let o = cc(
        &dir,
        "tls",
        "__thread int balloon_rs_tls_var;\n\
         int balloon_rs_tls(void) { return balloon_rs_tls_var++; }\n",
        KERNEL_CFLAGS,
    );
    let out = check(&dir, &o, &["--allow-plt32"]);
    assert_refused(&out, "TLS section `.tbss`");
    assert_refused(&out, "TLS symbol `balloon_rs_tls_var`");
    assert_refused(&out, "TLS relocation R_X86_64_TPOFF32");
}

#[test]
fn refuses_debug_section() {
    let dir = scratch("debug");
    let mut flags = KERNEL_CFLAGS.to_vec();
    flags.push("-g");
    let o = cc(&dir, "debug", CLEAN_C, &flags);
    let out = check(&dir, &o, &["--allow-plt32"]);
    assert_refused(&out, "debug section `.debug_info` present");
}

#[test]
fn refuses_eh_frame() {
    let dir = scratch("ehframe");
    let flags: Vec<&str> = KERNEL_CFLAGS
        .iter()
        .copied()
        .filter(|f| !f.contains("unwind-tables"))
        .chain(["-fasynchronous-unwind-tables"])
        .collect();
    let o = cc(&dir, "eh", CLEAN_C, &flags);
    let out = check(&dir, &o, &["--allow-plt32"]);
    assert_refused(&out, "unwind section `.eh_frame` present");
}

#[test]
fn refuses_undefined_weak_symbol() {
    let dir = scratch("weak");
    let o = asm(
        &dir,
        "weak",
        ".text\n.weak kmem_alloc\n.globl balloon_rs_weak\nballoon_rs_weak:\n\
         call kmem_alloc\nret\n",
        &[],
    );
    let out = check(&dir, &o, &["--allow-plt32"]);
    assert_refused(&out, "undefined weak symbol `kmem_alloc`");
}

#[test]
fn refuses_foreign_and_clashing_globals() {
    let dir = scratch("globals");
    let o = asm(
        &dir,
        "globals",
        ".text\n.globl helper\nhelper:\nret\n.globl panic\npanic:\nret\n\
         .globl balloon_rs_ok\nballoon_rs_ok:\nret\n",
        &[],
    );
    let out = check(&dir, &o, &[]);
    assert_refused(
        &out,
        "defined global symbol `helper` does not start with an allowed module prefix (balloon_)",
    );
    assert_refused(
        &out,
        "defined global symbol `panic` is also a kernel symbol (kern/subr_prf.c)",
    );
    assert!(!out.text.contains("`balloon_rs_ok`"), "{}", out.text);
}

#[test]
fn refuses_non_elf_and_wrong_type() {
    let dir = scratch("notelf");
    let p = dir.join("junk.o");
    std::fs::write(&p, b"this is not an object").unwrap();
    let out = kobjcheck(&["check", p.to_str().unwrap()]);
    assert_refused(&out, "not an ELF file");

    let o = cc(
        &dir,
        "exe",
        "int balloon_rs_main(void) { return 0; }\n",
        &["-O2"],
    );
    let so = dir.join("lib.so");
    run(Command::new("cc")
        .args(["-shared", "-nostdlib", "-o"])
        .arg(&so)
        .arg(&o));
    let out = kobjcheck(&["check", "--allow-plt32", so.to_str().unwrap()]);
    assert_refused(&out, "not a relocatable object (e_type 3");
}

#[test]
fn parser_reads_sections_symbols_and_relocations() {
    let dir = scratch("parser");
    let o = asm(
        &dir,
        "parse",
        ".text\n.globl balloon_rs_entry\n.type balloon_rs_entry, @function\n\
         balloon_rs_entry:\ncall kmem_alloc\nmovq $table, %rax\nret\n\
         .size balloon_rs_entry, .-balloon_rs_entry\n\
         .data\n.align 8\ntable:\n.quad balloon_rs_entry\n\
         .bss\n.lcomm scratch, 32\n",
        &[],
    );
    let data = std::fs::read(&o).unwrap();
    let obj = ElfObject::parse(&data).expect("parses");
    assert_eq!(obj.file_type, elf::ET_REL);
    assert_eq!(obj.machine, elf::EM_X86_64);

    let names: Vec<&str> = obj.sections.iter().map(|s| s.name.as_str()).collect();
    for want in [
        ".text",
        ".rela.text",
        ".data",
        ".rela.data",
        ".bss",
        ".symtab",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let text = obj.sections.iter().find(|s| s.name == ".text").unwrap();
    assert!(text.flags & elf::SHF_EXECINSTR != 0);
    let bss = obj.sections.iter().find(|s| s.name == ".bss").unwrap();
    assert_eq!(bss.kind, elf::SHT_NOBITS);
    assert_eq!(bss.size, 32);

    let entry = obj
        .symbols
        .iter()
        .find(|s| s.name == "balloon_rs_entry")
        .expect("entry symbol");
    assert_eq!(entry.bind, elf::STB_GLOBAL);
    assert_eq!(entry.value, 0);
    assert_eq!(entry.shndx as usize, text.index);
    let kmem = obj.symbols.iter().find(|s| s.name == "kmem_alloc").unwrap();
    assert!(kmem.is_undefined());

    // call kmem_alloc: PLT32 at .text+1, addend -4.
    let call = obj
        .relocations
        .iter()
        .find(|r| r.target == text.index && r.offset == 1)
        .expect("call relocation");
    assert_eq!(call.kind, reloc::R_PLT32);
    assert_eq!(call.addend, -4);
    assert_eq!(obj.symbol_label(call.symbol), "kmem_alloc");
    // movq $table: 32S against .data; .quad: 64 against the entry.
    assert!(obj
        .relocations
        .iter()
        .any(|r| r.target == text.index && r.kind == reloc::R_32S));
    let data_sec = obj.sections.iter().find(|s| s.name == ".data").unwrap();
    let quad = obj
        .relocations
        .iter()
        .find(|r| r.target == data_sec.index)
        .unwrap();
    assert_eq!(quad.kind, reloc::R_64);
    assert_eq!(obj.symbol_label(quad.symbol), "balloon_rs_entry");

    let sizes = kobjcheck::check::sizes(&obj);
    assert_eq!(sizes.text, text.size);
    assert_eq!(sizes.data, 8);
    assert_eq!(sizes.bss, 32);

    // The in-place rewrite touches exactly the PLT32 entry.
    let mut bytes = data.clone();
    let n = elf::rewrite_relocation_type(&mut bytes, reloc::R_PLT32, reloc::R_PC32).unwrap();
    assert_eq!(n, 1);
    let again = ElfObject::parse(&bytes).unwrap();
    assert!(again.relocations.iter().all(|r| r.kind != reloc::R_PLT32));
    assert_eq!(again.relocations.len(), obj.relocations.len());
    assert_eq!(bytes.len(), data.len());
}

#[test]
fn parser_rejects_garbage_without_panicking() {
    assert_eq!(ElfObject::parse(b"").unwrap_err(), elf::ElfError::NotElf);
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 1;
    assert_eq!(ElfObject::parse(&h).unwrap_err(), elf::ElfError::NotElf64);
    h[4] = 2;
    h[5] = 2;
    assert_eq!(
        ElfObject::parse(&h).unwrap_err(),
        elf::ElfError::NotLittleEndian
    );
    h[5] = 1;
    // Section headers far past the end of the file.
    h[40..48].copy_from_slice(&0xffff_0000u64.to_le_bytes());
    h[58..60].copy_from_slice(&64u16.to_le_bytes());
    h[60..62].copy_from_slice(&3u16.to_le_bytes());
    assert!(matches!(
        ElfObject::parse(&h),
        Err(elf::ElfError::Truncated(_))
    ));
    // Every truncation of a real object fails cleanly.
    let dir = scratch("garbage");
    let o = cc(&dir, "g", CLEAN_C, KERNEL_CFLAGS);
    let data = std::fs::read(&o).unwrap();
    for len in (0..data.len()).step_by(7) {
        let _ = ElfObject::parse(&data[..len]);
    }
}

/// Two entry points with known frames, in assembly so the figures are
/// exact: a call to a global function (a PLT32 relocation), a call to a
/// local one (no relocation), and a call out of the object.
const STACK_S: &str = "\
.text
.globl balloon_rs_entry
balloon_rs_entry:
    push %rbx
    sub $0x100, %rsp
    call helper_global
    call helper_local
    add $0x100, %rsp
    pop %rbx
    ret
.globl helper_global
helper_global:
    sub $0x200, %rsp
    call kmem_alloc
    add $0x200, %rsp
    ret
helper_local:
    push %rbp
    push %r12
    ret
.globl balloon_rs_small
balloon_rs_small:
    jmp helper_local
";

fn stack(obj: &Path, extra: &[&str]) -> Outcome {
    let mut args = vec!["stack"];
    args.extend_from_slice(extra);
    args.push(obj.to_str().expect("utf-8 path"));
    kobjcheck(&args)
}

/// The figure printed for `entry` in the table.
fn figure(o: &Outcome, entry: &str) -> u64 {
    let line = o
        .text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(entry))
        .unwrap_or_else(|| panic!("no line for {entry} in:\n{}", o.text));
    line.split_whitespace()
        .nth(1)
        .and_then(|b| b.trim_end_matches('+').parse().ok())
        .unwrap_or_else(|| panic!("no figure in {line}"))
}

#[test]
fn stack_figures_from_frames_and_calls() {
    let dir = scratch("stack");
    let o = asm(&dir, "stack", STACK_S, &[]);
    let out = stack(&o, &[]);
    assert_eq!(out.code, 0, "{}", out.text);
    // 8 (return) + 8 (push) + 0x100, then helper_global: 8 + 0x200 and
    // the return address of its call to kmem_alloc.
    assert_eq!(
        figure(&out, "balloon_rs_entry"),
        8 + 8 + 0x100 + 8 + 0x200 + 8
    );
    // A tail jump into helper_local (two pushes), return address reused.
    assert_eq!(figure(&out, "balloon_rs_small"), 8 + 16);
    assert!(
        out.text
            .contains("balloon_rs_entry 272 > helper_global 520 > kmem_alloc 8 (undefined)"),
        "{}",
        out.text
    );
    assert!(
        out.text.contains("undefined functions called (kmem_alloc)"),
        "{}",
        out.text
    );
    // The budget: at the figure passes, a byte less fails.
    assert_eq!(stack(&o, &["--budget", "800"]).code, 0);
    let over = stack(&o, &["--budget", "799"]);
    assert_eq!(over.code, 1, "{}", over.text);
    assert!(over.text.contains("budget 799: over"), "{}", over.text);
    assert!(over.text.contains(": FAILED"), "{}", over.text);
    // Entry points by another prefix.
    let only = stack(&o, &["--entry-prefix", "helper_"]);
    assert_eq!(figure(&only, "helper_global"), 8 + 0x200 + 8);
    assert!(!only.text.contains("balloon_rs_entry"), "{}", only.text);
}

#[test]
fn stack_reports_recursion_by_name() {
    let dir = scratch("recursion");
    let o = cc(
        &dir,
        "rec",
        "int walk_tree(int n) {\n\
         volatile char b[64];\n\
         b[0] = (char)n;\n\
         if (n <= 1) return b[0];\n\
         return walk_tree(n - 1) + walk_tree(n - 2) + b[0];\n\
         }\n\
         int balloon_rs_walk(int n) { return walk_tree(n) + 1; }\n\
         int balloon_rs_flat(int n) { return n * 3; }\n",
        KERNEL_CFLAGS,
    );
    let out = stack(&o, &[]);
    assert_eq!(out.code, 1, "{}", out.text);
    let line = out
        .text
        .lines()
        .find(|l| l.contains(": recursion: "))
        .unwrap_or_else(|| panic!("no recursion line in:\n{}", out.text));
    assert!(line.contains("walk_tree"), "{line}");
    assert!(line.contains("reachable from balloon_rs_walk"), "{line}");
    assert!(!line.contains("balloon_rs_flat"), "{line}");
    // One pass through the recursion is counted: at least its frame.
    assert!(figure(&out, "balloon_rs_walk") >= 64, "{}", out.text);
    assert!(out.text.contains("balloon_rs_walk "), "{}", out.text);
}

#[test]
fn stack_follows_function_pointers_to_a_bounded_depth() {
    let dir = scratch("pointers");
    // An operation table in data: `big` is address-taken, `unused` not.
    let o = cc(
        &dir,
        "ptr",
        "typedef int (*op_t)(int);\n\
         static int big(int n) {\n\
         volatile char b[2048];\n\
         b[n & 2047] = (char)n;\n\
         return b[(n + 1) & 2047];\n\
         }\n\
         static int small(int n) { return n + 1; }\n\
         int unused(int n) { volatile char b[4096]; b[n & 4095] = 1; return b[0]; }\n\
         op_t balloon_ops[2] = { big, small };\n\
         int balloon_rs_dispatch(int i, int n) { return balloon_ops[i & 1](n) + 1; }\n",
        KERNEL_CFLAGS,
    );
    let out = stack(&o, &[]);
    assert_eq!(out.code, 0, "{}", out.text);
    let deep = figure(&out, "balloon_rs_dispatch");
    assert!((2048..4096).contains(&deep), "{}", out.text);
    assert!(out.text.contains(">* big "), "{}", out.text);
    // Not followed: only the call's return address.
    let cut = stack(&o, &["--indirect-depth", "0"]);
    assert!(figure(&cut, "balloon_rs_dispatch") < 64, "{}", cut.text);
    assert!(
        cut.text.contains("chains through more are not covered"),
        "{}",
        cut.text
    );
}
