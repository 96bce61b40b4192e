//! `cargo xtask <task>`: the project's own tools (see `cargo xtask help`).

mod bench;
mod bundle;
mod chart;
mod cuda_tools;
mod ptx_report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const HELP: &str = "\
usage: cargo xtask <task>

tasks:
  ptx [--clean] [--arch ARCH]   build the shipped kernels for every architecture and print, per
                                kernel, registers, spills, stack frame, static and dynamic shared
                                memory, block size and blocks per SM (H100, A100, V100 limits);
                                fails if a kernel does not assemble, declares no block size
                                (.maxntid), cannot fit on an SM, or is hot and spills
  ptx --sass KERNEL [--arch A]  print the machine code of KERNEL (cuobjdump), default arch sm_90a
  bundle [--out DIR]            release test binaries and PTX in one folder (default bundle/) with
                                run.sh [quick|full] [--sanitize], run.sh bench, run.sh startup
                                (start-up time, cold and warm driver JIT cache), and, with
                                maturin installed, the Python wheel and its tests (run.sh python),
                                for a GPU host without Rust
  bench [--full] [FILTERS]      rustflash against naive attention and PyTorch SDPA on this GPU,
                                forward, backward (default and deterministic mode) and forward+
                                backward; writes bench-results/<date>-<gpu>-<mode>.json and .md,
                                then the charts. FILTERS (repeatable): --pass forward|backward|both,
                                --headdim N, --seqlen N, --causal yes|no, --dtype f16|bf16,
                                --no-torch; quick: d 64/128, s 1k/4k, f16, every pass; --full:
                                f16+bf16, d 64/128/256, s 1k..16k, every pass (about 8 minutes
                                on an H100). Timing:
                                --rounds R (5; sets every pass), --bwd-rounds R (4), --runs-per-round
                                N (5), --math-max-seqlen N (4096: torch math's backward limit),
                                --max-minutes M (no case starts after M minutes)
  chart [FILE.json..] [--out DIR]  SVG charts from benchmark JSON (default: the newest file in
                                bench-results/, into docs/charts/); needs no GPU
  help                          this text
";

fn main() -> ExitCode {
    // rustc calls this program back as the NVPTX link step while it builds the kernels.
    kernel_builder::run_if_invoked_as_linker();

    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ptx") => ptx_report::run(&args[1..]),
        Some("bundle") => bundle::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("chart") => chart::run(&args[1..]),
        Some("help") | Some("--help") | None => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => Err(format!("unknown task `{other}`\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The cargo that runs xtask, in the repository root.
pub fn cargo() -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(project_root());
    cmd
}

/// The repository root (xtask lives one level below it).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask has a parent folder").to_path_buf()
}
