// SPDX-License-Identifier: BSD-2-Clause
//! The symbol lists an object's undefined symbols are checked against:
//! the checked-in kernel symbol list (`symbol<TAB>header`), plain lists
//! (one symbol per line), and the function prototypes of a C header.

use std::collections::BTreeMap;

/// Parses the kernel symbol list: `symbol<TAB>flavours<TAB>defined in`,
/// where flavours is a comma-separated list of module flavours (`xenpv`,
/// `pvh`). Blank lines and lines starting with `#` are skipped. With a
/// flavour, only the symbols listed for it are kept. Returns symbol ->
/// defining file, or a message naming the first bad line.
pub fn parse_kernel_symbols(
    text: &str,
    flavour: Option<&str>,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let bad = || {
            format!(
                "line {}: expected `symbol<TAB>flavours<TAB>defined in`, got `{line}`",
                n + 1
            )
        };
        let mut cols = line.splitn(3, '\t').map(str::trim);
        let (Some(sym), Some(flavours), Some(file)) = (cols.next(), cols.next(), cols.next())
        else {
            return Err(bad());
        };
        let list: Vec<&str> = flavours.split(',').map(str::trim).collect();
        if !is_identifier(sym)
            || file.is_empty()
            || list.iter().any(|f| f.is_empty() || !is_identifier(f))
        {
            return Err(bad());
        }
        if !seen.insert(sym.to_string()) {
            return Err(format!("line {}: `{sym}` listed twice", n + 1));
        }
        if flavour.is_none_or(|f| list.contains(&f)) {
            out.insert(sym.to_string(), file.to_string());
        }
    }
    Ok(out)
}

/// Parses a plain list: the first word of every line that is not blank
/// or a `#` comment.
pub fn parse_plain_list(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes().all(is_ident_byte)
        && s.bytes().any(|c| c != b'_')
}

/// Removes `/* */` and `//` comments from C text (string literals are not
/// special-cased; headers of prototypes do not need it).
fn strip_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                i += 1;
            }
            i += 2;
            out.push(b' ');
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The names of the functions a C header declares whose name starts with
/// `prefix`: every identifier with that prefix followed (after optional
/// white space) by `(`. Comments are ignored; macros named like that
/// would be picked up too, which is harmless for an allow-list.
pub fn functions_in_header(text: &str, prefix: &str) -> Vec<String> {
    let text = strip_comments(text);
    let b = text.as_bytes();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !is_ident_byte(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && is_ident_byte(b[i]) {
            i += 1;
        }
        let word = &text[start..i];
        if !word.starts_with(prefix) || word.len() == prefix.len() {
            continue;
        }
        let mut j = i;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if b.get(j) == Some(&b'(') && !out.iter().any(|w| w == word) {
            out.push(word.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_list() {
        let text = "# c\n\nkmem_alloc\txenpv,pvh\tkern/subr_kmem.c\n\
                    xpq_flush_queue\txenpv\tarch/xen/x86/x86_xpmap.c  \n";
        let m = parse_kernel_symbols(text, None).unwrap();
        assert_eq!(
            m.get("kmem_alloc").map(String::as_str),
            Some("kern/subr_kmem.c")
        );
        assert_eq!(m.len(), 2);
        let pvh = parse_kernel_symbols(text, Some("pvh")).unwrap();
        assert_eq!(pvh.keys().collect::<Vec<_>>(), vec!["kmem_alloc"]);
        let pv = parse_kernel_symbols(text, Some("xenpv")).unwrap();
        assert_eq!(pv.len(), 2);
        assert!(parse_kernel_symbols("kmem_alloc sys/kmem.h\n", None).is_err());
        assert!(parse_kernel_symbols("kmem_alloc\tsys/kmem.h\n", None).is_err());
        assert!(parse_kernel_symbols("a\tpvh\tx\na\tpvh\ty\n", None).is_err());
        assert!(parse_kernel_symbols("kmem_alloc\tpvh\t\n", None).is_err());
        assert!(parse_kernel_symbols("kmem_alloc\t\tkern/x.c\n", None).is_err());
    }

    #[test]
    fn header_scan() {
        let h = "/* balloon_shim_not_me(void) */\n\
                 void *balloon_shim_kmem_alloc(size_t size);\n\
                 void balloon_shim_kmem_free (void *p, size_t size); // balloon_shim_nor_me(\n\
                 __dead void\n  balloon_shim_panic(const char *, size_t);\n\
                 struct balloon_shim_state;\nint balloon_rs_init(void);\n\
                 void balloon_shim_kmem_alloc(void);\n";
        assert_eq!(
            functions_in_header(h, "balloon_shim_"),
            vec![
                "balloon_shim_kmem_alloc",
                "balloon_shim_kmem_free",
                "balloon_shim_panic"
            ]
        );
    }

    #[test]
    fn plain_list() {
        assert_eq!(parse_plain_list("a\n# b\n  c  d\n\n"), vec!["a", "c"]);
    }
}
