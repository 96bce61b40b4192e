//! The results: a terminal table, and `<date>-<gpu>.json` / `.md` for the charts and the docs.

use crate::cases::Case;
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

impl Row {
    pub fn tflops(&self) -> Option<f64> {
        match self.outcome {
            Outcome::Measured { median_ms, .. } => Some(self.case.forward_flops() / median_ms / 1e9),
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
}

fn case_key(c: &Case) -> (String, usize, usize, bool) {
    (c.dtype.name().to_string(), c.headdim, c.seqlen, c.causal)
}

fn columns(run: &Run) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for r in &run.rows {
        if !names.contains(&r.implementation) {
            names.push(r.implementation.clone());
        }
    }
    names
}

/// Groups the rows by case, in order.
fn by_case(run: &Run) -> Vec<(Case, Vec<&Row>)> {
    let mut groups: Vec<(Case, Vec<&Row>)> = Vec::new();
    for r in &run.rows {
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

/// The table, as Markdown (also printed to the terminal).
pub fn markdown_table(run: &Run) -> String {
    let names = columns(run);
    let peers: Vec<&String> = names.iter().filter(|n| n.as_str() != "rustflash").collect();
    let mut out = String::new();
    let mut header = "| dtype | headdim | seqlen | causal |".to_string();
    for n in &names {
        write!(header, " {n} |").unwrap();
    }
    for p in &peers {
        write!(header, " ours / {p} |").unwrap();
    }
    header.push_str(" ours: rel. error, peak MB |");
    writeln!(out, "{header}").unwrap();
    writeln!(out, "|{}", " --- |".repeat(4 + names.len() + peers.len() + 1)).unwrap();
    for (c, rows) in by_case(run) {
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
        let ours = find("rustflash").and_then(|r| r.tflops());
        for p in &peers {
            match (ours, find(p).and_then(|r| r.tflops())) {
                (Some(a), Some(b)) => write!(line, " {:.2} |", a / b).unwrap(),
                _ => line.push_str(" - |"),
            }
        }
        match find("rustflash").map(|r| &r.outcome) {
            Some(Outcome::Measured { rel_error, checked_against, peak_bytes, .. }) => {
                write!(line, " {rel_error:.1e} vs {checked_against}, {:.0} |", *peak_bytes as f64 / 1e6)
                    .unwrap()
            }
            _ => line.push_str(" - |"),
        }
        writeln!(out, "{line}").unwrap();
    }
    let missing: Vec<String> = run
        .rows
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Missing(why) => Some(format!(
                "- {} at {} d{} s{}{}: {why}",
                r.implementation,
                r.case.dtype.name(),
                r.case.headdim,
                r.case.seqlen,
                if r.case.causal { " causal" } else { "" }
            )),
            Outcome::Wrong { rel_error, checked_against } => Some(format!(
                "- {} at d{} s{}: WRONG, relative error {rel_error:.2e} vs {checked_against}",
                r.implementation, r.case.headdim, r.case.seqlen
            )),
            _ => None,
        })
        .collect();
    if !missing.is_empty() {
        writeln!(out, "\nNot measured:\n{}", missing.join("\n")).unwrap();
    }
    out
}

/// The JSON document: run metadata, then one result object per line (easy to read back).
pub fn json(run: &Run) -> String {
    let mut out = format!(
        "{{\"gpu\": {}, \"peer\": {}, \"date\": {}, \"mode\": {}, \"direction\": \"forward\",\n\"results\": [\n",
        q(&run.gpu),
        q(&run.torch),
        q(&run.date),
        q(&run.mode)
    );
    let lines: Vec<String> = run
        .rows
        .iter()
        .map(|r| {
            let c = &r.case;
            let base = format!(
                "{{\"impl\": {}, \"dtype\": \"{}\", \"headdim\": {}, \"seqlen\": {}, \"batch\": {}, \"heads\": {}, \"causal\": {}",
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
