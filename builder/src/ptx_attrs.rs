//! Turns the `__kernel_attrs__<kernel>` records a kernel crate exports into PTX directives.
//!
//! The record is five little-endian `u32`s: max threads per block, min blocks per SM, max
//! registers per thread (0 = not set), flags (bit 0: hot) and the dynamic shared memory of a
//! block in bytes. Records of four words (written before the fifth existed) decode with no
//! dynamic shared memory. `llc` writes a record as
//! `.visible .global .align 4 .b8 __kernel_attrs__NAME[20] = {..};` (`.const` for a `const`
//! item); trailing zero bytes may be left out of the initializer.
//!
//! [`apply`] removes the records, writes their directives on each `.entry NAME` between the end
//! of its parameter list and the `{` of its body (wherever `llc`'s comments sit), checks that
//! every named kernel got them, and lists the hot kernels and the dynamic shared memory in header
//! comments that `cargo xtask ptx` reads back ([`hot_kernels`], [`dynamic_shared_bytes`]).

use crate::ptx_module::{self, ItemKind};
use std::collections::BTreeMap;

const RECORD_PREFIX: &str = "__kernel_attrs__";
/// The header line naming the hot kernels of a module.
pub const HOT_MARKER: &str = "// kernel-builder hot:";
/// The header line giving each kernel's dynamic shared memory (`name=bytes`, nonzero only).
pub const DYNAMIC_SHARED_MARKER: &str = "// kernel-builder dynamic-shared-bytes:";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelAttrs {
    pub max_threads: u32,
    pub min_blocks_per_sm: u32,
    pub max_registers: u32,
    pub hot: bool,
    pub dynamic_shared_bytes: u32,
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
///
/// An error if a record names no kernel, if a kernel already carries a directive its record
/// sets, or if, after the rewrite, a kernel lacks a directive its record asks for.
pub fn apply(ptx: &str) -> Result<String, String> {
    // Records are single-line data declarations; everything else is kept as it is.
    let mut records = BTreeMap::new();
    let mut kept = String::with_capacity(ptx.len());
    for line in ptx.split_inclusive('\n') {
        match parse_record(line)? {
            Some((name, attrs)) => {
                if records.insert(name.clone(), attrs).is_some() {
                    return Err(format!("two kernel_attrs! records for `{name}`"));
                }
            }
            None => kept.push_str(line),
        }
    }

    let module = ptx_module::parse(&kept)?;
    let mut out = String::with_capacity(kept.len() + 64 * records.len() + 256);
    let hot: Vec<&str> = records.iter().filter(|(_, a)| a.hot).map(|(n, _)| n.as_str()).collect();
    out.push_str(&format!("{HOT_MARKER} {}\n", hot.join(" ")));
    let shared: Vec<String> = records
        .iter()
        .filter(|(_, a)| a.dynamic_shared_bytes > 0)
        .map(|(n, a)| format!("{n}={}", a.dynamic_shared_bytes))
        .collect();
    out.push_str(&format!("{DYNAMIC_SHARED_MARKER} {}\n", shared.join(" ")));

    let mut at = 0;
    let mut seen = Vec::new();
    for (item, name, body) in module.entries() {
        let Some(attrs) = records.get(name) else { continue };
        seen.push(name);
        let directives = attrs.directives();
        if directives.is_empty() {
            continue;
        }
        let before = &kept[item.start..body];
        for d in &directives {
            let word = d.split_whitespace().next().unwrap_or_default();
            if before.split_whitespace().any(|w| w == word) {
                return Err(format!("kernel `{name}` already has `{word}`; kernel_attrs! sets it too"));
            }
        }
        out.push_str(&kept[at..body]);
        if !out.ends_with('\n') {
            out.push('\n');
        }
        for d in directives {
            out.push_str(&d);
            out.push('\n');
        }
        at = body;
    }
    out.push_str(&kept[at..]);

    for name in records.keys() {
        if !seen.contains(&name.as_str()) {
            return Err(format!(
                "kernel_attrs! names `{name}`, but the PTX has no kernel (.entry) of that name"
            ));
        }
    }
    check_applied(&out, &records)?;
    Ok(out)
}

/// Every kernel with a record carries the directives the record asks for.
fn check_applied(ptx: &str, records: &BTreeMap<String, KernelAttrs>) -> Result<(), String> {
    let module = ptx_module::parse(ptx)?;
    let infos = module.entry_infos();
    for (name, attrs) in records {
        let info =
            infos.iter().find(|i| &i.name == name).ok_or_else(|| format!("kernel `{name}` vanished"))?;
        let ok = (attrs.max_threads == 0 || info.max_threads == Some([attrs.max_threads, 1, 1]))
            && (attrs.min_blocks_per_sm == 0 || info.min_blocks_per_sm == Some(attrs.min_blocks_per_sm))
            && (attrs.max_registers == 0 || info.max_registers == Some(attrs.max_registers));
        if !ok {
            return Err(format!(
                "kernel `{name}` did not get the launch directives of its kernel_attrs! record"
            ));
        }
    }
    // Sanity: the header is still where the module starts.
    if !module.items.iter().any(|i| i.kind == ItemKind::Header) {
        return Err("the module lost its header".into());
    }
    Ok(())
}

/// Reads the hot-kernel list that [`apply`] wrote into a module's header.
pub fn hot_kernels(ptx: &str) -> Vec<String> {
    ptx.lines()
        .find_map(|l| l.strip_prefix(HOT_MARKER))
        .map(|rest| rest.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Reads each kernel's dynamic shared memory from a module's header (kernels not listed: 0).
pub fn dynamic_shared_bytes(ptx: &str) -> BTreeMap<String, u32> {
    ptx.lines()
        .find_map(|l| l.strip_prefix(DYNAMIC_SHARED_MARKER))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

const RECORD_WORDS: usize = 5;

fn parse_record(line: &str) -> Result<Option<(String, KernelAttrs)>, String> {
    let Some(at) = line.find(RECORD_PREFIX) else { return Ok(None) };
    if !line.contains(".b8") || !line.contains('=') {
        // A reference to the record, not its definition, would mean kernel code reads it.
        return Err(format!("unexpected use of a kernel attribute record: `{}`", line.trim()));
    }
    let name_end = line[at..].find('[').ok_or_else(|| format!("malformed record `{}`", line.trim()))?;
    let name = line[at + RECORD_PREFIX.len()..at + name_end].to_string();
    let declared: usize = line[at + name_end + 1..]
        .split(']')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("malformed record `{}`", line.trim()))?;
    if declared != 4 * RECORD_WORDS && declared != 16 {
        return Err(format!(
            "record `{name}` has {declared} bytes, expected {} (or 16 from an older kernel_attrs!)",
            4 * RECORD_WORDS
        ));
    }
    let body = line
        .split_once('{')
        .and_then(|(_, b)| b.split_once('}'))
        .map(|(b, _)| b)
        .ok_or_else(|| format!("malformed record `{}`", line.trim()))?;
    let mut bytes: Vec<u8> = body
        .split(',')
        .map(|b| b.trim().parse::<u8>().map_err(|e| format!("record `{name}`: {e}")))
        .collect::<Result<_, _>>()?;
    // PTX initializers may leave out trailing zero bytes.
    if bytes.len() > declared {
        return Err(format!("record `{name}` has {} bytes, expected {declared}", bytes.len()));
    }
    bytes.resize(4 * RECORD_WORDS, 0);
    let word =
        |i: usize| u32::from_le_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]]);
    let attrs = KernelAttrs {
        max_threads: word(0),
        min_blocks_per_sm: word(1),
        max_registers: word(2),
        hot: word(3) & 1 != 0,
        dynamic_shared_bytes: word(4),
    };
    Ok(Some((name, attrs)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ptx_module::{self, tests::LLC_SM70};

    const PTX: &str = "\
.version 8.0
.target sm_90a
.address_size 64
.visible .const .align 4 .b8 __kernel_attrs__k[20] = {128, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 192, 0, 0};
.visible .entry k(
\t.param .u32 k_param_0
)
{
\tret;
}
";

    /// The record `llc` wrote for `smoke_axpy_f32`, as a pattern for records of other kernels.
    fn record(kernel: &str, bytes: &str) -> String {
        format!(".visible .global .align 4 .b8 __kernel_attrs__{kernel}[20] = {{{bytes}}};\n")
    }

    #[test]
    fn directives_land_on_the_entry_and_the_record_is_removed() {
        let out = apply(PTX).unwrap();
        assert!(!out.contains("__kernel_attrs__"));
        assert!(out.contains(")\n.maxntid 128, 1, 1\n.minnctapersm 2\n{"));
        assert_eq!(hot_kernels(&out), vec!["k".to_string()]);
        assert_eq!(dynamic_shared_bytes(&out).get("k"), Some(&(192 << 8)));
    }

    /// On `llc`'s real output, every kernel with a record gets its directives: the first `.entry`
    /// (whose parameter list ends with `)` alone) and the later ones (`)   // @name`).
    #[test]
    fn every_kernel_of_real_llc_output_gets_its_directives() {
        // The fixture holds `smoke_axpy_f32`'s real record (the older four-word form); records
        // for the other kernels are added in the same form as the current one.
        let mut ptx = String::new();
        for line in LLC_SM70.split_inclusive('\n') {
            ptx.push_str(line);
            if line.starts_with(".visible .global .align 4 .b8 __kernel_attrs__smoke_axpy_f32") {
                ptx.push_str(&record(
                    "naive_softmax_bf16",
                    "0, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 4",
                ));
                ptx.push_str(&record("selftest_indices", "64, 0, 0, 0, 0, 0, 0, 0, 128"));
                ptx.push_str(&record("selftest_shared_barrier", "0, 2"));
            }
        }
        let out = apply(&ptx).unwrap();
        assert!(!out.contains("__kernel_attrs__"));
        let infos = ptx_module::parse(&out).unwrap().entry_infos();
        let get = |n: &str| infos.iter().find(|i| i.name == n).unwrap().clone();
        assert_eq!(get("naive_softmax_bf16").max_threads, Some([256, 1, 1]));
        assert_eq!(get("naive_softmax_bf16").min_blocks_per_sm, Some(2));
        assert_eq!(get("selftest_indices").max_threads, Some([64, 1, 1]));
        assert_eq!(get("selftest_indices").max_registers, Some(128));
        assert_eq!(get("selftest_shared_barrier").max_threads, Some([512, 1, 1]));
        assert_eq!(get("smoke_axpy_f32").max_threads, Some([1024, 1, 1]));
        assert!(out.contains(
            ")                                       // @smoke_axpy_f32\n.maxntid 1024, 1, 1\n{\n"
        ));
        assert!(out.contains(")\n.maxntid 256, 1, 1\n.minnctapersm 2\n{\n"));
        assert_eq!(hot_kernels(&out), ["naive_softmax_bf16", "smoke_axpy_f32"]);
        assert_eq!(
            dynamic_shared_bytes(&out).into_iter().collect::<Vec<_>>(),
            [("naive_softmax_bf16".into(), 1024)]
        );
        // Still one complete module per kernel.
        assert_eq!(ptx_module::split(&out).unwrap().len(), 4);
    }

    #[test]
    fn a_record_for_a_missing_kernel_is_an_error() {
        let ptx = PTX.replace(".entry k(", ".entry other(");
        assert!(apply(&ptx).unwrap_err().contains("`k`"));
    }

    #[test]
    fn a_directive_already_there_is_an_error() {
        let ptx = PTX.replace(")\n{", ")\n.maxntid 64\n{");
        assert!(apply(&ptx).unwrap_err().contains("already has `.maxntid`"));
    }

    #[test]
    fn trailing_zero_bytes_may_be_left_out_and_old_records_decode() {
        let ptx = PTX.replace(
            "[20] = {128, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 192, 0, 0}",
            "[16] = {0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}",
        );
        let out = apply(&ptx).unwrap();
        assert!(out.contains(".maxntid 1024, 1, 1\n{"));
        assert!(dynamic_shared_bytes(&out).is_empty());
    }

    #[test]
    fn a_record_of_another_size_is_an_error() {
        let ptx = PTX.replace("k[20]", "k[24]");
        assert!(apply(&ptx).unwrap_err().contains("24 bytes"));
    }
}
