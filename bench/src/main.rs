//! `rustflash-bench`: rustflash against its peers on the same GPU, in the same run.
//!
//! Peers: naive attention (two cuBLAS products around a softmax kernel, S materialised) and,
//! when `python3` with PyTorch is present, `scaled_dot_product_attention` forced onto each backend
//! (`flash`, `cudnn`, `efficient`, `math`). All read `(batch, heads, seqlen, headdim)` tensors.
//! Runs interleave: every round times each implementation a few times, so clock and thermal drift
//! hit all alike. Each implementation's output is checked before its time counts.
//!
//! Usage: rustflash-bench [--full] [--headdim N].. [--seqlen N].. [--causal yes|no] [--dtype f16|bf16]
//!        [--rounds R] [--runs-per-round N] [--no-torch] [--out DIR]

mod cases;
mod naive;
mod report;
mod timing;
mod torch_peer;

use cases::{Case, Dtype, ELEMENTS, Selection};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use half::{bf16, f16};
use report::{MAX_REL_ERROR, Outcome, Row, Run};
use rustflash::layout::{AttentionShape, HostView, Layout4};
use rustflash::{Device, DeviceTensor, DeviceTensorMut, Element, FlashAttention, ForwardOptions};
use rustflash_reference::{Attention, Rows};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

struct Options {
    selection: Selection,
    rounds: usize,
    runs_per_round: usize,
    torch: bool,
    out: std::path::PathBuf,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        selection: Selection {
            full: false,
            headdims: vec![],
            seqlens: vec![],
            causal: vec![],
            dtypes: vec![],
        },
        rounds: 5,
        runs_per_round: 5,
        torch: true,
        out: "bench-results".into(),
    };
    let mut args = std::env::args().skip(1);
    let num = |v: Option<String>, what: &str| {
        v.and_then(|v| v.parse().ok()).ok_or(format!("{what} needs a number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--full" => o.selection.full = true,
            "--headdim" => o.selection.headdims.push(num(args.next(), "--headdim")?),
            "--seqlen" => o.selection.seqlens.push(num(args.next(), "--seqlen")?),
            "--rounds" => o.rounds = num(args.next(), "--rounds")?,
            "--runs-per-round" => o.runs_per_round = num(args.next(), "--runs-per-round")?,
            "--causal" => o.selection.causal.push(args.next().as_deref() == Some("yes")),
            "--dtype" => o.selection.dtypes.push(match args.next().as_deref() {
                Some("bf16") => Dtype::Bf16,
                Some("f16") => Dtype::F16,
                other => return Err(format!("--dtype f16|bf16, not {other:?}")),
            }),
            "--no-torch" => o.torch = false,
            "--out" => o.out = args.next().ok_or("--out needs a folder")?.into(),
            "--bench" => {} // passed by `cargo bench`
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if o.rounds * o.runs_per_round < 20 {
        return Err("at least 20 timed runs per implementation (rounds x runs-per-round)".into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    let opts = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("rustflash-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match rustflash::device_count() {
        Ok(n) if n > 0 => {}
        Ok(_) => return no_gpu("the CUDA driver reports no device"),
        Err(e) => return no_gpu(&e.to_string()),
    }
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rustflash-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn no_gpu(why: &str) -> ExitCode {
    eprintln!("rustflash-bench measures GPU kernels and needs an NVIDIA GPU with its driver: {why}.");
    eprintln!(
        "On a machine without one, `cargo xtask bundle` packs the benchmark for a GPU host (bundle/run.sh bench)."
    );
    ExitCode::FAILURE
}

/// The inputs every case reads: q, k, v of `ELEMENTS` each (the same count for every case).
struct Inputs {
    dtype: Dtype,
    device: CudaSlice<u16>,
    host: Vec<u16>,
}

fn inputs(stream: &Arc<CudaStream>, dtype: Dtype) -> Result<Inputs, String> {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let host: Vec<u16> = (0..3 * ELEMENTS)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Uniform in [-1.7, 1.7): about unit variance.
            let x = ((rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.4;
            match dtype {
                Dtype::F16 => f16::from_f32(x).to_bits(),
                Dtype::Bf16 => bf16::from_f32(x).to_bits(),
            }
        })
        .collect();
    let device = stream.clone_htod(&host).map_err(|e| e.to_string())?;
    Ok(Inputs { dtype, device, host })
}

fn run(opts: &Options) -> Result<(), String> {
    let device = Device::new(0).map_err(|e| e.to_string())?;
    let stream = device.new_stream().map_err(|e| e.to_string())?;
    let fa = FlashAttention::new(device.clone());
    let naive = naive::Naive::new(&device, &stream);
    let mut torch =
        if opts.torch { torch_peer::TorchPeer::start() } else { Err("disabled with --no-torch".into()) };
    let cases = cases::list(&opts.selection);
    let gpu = device.info().name.clone();
    let peer = match &torch {
        Ok(t) => t.version.clone(),
        Err(e) => format!("PyTorch missing: {e}"),
    };
    eprintln!(
        "rustflash-bench on {gpu} ({} path); peers: naive {}, {peer}",
        device.path(),
        if naive.is_ok() { "ok" } else { "missing" }
    );

    let mut run = Run {
        gpu,
        torch: peer,
        date: report::today(),
        mode: if opts.selection.full { "full".into() } else { "quick".into() },
        rows: Vec::new(),
    };
    let stem: String = run.gpu.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let dtypes: Vec<&str> = opts.selection.dtypes.iter().map(|d| d.name()).collect();
    let suffix = if dtypes.is_empty() { String::new() } else { format!("-{}", dtypes.join("-")) };
    std::fs::create_dir_all(&opts.out).map_err(|e| format!("{}: {e}", opts.out.display()))?;
    let base = opts.out.join(format!("{}-{stem}-{}{suffix}", run.date, run.mode));
    let mut data: Option<Inputs> = None;
    for (i, case) in cases.iter().enumerate() {
        progress(i, cases.len(), case);
        if data.as_ref().map(|d| d.dtype) != Some(case.dtype) {
            drop(data.take()); // free the previous dtype's inputs first
            data = Some(inputs(&stream, case.dtype)?);
        }
        let d = data.as_ref().ok_or("no inputs")?;
        run.rows.extend(measure(opts, &device, &stream, &fa, naive.as_ref(), torch.as_mut().ok(), case, d)?);
        // Written after every case: a run cut short keeps what it measured.
        write_results(&run, &base, opts)?;
    }
    progress(cases.len(), cases.len(), cases.last().ok_or("no case selected")?);
    eprintln!();
    println!("\n{}", report::markdown_table(&run));
    eprintln!("wrote {}.json and .md", base.display());
    Ok(())
}

fn write_results(run: &Run, base: &std::path::Path, opts: &Options) -> Result<(), String> {
    let md = format!(
        "# rustflash-bench, {}, {}\n\nForward TFLOPS (FlashAttention's FLOP count), median of {} runs; peer: {}.\n\n{}",
        run.date,
        run.gpu,
        opts.rounds * opts.runs_per_round,
        run.torch,
        report::markdown_table(run)
    );
    std::fs::write(base.with_extension("json"), report::json(run)).map_err(|e| e.to_string())?;
    std::fs::write(base.with_extension("md"), md).map_err(|e| e.to_string())
}

fn progress(done: usize, total: usize, c: &Case) {
    let width = 30;
    let filled = width * done / total.max(1);
    let line = format!(
        "[{}{}] {done}/{total} {} d{} s{}{}",
        "=".repeat(filled),
        " ".repeat(width - filled),
        c.dtype.name(),
        c.headdim,
        c.seqlen,
        if c.causal { " causal" } else { "" }
    );
    if std::io::stderr().is_terminal() {
        eprint!("\r{line:<70}");
    } else {
        eprintln!("{line}");
    }
    let _ = std::io::stderr().flush();
}

enum Impl {
    Ours,
    Naive,
    Torch(&'static str),
}

#[allow(clippy::too_many_arguments)]
fn measure(
    opts: &Options,
    device: &Device,
    stream: &Arc<CudaStream>,
    fa: &FlashAttention,
    naive: Result<&naive::Naive, &String>,
    mut torch: Option<&mut torch_peer::TorchPeer>,
    c: &Case,
    data: &Inputs,
) -> Result<Vec<Row>, String> {
    let err = |e: cudarc::driver::DriverError| e.to_string();
    let (b, s, h, dd) = (c.batch, c.seqlen, c.heads, c.headdim);
    // (batch, heads, seqlen, headdim) memory seen through rustflash's (b, s, h, d) indexing.
    let bhsd = Layout4 { shape: [b, s, h, dd], strides: [h * s * dd, dd, s * dd, 1] };
    let mut out = stream.alloc_zeros::<u16>(ELEMENTS).map_err(err)?;
    let mut lse = stream.alloc_zeros::<f32>(b * h * s).map_err(err)?;
    let part = |i: usize| data.device.slice(i * ELEMENTS..(i + 1) * ELEMENTS);
    let opts_fa = ForwardOptions::default().causal(c.causal);
    let ours_bytes = (4 * ELEMENTS * 2 + b * h * s * 4) as u64;

    // Naive: its own S buffer (b·h·s² elements) and output.
    let mut naive_out = None;
    let naive_state: Result<(&naive::Naive, CudaSlice<u16>), String> = match naive {
        Ok(n) => match unsafe { stream.alloc::<u16>(b * h * s * s) } {
            Ok(scores) => {
                naive_out = Some(stream.alloc_zeros::<u16>(ELEMENTS).map_err(err)?);
                Ok((n, scores))
            }
            Err(e) => Err(format!("cannot allocate S ({:.1} GB): {e}", (b * h * s * s * 2) as f64 / 1e9)),
        },
        Err(e) => Err(e.clone()),
    };
    let naive_bytes = (4 * ELEMENTS * 2 + b * h * s * s * 2) as u64;

    let mut impls = vec![Impl::Ours, Impl::Naive];
    let mut rows: Vec<Row> = Vec::new();
    let torch_ready = match torch.as_deref_mut() {
        Some(t) => match t.ask(&format!("setup {} {b} {h} {s} {dd} {}", c.dtype.name(), c.causal as u8)) {
            torch_peer::Reply::Ok => Ok(()),
            torch_peer::Reply::Missing(why) => Err(why),
            _ => Err("unexpected reply".into()),
        },
        None => Err("PyTorch is not available".into()),
    };
    for backend in torch_peer::BACKENDS {
        match &torch_ready {
            Ok(()) => impls.push(Impl::Torch(backend)),
            Err(why) => rows.push(Row {
                case: *c,
                implementation: format!("torch {backend}"),
                outcome: Outcome::Missing(why.clone()),
            }),
        }
    }

    let mut times: Vec<Vec<f64>> = vec![Vec::new(); impls.len()];
    let mut missing: Vec<Option<String>> = vec![None; impls.len()];
    let mut peak: Vec<u64> = vec![0; impls.len()];
    if let Err(why) = &naive_state {
        missing[1] = Some(why.clone());
    }
    // Round 0 warms up (not kept); then `rounds` rounds of `runs_per_round` runs each.
    for round in 0..=opts.rounds {
        let n = if round == 0 { 2 } else { opts.runs_per_round };
        for (i, imp) in impls.iter().enumerate() {
            if missing[i].is_some() {
                continue;
            }
            let result: Result<Vec<f64>, String> = match imp {
                Impl::Ours => timing::time_runs(device.context(), stream, n, || match c.dtype {
                    Dtype::F16 => {
                        run_ours::<f16>(fa, stream, &data.device, &mut out, &mut lse, bhsd, &opts_fa)
                    }
                    Dtype::Bf16 => {
                        run_ours::<bf16>(fa, stream, &data.device, &mut out, &mut lse, bhsd, &opts_fa)
                    }
                }),
                Impl::Naive => {
                    let (n_impl, scores) = naive_state.as_ref().map_err(|e| e.clone())?;
                    let addr = |v: &cudarc::driver::CudaView<u16>| v.device_ptr(stream).0;
                    let bufs = naive::NaiveBuffers {
                        q: addr(&part(0)),
                        k: addr(&part(1)),
                        v: addr(&part(2)),
                        scores: scores.device_ptr(stream).0,
                        out: naive_out.as_ref().map(|o| o.device_ptr(stream).0).unwrap_or(0),
                    };
                    timing::time_runs(device.context(), stream, n, || n_impl.forward(c, &bufs))
                }
                Impl::Torch(backend) => {
                    match torch.as_deref_mut().map(|t| t.ask(&format!("run {backend} {n}"))) {
                        Some(torch_peer::Reply::Times { peak_bytes, ms }) => {
                            peak[i] = peak[i].max(peak_bytes);
                            Ok(ms)
                        }
                        Some(torch_peer::Reply::Missing(why)) => Err(why),
                        _ => Err("no reply".into()),
                    }
                }
            };
            match result {
                Ok(ms) if round > 0 => times[i].extend(ms),
                Ok(_) => {}
                Err(why) => missing[i] = Some(why),
            }
        }
    }

    // Checks: ours and naive against each other (or ours against the float64 reference on
    // sampled rows when naive is missing); each PyTorch backend against fp32 attention.
    let ours_o = stream.clone_dtoh(&out).map_err(err)?;
    let naive_o = match (&missing[1], &naive_out) {
        (None, Some(o)) => Some(stream.clone_dtoh(o).map_err(err)?),
        _ => None,
    };
    let to_f64 = |x: u16| match c.dtype {
        Dtype::F16 => f16::from_bits(x).to_f64(),
        Dtype::Bf16 => bf16::from_bits(x).to_f64(),
    };
    let (ours_err, ours_against) = match &naive_o {
        Some(n) => (rel_diff(ours_o.iter().map(|&x| to_f64(x)), n.iter().map(|&x| to_f64(x))), "naive"),
        None => (reference_check(c, data, &ours_o, bhsd)?, "float64 reference (sampled rows)"),
    };
    for (i, imp) in impls.iter().enumerate() {
        let name = match imp {
            Impl::Ours => "rustflash".to_string(),
            Impl::Naive => "naive (cuBLAS)".to_string(),
            Impl::Torch(b) => format!("torch {b}"),
        };
        let outcome = if let Some(why) = missing[i].take() {
            Outcome::Missing(why)
        } else {
            let (rel_error, against, bytes) = match imp {
                Impl::Ours => (ours_err, ours_against, ours_bytes),
                Impl::Naive => (ours_err, "rustflash", naive_bytes),
                Impl::Torch(b) => match torch.as_deref_mut().map(|t| t.ask(&format!("check {b}"))) {
                    Some(torch_peer::Reply::Error(e)) => (e, "fp32 attention", peak[i]),
                    _ => (f64::NAN, "fp32 attention", peak[i]),
                },
            };
            if rel_error.is_nan() || rel_error > MAX_REL_ERROR {
                Outcome::Wrong { rel_error, checked_against: against }
            } else {
                let runs = times[i].len();
                Outcome::Measured {
                    median_ms: timing::median(times[i].clone()),
                    runs,
                    peak_bytes: bytes,
                    rel_error,
                    checked_against: against,
                }
            }
        };
        rows.push(Row { case: *c, implementation: name, outcome });
    }
    rows.sort_by_key(|r| order(&r.implementation));
    Ok(rows)
}

/// One forward pass of ours on the raw 16-bit buffers, viewed as `T`.
fn run_ours<T: Element>(
    fa: &FlashAttention,
    stream: &Arc<CudaStream>,
    qkv: &CudaSlice<u16>,
    out: &mut CudaSlice<u16>,
    lse: &mut CudaSlice<f32>,
    layout: Layout4,
    options: &ForwardOptions,
) -> Result<(), String> {
    // SAFETY: u16 bits and T (f16 or bf16) have the same size and alignment.
    let view = |i: usize| {
        unsafe { qkv.slice(i * ELEMENTS..(i + 1) * ELEMENTS).transmute::<T>(ELEMENTS) }.ok_or("view")
    };
    let (q, k, v) = (view(0)?, view(1)?, view(2)?);
    let o = unsafe { out.transmute_mut::<T>(ELEMENTS) }.ok_or("view")?;
    let t = |data| DeviceTensor { data, layout };
    let mut o = DeviceTensorMut { data: o, layout };
    let [b, s, h, _] = layout.shape;
    let mut lse = DeviceTensorMut::contiguous(lse.slice_mut(0..b * h * s), [b, h, s]);
    fa.forward(stream, &t(q), &t(k), &t(v), &mut o, &mut lse, options).map_err(|e| e.to_string())
}

/// Column order: ours, naive, then PyTorch's backends.
fn order(name: &str) -> usize {
    ["rustflash", "naive (cuBLAS)", "torch flash", "torch cudnn", "torch efficient", "torch math"]
        .iter()
        .position(|n| *n == name)
        .unwrap_or(9)
}

/// max |a − b| / max |b|.
fn rel_diff(a: impl Iterator<Item = f64>, b: impl Iterator<Item = f64>) -> f64 {
    let (mut err, mut mag) = (0.0f64, 0.0f64);
    for (x, y) in a.zip(b) {
        err = if (x - y).is_nan() { f64::NAN } else { err.max((x - y).abs()) };
        mag = mag.max(y.abs());
    }
    err / mag.max(f64::MIN_POSITIVE)
}

/// Ours against the float64 reference on three sampled query rows of every head.
fn reference_check(c: &Case, data: &Inputs, ours: &[u16], layout: Layout4) -> Result<f64, String> {
    fn go<T: Element>(
        c: &Case,
        data: &Inputs,
        ours: &[u16],
        layout: Layout4,
        conv: fn(u16) -> T,
    ) -> Result<f64, String> {
        let host: Vec<T> = data.host.iter().map(|&x| conv(x)).collect();
        let view = |i: usize| HostView { data: &host[i * ELEMENTS..(i + 1) * ELEMENTS], layout };
        let shape = AttentionShape {
            batch: c.batch,
            seqlen_q: c.seqlen,
            seqlen_k: c.seqlen,
            heads_q: c.heads,
            heads_kv: c.heads,
            headdim: c.headdim,
        };
        let att = Attention { shape, softmax_scale: 1.0 / (c.headdim as f64).sqrt(), causal: c.causal };
        let rows = vec![0, c.seqlen / 2, c.seqlen - 1];
        let r = att
            .forward(&view(0), &view(1), &view(2), &Rows::Sample(rows.clone()))
            .map_err(|e| e.to_string())?;
        let out: Vec<T> = ours.iter().map(|&x| conv(x)).collect();
        let o = HostView { data: &out, layout };
        let mut got = Vec::new();
        for b in 0..c.batch {
            for &s in &rows {
                for h in 0..c.heads {
                    for d in 0..c.headdim {
                        got.push(o.at([b, s, h, d]).to_f64());
                    }
                }
            }
        }
        Ok(rel_diff(got.into_iter(), r.o.into_iter()))
    }
    match c.dtype {
        Dtype::F16 => go(c, data, ours, layout, f16::from_bits),
        Dtype::Bf16 => go(c, data, ours, layout, bf16::from_bits),
    }
}
