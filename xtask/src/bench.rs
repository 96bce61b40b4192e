//! `cargo xtask bench [--full] [--pass forward|backward|both].. [filters]`: builds and runs
//! `rustflash-bench` (release) on this machine's GPU — the forward, backward and
//! forward+backward passes, or those named — then draws the charts of every pass. Without a GPU
//! it says so and fails.

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
