//! The top-level structure of a PTX module as `llc` writes it, and its split into one module per
//! kernel.
//!
//! A module is a sequence of top-level items: the header directives (`.version`, `.target`,
//! `.address_size`, one line each), declarations ended by `;` (`.extern .shared`, `.global` and
//! `.const` data with or without `= {..}` initializers, `.func` prototypes) and definitions ended
//! by the `}` of their body (`.func`, `.entry`). The scanner matches braces at top level and skips
//! `//` and `/* */` comments and `"..."` strings, so it does not depend on how `llc` lays out
//! lines or comments (it writes the first `.entry`'s parameter list as `)` alone on its line and
//! every later one as `)   // @name`).
//!
//! [`split`] turns a module into one module per `.entry`: the same header, every top-level item
//! that is not an `.entry` (in its original order), then the one entry. Each is a complete module
//! the driver can load alone, so a process JIT-compiles only the kernels it launches. Module-scope
//! data is duplicated: kernels that communicate through a `.global` variable must not be split.

use std::ops::Range;

/// One top-level item of a module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The item's bytes in the module, from the end of the previous item: the comments and blank
    /// lines before it belong to it.
    pub span: Range<usize>,
    /// Where the item itself starts (after its leading comments and whitespace).
    pub start: usize,
    pub kind: ItemKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemKind {
    /// `.version`, `.target`, `.address_size`, `.file`: line directives.
    Header,
    /// A kernel. `body` is the offset of the `{` that opens its body: launch directives go just
    /// before it, after the parameter list and whatever comments `llc` wrote there.
    Entry { name: String, body: usize },
    /// Anything else: data, `.extern` declarations, `.func` prototypes and definitions.
    Other,
}

/// A module's items, and the comments and whitespace after the last one.
#[derive(Clone, Debug)]
pub struct Module<'a> {
    pub text: &'a str,
    pub items: Vec<Item>,
    pub trailing: Range<usize>,
}

/// One kernel's own module, as written by [`split`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelModule {
    pub name: String,
    /// A complete module: header, the shared declarations, then the one `.entry`.
    pub ptx: String,
    /// `ptx[..entry_offset]` is the part every kernel of the module shares; `ptx[entry_offset..]`
    /// is the kernel's `.entry`. The whole module is the shared part followed by every entry.
    pub entry_offset: usize,
}

/// What an entry's header (between its name and its body) says about its launch bounds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryInfo {
    pub name: String,
    /// `.maxntid x, y, z` (missing dimensions are 1).
    pub max_threads: Option<[u32; 3]>,
    /// `.reqntid x, y, z`.
    pub required_threads: Option<[u32; 3]>,
    pub min_blocks_per_sm: Option<u32>,
    pub max_registers: Option<u32>,
}

impl EntryInfo {
    /// Threads per block the kernel may be launched with: `.maxntid` or `.reqntid`, multiplied out.
    pub fn block_threads(&self) -> Option<u32> {
        self.max_threads.or(self.required_threads).map(|[x, y, z]| x * y * z)
    }
}

const LINE_DIRECTIVES: [&str; 4] = [".version", ".target", ".address_size", ".file"];

/// Parses the top-level items of `ptx`.
pub fn parse(ptx: &str) -> Result<Module<'_>, String> {
    let b = ptx.as_bytes();
    let mut items = Vec::new();
    let mut pos = 0;
    loop {
        let span_start = pos;
        pos = skip_trivia(b, pos)?;
        if pos >= b.len() {
            return Ok(Module { text: ptx, items, trailing: span_start..b.len() });
        }
        let start = pos;
        if LINE_DIRECTIVES.iter().any(|d| starts_with_word(&ptx[start..], d)) {
            let end = ptx[start..].find('\n').map_or(b.len(), |n| start + n + 1);
            items.push(Item { span: span_start..end, start, kind: ItemKind::Header });
            pos = end;
            continue;
        }
        let (end, body) = scan_item(ptx, start)?;
        let kind = match entry_name(&ptx[start..end]) {
            Some(name) => {
                let body = body.ok_or_else(|| {
                    format!("kernel `{name}`: its `.entry` has no body (`{{` after the parameter list)")
                })?;
                ItemKind::Entry { name, body }
            }
            None => ItemKind::Other,
        };
        items.push(Item { span: span_start..end, start, kind });
        pos = end;
    }
}

/// Skips whitespace and comments from `pos`; the offset of the next significant byte.
fn skip_trivia(b: &[u8], mut pos: usize) -> Result<usize, String> {
    while pos < b.len() {
        match b[pos] {
            c if c.is_ascii_whitespace() => pos += 1,
            b'/' if b.get(pos + 1) == Some(&b'/') => {
                pos = b[pos..].iter().position(|&c| c == b'\n').map_or(b.len(), |n| pos + n + 1);
            }
            b'/' if b.get(pos + 1) == Some(&b'*') => pos = block_comment_end(b, pos)?,
            _ => break,
        }
    }
    Ok(pos)
}

fn block_comment_end(b: &[u8], pos: usize) -> Result<usize, String> {
    b[pos + 2..]
        .windows(2)
        .position(|w| w == b"*/")
        .map(|n| pos + 2 + n + 2)
        .ok_or_else(|| format!("unterminated `/*` comment at byte {pos}"))
}

/// Scans one item from `start`: the offset just past its end (its `;` at top level, or the `}`
/// that closes its body) and the offset of its body's `{`, if it has one. A `{` after `=` opens
/// an initializer, not a body: the item then ends at the `;` after it.
fn scan_item(ptx: &str, start: usize) -> Result<(usize, Option<usize>), String> {
    let b = ptx.as_bytes();
    let mut pos = start;
    let mut depth = 0usize;
    let mut body = None;
    let mut initializer = false;
    let mut last_significant = 0u8;
    while pos < b.len() {
        let c = b[pos];
        match c {
            b'/' if matches!(b.get(pos + 1), Some(b'/') | Some(b'*')) => {
                pos = skip_trivia(b, pos)?;
                continue;
            }
            b'"' => {
                pos = string_end(b, pos)?;
                last_significant = b'"';
                continue;
            }
            b'{' => {
                if depth == 0 {
                    if last_significant == b'=' {
                        initializer = true;
                    } else if body.is_none() {
                        body = Some(pos);
                    }
                }
                depth += 1;
            }
            b'}' => {
                depth = depth.checked_sub(1).ok_or_else(|| format!("unbalanced `}}` at byte {pos}"))?;
                if depth == 0 && !initializer {
                    return Ok((pos + 1, body));
                }
                if depth == 0 {
                    initializer = false;
                }
            }
            b';' if depth == 0 => return Ok((pos + 1, body)),
            _ => {}
        }
        if !c.is_ascii_whitespace() {
            last_significant = c;
        }
        pos += 1;
    }
    let line = ptx[..start].lines().count() + 1;
    Err(format!("the top-level item at line {line} does not end (no `;` or closing `}}`)"))
}

fn string_end(b: &[u8], pos: usize) -> Result<usize, String> {
    let mut i = pos + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Ok(i + 1),
            b'\n' => break,
            _ => i += 1,
        }
    }
    Err(format!("unterminated string at byte {pos}"))
}

fn starts_with_word(s: &str, word: &str) -> bool {
    s.strip_prefix(word).is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_whitespace()))
}

/// The kernel's name if the item is an `.entry` (a definition, not a `.func` or data).
fn entry_name(item: &str) -> Option<String> {
    // The linkage and the kind come before the name: `.visible .entry name(`, `.weak .entry ..`.
    let mut rest = item;
    loop {
        rest = rest.trim_start();
        let word_end = rest.find(|c: char| c.is_ascii_whitespace() || c == '(').unwrap_or(rest.len());
        let word = &rest[..word_end];
        rest = &rest[word_end..];
        match word {
            ".entry" => {
                let rest = rest.trim_start();
                let end = rest.find(|c: char| c.is_ascii_whitespace() || c == '(').unwrap_or(rest.len());
                return (end > 0).then(|| rest[..end].to_string());
            }
            ".visible" | ".weak" | ".extern" => continue,
            _ => return None,
        }
    }
}

impl Module<'_> {
    /// The kernels, in module order.
    pub fn entries(&self) -> impl Iterator<Item = (&Item, &str, usize)> {
        self.items.iter().filter_map(|i| match &i.kind {
            ItemKind::Entry { name, body } => Some((i, name.as_str(), *body)),
            _ => None,
        })
    }

    /// What each kernel's header declares: `.maxntid`, `.reqntid`, `.minnctapersm`, `.maxnreg`.
    pub fn entry_infos(&self) -> Vec<EntryInfo> {
        self.entries()
            .map(|(item, name, body)| {
                let header = strip_comments(&self.text[item.start..body]);
                let mut info = EntryInfo { name: name.to_string(), ..Default::default() };
                // The directives follow the parameter list's `)`.
                let after_params = header.rfind(')').map_or(header.as_str(), |p| &header[p + 1..]);
                let mut words = after_params.split_whitespace().peekable();
                while let Some(w) = words.next() {
                    let mut numbers = || {
                        let mut v = Vec::new();
                        while let Some(n) =
                            words.peek().and_then(|n| n.trim_end_matches(',').parse::<u32>().ok())
                        {
                            v.push(n);
                            words.next();
                        }
                        v
                    };
                    match w {
                        ".maxntid" | ".reqntid" => {
                            let v = numbers();
                            let dims = [0, 1, 2].map(|i| v.get(i).copied().unwrap_or(1));
                            if w == ".maxntid" {
                                info.max_threads = Some(dims);
                            } else {
                                info.required_threads = Some(dims);
                            }
                        }
                        ".minnctapersm" => info.min_blocks_per_sm = numbers().first().copied(),
                        ".maxnreg" => info.max_registers = numbers().first().copied(),
                        _ => {}
                    }
                }
                info
            })
            .collect()
    }
}

/// The text with `//` and `/* */` comments replaced by a space (strings are kept).
fn strip_comments(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut pos = 0;
    while pos < b.len() {
        match b[pos] {
            b'/' if matches!(b.get(pos + 1), Some(b'/') | Some(b'*')) => {
                let end = if b[pos + 1] == b'/' {
                    b[pos..].iter().position(|&c| c == b'\n').map_or(b.len(), |n| pos + n)
                } else {
                    block_comment_end(b, pos).unwrap_or(b.len())
                };
                out.push(' ');
                pos = end;
            }
            b'"' => {
                let end = string_end(b, pos).unwrap_or(b.len());
                out.push_str(&s[pos..end]);
                pos = end;
            }
            _ => {
                let next = s[pos..].find(['/', '"']).map_or(s.len(), |n| pos + n.max(1));
                out.push_str(&s[pos..next]);
                pos = next;
            }
        }
    }
    out
}

/// One module per `.entry` of `ptx`: each has the same header and every top-level item that is
/// not an `.entry`, in their original order, then that one entry.
pub fn split(ptx: &str) -> Result<Vec<KernelModule>, String> {
    let module = parse(ptx)?;
    if !module
        .items
        .iter()
        .any(|i| i.kind == ItemKind::Header && starts_with_word(&ptx[i.start..], ".version"))
    {
        return Err("the module has no `.version` directive".into());
    }
    let mut shared = String::new();
    for item in module.items.iter().filter(|i| !matches!(i.kind, ItemKind::Entry { .. })) {
        shared.push_str(&ptx[item.span.clone()]);
    }
    if !shared.ends_with('\n') {
        shared.push('\n');
    }
    let mut pieces = Vec::new();
    for (item, name, _) in module.entries() {
        let mut text = String::with_capacity(shared.len() + item.span.len() + 1);
        text.push_str(&shared);
        text.push_str(&ptx[item.span.clone()]);
        text.push('\n');
        pieces.push(KernelModule { name: name.to_string(), ptx: text, entry_offset: shared.len() });
    }
    Ok(pieces)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `llc`'s output for the `sm_70` module (2026-11-23, nightly-2026-05-20, LLVM 22.1.4),
    /// trimmed to four kernels: the first `.entry` (parameter list closed by `)` alone), three
    /// later ones (closed by `)   // @name`), the `.func` definitions between them, and one
    /// attribute record in the old four-word format.
    pub(crate) const LLC_SM70: &str = include_str!("../tests/fixtures/llc-sm_70.ptx");

    const KERNELS: [&str; 4] =
        ["naive_softmax_bf16", "selftest_indices", "selftest_shared_barrier", "smoke_axpy_f32"];

    #[test]
    fn finds_every_entry_of_real_llc_output() {
        let m = parse(LLC_SM70).unwrap();
        let names: Vec<&str> = m.entries().map(|(_, n, _)| n).collect();
        assert_eq!(names, KERNELS);
        for (_, name, body) in m.entries() {
            assert_eq!(&LLC_SM70[body..body + 2], "{\n", "{name}");
        }
        // Items cover the text without gaps.
        let mut at = 0;
        for item in &m.items {
            assert_eq!(item.span.start, at);
            at = item.span.end;
        }
        assert_eq!(m.trailing.end, LLC_SM70.len());
        let headers = m.items.iter().filter(|i| i.kind == ItemKind::Header).count();
        assert_eq!(headers, 3);
    }

    #[test]
    fn every_piece_is_a_complete_module_with_one_entry() {
        let pieces = split(LLC_SM70).unwrap();
        assert_eq!(pieces.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), KERNELS);
        for p in &pieces {
            let m = parse(&p.ptx).unwrap();
            let headers: Vec<&str> = m
                .items
                .iter()
                .filter(|i| i.kind == ItemKind::Header)
                .map(|i| p.ptx[i.start..i.span.end].trim())
                .collect();
            assert_eq!(headers, [".version 7.0", ".target sm_70", ".address_size 64"], "{}", p.name);
            let entries: Vec<&str> = m.entries().map(|(_, n, _)| n).collect();
            assert_eq!(entries, [p.name.as_str()]);
            // The shared declarations come first, the kernel last.
            assert!(p.ptx.contains(".extern .shared .align 1024 .b8 DYNAMIC_SMEM[];"));
            assert!(p.ptx.contains(".func _RNvNtCsbSE61zFgCyu_4core9panicking9panic_fmt()\n.noreturn"));
            assert_eq!(p.ptx[..p.entry_offset], pieces[0].ptx[..pieces[0].entry_offset]);
            assert!(!p.ptx[..p.entry_offset].contains(".entry"));
            assert!(p.ptx[p.entry_offset..].trim_end().ends_with('}'));
        }
        // The shared part and every entry give back the module's items.
        let mut whole = pieces[0].ptx[..pieces[0].entry_offset].to_string();
        for p in &pieces {
            whole.push_str(&p.ptx[p.entry_offset..]);
        }
        let (a, b) = (parse(&whole).unwrap(), parse(LLC_SM70).unwrap());
        assert_eq!(a.items.len(), b.items.len());
    }

    #[test]
    fn reads_launch_directives_of_each_entry() {
        let ptx = LLC_SM70
            .replace(")                                       // @smoke_axpy_f32\n", ")                                       // @smoke_axpy_f32\n.maxntid 1024, 1, 1\n.minnctapersm 2\n")
            .replace(".visible .entry selftest_indices(", "/* { */ .visible .entry selftest_indices(");
        let infos = parse(&ptx).unwrap().entry_infos();
        let smoke = infos.iter().find(|i| i.name == "smoke_axpy_f32").unwrap();
        assert_eq!(smoke.max_threads, Some([1024, 1, 1]));
        assert_eq!(smoke.block_threads(), Some(1024));
        assert_eq!(smoke.min_blocks_per_sm, Some(2));
        assert!(infos.iter().filter(|i| i.name != "smoke_axpy_f32").all(|i| i.max_threads.is_none()));
        assert_eq!(infos.len(), 4);
    }

    #[test]
    fn comments_strings_and_initializers_do_not_end_items() {
        let ptx = "\
.version 8.0 // a comment with { and }
.target sm_90a
.address_size 64
/* a block comment with .entry fake( ) { */
.global .align 4 .b8 table[8] = {1, 2, {3}, 4};
.global .align 1 .b8 msg[4] = {104, 105, 0, 0}; // \"}\"
.func (.param .b32 r) helper(.param .b32 x)
{
\t{ .reg .b32 t; mov.b32 t, 1; }
\tret;
}
.visible .entry a(.param .u32 p) // ) {
.maxntid 64
{ ret; }
.entry b() { ret; }
";
        let m = parse(ptx).unwrap();
        let kinds: Vec<String> = m
            .items
            .iter()
            .map(|i| match &i.kind {
                ItemKind::Header => "h".into(),
                ItemKind::Other => "o".into(),
                ItemKind::Entry { name, .. } => name.clone(),
            })
            .collect();
        assert_eq!(kinds, ["h", "h", "h", "o", "o", "o", "a", "b"]);
        let infos = m.entry_infos();
        assert_eq!(infos[0].max_threads, Some([64, 1, 1]));
        assert_eq!(infos[1].max_threads, None);
        let pieces = split(ptx).unwrap();
        assert!(
            pieces[1].ptx.contains(".func (.param .b32 r) helper") && pieces[1].ptx.ends_with("{ ret; }\n")
        );
        assert!(!pieces[1].ptx.contains(".entry a"));
    }

    #[test]
    fn unbalanced_text_is_an_error() {
        assert!(parse(".version 7.0\n.entry k() { ret;\n").is_err());
        assert!(parse(".version 7.0\n}\n").is_err());
        assert!(parse(".version 7.0\n.entry k() ;\n").unwrap_err().contains("no body"));
    }
}
