//! Turns the `__kernel_attrs__<kernel>` records a kernel crate exports into PTX directives.
//!
//! The record is four little-endian `u32`s: max threads per block, min blocks per SM, max
//! registers per thread (0 = not set), and flags (bit 0: hot). `llc` writes it as
//! `.visible .const .align 4 .b8 __kernel_attrs__NAME[16] = {..};`. The record is removed from
//! the PTX, its directives go on `.entry NAME`, and hot kernels are listed in a header comment
//! that `cargo xtask ptx` reads back from the embedded PTX.

use std::collections::BTreeMap;

const RECORD_PREFIX: &str = "__kernel_attrs__";
/// The header line naming the hot kernels of a module.
pub const HOT_MARKER: &str = "// kernel-builder hot:";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelAttrs {
    pub max_threads: u32,
    pub min_blocks_per_sm: u32,
    pub max_registers: u32,
    pub hot: bool,
}

impl KernelAttrs {
    fn directives(&self) -> Vec<String> {
        let mut d = Vec::new();
        if self.max_threads > 0 {
            d.push(format!(".maxntid {}, 1, 1", self.max_threads));
        }
        if self.min_blocks_per_sm > 0 {
            d.push(format!(".minnctapersm {}", self.min_blocks_per_sm));
        }
        if self.max_registers > 0 {
            d.push(format!(".maxnreg {}", self.max_registers));
        }
        d
    }
}

/// Applies every attribute record in `ptx` to its kernel and returns the new text.
pub fn apply(ptx: &str) -> Result<String, String> {
    let mut records = BTreeMap::new();
    let mut kept = Vec::new();
    for line in ptx.lines() {
        match parse_record(line)? {
            Some((name, attrs)) => {
                records.insert(name, attrs);
            }
            None => kept.push(line),
        }
    }

    let mut out = String::with_capacity(ptx.len() + 256);
    let hot: Vec<&str> = records.iter().filter(|(_, a)| a.hot).map(|(n, _)| n.as_str()).collect();
    out.push_str(&format!("{HOT_MARKER} {}\n", hot.join(" ")));

    let mut applied = Vec::new();
    let mut pending: Option<&KernelAttrs> = None;
    for line in kept {
        out.push_str(line);
        out.push('\n');
        if let Some(name) = entry_name(line) {
            pending = records.get(name);
            if pending.is_some() {
                applied.push(name.to_string());
            }
        }
        // The parameter list of an `.entry` ends with a line holding only `)`; directives go
        // between it and the body's `{`.
        if line.trim() == ")" {
            if let Some(attrs) = pending.take() {
                for d in attrs.directives() {
                    out.push_str(&d);
                    out.push('\n');
                }
            }
        }
    }
    for name in records.keys() {
        if !applied.contains(name) {
            return Err(format!(
                "kernel_attrs! names `{name}`, but the PTX has no kernel (.entry) of that name"
            ));
        }
    }
    Ok(out)
}

/// Reads the hot-kernel list that [`apply`] wrote into a module's header.
pub fn hot_kernels(ptx: &str) -> Vec<String> {
    ptx.lines()
        .find_map(|l| l.strip_prefix(HOT_MARKER))
        .map(|rest| rest.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

fn entry_name(line: &str) -> Option<&str> {
    let rest = line.split(".entry ").nth(1)?;
    rest.split(|c: char| c == '(' || c.is_whitespace()).next()
}

fn parse_record(line: &str) -> Result<Option<(String, KernelAttrs)>, String> {
    let Some(at) = line.find(RECORD_PREFIX) else { return Ok(None) };
    if !line.contains(".b8") || !line.contains('=') {
        // A reference to the record, not its definition, would mean kernel code reads it.
        return Err(format!("unexpected use of a kernel attribute record: `{}`", line.trim()));
    }
    let name_end = line[at..].find('[').ok_or_else(|| format!("malformed record `{line}`"))?;
    let name = line[at + RECORD_PREFIX.len()..at + name_end].to_string();
    let body = line
        .split_once('{')
        .and_then(|(_, b)| b.split_once('}'))
        .map(|(b, _)| b)
        .ok_or_else(|| format!("malformed record `{line}`"))?;
    let mut bytes: Vec<u8> = body
        .split(',')
        .map(|b| b.trim().parse::<u8>().map_err(|e| format!("record `{name}`: {e}")))
        .collect::<Result<_, _>>()?;
    // PTX initializers may leave out trailing zero bytes.
    if bytes.len() > 16 {
        return Err(format!("record `{name}` has {} bytes, expected 16", bytes.len()));
    }
    bytes.resize(16, 0);
    let word =
        |i: usize| u32::from_le_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]]);
    let attrs = KernelAttrs {
        max_threads: word(0),
        min_blocks_per_sm: word(1),
        max_registers: word(2),
        hot: word(3) & 1 != 0,
    };
    Ok(Some((name, attrs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PTX: &str = "\
.version 8.0
.target sm_90a
.visible .const .align 4 .b8 __kernel_attrs__k[16] = {128, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0};
.visible .entry k(
\t.param .u32 k_param_0
)
{
\tret;
}
";

    #[test]
    fn directives_land_on_the_entry_and_the_record_is_removed() {
        let out = apply(PTX).unwrap();
        assert!(!out.contains("__kernel_attrs__"));
        assert!(out.contains(")\n.maxntid 128, 1, 1\n.minnctapersm 2\n{"));
        assert_eq!(hot_kernels(&out), vec!["k".to_string()]);
    }

    #[test]
    fn a_record_for_a_missing_kernel_is_an_error() {
        let ptx = PTX.replace(".entry k(", ".entry other(");
        assert!(apply(&ptx).unwrap_err().contains("`k`"));
    }

    #[test]
    fn trailing_zero_bytes_may_be_left_out() {
        let ptx = PTX.replace(
            "{128, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}",
            "{0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}",
        );
        let out = apply(&ptx).unwrap();
        assert!(out.contains(".maxntid 1024, 1, 1\n{"));
    }
}
