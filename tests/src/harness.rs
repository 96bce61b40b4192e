//! A test runner for binaries with `harness = false`.
//!
//! Why not libtest: whether a GPU is present is known only at run time, and a GPU test that
//! could not run must be reported as *ignored, with the reason*, never as passed. Output and the
//! closing line follow libtest's format, so `cargo test` and CI read it as usual.
//!
//! Environment:
//! - `REQUIRE_GPU=1`: a GPU test that cannot find a GPU fails instead of being ignored.
//! - `RUSTFLASH_TIER=quick`: run only the trials marked quick (default: all).
//! - `RUSTFLASH_SANITIZE=1`: run only the trials marked for `compute-sanitizer`.
//! - `RUSTFLASH_SEED=<n>`: give every trial this seed (replays a failure); otherwise each trial
//!   gets a fresh seed, printed when it fails.
//! - `RUSTFLASH_RESULTS=<file>`: append one JSON line per trial (name, outcome, seconds, seed).
//!
//! Arguments: a substring filter (or `--exact NAME`), `--skip SUBSTRING`, `--list`; other libtest
//! flags are accepted and ignored.

use crate::rng::Rng;
use std::fmt::Display;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::time::Instant;

/// Why a trial did not pass.
#[derive(Debug)]
pub enum Failure {
    /// It could not run here (no GPU, a path this GPU cannot run): reported as ignored.
    Skip(String),
    Fail(String),
}

pub type TestResult = Result<(), Failure>;

/// A failure with a message: `return Err(fail(format!(..)))`.
pub fn fail(message: impl Display) -> Failure {
    Failure::Fail(message.to_string())
}

/// Fails unless `condition`, with the message `what` produces.
pub fn ensure(condition: bool, what: impl FnOnce() -> String) -> TestResult {
    if condition { Ok(()) } else { Err(Failure::Fail(what())) }
}

impl From<rustflash::Error> for Failure {
    fn from(e: rustflash::Error) -> Self {
        use rustflash::Error::*;
        match e {
            NoDriver | NoDevice { .. } | PathUnavailable { .. } | UnsupportedDevice { .. } => {
                Failure::Skip(e.to_string())
            }
            other => Failure::Fail(other.to_string()),
        }
    }
}

/// A reference evaluation given arguments it cannot evaluate: the test itself is wrong.
impl From<rustflash_reference::Error> for Failure {
    fn from(e: rustflash_reference::Error) -> Self {
        Failure::Fail(format!("float64 reference: {e}"))
    }
}

impl From<rustflash::cudarc::driver::DriverError> for Failure {
    fn from(e: rustflash::cudarc::driver::DriverError) -> Self {
        Failure::Fail(format!("CUDA driver error: {e}"))
    }
}

/// What a trial is given: its seed.
pub struct Context {
    pub seed: u64,
}

impl Context {
    pub fn rng(&self) -> Rng {
        Rng::new(self.seed)
    }
}

type Body = Box<dyn FnOnce(&Context) -> TestResult>;

pub struct Trial {
    name: String,
    needs_gpu: bool,
    quick: bool,
    sanitize: bool,
    body: Body,
}

impl Trial {
    /// A test that runs anywhere.
    pub fn cpu(name: impl Into<String>, body: impl FnOnce(&Context) -> TestResult + 'static) -> Self {
        Trial { name: name.into(), needs_gpu: false, quick: true, sanitize: false, body: Box::new(body) }
    }

    /// A test that needs a CUDA GPU; ignored (with the reason) where there is none.
    pub fn gpu(name: impl Into<String>, body: impl FnOnce(&Context) -> TestResult + 'static) -> Self {
        Trial { needs_gpu: true, ..Trial::cpu(name, body) }
    }

    /// Part of the full tier only (GPU trials default to quick; mark the long ones).
    pub fn full_only(mut self) -> Self {
        self.quick = false;
        self
    }

    /// Also run under `compute-sanitizer` (`RUSTFLASH_SANITIZE=1` selects these).
    pub fn sanitize(mut self) -> Self {
        self.sanitize = true;
        self
    }
}

enum Outcome {
    Passed,
    Failed(String),
    Ignored(String),
}

struct Options {
    filter: Option<String>,
    exact: bool,
    skip: Vec<String>,
    list: bool,
}

fn parse_args() -> Options {
    let mut o = Options { filter: None, exact: false, skip: Vec::new(), list: false };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--exact" => o.exact = true,
            "--list" => o.list = true,
            "--skip" => o.skip.extend(args.next()),
            // libtest options that take a value; accepted and ignored.
            "--test-threads" | "--format" | "--color" | "-Z" | "--logfile" => {
                args.next();
            }
            s if s.starts_with('-') => {}
            s => o.filter = Some(s.to_string()),
        }
    }
    o
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Whether a GPU can be used, or why not.
fn gpu_status() -> Result<(), String> {
    match rustflash::device_count() {
        Ok(0) => Err("the CUDA driver reports no device".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

fn fresh_seed(name: &str) -> u64 {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut h = now as u64 ^ (std::process::id() as u64) << 32;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01B3);
    }
    Rng::new(h).next_u64()
}

fn seed_for(name: &str) -> u64 {
    match std::env::var("RUSTFLASH_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|_| fresh_seed(name))
        }
        Err(_) => fresh_seed(name),
    }
}

/// Runs the selected trials and prints libtest-style results.
pub fn run(trials: Vec<Trial>) -> ExitCode {
    let opts = parse_args();
    let quick_only = std::env::var("RUSTFLASH_TIER").is_ok_and(|t| t == "quick");
    let sanitize_only = env_flag("RUSTFLASH_SANITIZE");
    let require_gpu = env_flag("REQUIRE_GPU");
    let results_file = std::env::var_os("RUSTFLASH_RESULTS");

    let total = trials.len();
    let selected: Vec<Trial> = trials
        .into_iter()
        .filter(|t| match &opts.filter {
            Some(f) if opts.exact => &t.name == f,
            Some(f) => t.name.contains(f.as_str()),
            None => true,
        })
        .filter(|t| !opts.skip.iter().any(|s| t.name.contains(s.as_str())))
        .filter(|t| !quick_only || t.quick)
        .filter(|t| !sanitize_only || t.sanitize)
        .collect();
    let filtered_out = total - selected.len();

    if opts.list {
        for t in &selected {
            println!("{}: test", t.name);
        }
        return ExitCode::SUCCESS;
    }

    let gpu = if selected.iter().any(|t| t.needs_gpu) { Some(gpu_status()) } else { None };
    println!("\nrunning {} tests", selected.len());
    let start = Instant::now();
    let (mut passed, mut ignored) = (0, 0);
    let mut failures = Vec::new();
    for trial in selected {
        let seed = seed_for(&trial.name);
        let t0 = Instant::now();
        let outcome = match (&gpu, trial.needs_gpu) {
            (Some(Err(why)), true) if require_gpu => {
                Outcome::Failed(format!("REQUIRE_GPU=1, but no GPU: {why}"))
            }
            (Some(Err(why)), true) => Outcome::Ignored(format!("no CUDA GPU: {why}")),
            _ => {
                let ctx = Context { seed };
                let body = trial.body;
                match catch_unwind(AssertUnwindSafe(move || body(&ctx))) {
                    Ok(Ok(())) => Outcome::Passed,
                    Ok(Err(Failure::Skip(why))) => Outcome::Ignored(why),
                    Ok(Err(Failure::Fail(msg))) => Outcome::Failed(msg),
                    Err(panic) => Outcome::Failed(format!("panicked: {}", panic_message(&panic))),
                }
            }
        };
        let seconds = t0.elapsed().as_secs_f64();
        let (word, detail) = match &outcome {
            Outcome::Passed => {
                passed += 1;
                println!("test {} ... ok", trial.name);
                ("passed", String::new())
            }
            Outcome::Ignored(why) => {
                ignored += 1;
                println!("test {} ... ignored, {why}", trial.name);
                ("ignored", why.clone())
            }
            Outcome::Failed(msg) => {
                println!("test {} ... FAILED", trial.name);
                let msg = format!(
                    "{msg}\n(seed {seed:#x}; replay with RUSTFLASH_SEED={seed:#x} and the filter `{}`)",
                    trial.name
                );
                failures.push((trial.name.clone(), msg.clone()));
                ("failed", msg)
            }
        };
        if let Some(path) = &results_file {
            let line = format!(
                "{{\"name\":{},\"outcome\":\"{word}\",\"seconds\":{seconds:.3},\"seed\":\"{seed:#x}\",\"detail\":{}}}\n",
                json_string(&trial.name),
                json_string(&detail)
            );
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
                let _ = f.write_all(line.as_bytes());
            }
        }
        let _ = std::io::stdout().flush();
    }

    if !failures.is_empty() {
        println!("\nfailures:\n");
        for (name, msg) in &failures {
            println!("---- {name} ----\n{msg}\n");
        }
        println!("failures:");
        for (name, _) in &failures {
            println!("    {name}");
        }
    }
    let status = if failures.is_empty() { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {status}. {passed} passed; {} failed; {ignored} ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s\n",
        failures.len(),
        start.elapsed().as_secs_f64()
    );
    if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// A JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
