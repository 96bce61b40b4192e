//! `rustflash-bench`: rustflash against its peers on the same GPU, in the same run.
//!
//! Passes: the forward, the backward (dQ, dK, dV from the forward's O and LSE and a random dO;
//! rustflash in its default mode and, as `rustflash det`, its deterministic mode), and the
//! forward and backward together (both calls in every timed run; buffers and the backward's
//! workspace allocated once, outside the timed runs).
//!
//! Peers: naive attention (cuBLAS products around row kernels, S materialised; its backward
//! keeps P and dP) and, when `python3` with PyTorch is present, `scaled_dot_product_attention`
//! forced onto each backend (`flash`, `cudnn`, `efficient`, `math`), its backward through
//! autograd. All read `(batch, heads, seqlen, headdim)` tensors. Runs interleave: every round
//! times each implementation a few times, so clock and thermal drift hit all alike. Each
//! implementation's output (the forward's O; the gradients dQ, dK, dV) is checked before its
//! time counts.
//!
//! Usage: rustflash-bench [--full] [--pass forward|backward|both].. [--headdim N].. [--seqlen N]..
//!        [--causal yes|no] [--dtype f16|bf16|f32] [--rounds R] [--bwd-rounds R] [--runs-per-round N]
//!        [--math-max-seqlen N] [--max-minutes M] [--no-torch] [--path volta|ampere|hopper]
//!        [--out DIR]
//!
//! `--path` forces rustflash onto a kernel path the GPU can run (the Volta path's kernels on an
//! H100, say); the run's mode names it.
//!
//! float32 (`--dtype f32`): rustflash in its default mode (accurate, 3xTF32; on the Volta path
//! CUDA-core float32) and, as `rustflash tf32`, in its TF32 mode, beside the PyTorch backends
//! that take float32 (`efficient`, `math`, at full float32 precision); there is no naive
//! float32 attention.

mod cases;
mod check;
mod naive;
mod ours;
mod report;
mod timing;
mod torch_peer;

use cases::{Case, Dtype, ELEMENTS, Pass, Selection};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use half::{bf16, f16};
use report::{MAX_REL_ERROR, NAIVE, OURS, OURS_DET, OURS_TF32, Outcome, Row, Run};
use rustflash::layout::{AttentionShape, HostView, Layout4};
use rustflash::{BackwardOptions, Device, Element, F32Precision, FlashAttention, ForwardOptions, KernelPath};
use rustflash_reference::{Attention, Rows};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use torch_peer::{Reply, TorchPeer};

struct Options {
    selection: Selection,
    /// Rounds of the forward pass ...
    rounds: usize,
    /// ... and of the passes with a backward.
    bwd_rounds: usize,
    runs_per_round: usize,
    /// torch `math` runs in the passes with a backward up to this seqlen only.
    math_max_seqlen: usize,
    /// No case starts after this many minutes (the rest are listed as not run).
    max_minutes: Option<f64>,
    torch: bool,
    /// rustflash's kernel path, if forced.
    path: Option<KernelPath>,
    out: std::path::PathBuf,
}

/// Defaults: 5 rounds for the forward, 4 for the passes with a backward, of 5 runs each (25 and
/// 20 timed runs), so that `--full` fits one 10-minute GPU session.
const DEFAULT_ROUNDS: usize = 5;
const DEFAULT_BWD_ROUNDS: usize = 4;
const DEFAULT_MATH_MAX_SEQLEN: usize = 4096;

fn parse() -> Result<Options, String> {
    let mut o = Options {
        selection: Selection {
            full: false,
            headdims: vec![],
            seqlens: vec![],
            causal: vec![],
            dtypes: vec![],
            passes: vec![],
        },
        rounds: DEFAULT_ROUNDS,
        bwd_rounds: DEFAULT_BWD_ROUNDS,
        runs_per_round: 5,
        math_max_seqlen: DEFAULT_MATH_MAX_SEQLEN,
        max_minutes: None,
        torch: true,
        path: None,
        out: "bench-results".into(),
    };
    let mut bwd_rounds = None;
    let mut args = std::env::args().skip(1);
    let num = |v: Option<String>, what: &str| {
        v.and_then(|v| v.parse().ok()).ok_or(format!("{what} needs a number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--full" => o.selection.full = true,
            "--pass" => {
                let v = args.next();
                o.selection.passes.push(
                    v.as_deref()
                        .and_then(Pass::parse)
                        .ok_or(format!("--pass forward|backward|both, not {v:?}"))?,
                )
            }
            "--headdim" => o.selection.headdims.push(num(args.next(), "--headdim")?),
            "--seqlen" => o.selection.seqlens.push(num(args.next(), "--seqlen")?),
            "--rounds" => o.rounds = num(args.next(), "--rounds")?,
            "--bwd-rounds" => bwd_rounds = Some(num(args.next(), "--bwd-rounds")?),
            "--runs-per-round" => o.runs_per_round = num(args.next(), "--runs-per-round")?,
            "--math-max-seqlen" => o.math_max_seqlen = num(args.next(), "--math-max-seqlen")?,
            "--max-minutes" => {
                o.max_minutes =
                    Some(args.next().and_then(|v| v.parse().ok()).ok_or("--max-minutes needs a number")?)
            }
            "--causal" => o.selection.causal.push(args.next().as_deref() == Some("yes")),
            "--dtype" => o.selection.dtypes.push(match args.next().as_deref() {
                Some("bf16") => Dtype::Bf16,
                Some("f16") => Dtype::F16,
                Some("f32") => Dtype::F32,
                other => return Err(format!("--dtype f16|bf16|f32, not {other:?}")),
            }),
            "--no-torch" => o.torch = false,
            "--path" => {
                o.path = Some(match args.next().as_deref() {
                    Some("volta") => KernelPath::Volta,
                    Some("ampere") => KernelPath::Ampere,
                    Some("hopper") => KernelPath::Hopper,
                    other => return Err(format!("--path volta|ampere|hopper, not {other:?}")),
                })
            }
            "--out" => o.out = args.next().ok_or("--out needs a folder")?.into(),
            "--bench" => {} // passed by `cargo bench`
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    // `--rounds` alone sets every pass; `--bwd-rounds` the passes with a backward.
    o.bwd_rounds =
        bwd_rounds.unwrap_or(if o.rounds == DEFAULT_ROUNDS { DEFAULT_BWD_ROUNDS } else { o.rounds });
    if o.rounds.min(o.bwd_rounds) * o.runs_per_round < 20 {
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

/// The inputs every case reads: q, k, v and dO of `ELEMENTS` each (the same count for every
/// case), as raw element bytes, and the decoder that reads them.
struct Inputs {
    dtype: Dtype,
    device: CudaSlice<u8>,
    host: Vec<u8>,
    decoder: check::Decoder,
}

fn inputs(stream: &Arc<CudaStream>, dtype: Dtype) -> Result<Inputs, String> {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut host: Vec<u8> = Vec::with_capacity(4 * ELEMENTS * dtype.bytes());
    for _ in 0..4 * ELEMENTS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Uniform in [-1.7, 1.7): about unit variance.
        let x = ((rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.4;
        match dtype {
            Dtype::F16 => host.extend(f16::from_f32(x).to_le_bytes()),
            Dtype::Bf16 => host.extend(bf16::from_f32(x).to_le_bytes()),
            Dtype::F32 => host.extend(x.to_le_bytes()),
        }
    }
    let device = stream.clone_htod(&host).map_err(|e| e.to_string())?;
    Ok(Inputs { dtype, device, host, decoder: check::Decoder::new(dtype) })
}

impl Inputs {
    /// Tensor `i` (q, k, v, dO) on the device.
    fn part(&self, i: usize) -> cudarc::driver::CudaView<'_, u8> {
        let n = ELEMENTS * self.dtype.bytes();
        self.device.slice(i * n..(i + 1) * n)
    }
}

/// What every measurement uses.
struct Env<'a> {
    opts: &'a Options,
    device: &'a Device,
    stream: &'a Arc<CudaStream>,
    fa: &'a FlashAttention,
    naive: Result<&'a naive::Naive, &'a String>,
    torch: Option<&'a mut TorchPeer>,
    /// Whether the PyTorch peer holds this case's tensors, or why not.
    torch_ready: Result<(), String>,
}

fn run(opts: &Options) -> Result<(), String> {
    let device = match opts.path {
        Some(path) => Device::with_path(0, path),
        None => Device::new(0),
    }
    .map_err(|e| e.to_string())?;
    let stream = device.new_stream().map_err(|e| e.to_string())?;
    let fa = FlashAttention::new(device.clone());
    let naive = naive::Naive::new(&device, &stream);
    let mut torch = if opts.torch { TorchPeer::start() } else { Err("disabled with --no-torch".into()) };
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
        mode: match (opts.selection.full, opts.path) {
            (full, None) => if full { "full" } else { "quick" }.into(),
            (full, Some(path)) => format!("{}-{}", if full { "full" } else { "quick" }, path.arch()),
        },
        rows: Vec::new(),
        stopped: None,
    };
    let stem: String = run.gpu.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let mut suffix: String = opts.selection.dtypes.iter().map(|d| format!("-{}", d.name())).collect();
    let mut passes = opts.selection.passes.clone();
    passes.sort();
    passes.dedup();
    if !passes.is_empty() && passes.len() < Pass::ALL.len() {
        for p in passes {
            suffix.push_str(match p {
                Pass::Forward => "-fwd",
                Pass::Backward => "-bwd",
                Pass::Both => "-fwdbwd",
            });
        }
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| format!("{}: {e}", opts.out.display()))?;
    let base = opts.out.join(format!("{}-{stem}-{}{suffix}", run.date, run.mode));
    let mut data: Option<Inputs> = None;
    let mut env = Env {
        opts,
        device: &device,
        stream: &stream,
        fa: &fa,
        naive: naive.as_ref(),
        torch: torch.as_mut().ok(),
        torch_ready: Err(String::new()),
    };
    let mut torch_shape = None;
    let started = std::time::Instant::now();
    for (i, case) in cases.iter().enumerate() {
        if let Some(m) = opts.max_minutes.filter(|&m| started.elapsed().as_secs_f64() > 60.0 * m) {
            run.stopped = Some(format!(
                "stopped after {m} minutes (--max-minutes): {} of {} cases not run, from {} {} on",
                cases.len() - i,
                cases.len(),
                case.pass.name(),
                case.label()
            ));
            eprintln!("\n{}", run.stopped.as_deref().unwrap_or_default());
            write_results(&run, &base, opts)?;
            break;
        }
        progress(i, cases.len(), case, started);
        if data.as_ref().map(|d| d.dtype) != Some(case.dtype) {
            drop(data.take()); // free the previous dtype's inputs first
            data = Some(inputs(&stream, case.dtype)?);
        }
        let d = data.as_ref().ok_or("no inputs")?;
        // The PyTorch peer's tensors, once per shape (its passes follow each other).
        let shape = (case.dtype, case.headdim, case.seqlen, case.causal);
        if torch_shape != Some(shape) {
            torch_shape = Some(shape);
            env.torch_ready = torch_setup(env.torch.as_deref_mut(), case);
        }
        let rows = match case.pass {
            Pass::Forward => measure_forward(&mut env, case, d)?,
            Pass::Backward | Pass::Both => measure_backward(&mut env, case, d)?,
        };
        run.rows.extend(rows);
        // Written after every case: a run cut short keeps what it measured.
        write_results(&run, &base, opts)?;
    }
    progress(cases.len(), cases.len(), cases.last().ok_or("no case selected")?, started);
    eprintln!();
    println!("\n{}", report::markdown_table(&run));
    eprintln!("wrote {}.json and .md", base.display());
    Ok(())
}

fn torch_setup(torch: Option<&mut TorchPeer>, c: &Case) -> Result<(), String> {
    let (b, h, s, d) = (c.batch, c.heads, c.seqlen, c.headdim);
    match torch {
        Some(t) => match t.ask(&format!("setup {} {b} {h} {s} {d} {}", c.dtype.name(), c.causal as u8)) {
            Reply::Ok => Ok(()),
            Reply::Missing(why) => Err(why),
            _ => Err("unexpected reply".into()),
        },
        None => Err("PyTorch is not available".into()),
    }
}

fn write_results(run: &Run, base: &std::path::Path, opts: &Options) -> Result<(), String> {
    let md = format!(
        "# rustflash-bench, {}, {}\n\nTFLOPS with FlashAttention's FLOP count (forward `4 · B · S² · H · D`, halved when causal; \
         backward 2.5x that, forward+backward 3.5x), median of {} timed runs (forward) and {} (backward, \
         forward+backward); peer: {}.\n\n{}",
        run.date,
        run.gpu,
        opts.rounds * opts.runs_per_round,
        opts.bwd_rounds * opts.runs_per_round,
        run.torch,
        report::markdown_table(run)
    );
    std::fs::write(base.with_extension("json"), report::json(run)).map_err(|e| e.to_string())?;
    std::fs::write(base.with_extension("md"), md).map_err(|e| e.to_string())
}

fn progress(done: usize, total: usize, c: &Case, started: std::time::Instant) {
    let width = 30;
    let filled = width * done / total.max(1);
    let line = format!(
        "[{}{}] {done}/{total} {} {} ({:.0} s)",
        "=".repeat(filled),
        " ".repeat(width - filled),
        c.pass.name(),
        c.label(),
        started.elapsed().as_secs_f64()
    );
    if std::io::stderr().is_terminal() {
        eprint!("\r{line:<80}");
    } else {
        eprintln!("{line}");
    }
    let _ = std::io::stderr().flush();
}

#[derive(Clone, Copy, PartialEq)]
enum Impl {
    Ours,
    OursDet,
    /// float32 only: ours in its TF32 mode (the default mode is the accurate one).
    OursTf32,
    Naive,
    Torch(&'static str),
}

impl Impl {
    fn name(self) -> String {
        match self {
            Impl::Ours => OURS.into(),
            Impl::OursDet => OURS_DET.into(),
            Impl::OursTf32 => OURS_TF32.into(),
            Impl::Naive => NAIVE.into(),
            Impl::Torch(b) => format!("torch {b}"),
        }
    }
}

/// The implementations of a pass, and the rows of the PyTorch backends that cannot run.
fn implementations(env: &Env, c: &Case) -> (Vec<Impl>, Vec<Option<String>>) {
    let mut impls = vec![Impl::Ours];
    if c.pass.has_backward() {
        impls.push(Impl::OursDet);
    }
    if c.dtype == Dtype::F32 {
        impls.push(Impl::OursTf32);
    }
    impls.push(Impl::Naive);
    impls.extend(torch_peer::BACKENDS.iter().map(|&b| Impl::Torch(b)));
    let missing = impls
        .iter()
        .map(|imp| match imp {
            Impl::Naive if c.dtype == Dtype::F32 => Some(naive::NO_F32.into()),
            Impl::Naive => env.naive.err().cloned(),
            Impl::Torch("math") if c.pass.has_backward() && c.seqlen > env.opts.math_max_seqlen => Some(format!(
                "skipped above seqlen {} in the passes with a backward (--math-max-seqlen): the slowest peer by far, \
                 and naive (cuBLAS) is the materialised baseline",
                env.opts.math_max_seqlen
            )),
            Impl::Torch(_) => env.torch_ready.clone().err(),
            _ => None,
        })
        .collect();
    (impls, missing)
}

/// Round 0 warms up (2 runs each, not kept); then `rounds` rounds in which each implementation
/// still in the race runs `runs_per_round` times in turn. `run(i, n)` times implementation `i`
/// `n` times; an error takes it out, with the reason.
fn interleave(
    rounds: usize,
    runs_per_round: usize,
    missing: &mut [Option<String>],
    mut run: impl FnMut(usize, usize) -> Result<Vec<f64>, String>,
) -> Vec<Vec<f64>> {
    let mut times = vec![Vec::new(); missing.len()];
    for round in 0..=rounds {
        let n = if round == 0 { 2 } else { runs_per_round };
        for i in 0..missing.len() {
            if missing[i].is_some() {
                continue;
            }
            match run(i, n) {
                Ok(ms) if round > 0 => times[i].extend(ms),
                Ok(_) => {}
                Err(why) => missing[i] = Some(why),
            }
        }
    }
    times
}

/// `n` timed runs of a PyTorch backend in the case's pass.
fn torch_run(
    torch: Option<&mut TorchPeer>,
    pass: Pass,
    backend: &str,
    n: usize,
    peak: &mut u64,
) -> Result<Vec<f64>, String> {
    let word = match pass {
        Pass::Forward => "forward",
        Pass::Backward => "backward",
        Pass::Both => "both",
    };
    match torch.map(|t| t.ask(&format!("run {word} {backend} {n}"))) {
        Some(Reply::Times { peak_bytes, ms }) => {
            *peak = (*peak).max(peak_bytes);
            Ok(ms)
        }
        Some(Reply::Missing(why)) => Err(why),
        _ => Err("no reply".into()),
    }
}

/// The rows of one case: each implementation measured, wrong (its check failed) or missing.
/// `checks[i]`: relative error, what it was checked against, device bytes.
fn rows(
    c: &Case,
    impls: &[Impl],
    times: Vec<Vec<f64>>,
    missing: Vec<Option<String>>,
    checks: Vec<(f64, &'static str, u64)>,
) -> Vec<Row> {
    let mut rows: Vec<Row> = impls
        .iter()
        .zip(times)
        .zip(missing)
        .zip(checks)
        .map(|(((imp, times), missing), (rel_error, against, bytes))| {
            let outcome = if let Some(why) = missing {
                Outcome::Missing(why)
            } else if rel_error.is_nan() || rel_error > MAX_REL_ERROR {
                Outcome::Wrong { rel_error, checked_against: against }
            } else if times.is_empty() {
                Outcome::Missing("no timed run".into())
            } else {
                let runs = times.len();
                Outcome::Measured {
                    median_ms: timing::median(times),
                    runs,
                    peak_bytes: bytes,
                    rel_error,
                    checked_against: against,
                }
            };
            Row { case: *c, implementation: imp.name(), outcome }
        })
        .collect();
    rows.sort_by_key(|r| report::order(&r.implementation));
    rows
}

fn addr(stream: &Arc<CudaStream>, v: &cudarc::driver::CudaView<u8>) -> u64 {
    v.device_ptr(stream).0
}

fn measure_forward(env: &mut Env, c: &Case, data: &Inputs) -> Result<Vec<Row>, String> {
    let err = |e: cudarc::driver::DriverError| e.to_string();
    let stream = env.stream;
    let (b, s, h) = (c.batch, c.seqlen, c.heads);
    let layout = c.layout();
    let part = |i: usize| data.part(i);
    let opts_fa = ForwardOptions::default().causal(c.causal);
    let opts_tf32 = opts_fa.clone().f32_precision(F32Precision::Tf32);
    let mut ours = ours::Buffers::new(stream, c, None)?;
    // TF32 buffers only where that mode is measured (float32).
    let mut ours_tf32 = match c.dtype {
        Dtype::F32 => Some(ours::Buffers::new(stream, c, None)?),
        _ => None,
    };

    // Naive: its own S buffer (b·h·s² elements) and output.
    let (impls, mut missing) = implementations(env, c);
    let naive_at = impls.iter().position(|i| *i == Impl::Naive).ok_or("no naive")?;
    let mut naive_bufs = None;
    if let Ok(n) = env.naive {
        match unsafe { stream.alloc::<u16>(b * h * s * s) } {
            Ok(scores) => naive_bufs = Some((n, scores, stream.alloc_zeros::<u16>(ELEMENTS).map_err(err)?)),
            Err(e) => {
                missing[naive_at] =
                    Some(format!("cannot allocate S ({:.1} GB): {e}", (b * h * s * s * 2) as f64 / 1e9))
            }
        }
    }
    let naive_bytes = (4 * ELEMENTS * 2 + b * h * s * s * 2) as u64;

    let mut peak: Vec<u64> = vec![0; impls.len()];
    let (fa, device) = (env.fa, env.device);
    let mut torch = env.torch.as_deref_mut();
    let times = interleave(env.opts.rounds, env.opts.runs_per_round, &mut missing, |i, n| match impls[i] {
        Impl::Ours => timing::time_runs(device.context(), stream, n, || {
            ours::step(fa, stream, c, &data.device, &mut ours, Some(&opts_fa), None)
        }),
        Impl::OursTf32 => {
            let bufs = ours_tf32.as_mut().ok_or("no TF32 buffers")?;
            timing::time_runs(device.context(), stream, n, || {
                ours::step(fa, stream, c, &data.device, bufs, Some(&opts_tf32), None)
            })
        }
        Impl::Naive => {
            let (n_impl, scores, out) = naive_bufs.as_ref().ok_or("naive buffers")?;
            let bufs = naive::NaiveBuffers {
                q: addr(stream, &part(0)),
                k: addr(stream, &part(1)),
                v: addr(stream, &part(2)),
                scores: scores.device_ptr(stream).0,
                out: out.device_ptr(stream).0,
            };
            timing::time_runs(device.context(), stream, n, || n_impl.forward(c, &bufs))
        }
        Impl::Torch(backend) => torch_run(torch.as_deref_mut(), c.pass, backend, n, &mut peak[i]),
        Impl::OursDet => Err("no deterministic forward".into()),
    });

    // Checks: ours and naive against each other (or ours against the float64 reference on
    // sampled rows when naive is missing); each PyTorch backend against fp32 attention.
    let ours_at = impls.iter().position(|i| *i == Impl::Ours).ok_or("no ours")?;
    if missing[ours_at].is_some() {
        missing[naive_at].get_or_insert("not checked: no rustflash output to compare with".into());
    }
    let ours_o = stream.clone_dtoh(&ours.out).map_err(err)?;
    let naive_o = match (&missing[naive_at], &naive_bufs) {
        (None, Some((_, _, o))) => Some(stream.clone_dtoh(o).map_err(err)?),
        _ => None,
    };
    let (ours_err, ours_against) = match &naive_o {
        Some(n) => (check::rel_diff_bytes(&ours_o, &cast_bytes(n), &data.decoder), "naive"),
        None => (reference_check(c, data, &ours_o, layout)?, "float64 reference (sampled rows)"),
    };
    let tf32_err = match impls.iter().position(|i| *i == Impl::OursTf32) {
        Some(at) if missing[at].is_none() => {
            let bufs = ours_tf32.as_ref().ok_or("no TF32 buffers")?;
            reference_check(c, data, &stream.clone_dtoh(&bufs.out).map_err(err)?, layout)?
        }
        _ => f64::NAN,
    };
    let mut checks = Vec::new();
    for (i, imp) in impls.iter().enumerate() {
        checks.push(match imp {
            Impl::Ours => (ours_err, ours_against, ours.bytes()),
            Impl::OursTf32 => {
                (tf32_err, "float64 reference (sampled rows)", ours_tf32.as_ref().map_or(0, |b| b.bytes()))
            }
            Impl::Naive => (ours_err, "rustflash", naive_bytes),
            Impl::Torch(b) if missing[i].is_none() => {
                match torch.as_deref_mut().map(|t| t.ask(&format!("check forward {b}"))) {
                    Some(Reply::Error(e)) => (e, "fp32 attention", peak[i]),
                    _ => (f64::NAN, "fp32 attention", peak[i]),
                }
            }
            _ => (f64::NAN, "", 0),
        });
    }
    Ok(rows(c, &impls, times, missing, checks))
}

/// The backward, or the forward and backward together (`c.pass`).
fn measure_backward(env: &mut Env, c: &Case, data: &Inputs) -> Result<Vec<Row>, String> {
    let err = |e: cudarc::driver::DriverError| e.to_string();
    let stream = env.stream;
    let (b, s, h) = (c.batch, c.seqlen, c.heads);
    let part = |i: usize| data.part(i);
    let both = c.pass == Pass::Both;
    let fwd_opts = ForwardOptions::default().causal(c.causal);
    let bwd_opts = BackwardOptions::default().causal(c.causal);
    let det_opts = BackwardOptions::default().causal(c.causal).deterministic(true);
    let fwd_tf32 = fwd_opts.clone().f32_precision(F32Precision::Tf32);
    let bwd_tf32 = BackwardOptions::from(&fwd_tf32);
    let fwd_each = both.then_some(&fwd_opts);
    let fwd_tf32_each = both.then_some(&fwd_tf32);
    let (fa, device) = (env.fa, env.device);

    // Ours, in each mode: O and LSE from our forward (made here once for the backward pass; in
    // every run for forward+backward), then the gradients.
    let mut ours = ours::Buffers::new(stream, c, Some(&bwd_opts))?;
    let mut det = ours::Buffers::new(stream, c, Some(&det_opts))?;
    let (impls, mut missing) = implementations(env, c);
    let mut tf32 = match c.dtype {
        Dtype::F32 => Some(ours::Buffers::new(stream, c, Some(&bwd_tf32))?),
        _ => None,
    };
    if !both {
        let modes = [(Some(&mut ours), Impl::Ours, &fwd_opts), (Some(&mut det), Impl::OursDet, &fwd_opts)];
        for (bufs, imp, options) in modes.into_iter().chain([(tf32.as_mut(), Impl::OursTf32, &fwd_tf32)]) {
            let Some(bufs) = bufs else { continue };
            if let Err(why) = ours::step(fa, stream, c, &data.device, bufs, Some(options), None) {
                let at = impls.iter().position(|i| *i == imp).ok_or("no ours")?;
                missing[at] = Some(format!("the forward that makes O and the LSE failed: {why}"));
            }
        }
    }

    // Naive: P (from its forward) and dP, each b·h·s² elements, its output and gradients.
    let naive_at = impls.iter().position(|i| *i == Impl::Naive).ok_or("no naive")?;
    let mut naive_state = None;
    if let Ok(n) = env.naive {
        let s2 = b * h * s * s;
        let alloc = || -> Result<[CudaSlice<u16>; 6], String> {
            // SAFETY: each buffer is written before it is read (P and O by the forward, dP by
            // the backward's first product, the gradients by the last ones).
            let big = |what: &str| {
                unsafe { stream.alloc::<u16>(s2) }
                    .map_err(|e| format!("cannot allocate {what} ({:.1} GB): {e}", (s2 * 2) as f64 / 1e9))
            };
            let small = || stream.alloc_zeros::<u16>(ELEMENTS).map_err(err);
            Ok([big("P")?, big("dP")?, small()?, small()?, small()?, small()?])
        };
        match alloc() {
            Ok(bufs) => naive_state = Some((n, bufs)),
            Err(why) => missing[naive_at] = Some(why),
        }
    }
    let naive_fwd = |n: &naive::Naive, bufs: &[CudaSlice<u16>; 6]| {
        let [p, _, out, ..] = bufs;
        let f = naive::NaiveBuffers {
            q: addr(stream, &part(0)),
            k: addr(stream, &part(1)),
            v: addr(stream, &part(2)),
            scores: p.device_ptr(stream).0,
            out: out.device_ptr(stream).0,
        };
        n.forward(c, &f)
    };
    let naive_bwd = |n: &naive::Naive, bufs: &[CudaSlice<u16>; 6]| {
        let [p, dp, _, dq, dk, dv] = bufs;
        let g = naive::NaiveBackwardBuffers {
            q: addr(stream, &part(0)),
            k: addr(stream, &part(1)),
            v: addr(stream, &part(2)),
            dout: addr(stream, &part(3)),
            probs: p.device_ptr(stream).0,
            dprobs: dp.device_ptr(stream).0,
            dq: dq.device_ptr(stream).0,
            dk: dk.device_ptr(stream).0,
            dv: dv.device_ptr(stream).0,
        };
        n.backward(c, &g)
    };
    if let (false, Some((n, bufs))) = (both, &naive_state) {
        if let Err(why) = naive_fwd(n, bufs) {
            missing[naive_at] = Some(why);
        }
    }
    // q, k, v, dO, P, dP, dQ, dK, dV (and O, with the forward).
    let naive_bytes = ((7 + both as usize) * ELEMENTS * 2 + 2 * b * h * s * s * 2) as u64;

    let mut peak: Vec<u64> = vec![0; impls.len()];
    let mut torch = env.torch.as_deref_mut();
    let times =
        interleave(env.opts.bwd_rounds, env.opts.runs_per_round, &mut missing, |i, n| match impls[i] {
            Impl::Ours => timing::time_runs(device.context(), stream, n, || {
                ours::step(fa, stream, c, &data.device, &mut ours, fwd_each, Some(&bwd_opts))
            }),
            Impl::OursDet => timing::time_runs(device.context(), stream, n, || {
                ours::step(fa, stream, c, &data.device, &mut det, fwd_each, Some(&det_opts))
            }),
            Impl::OursTf32 => {
                let bufs = tf32.as_mut().ok_or("no TF32 buffers")?;
                timing::time_runs(device.context(), stream, n, || {
                    ours::step(fa, stream, c, &data.device, bufs, fwd_tf32_each, Some(&bwd_tf32))
                })
            }
            Impl::Naive => {
                let (n_impl, bufs) = naive_state.as_ref().ok_or("naive buffers")?;
                timing::time_runs(device.context(), stream, n, || {
                    if both {
                        naive_fwd(n_impl, bufs)?;
                    }
                    naive_bwd(n_impl, bufs)
                })
            }
            Impl::Torch(backend) => torch_run(torch.as_deref_mut(), c.pass, backend, n, &mut peak[i]),
        });

    // Checks: dQ, dK, dV of ours (both modes) and naive against each other, or, without naive,
    // ours against the float64 reference on a small problem of the same kind; each PyTorch
    // backend's against fp32 gradients.
    let grads = |bufs: &ours::Buffers| -> Result<[Vec<u8>; 3], String> {
        let g = bufs.grads.as_ref().ok_or("no gradients")?;
        Ok([
            stream.clone_dtoh(&g.dq).map_err(err)?,
            stream.clone_dtoh(&g.dk).map_err(err)?,
            stream.clone_dtoh(&g.dv).map_err(err)?,
        ])
    };
    let diff = |a: &[Vec<u8>; 3], b: &[Vec<u8>; 3]| {
        check::worst(a.iter().zip(b).map(|(x, y)| check::rel_diff_bytes(x, y, &data.decoder)))
    };
    let naive_grads = match (&missing[naive_at], &naive_state) {
        (None, Some((_, [.., dq, dk, dv]))) => Some([
            cast_bytes(&stream.clone_dtoh(dq).map_err(err)?),
            cast_bytes(&stream.clone_dtoh(dk).map_err(err)?),
            cast_bytes(&stream.clone_dtoh(dv).map_err(err)?),
        ]),
        _ => None,
    };
    let ours_at = |imp: Impl| impls.iter().position(|i| *i == imp).unwrap_or(0);
    let mode_error =
        |bufs: &ours::Buffers, options: &BackwardOptions, imp: Impl| -> Result<(f64, &'static str), String> {
            if missing[ours_at(imp)].is_some() {
                return Ok((f64::NAN, ""));
            }
            match &naive_grads {
                Some(n) => Ok((diff(&grads(bufs)?, n), "naive")),
                None => Ok((ours::small_case_error(fa, stream, c, options)?, ours::SMALL_CASE_AND_MODES)),
            }
        };
    let (mut ours_err, ours_against) = mode_error(&ours, &bwd_opts, Impl::Ours)?;
    let (mut det_err, det_against) = mode_error(&det, &det_opts, Impl::OursDet)?;
    // TF32 (float32 only, so never beside naive): its small case only; its gradients differ
    // from the accurate mode's by TF32's rounding, which is what it trades for speed.
    let (tf32_err, tf32_against) = match &tf32 {
        Some(_) if missing[ours_at(Impl::OursTf32)].is_none() => {
            (ours::small_case_error(fa, stream, c, &bwd_tf32)?, ours::SMALL_CASE)
        }
        _ => (f64::NAN, ""),
    };
    let (ours_ran, det_ran) =
        (missing[ours_at(Impl::Ours)].is_none(), missing[ours_at(Impl::OursDet)].is_none());
    if naive_grads.is_none() && ours_ran && det_ran {
        // Without naive, the two modes on this very case against each other as well.
        let modes = diff(&grads(&ours)?, &grads(&det)?);
        ours_err = check::worst([ours_err, modes]);
        det_err = check::worst([det_err, modes]);
    }
    // Naive is checked against ours (or ours det); with neither, it is not checked.
    let naive_check = if ours_ran {
        (ours_err, OURS)
    } else if det_ran {
        (det_err, OURS_DET)
    } else {
        missing[naive_at].get_or_insert("not checked: no rustflash gradients to compare with".into());
        (f64::NAN, "")
    };
    let mut checks = Vec::new();
    for (i, imp) in impls.iter().enumerate() {
        checks.push(match imp {
            Impl::Ours => (ours_err, ours_against, ours.bytes()),
            Impl::OursDet => (det_err, det_against, det.bytes()),
            Impl::OursTf32 => (tf32_err, tf32_against, tf32.as_ref().map_or(0, |b| b.bytes())),
            Impl::Naive => (naive_check.0, naive_check.1, naive_bytes),
            Impl::Torch(b) if missing[i].is_none() => {
                match torch.as_deref_mut().map(|t| t.ask(&format!("check backward {b}"))) {
                    Some(Reply::Error(e)) => (e, "fp32 gradients (batch 0, 2 heads)", peak[i]),
                    _ => (f64::NAN, "fp32 gradients (batch 0, 2 heads)", peak[i]),
                }
            }
            _ => (f64::NAN, "", 0),
        });
    }
    Ok(rows(c, &impls, times, missing, checks))
}

/// Ours against the float64 reference on three sampled query rows of every head.
fn reference_check(c: &Case, data: &Inputs, ours: &[u8], layout: Layout4) -> Result<f64, String> {
    fn go<T: Element>(c: &Case, data: &Inputs, ours: &[u8], layout: Layout4) -> Result<f64, String> {
        // Decoded exactly, so from_f32 gives back each element.
        let values = |bytes: &[u8]| -> Vec<T> {
            bytes.chunks_exact(data.decoder.bytes()).map(|b| T::from_f32(data.decoder.value(b))).collect()
        };
        let host = values(&data.host[..3 * ELEMENTS * c.dtype.bytes()]);
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
        let out = values(ours);
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
        Ok(check::rel_diff(got.into_iter(), r.o.into_iter()))
    }
    match c.dtype {
        Dtype::F16 => go::<f16>(c, data, ours, layout),
        Dtype::Bf16 => go::<bf16>(c, data, ours, layout),
        Dtype::F32 => go::<f32>(c, data, ours, layout),
    }
}

/// The naive baseline's 16-bit buffers as raw bytes, to compare with ours.
fn cast_bytes(x: &[u16]) -> Vec<u8> {
    x.iter().flat_map(|w| w.to_le_bytes()).collect()
}
