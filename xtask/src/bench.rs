//! `cargo xtask bench [--full] [filters]`: builds and runs `rustflash-bench` (release) on this
//! machine's GPU, then draws the charts. Without a GPU it says so and fails.

use crate::project_root;
use std::process::Command;

pub fn run(args: &[String]) -> Result<(), String> {
    let root = project_root();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args(["run", "--release", "--quiet", "-p", "rustflash-bench", "--"])
        .args(args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("the benchmark failed ({status})"));
    }
    crate::chart::run(&[])
}
