//! The results: a terminal table, and `<date>-<gpu>.json` / `.md` for the charts and the docs.

use crate::cases::{Case, Pass};
use std::fmt::Write as _;

/// One implementation on one case.
pub struct Row {
    pub case: Case,
    pub implementation: String,
    pub outcome: Outcome,
}

pub enum Outcome {
    Measured {
        median_ms: f64,
        runs: usize,
        peak_bytes: u64,
        /// Max |error| over max |reference| against `checked_against`.
        rel_error: f64,
        checked_against: &'static str,
    },
    /// Ran, but its output is wrong: it does not score.
    Wrong {
        rel_error: f64,
        checked_against: &'static str,
    },
    Missing(String),
}

/// Relative error above which a result is rejected as wrong.
pub const MAX_REL_ERROR: f64 = 0.05;

/// Implementation names, in column order.
pub const OURS: &str = "rustflash";
pub const OURS_DET: &str = "rustflash det";
/// float32 in the TF32 mode (`OURS` is the default, accurate mode).
pub const OURS_TF32: &str = "rustflash tf32";
pub const NAIVE: &str = "naive (cuBLAS)";
const COLUMN_ORDER: [&str; 8] =
    [OURS, OURS_TF32, OURS_DET, NAIVE, "torch flash", "torch cudnn", "torch efficient", "torch math"];

/// Whether `name` is one of ours.
fn is_ours(name: &str) -> bool {
    [OURS, OURS_DET, OURS_TF32].contains(&name)
}

/// Column position of an implementation (unknown names last).
pub fn order(name: &str) -> usize {
    COLUMN_ORDER.iter().position(|n| *n == name).unwrap_or(COLUMN_ORDER.len())
}

impl Row {
    pub fn tflops(&self) -> Option<f64> {
        match self.outcome {
            Outcome::Measured { median_ms, .. } => Some(self.case.flops() / median_ms / 1e9),
            _ => None,
        }
    }
}

pub struct Run {
    pub gpu: String,
    pub torch: String,
    pub date: String,
    pub mode: String,
    pub rows: Vec<Row>,
    /// Why the run ended before its last case, if it did.
    pub stopped: Option<String>,
}

fn case_key(c: &Case) -> (Pass, &'static str, usize, usize, bool) {
    (c.pass, c.dtype.name(), c.headdim, c.seqlen, c.causal)
}

fn passes(run: &Run) -> Vec<Pass> {
    let mut p: Vec<Pass> = run.rows.iter().map(|r| r.case.pass).collect();
    p.sort();
    p.dedup();
    p
}

fn columns<'a>(rows: impl Iterator<Item = &'a Row>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for r in rows {
        if !names.contains(&r.implementation) {
            names.push(r.implementation.clone());
        }
    }
    names.sort_by_key(|n| order(n));
    names
}

/// Groups the rows of one pass by case, in order.
fn by_case(run: &Run, pass: Pass) -> Vec<(Case, Vec<&Row>)> {
    let mut groups: Vec<(Case, Vec<&Row>)> = Vec::new();
    for r in run.rows.iter().filter(|r| r.case.pass == pass) {
        match groups.iter_mut().find(|(c, _)| case_key(c) == case_key(&r.case)) {
            Some((_, rows)) => rows.push(r),
            None => groups.push((r.case, vec![r])),
        }
    }
    groups
}

fn cell(r: Option<&&Row>) -> String {
    match r.map(|r| (&r.outcome, r.tflops())) {
        Some((Outcome::Measured { .. }, Some(t))) => format!("{t:.1}"),
        Some((Outcome::Wrong { .. }, _)) => "WRONG".into(),
        Some((Outcome::Missing(_), _)) | None | Some((_, None)) => "-".into(),
    }
}

/// The ratio columns of a table: (numerator, denominator): ours (and ours in the TF32 mode, if
/// measured) over every peer, ours det over torch flash.
fn ratios(names: &[String]) -> Vec<(&'static str, String)> {
    let peers = || names.iter().filter(|n| !is_ours(n));
    let mut out: Vec<(&'static str, String)> = peers().map(|p| (OURS, p.clone())).collect();
    if names.iter().any(|n| n == OURS_TF32) {
        out.extend(peers().map(|p| (OURS_TF32, p.clone())));
    }
    if names.iter().any(|n| n == OURS_DET) && names.iter().any(|n| n == "torch flash") {
        out.push((OURS_DET, "torch flash".into()));
    }
    out
}

fn short(name: &str) -> &str {
    match name {
        OURS => "ours",
        OURS_DET => "ours det",
        OURS_TF32 => "ours tf32",
        n => n,
    }
}

/// Every pass's table, then the summary, as Markdown (also printed to the terminal).
pub fn markdown_table(run: &Run) -> String {
    let mut out = String::new();
    for pass in passes(run) {
        writeln!(out, "## {}\n\n{}", title(pass), pass_table(run, pass)).unwrap();
    }
    out.push_str(&summary(run));
    let missing: Vec<String> = run
        .rows
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Missing(why) => {
                Some(format!("- {}, {} at {}: {why}", r.case.pass.name(), r.implementation, r.case.label()))
            }
            Outcome::Wrong { rel_error, checked_against } => Some(format!(
                "- {}, {} at {}: WRONG, relative error {rel_error:.2e} vs {checked_against}",
                r.case.pass.name(),
                r.implementation,
                r.case.label()
            )),
            _ => None,
        })
        .collect();
    if !missing.is_empty() {
        writeln!(out, "\nNot measured:\n{}", missing.join("\n")).unwrap();
    }
    if let Some(why) = &run.stopped {
        writeln!(out, "\nIncomplete run: {why}.").unwrap();
    }
    out
}

fn title(pass: Pass) -> &'static str {
    match pass {
        Pass::Forward => "Forward",
        Pass::Backward => "Backward",
        Pass::Both => "Forward + backward",
    }
}

fn pass_table(run: &Run, pass: Pass) -> String {
    let names = columns(run.rows.iter().filter(|r| r.case.pass == pass));
    let ratio_cols = ratios(&names);
    let mut out = String::new();
    let mut header = "| dtype | headdim | seqlen | causal |".to_string();
    for n in &names {
        write!(header, " {n} |").unwrap();
    }
    for (a, b) in &ratio_cols {
        write!(header, " {} / {b} |", short(a)).unwrap();
    }
    header.push_str(" ours: rel. error, peak MB |");
    writeln!(out, "{header}").unwrap();
    writeln!(out, "|{}", " --- |".repeat(4 + names.len() + ratio_cols.len() + 1)).unwrap();
    for (c, rows) in by_case(run, pass) {
        let find = |n: &str| rows.iter().find(|r| r.implementation == n);
        let mut line = format!(
            "| {} | {} | {} | {} |",
            c.dtype.name(),
            c.headdim,
            c.seqlen,
            if c.causal { "yes" } else { "no" }
        );
        for n in &names {
            write!(line, " {} |", cell(find(n))).unwrap();
        }
        for (a, b) in &ratio_cols {
            match (find(a).and_then(|r| r.tflops()), find(b).and_then(|r| r.tflops())) {
                (Some(x), Some(y)) => write!(line, " {:.2} |", x / y).unwrap(),
                _ => line.push_str(" - |"),
            }
        }
        match find(OURS).map(|r| &r.outcome) {
            Some(Outcome::Measured { rel_error, checked_against, peak_bytes, .. }) => {
                write!(line, " {rel_error:.1e} vs {checked_against}, {:.0} |", *peak_bytes as f64 / 1e6)
                    .unwrap()
            }
            _ => line.push_str(" - |"),
        }
        writeln!(out, "{line}").unwrap();
    }
    out
}

/// Cells of the summary: seqlen 1k and up (512 is launch-bound and not in the backward's grid).
const SUMMARY_MIN_SEQLEN: usize = 1024;

/// Head-dim groups of the summary: up to 128, and above.
fn group_of(headdim: usize) -> usize {
    (headdim > 128) as usize
}

fn geomean(xs: &[f64]) -> f64 {
    (xs.iter().map(|x| x.ln()).sum::<f64>() / xs.len() as f64).exp()
}

/// The ratios the summary follows (float32's: ours and ours tf32 over torch efficient).
const SUMMARY_RATIOS: [(&str, &str); 6] = [
    (OURS, "torch flash"),
    (OURS, "torch cudnn"),
    (OURS_DET, "torch flash"),
    (OURS, NAIVE),
    (OURS, "torch efficient"),
    (OURS_TF32, "torch efficient"),
];

/// Per pass and head-dim group, over seqlen >= 1k, causal and not, every dtype: the geometric
/// mean of each implementation's TFLOPS, and of ours / torch flash, ours / torch cudnn,
/// ours det / torch flash and ours / naive, with their lowest and highest cells.
pub fn summary(run: &Run) -> String {
    let mut tables = String::new();
    let mut extremes = Vec::new();
    for pass in passes(run) {
        let cases: Vec<(Case, Vec<&Row>)> =
            by_case(run, pass).into_iter().filter(|(c, _)| c.seqlen >= SUMMARY_MIN_SEQLEN).collect();
        if cases.is_empty() {
            continue;
        }
        let names = columns(cases.iter().flat_map(|(_, rows)| rows.iter().copied()));
        let wanted: Vec<(&str, &str)> = SUMMARY_RATIOS
            .into_iter()
            .filter(|(a, b)| names.iter().any(|n| n == a) && names.iter().any(|n| n == b))
            .collect();
        let mut header = "| head dims | cells |".to_string();
        for n in &names {
            write!(header, " {n} |").unwrap();
        }
        for (a, b) in &wanted {
            write!(header, " {} / {b} |", short(a)).unwrap();
        }
        writeln!(
            tables,
            "
{}:

{header}",
            title(pass)
        )
        .unwrap();
        writeln!(tables, "|{}", " --- |".repeat(2 + names.len() + wanted.len())).unwrap();
        for group in 0..2 {
            let cells: Vec<&(Case, Vec<&Row>)> =
                cases.iter().filter(|(c, _)| group_of(c.headdim) == group).collect();
            if cells.is_empty() {
                continue;
            }
            let mut dims: Vec<usize> = cells.iter().map(|(c, _)| c.headdim).collect();
            dims.sort_unstable();
            dims.dedup();
            let dims = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
            let tflops =
                |rows: &[&Row], n: &str| rows.iter().find(|r| r.implementation == n).and_then(|r| r.tflops());
            let mut line = format!("| {dims} | {} |", cells.len());
            for n in &names {
                let t: Vec<f64> = cells.iter().filter_map(|(_, rows)| tflops(rows, n)).collect();
                if t.is_empty() {
                    line.push_str(" - |");
                } else {
                    write!(line, " {:.1} ({}) |", geomean(&t), t.len()).unwrap();
                }
            }
            for &(a, b) in &wanted {
                let r: Vec<(f64, Case)> = cells
                    .iter()
                    .filter_map(|(c, rows)| Some((tflops(rows, a)? / tflops(rows, b)?, *c)))
                    .collect();
                let (Some(lo), Some(hi)) = (
                    r.iter().min_by(|x, y| x.0.total_cmp(&y.0)),
                    r.iter().max_by(|x, y| x.0.total_cmp(&y.0)),
                ) else {
                    line.push_str(" - |");
                    continue;
                };
                let mean = geomean(&r.iter().map(|x| x.0).collect::<Vec<_>>());
                write!(line, " {mean:.3} ({:.2}–{:.2}) |", lo.0, hi.0).unwrap();
                extremes.push(format!(
                    "- {}, head dims {dims}: {} / {b} geometric mean {mean:.3} over {} cells, lowest {:.3} ({}), highest {:.3} ({})",
                    pass.name(),
                    short(a),
                    r.len(),
                    lo.0,
                    lo.1.label(),
                    hi.0,
                    hi.1.label()
                ));
            }
            writeln!(tables, "{line}").unwrap();
        }
    }
    if tables.is_empty() {
        return String::new();
    }
    format!(
        "## Summary\n\nGeometric means over seqlen >= {SUMMARY_MIN_SEQLEN}, causal and not, every dtype in the run: \
         TFLOPS (cells measured), and ratios (lowest–highest cell).\n{tables}\n{}\n",
        extremes.join("\n")
    )
}

/// The JSON document: run metadata, then one result object per line (easy to read back).
pub fn json(run: &Run) -> String {
    let names: Vec<String> = passes(run).iter().map(|p| q(p.name())).collect();
    let mut out = format!(
        "{{\"gpu\": {}, \"peer\": {}, \"date\": {}, \"mode\": {}, \"passes\": [{}],\n\"results\": [\n",
        q(&run.gpu),
        q(&run.torch),
        q(&run.date),
        q(&run.mode),
        names.join(", ")
    );
    if let Some(why) = &run.stopped {
        out.insert_str(out.find(",\n\"results\"").unwrap_or(0), &format!(", \"stopped\": {}", q(why)));
    }
    let lines: Vec<String> = run
        .rows
        .iter()
        .map(|r| {
            let c = &r.case;
            let base = format!(
                "{{\"pass\": \"{}\", \"impl\": {}, \"dtype\": \"{}\", \"headdim\": {}, \"seqlen\": {}, \"batch\": {}, \"heads\": {}, \"causal\": {}",
                c.pass.name(),
                q(&r.implementation),
                c.dtype.name(),
                c.headdim,
                c.seqlen,
                c.batch,
                c.heads,
                c.causal
            );
            match &r.outcome {
                Outcome::Measured { median_ms, runs, peak_bytes, rel_error, checked_against } => format!(
                    "{base}, \"status\": \"ok\", \"median_ms\": {median_ms:.5}, \"tflops\": {:.2}, \"runs\": {runs}, \"peak_bytes\": {peak_bytes}, \"rel_error\": {rel_error:.3e}, \"checked_against\": \"{checked_against}\"}}",
                    r.tflops().unwrap_or(0.0)
                ),
                Outcome::Wrong { rel_error, checked_against } => {
                    format!("{base}, \"status\": \"wrong\", \"rel_error\": {rel_error:.3e}, \"checked_against\": \"{checked_against}\"}}")
                }
                Outcome::Missing(why) => format!("{base}, \"status\": \"missing\", \"reason\": {}}}", q(why)),
            }
        })
        .collect();
    out.push_str(&lines.join(",\n"));
    out.push_str("\n]}\n");
    out
}

fn q(s: &str) -> String {
    let mut o = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push(' '),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// `YYYY-MM-DD` of the current UTC day.
pub fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::Dtype;

    fn row(pass: Pass, headdim: usize, seqlen: usize, name: &str, median_ms: Option<f64>) -> Row {
        let case = Case {
            pass,
            dtype: Dtype::F16,
            batch: 16384 / seqlen,
            seqlen,
            heads: 2048 / headdim,
            headdim,
            causal: false,
        };
        let outcome = match median_ms {
            Some(median_ms) => Outcome::Measured {
                median_ms,
                runs: 20,
                peak_bytes: 1 << 20,
                rel_error: 1e-3,
                checked_against: "naive",
            },
            None => Outcome::Missing("not here".into()),
        };
        Row { case, implementation: name.into(), outcome }
    }

    fn sample() -> Run {
        let mut rows = Vec::new();
        for pass in Pass::ALL {
            for d in [64, 256] {
                for s in [512, 1024, 4096] {
                    let f = pass.flop_factor();
                    rows.push(row(pass, d, s, OURS, Some(f * 1.0)));
                    if pass.has_backward() {
                        rows.push(row(pass, d, s, OURS_DET, Some(f * 1.25)));
                    }
                    rows.push(row(pass, d, s, NAIVE, if d == 64 { None } else { Some(f * 4.0) }));
                    rows.push(row(pass, d, s, "torch flash", Some(f * 1.1)));
                    rows.push(row(pass, d, s, "torch cudnn", Some(f * 0.5)));
                }
            }
        }
        Run {
            gpu: "GPU".into(),
            torch: "torch 2".into(),
            date: "2026-11-23".into(),
            mode: "full".into(),
            rows,
            stopped: None,
        }
    }

    #[test]
    fn tables_per_pass_with_ratios_and_summary() {
        let md = markdown_table(&sample());
        for section in ["## Forward\n", "## Backward\n", "## Forward + backward\n", "## Summary\n"] {
            assert!(md.contains(section), "{section} missing in\n{md}");
        }
        // Backward header: ours, ours det, then peers; ratios ours / each peer and det / flash.
        assert!(md.contains("| rustflash | rustflash det | naive (cuBLAS) | torch flash | torch cudnn | ours / naive (cuBLAS) | ours / torch flash | ours / torch cudnn | ours det / torch flash |"), "{md}");
        // The forward has no deterministic column.
        let fwd = &md[..md.find("## Backward").unwrap()];
        assert!(!fwd.contains("rustflash det"));
        // Ours 1.0 ms, flash 1.1 ms: ours / flash 1.10 in every cell and as the mean;
        // det / flash = 1.1 / 1.25 = 0.88.
        assert!(md.contains("| 1.10 |") && md.contains("| 0.88 |"));
        assert!(
            md.contains("backward, head dims 64: ours / torch flash geometric mean 1.100 over 2 cells"),
            "{md}"
        );
        assert!(md.contains("backward, head dims 256: ours det / torch flash geometric mean 0.880"), "{md}");
        // Naive measured at d256 only: ours / naive over its 2 cells.
        assert!(
            md.contains("head dims 256: ours / naive (cuBLAS) geometric mean 4.000 over 2 cells"),
            "{md}"
        );
        assert!(!md.contains("head dims 64: ours / naive"), "{md}");
        assert!(md.contains("- backward, naive (cuBLAS) at f16 d64 s512: not here"));
    }

    #[test]
    fn tflops_count_the_pass() {
        let r = row(Pass::Both, 128, 4096, OURS, Some(10.0));
        let fwd = 4.0 * (4 * 4096 * 4096 * 16 * 128usize) as f64;
        assert!((r.tflops().unwrap() - 3.5 * fwd / 10.0 / 1e9).abs() < 1e-9);
    }

    #[test]
    fn json_lines_carry_the_pass() {
        let j = json(&sample());
        assert!(j.starts_with("{\"gpu\": \"GPU\", \"peer\": \"torch 2\", \"date\": \"2026-11-23\", \"mode\": \"full\", \"passes\": [\"forward\", \"backward\", \"forward+backward\"],"));
        assert!(j.contains("{\"pass\": \"forward+backward\", \"impl\": \"rustflash det\", \"dtype\": \"f16\", \"headdim\": 64, \"seqlen\": 512,"));
        assert!(j.contains("\"status\": \"missing\", \"reason\": \"not here\"}"));
        let mut cut = sample();
        cut.stopped = Some("stopped after 9 minutes".into());
        assert!(json(&cut).contains("\"passes\": [\"forward\", \"backward\", \"forward+backward\"], \"stopped\": \"stopped after 9 minutes\",\n\"results\": ["));
        assert!(markdown_table(&cut).ends_with("Incomplete run: stopped after 9 minutes.\n"));
    }
}
