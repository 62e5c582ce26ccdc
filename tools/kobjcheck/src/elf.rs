// SPDX-License-Identifier: BSD-2-Clause
//! A small reader for ELF64 little-endian relocatable objects: the file
//! header, section headers and names, the symbol table and relocation
//! entries. Only what the checks need; every read is bounds-checked and a
//! malformed file is an [`ElfError`], never a panic.

use std::fmt;

/// `e_type` of a relocatable object.
pub const ET_REL: u16 = 1;
/// `e_machine` of x86-64.
pub const EM_X86_64: u16 = 62;

/// Section types used here.
pub const SHT_NULL: u32 = 0;
/// Program data.
pub const SHT_PROGBITS: u32 = 1;
/// Symbol table.
pub const SHT_SYMTAB: u32 = 2;
/// Relocations with addends.
pub const SHT_RELA: u32 = 4;
/// Occupies no file space (bss).
pub const SHT_NOBITS: u32 = 8;
/// Relocations without addends.
pub const SHT_REL: u32 = 9;
/// x86-64 unwind tables (LLVM marks `.eh_frame` with it).
pub const SHT_X86_64_UNWIND: u32 = 0x7000_0001;

/// Section flags used here.
pub const SHF_WRITE: u64 = 0x1;
/// Occupies memory at run time.
pub const SHF_ALLOC: u64 = 0x2;
/// Executable code.
pub const SHF_EXECINSTR: u64 = 0x4;
/// Thread-local storage.
pub const SHF_TLS: u64 = 0x400;

/// Symbol bindings.
pub const STB_LOCAL: u8 = 0;
/// Visible to every object linked together.
pub const STB_GLOBAL: u8 = 1;
/// Global with lower precedence.
pub const STB_WEAK: u8 = 2;

/// Symbol types used here.
pub const STT_SECTION: u8 = 3;
/// Source file name.
pub const STT_FILE: u8 = 4;
/// Thread-local object.
pub const STT_TLS: u8 = 6;

/// Special section indexes.
pub const SHN_UNDEF: u16 = 0;
/// Absolute value.
pub const SHN_ABS: u16 = 0xfff1;
/// Common block (unallocated C tentative definition).
pub const SHN_COMMON: u16 = 0xfff2;

/// Why a file could not be read as an ELF64 little-endian object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElfError {
    /// No `\x7fELF` magic.
    NotElf,
    /// ELFCLASS32 or an unknown class.
    NotElf64,
    /// Big-endian or an unknown data encoding.
    NotLittleEndian,
    /// A header, table or string points outside the file.
    Truncated(&'static str),
    /// A structure is internally inconsistent.
    Malformed(String),
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfError::NotElf => write!(f, "not an ELF file"),
            ElfError::NotElf64 => write!(f, "not a 64-bit ELF file (ELFCLASS64 expected)"),
            ElfError::NotLittleEndian => write!(f, "not a little-endian ELF file"),
            ElfError::Truncated(what) => write!(f, "truncated or corrupt ELF file: {what}"),
            ElfError::Malformed(what) => write!(f, "malformed ELF file: {what}"),
        }
    }
}

impl std::error::Error for ElfError {}

/// One section header with its resolved name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Index in the section header table.
    pub index: usize,
    /// Name from the section header string table.
    pub name: String,
    /// `sh_type`.
    pub kind: u32,
    /// `sh_flags`.
    pub flags: u64,
    /// `sh_offset`.
    pub offset: u64,
    /// `sh_size`.
    pub size: u64,
    /// `sh_link`.
    pub link: u32,
    /// `sh_info`.
    pub info: u32,
    /// `sh_entsize`.
    pub entsize: u64,
}

impl Section {
    /// Whether the section occupies memory when loaded.
    pub fn is_alloc(&self) -> bool {
        self.flags & SHF_ALLOC != 0
    }
}

/// One symbol table entry with its resolved name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    /// Index in the symbol table.
    pub index: usize,
    /// Name from the linked string table (empty for section symbols).
    pub name: String,
    /// `ELF64_ST_BIND(st_info)`.
    pub bind: u8,
    /// `ELF64_ST_TYPE(st_info)`.
    pub kind: u8,
    /// `ELF64_ST_VISIBILITY(st_other)`.
    pub visibility: u8,
    /// `st_shndx`.
    pub shndx: u16,
    /// `st_value`.
    pub value: u64,
    /// `st_size`.
    pub size: u64,
}

impl Symbol {
    /// Undefined (to be resolved by the loader).
    pub fn is_undefined(&self) -> bool {
        self.shndx == SHN_UNDEF && self.index != 0
    }
}

/// One relocation entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relocation {
    /// Index of the SHT_RELA / SHT_REL section holding it.
    pub section: usize,
    /// Index of the section it patches (`sh_info` of its section).
    pub target: usize,
    /// `r_offset`.
    pub offset: u64,
    /// `ELF64_R_TYPE(r_info)`.
    pub kind: u32,
    /// `ELF64_R_SYM(r_info)`.
    pub symbol: u32,
    /// `r_addend` (0 for SHT_REL).
    pub addend: i64,
    /// Byte offset of this entry's `r_info` field in the file.
    pub info_file_offset: usize,
}

/// A parsed relocatable object.
#[derive(Debug, Clone)]
pub struct ElfObject {
    /// `e_type`.
    pub file_type: u16,
    /// `e_machine`.
    pub machine: u16,
    /// All section headers, index 0 included.
    pub sections: Vec<Section>,
    /// The symbol table (entry 0 included), empty when there is none.
    pub symbols: Vec<Symbol>,
    /// Every relocation entry of every SHT_RELA / SHT_REL section.
    pub relocations: Vec<Relocation>,
}

fn slice<'a>(data: &'a [u8], off: u64, len: u64, what: &'static str) -> Result<&'a [u8], ElfError> {
    let start = usize::try_from(off).map_err(|_| ElfError::Truncated(what))?;
    let len = usize::try_from(len).map_err(|_| ElfError::Truncated(what))?;
    let end = start.checked_add(len).ok_or(ElfError::Truncated(what))?;
    data.get(start..end).ok_or(ElfError::Truncated(what))
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(x)
}

fn c_string(table: &[u8], off: u32, what: &'static str) -> Result<String, ElfError> {
    let start = off as usize;
    let rest = table.get(start..).ok_or(ElfError::Truncated(what))?;
    let len = rest
        .iter()
        .position(|&c| c == 0)
        .ok_or(ElfError::Truncated(what))?;
    Ok(String::from_utf8_lossy(&rest[..len]).into_owned())
}

const EHDR_SIZE: usize = 64;
const SHDR_SIZE: usize = 64;
const SYM_SIZE: usize = 24;
const RELA_SIZE: usize = 24;
const REL_SIZE: usize = 16;

impl ElfObject {
    /// Parses `data` as an ELF64 little-endian file. Checks the class and
    /// byte order only; the caller decides what file type and machine it
    /// accepts.
    pub fn parse(data: &[u8]) -> Result<ElfObject, ElfError> {
        if data.len() < 4 || &data[..4] != b"\x7fELF" {
            return Err(ElfError::NotElf);
        }
        if data.len() < EHDR_SIZE {
            return Err(ElfError::Truncated("file header"));
        }
        if data[4] != 2 {
            return Err(ElfError::NotElf64);
        }
        if data[5] != 1 {
            return Err(ElfError::NotLittleEndian);
        }
        let file_type = u16_at(data, 16);
        let machine = u16_at(data, 18);
        let shoff = u64_at(data, 40);
        let shentsize = u16_at(data, 58) as usize;
        let mut shnum = u16_at(data, 60) as u64;
        let mut shstrndx = u16_at(data, 62) as u32;

        if shoff == 0 {
            return Ok(ElfObject {
                file_type,
                machine,
                sections: Vec::new(),
                symbols: Vec::new(),
                relocations: Vec::new(),
            });
        }
        if shentsize != SHDR_SIZE {
            return Err(ElfError::Malformed(format!(
                "section header size {shentsize}, expected {SHDR_SIZE}"
            )));
        }
        // Extended numbering: the real counts live in section header 0.
        let first = slice(data, shoff, SHDR_SIZE as u64, "section header 0")?;
        if shnum == 0 {
            shnum = u64_at(first, 32);
        }
        if shstrndx == 0xffff {
            shstrndx = u32_at(first, 40);
        }
        let table = slice(
            data,
            shoff,
            shnum
                .checked_mul(SHDR_SIZE as u64)
                .ok_or(ElfError::Truncated("section header table"))?,
            "section header table",
        )?;

        let mut raw = Vec::with_capacity(shnum as usize);
        for i in 0..shnum as usize {
            let h = &table[i * SHDR_SIZE..(i + 1) * SHDR_SIZE];
            raw.push((
                u32_at(h, 0),
                Section {
                    index: i,
                    name: String::new(),
                    kind: u32_at(h, 4),
                    flags: u64_at(h, 8),
                    offset: u64_at(h, 24),
                    size: u64_at(h, 32),
                    link: u32_at(h, 40),
                    info: u32_at(h, 44),
                    entsize: u64_at(h, 56),
                },
            ));
        }
        let names = match raw.get(shstrndx as usize) {
            Some((_, s)) if s.kind != SHT_NOBITS => {
                slice(data, s.offset, s.size, "section name table")?
            }
            _ if shnum == 0 => &[][..],
            _ => {
                return Err(ElfError::Malformed(format!(
                    "section name table index {shstrndx} out of range"
                )))
            }
        };
        let mut sections = Vec::with_capacity(raw.len());
        for (name_off, mut s) in raw {
            s.name = if s.kind == SHT_NULL && name_off == 0 {
                String::new()
            } else {
                c_string(names, name_off, "section name")?
            };
            sections.push(s);
        }

        let symbols = Self::read_symbols(data, &sections)?;
        let relocations = Self::read_relocations(data, &sections)?;
        Ok(ElfObject {
            file_type,
            machine,
            sections,
            symbols,
            relocations,
        })
    }

    fn read_symbols(data: &[u8], sections: &[Section]) -> Result<Vec<Symbol>, ElfError> {
        let Some(symtab) = sections.iter().find(|s| s.kind == SHT_SYMTAB) else {
            return Ok(Vec::new());
        };
        let strtab = sections.get(symtab.link as usize).ok_or_else(|| {
            ElfError::Malformed(format!("symbol table links to section {}", symtab.link))
        })?;
        let strings = slice(data, strtab.offset, strtab.size, "symbol string table")?;
        let body = slice(data, symtab.offset, symtab.size, "symbol table")?;
        if symtab.size % SYM_SIZE as u64 != 0 {
            return Err(ElfError::Malformed("symbol table size".into()));
        }
        let mut out = Vec::with_capacity(body.len() / SYM_SIZE);
        for (i, e) in body.chunks_exact(SYM_SIZE).enumerate() {
            let info = e[4];
            out.push(Symbol {
                index: i,
                name: c_string(strings, u32_at(e, 0), "symbol name")?,
                bind: info >> 4,
                kind: info & 0xf,
                visibility: e[5] & 0x3,
                shndx: u16_at(e, 6),
                value: u64_at(e, 8),
                size: u64_at(e, 16),
            });
        }
        Ok(out)
    }

    fn read_relocations(data: &[u8], sections: &[Section]) -> Result<Vec<Relocation>, ElfError> {
        let mut out = Vec::new();
        for s in sections
            .iter()
            .filter(|s| s.kind == SHT_RELA || s.kind == SHT_REL)
        {
            let entry = if s.kind == SHT_RELA {
                RELA_SIZE
            } else {
                REL_SIZE
            };
            let body = slice(data, s.offset, s.size, "relocation section")?;
            if body.len() % entry != 0 {
                return Err(ElfError::Malformed(format!(
                    "relocation section {} size {} is not a multiple of {entry}",
                    s.name, s.size
                )));
            }
            for (i, e) in body.chunks_exact(entry).enumerate() {
                let info = u64_at(e, 8);
                out.push(Relocation {
                    section: s.index,
                    target: s.info as usize,
                    offset: u64_at(e, 0),
                    kind: (info & 0xffff_ffff) as u32,
                    symbol: (info >> 32) as u32,
                    addend: if s.kind == SHT_RELA {
                        u64_at(e, 16) as i64
                    } else {
                        0
                    },
                    info_file_offset: s.offset as usize + i * entry + 8,
                });
            }
        }
        Ok(out)
    }

    /// The name of section `index`, or `"?"`.
    pub fn section_name(&self, index: usize) -> &str {
        self.sections.get(index).map_or("?", |s| s.name.as_str())
    }

    /// A printable name for symbol `index`: its own name, or the name of
    /// the section for section symbols.
    pub fn symbol_label(&self, index: u32) -> String {
        match self.symbols.get(index as usize) {
            None => format!("#{index}"),
            Some(s) if index == 0 => {
                let _ = s;
                "(none)".to_string()
            }
            Some(s) if s.kind == STT_SECTION || s.name.is_empty() => {
                format!("section {}", self.section_name(s.shndx as usize))
            }
            Some(s) => s.name.clone(),
        }
    }
}

/// Rewrites every relocation of type `from` into type `to` in the raw
/// file bytes `data` (the `r_info` type field only). Returns how many
/// entries changed.
pub fn rewrite_relocation_type(data: &mut [u8], from: u32, to: u32) -> Result<usize, ElfError> {
    let obj = ElfObject::parse(data)?;
    let mut n = 0;
    for r in obj.relocations.iter().filter(|r| r.kind == from) {
        let field = data
            .get_mut(r.info_file_offset..r.info_file_offset + 4)
            .ok_or(ElfError::Truncated("relocation entry"))?;
        field.copy_from_slice(&to.to_le_bytes());
        n += 1;
    }
    Ok(n)
}
