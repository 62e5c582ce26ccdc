// SPDX-License-Identifier: BSD-2-Clause
//! kobjcheck: checks that an ELF relocatable object (the prelinked Rust
//! core `balloon_rs.o`, or the finished `balloon.kmod`) is fit for the
//! NetBSD amd64 kernel module loader, and rewrites R_X86_64_PLT32 to
//! R_X86_64_PC32 for loaders that do not apply PLT32.
//!
//! No external crates: the ELF reader is [`elf`], the instruction scan
//! runs binutils' `objdump -d` ([`disasm`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod check;
pub mod disasm;
pub mod elf;
pub mod reloc;
pub mod stack;
pub mod symlist;
