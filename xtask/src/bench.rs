//! `cargo xtask bench [--full] [filters]`: builds and runs `rustflash-bench` (release) on this
//! machine's GPU, then draws the charts. Without a GPU it says so and fails.

pub fn run(args: &[String]) -> Result<(), String> {
    let status = crate::cargo()
        .args(["run", "--release", "--quiet", "-p", "rustflash-bench", "--"])
        .args(args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("the benchmark failed ({status})"));
    }
    crate::chart::run(&[])
}
