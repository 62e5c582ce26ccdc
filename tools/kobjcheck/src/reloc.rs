// SPDX-License-Identifier: BSD-2-Clause
//! x86-64 relocation types: names, and the set the NetBSD amd64 module
//! loader (`kobj_reloc()` in sys/arch/amd64/amd64/kobj_machdep.c) applies.

/// `R_X86_64_NONE`.
pub const R_NONE: u32 = 0;
/// `R_X86_64_64`: S + A, 64 bits.
pub const R_64: u32 = 1;
/// `R_X86_64_PC32`: S + A - P, 32 bits.
pub const R_PC32: u32 = 2;
/// `R_X86_64_PLT32`: L + A - P; equal to PC32 when there is no PLT.
pub const R_PLT32: u32 = 4;
/// `R_X86_64_GLOB_DAT`.
pub const R_GLOB_DAT: u32 = 6;
/// `R_X86_64_JUMP_SLOT`.
pub const R_JUMP_SLOT: u32 = 7;
/// `R_X86_64_RELATIVE`.
pub const R_RELATIVE: u32 = 8;
/// `R_X86_64_32`: S + A, zero-extended 32 bits.
pub const R_32: u32 = 10;
/// `R_X86_64_32S`: S + A, sign-extended 32 bits.
pub const R_32S: u32 = 11;

/// The types every loader revision we read applies (kobj_machdep.c
/// rev. 1.6, 2017-11-03): NONE, 64, PC32, 32, 32S, GLOB_DAT, JUMP_SLOT,
/// RELATIVE. PLT32 is not among them.
pub const LOADER_ACCEPTS: [u32; 8] = [
    R_NONE,
    R_64,
    R_PC32,
    R_32,
    R_32S,
    R_GLOB_DAT,
    R_JUMP_SLOT,
    R_RELATIVE,
];

/// Whether the loader applies relocation type `kind`; PLT32 only when
/// `allow_plt32` says every targeted kernel accepts it.
pub fn loader_accepts(kind: u32, allow_plt32: bool) -> bool {
    LOADER_ACCEPTS.contains(&kind) || (allow_plt32 && kind == R_PLT32)
}

/// Whether `kind` is one of the thread-local-storage relocation types.
pub fn is_tls(kind: u32) -> bool {
    matches!(kind, 16..=23 | 34..=36)
}

/// The psABI name of relocation type `kind`.
pub fn name(kind: u32) -> String {
    let n = match kind {
        0 => "NONE",
        1 => "64",
        2 => "PC32",
        3 => "GOT32",
        4 => "PLT32",
        5 => "COPY",
        6 => "GLOB_DAT",
        7 => "JUMP_SLOT",
        8 => "RELATIVE",
        9 => "GOTPCREL",
        10 => "32",
        11 => "32S",
        12 => "16",
        13 => "PC16",
        14 => "8",
        15 => "PC8",
        16 => "DTPMOD64",
        17 => "DTPOFF64",
        18 => "TPOFF64",
        19 => "TLSGD",
        20 => "TLSLD",
        21 => "DTPOFF32",
        22 => "GOTTPOFF",
        23 => "TPOFF32",
        24 => "PC64",
        25 => "GOTOFF64",
        26 => "GOTPC32",
        27 => "GOT64",
        28 => "GOTPCREL64",
        29 => "GOTPC64",
        30 => "GOTPLT64",
        31 => "PLTOFF64",
        32 => "SIZE32",
        33 => "SIZE64",
        34 => "GOTPC32_TLSDESC",
        35 => "TLSDESC_CALL",
        36 => "TLSDESC",
        37 => "IRELATIVE",
        38 => "RELATIVE64",
        41 => "GOTPCRELX",
        42 => "REX_GOTPCRELX",
        _ => return format!("type {kind}"),
    };
    format!("R_X86_64_{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_set() {
        assert!(loader_accepts(R_PC32, false));
        assert!(!loader_accepts(R_PLT32, false));
        assert!(loader_accepts(R_PLT32, true));
        assert!(!loader_accepts(9, true));
        assert!(!loader_accepts(42, true));
    }

    #[test]
    fn tls_types() {
        for k in [16, 17, 18, 19, 20, 21, 22, 23, 34, 35, 36] {
            assert!(is_tls(k), "{}", name(k));
        }
        assert!(!is_tls(R_PC32));
    }

    #[test]
    fn names() {
        assert_eq!(name(9), "R_X86_64_GOTPCREL");
        assert_eq!(name(4), "R_X86_64_PLT32");
        assert_eq!(name(200), "type 200");
    }
}
