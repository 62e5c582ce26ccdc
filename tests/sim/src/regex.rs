// SPDX-License-Identifier: BSD-2-Clause
//! A small regular-expression matcher for scenario assertions
//! (`expect dmesg ~ RE`): the part of POSIX extended regular expressions
//! (re_format(7)) that log lines need, matched by backtracking.
//!
//! Supported: literal characters, `.`, bracket expressions `[abc]`,
//! `[a-z]`, `[^...]` (a `]` first is literal), anchors `^` and `$`,
//! groups `( )`, alternation `|`, the repetitions `*`, `+`, `?` and
//! `{m}`, `{m,}`, `{m,n}`, and backslash escapes of any special character
//! plus `\d` (digit), `\s` (white space) and `\w` (word character). A
//! match may start anywhere in the line unless anchored.

use std::fmt;

#[derive(Clone, Debug)]
enum Node {
    Char(char),
    Any,
    Class {
        items: Vec<ClassItem>,
        negated: bool,
    },
    Start,
    End,
    Group(Vec<Vec<Node>>),
    Repeat {
        node: Box<Node>,
        min: usize,
        max: Option<usize>,
    },
}

#[derive(Clone, Debug)]
enum ClassItem {
    Range(char, char),
    Digit,
    Space,
    Word,
}

impl ClassItem {
    fn matches(&self, c: char) -> bool {
        match self {
            ClassItem::Range(a, b) => *a <= c && c <= *b,
            ClassItem::Digit => c.is_ascii_digit(),
            ClassItem::Space => c.is_whitespace(),
            ClassItem::Word => c.is_alphanumeric() || c == '_',
        }
    }
}

/// A compiled expression.
#[derive(Clone, Debug)]
pub struct Regex {
    alts: Vec<Vec<Node>>,
    text: String,
}

/// Why an expression does not compile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegexError(pub String);

impl fmt::Display for RegexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

struct Parser<'a> {
    chars: &'a [char],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += usize::from(c.is_some());
        c
    }

    fn err<T>(&self, what: &str) -> Result<T, RegexError> {
        Err(RegexError(format!("{what} at offset {}", self.pos)))
    }

    /// alternatives separated by `|`, up to `)` or the end.
    fn alternation(&mut self, depth: usize) -> Result<Vec<Vec<Node>>, RegexError> {
        let mut alts = vec![self.sequence(depth)?];
        while self.peek() == Some('|') {
            self.pos += 1;
            alts.push(self.sequence(depth)?);
        }
        Ok(alts)
    }

    fn sequence(&mut self, depth: usize) -> Result<Vec<Node>, RegexError> {
        let mut seq = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || (c == ')' && depth > 0) {
                break;
            }
            let atom = self.atom(depth)?;
            let atom = self.repetitions(atom)?;
            seq.push(atom);
        }
        Ok(seq)
    }

    fn atom(&mut self, depth: usize) -> Result<Node, RegexError> {
        let Some(c) = self.next() else {
            return self.err("unexpected end");
        };
        Ok(match c {
            '.' => Node::Any,
            '^' => Node::Start,
            '$' => Node::End,
            '(' => {
                let alts = self.alternation(depth + 1)?;
                if self.next() != Some(')') {
                    return self.err("unmatched (");
                }
                Node::Group(alts)
            }
            ')' => return self.err("unmatched )"),
            '[' => self.class()?,
            '*' | '+' | '?' => return self.err("repetition of nothing"),
            '\\' => match self.next() {
                None => return self.err("trailing backslash"),
                Some('d') => Node::Class {
                    items: vec![ClassItem::Digit],
                    negated: false,
                },
                Some('s') => Node::Class {
                    items: vec![ClassItem::Space],
                    negated: false,
                },
                Some('w') => Node::Class {
                    items: vec![ClassItem::Word],
                    negated: false,
                },
                Some('t') => Node::Char('\t'),
                Some('n') => Node::Char('\n'),
                Some(e) => Node::Char(e),
            },
            c => Node::Char(c),
        })
    }

    fn class(&mut self) -> Result<Node, RegexError> {
        let negated = self.peek() == Some('^');
        self.pos += usize::from(negated);
        let mut items = Vec::new();
        let mut first = true;
        loop {
            let Some(c) = self.next() else {
                return self.err("unterminated [");
            };
            if c == ']' && !first {
                break;
            }
            first = false;
            let lo = if c == '\\' {
                match self.next() {
                    Some('d') => {
                        items.push(ClassItem::Digit);
                        continue;
                    }
                    Some('s') => {
                        items.push(ClassItem::Space);
                        continue;
                    }
                    Some('w') => {
                        items.push(ClassItem::Word);
                        continue;
                    }
                    Some(e) => e,
                    None => return self.err("unterminated ["),
                }
            } else {
                c
            };
            if self.peek() == Some('-') && self.chars.get(self.pos + 1).is_some_and(|&n| n != ']') {
                self.pos += 1;
                let Some(hi) = self.next() else {
                    return self.err("unterminated [");
                };
                if hi < lo {
                    return self.err("range out of order");
                }
                items.push(ClassItem::Range(lo, hi));
            } else {
                items.push(ClassItem::Range(lo, lo));
            }
        }
        Ok(Node::Class { items, negated })
    }

    fn repetitions(&mut self, mut atom: Node) -> Result<Node, RegexError> {
        loop {
            let (min, max) = match self.peek() {
                Some('*') => (0, None),
                Some('+') => (1, None),
                Some('?') => (0, Some(1)),
                Some('{') => {
                    let save = self.pos;
                    self.pos += 1;
                    match self.bounds()? {
                        Some(b) => {
                            atom = Node::Repeat {
                                node: Box::new(atom),
                                min: b.0,
                                max: b.1,
                            };
                            continue;
                        }
                        None => {
                            // Not a bound: a literal `{`.
                            self.pos = save;
                            return Ok(atom);
                        }
                    }
                }
                _ => return Ok(atom),
            };
            self.pos += 1;
            if matches!(atom, Node::Start | Node::End) {
                return self.err("repetition of an anchor");
            }
            atom = Node::Repeat {
                node: Box::new(atom),
                min,
                max,
            };
        }
    }

    /// `m}`, `m,}` or `m,n}` after a `{`; None when it is not a bound.
    fn bounds(&mut self) -> Result<Option<(usize, Option<usize>)>, RegexError> {
        let number = |p: &mut Self| {
            let start = p.pos;
            while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                p.pos += 1;
            }
            p.chars[start..p.pos]
                .iter()
                .collect::<String>()
                .parse::<usize>()
                .ok()
        };
        let Some(min) = number(self) else {
            return Ok(None);
        };
        let max = if self.peek() == Some(',') {
            self.pos += 1;
            number(self)
        } else {
            Some(min)
        };
        if self.next() != Some('}') {
            return Ok(None);
        }
        if max.is_some_and(|m| m < min) || min > 1000 {
            return self.err("bad repetition bound");
        }
        Ok(Some((min, max)))
    }
}

impl Regex {
    /// Compiles `re`.
    pub fn new(re: &str) -> Result<Regex, RegexError> {
        let chars: Vec<char> = re.chars().collect();
        let mut p = Parser {
            chars: &chars,
            pos: 0,
        };
        let alts = p.alternation(0)?;
        if p.pos != chars.len() {
            return p.err("unmatched )");
        }
        Ok(Regex {
            alts,
            text: re.to_string(),
        })
    }

    /// Whether the expression matches somewhere in `line`.
    pub fn is_match(&self, line: &str) -> bool {
        let text: Vec<char> = line.chars().collect();
        let m = Matcher { text: &text };
        (0..=text.len()).any(|start| m.alts(&self.alts, start, &|_| true))
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

struct Matcher<'a> {
    text: &'a [char],
}

impl Matcher<'_> {
    fn alts(&self, alts: &[Vec<Node>], pos: usize, k: &dyn Fn(usize) -> bool) -> bool {
        alts.iter().any(|seq| self.seq(seq, pos, k))
    }

    fn seq(&self, seq: &[Node], pos: usize, k: &dyn Fn(usize) -> bool) -> bool {
        match seq.split_first() {
            None => k(pos),
            Some((first, rest)) => self.node(first, pos, &|p| self.seq(rest, p, k)),
        }
    }

    fn node(&self, n: &Node, pos: usize, k: &dyn Fn(usize) -> bool) -> bool {
        let c = self.text.get(pos).copied();
        match n {
            Node::Char(x) => c == Some(*x) && k(pos + 1),
            Node::Any => c.is_some() && k(pos + 1),
            Node::Class { items, negated } => {
                c.is_some_and(|c| items.iter().any(|i| i.matches(c)) != *negated) && k(pos + 1)
            }
            Node::Start => pos == 0 && k(pos),
            Node::End => pos == self.text.len() && k(pos),
            Node::Group(alts) => self.alts(alts, pos, k),
            Node::Repeat { node, min, max } => self.repeat(node, *min, *max, 0, pos, k),
        }
    }

    /// Greedy: as many more as fit (each moving forward), then the rest.
    fn repeat(
        &self,
        n: &Node,
        min: usize,
        max: Option<usize>,
        count: usize,
        pos: usize,
        k: &dyn Fn(usize) -> bool,
    ) -> bool {
        if max.is_none_or(|m| count < m)
            && self.node(n, pos, &|p| {
                (p != pos || count < min) && self.repeat(n, min, max, count + 1, p, k)
            })
        {
            return true;
        }
        count >= min && k(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(re: &str, s: &str) -> bool {
        Regex::new(re).unwrap().is_match(s)
    }

    #[test]
    fn matches_like_extended_regular_expressions() {
        assert!(m("giving up", "balloon0: giving up on target 1 KiB"));
        assert!(m("^balloon0: ", "balloon0: x"));
        assert!(!m("^balloon0: ", "xballoon0: x"));
        assert!(m("KiB$", "at target: 5 KiB"));
        assert!(!m("KiB$", "at target: 5 KiB."));
        assert!(m("target: [0-9]+ KiB", "at target: 307200 KiB"));
        assert!(!m("target: [0-9]+ KiB", "at target:  KiB"));
        assert!(m("^a.c$", "abc"));
        assert!(m("^ab*c$", "ac") && m("^ab*c$", "abbbc"));
        assert!(m("^ab+c$", "abc") && !m("^ab+c$", "ac"));
        assert!(m("^ab?c$", "ac") && m("^ab?c$", "abc") && !m("^ab?c$", "abbc"));
        assert!(m("^(inflat|deflat)ing$", "deflating"));
        assert!(!m("^(inflat|deflat)ing$", "plugging"));
        assert!(m("^x(ab)*y$", "xababy") && !m("^x(ab)*y$", "xabay"));
        assert!(m("^[^ ]+$", "abc") && !m("^[^ ]+$", "a c"));
        assert!(m("^[]a]+$", "]a]"));
        assert!(m("^[a-]+$", "a-a"));
        assert!(m("\\(12\\)", "error (12) in"));
        assert!(m("^\\d{3}$", "123") && !m("^\\d{3}$", "12"));
        assert!(m("^a{2,}$", "aaa") && !m("^a{2,}$", "a"));
        assert!(m("^a{1,2}$", "aa") && !m("^a{1,2}$", "aaa"));
        assert!(m("^\\w+\\s\\w+$", "ab cd"));
        assert!(m("a{x", "a{x"));
        assert!(m("", "anything"));
        assert!(m("^$", ""));
        assert!(m("(a*)*b", "aaab"));
    }

    #[test]
    fn bad_expressions_are_refused() {
        for bad in ["(", ")", "a)", "[a", "*a", "a\\", "[z-a]", "^*", "a{3,1}"] {
            assert!(Regex::new(bad).is_err(), "{bad:?}");
        }
    }
}
