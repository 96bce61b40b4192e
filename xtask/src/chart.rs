//! `cargo xtask chart [FILE.json..] [--out DIR]`: SVG charts from benchmark JSON, one per
//! (pass, dtype, head dim): TFLOPS against sequence length, a line per implementation, the
//! no-mask and causal panels side by side. Files `<pass>-<dtype>-d<D>.svg`, pass `forward`,
//! `backward` or `forward-backward`. Needs no GPU.

use crate::project_root;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
struct Point {
    implementation: String,
    direction: String,
    dtype: String,
    headdim: u64,
    seqlen: u64,
    causal: bool,
    tflops: f64,
}

pub fn run(args: &[String]) -> Result<(), String> {
    let root = project_root();
    let mut files = Vec::new();
    let mut out = root.join("docs/charts");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--out" {
            out = PathBuf::from(it.next().ok_or("--out needs a folder")?);
        } else {
            files.push(PathBuf::from(a));
        }
    }
    if files.is_empty() {
        files.push(latest_json(&root.join("bench-results"))?);
    }
    let mut points = Vec::new();
    let mut gpu = String::new();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        gpu = field(&text, "gpu").unwrap_or_default();
        points.extend(parse(&text));
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut groups: BTreeMap<(String, String, u64), Vec<Point>> = BTreeMap::new();
    for p in points {
        groups.entry((p.direction.clone(), p.dtype.clone(), p.headdim)).or_default().push(p);
    }
    for ((direction, dtype, d), pts) in &groups {
        let path = out.join(format!("{}-{dtype}-d{d}.svg", direction.replace('+', "-")));
        std::fs::write(&path, svg(&format!("{direction}, {dtype}, head dim {d} — {gpu}"), pts))
            .map_err(|e| e.to_string())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn latest_json(dir: &Path) -> Result<PathBuf, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e} (run `cargo xtask bench` first, or name a JSON file)", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files.pop().ok_or_else(|| format!("no JSON results in {}", dir.display()))
}

/// The value of `"key": value` in one line of the results file (strings unquoted).
fn field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\": "))? + key.len() + 4;
    let rest = &line[start..];
    if let Some(s) = rest.strip_prefix('"') {
        return s.split('"').next().map(str::to_string);
    }
    rest.split([',', '}']).next().map(|v| v.trim().to_string())
}

/// The measured points; each line's `"pass"`, else (files before the backward) the file's
/// `"direction"`, else forward.
fn parse(text: &str) -> Vec<Point> {
    let direction = field(text, "direction").unwrap_or_else(|| "forward".into());
    text.lines()
        .filter(|l| l.contains("\"status\": \"ok\""))
        .filter_map(|l| {
            Some(Point {
                implementation: field(l, "impl")?,
                direction: field(l, "pass").unwrap_or_else(|| direction.clone()),
                dtype: field(l, "dtype")?,
                headdim: field(l, "headdim")?.parse().ok()?,
                seqlen: field(l, "seqlen")?.parse().ok()?,
                causal: field(l, "causal")? == "true",
                tflops: field(l, "tflops")?.parse().ok()?,
            })
        })
        .collect()
}

const COLORS: [&str; 7] = ["#d62728", "#7f7f7f", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#ff7f0e"];

fn svg(title: &str, points: &[Point]) -> String {
    let (w, h, panel_w, top, left, plot_h) = (980.0, 430.0, 400.0, 50.0, 70.0, 300.0);
    let mut impls: Vec<String> = Vec::new();
    for p in points {
        if !impls.contains(&p.implementation) {
            impls.push(p.implementation.clone());
        }
    }
    let mut seqlens: Vec<u64> = points.iter().map(|p| p.seqlen).collect();
    seqlens.sort_unstable();
    seqlens.dedup();
    let ymax = (points.iter().map(|p| p.tflops).fold(0.0, f64::max) / 100.0).ceil().max(1.0) * 100.0;
    let (lo, hi) = (
        (*seqlens.first().unwrap_or(&512) as f64).log2(),
        (*seqlens.last().unwrap_or(&16384) as f64).log2().max(1.0),
    );
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        w / 2.0,
        xml(title)
    );
    for (pi, causal) in [false, true].into_iter().enumerate() {
        let x0 = left + pi as f64 * (panel_w + 90.0);
        let x = |sl: u64| {
            x0 + if hi > lo { ((sl as f64).log2() - lo) / (hi - lo) * panel_w } else { panel_w / 2.0 }
        };
        let y = |t: f64| top + plot_h - t / ymax * plot_h;
        writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x0 + panel_w / 2.0,
            top - 8.0,
            if causal { "causal" } else { "no mask" }
        )
        .unwrap();
        writeln!(s, "<rect x=\"{x0}\" y=\"{top}\" width=\"{panel_w}\" height=\"{plot_h}\" fill=\"none\" stroke=\"#444\"/>").unwrap();
        for k in 0..=5 {
            let t = ymax * k as f64 / 5.0;
            let (x1, yy, tx) = (x0 + panel_w, y(t), x0 - 6.0);
            writeln!(s, "<line x1=\"{x0}\" x2=\"{x1}\" y1=\"{yy}\" y2=\"{yy}\" stroke=\"#ddd\"/><text x=\"{tx}\" y=\"{}\" text-anchor=\"end\">{t:.0}</text>", yy + 4.0).unwrap();
        }
        for &sl in &seqlens {
            let label = if sl >= 1024 { format!("{}k", sl / 1024) } else { sl.to_string() };
            writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
                x(sl),
                top + plot_h + 18.0
            )
            .unwrap();
        }
        writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">sequence length</text>",
            x0 + panel_w / 2.0,
            top + plot_h + 38.0
        )
        .unwrap();
        writeln!(
            s,
            "<text transform=\"translate({},{}) rotate(-90)\" text-anchor=\"middle\">TFLOPS</text>",
            x0 - 45.0,
            top + plot_h / 2.0
        )
        .unwrap();
        for (ii, name) in impls.iter().enumerate() {
            let mut pts: Vec<&Point> =
                points.iter().filter(|p| &p.implementation == name && p.causal == causal).collect();
            pts.sort_by_key(|p| p.seqlen);
            let color = COLORS[ii % COLORS.len()];
            let path: Vec<String> =
                pts.iter().map(|p| format!("{:.1},{:.1}", x(p.seqlen), y(p.tflops))).collect();
            if path.len() > 1 {
                writeln!(
                    s,
                    "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{}/>",
                    path.join(" "),
                    dashes(name)
                )
                .unwrap();
            }
            for p in pts {
                writeln!(
                    s,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
                    x(p.seqlen),
                    y(p.tflops)
                )
                .unwrap();
            }
        }
    }
    for (ii, name) in impls.iter().enumerate() {
        let (lx, ly) = (left + (ii as f64 % 4.0) * 220.0, h - 30.0 + (ii / 4) as f64 * 16.0);
        let color = COLORS[ii % COLORS.len()];
        writeln!(s, "<line x1=\"{lx}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"{color}\" stroke-width=\"3\"{}/><text x=\"{}\" y=\"{}\">{}</text>", lx + 16.0, ly - 2.0, ly - 2.0, dashes(name), lx + 20.0, ly, xml(name)).unwrap();
    }
    s.push_str("</svg>\n");
    s
}

/// A variant of an implementation (rustflash's deterministic backward) draws dashed, in a
/// colour of its own.
fn dashes(name: &str) -> &'static str {
    if name.ends_with(" det") { " stroke-dasharray=\"6 3\"" } else { "" }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_result_lines_and_draws() {
        let text = "{\"gpu\": \"H100\", \"direction\": \"forward\",\n\"results\": [\n\
            {\"impl\": \"rustflash\", \"dtype\": \"f16\", \"headdim\": 64, \"seqlen\": 512, \"batch\": 32, \"heads\": 32, \"causal\": false, \"status\": \"ok\", \"median_ms\": 1.0, \"tflops\": 123.40},\n\
            {\"impl\": \"torch math\", \"dtype\": \"f16\", \"headdim\": 64, \"seqlen\": 512, \"batch\": 32, \"heads\": 32, \"causal\": false, \"status\": \"missing\", \"reason\": \"x\"}\n]}\n";
        let p = parse(text);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].headdim, p[0].seqlen, p[0].tflops), (64, 512, 123.4));
        assert!(svg("t", &p).contains("<circle"));
    }

    #[test]
    fn points_carry_their_pass() {
        let text = "{\"gpu\": \"H100\", \"passes\": [\"forward\", \"backward\", \"forward+backward\"],\n\"results\": [\n\
            {\"pass\": \"forward\", \"impl\": \"rustflash\", \"dtype\": \"f16\", \"headdim\": 64, \"seqlen\": 1024, \"batch\": 16, \"heads\": 32, \"causal\": false, \"status\": \"ok\", \"median_ms\": 1.0, \"tflops\": 300.00},\n\
            {\"pass\": \"backward\", \"impl\": \"rustflash det\", \"dtype\": \"f16\", \"headdim\": 64, \"seqlen\": 1024, \"batch\": 16, \"heads\": 32, \"causal\": true, \"status\": \"ok\", \"median_ms\": 1.0, \"tflops\": 200.00},\n\
            {\"pass\": \"backward\", \"impl\": \"rustflash det\", \"dtype\": \"f16\", \"headdim\": 64, \"seqlen\": 2048, \"batch\": 8, \"heads\": 32, \"causal\": true, \"status\": \"ok\", \"median_ms\": 1.0, \"tflops\": 210.00},\n\
            {\"pass\": \"forward+backward\", \"impl\": \"torch flash\", \"dtype\": \"bf16\", \"headdim\": 128, \"seqlen\": 1024, \"batch\": 16, \"heads\": 16, \"causal\": false, \"status\": \"ok\", \"median_ms\": 1.0, \"tflops\": 250.00}\n]}\n";
        let p = parse(text);
        let passes: Vec<&str> = p.iter().map(|p| p.direction.as_str()).collect();
        assert_eq!(passes, ["forward", "backward", "backward", "forward+backward"]);
        assert!(p[1].causal && p[1].implementation == "rustflash det");
        assert!(svg("t", &p[1..3]).contains("stroke-dasharray"));
        let dir = std::env::temp_dir().join(format!("rustflash-chart-test-{}", std::process::id()));
        let file = dir.join("r.json");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&file, text).unwrap();
        run(&[file.display().to_string(), "--out".into(), dir.display().to_string()]).unwrap();
        for name in ["forward-f16-d64.svg", "backward-f16-d64.svg", "forward-backward-bf16-d128.svg"] {
            assert!(dir.join(name).exists(), "{name}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
