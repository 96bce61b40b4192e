//! Times GPU work with CUDA events, one pair per run.

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaContext, CudaStream};
use std::sync::Arc;

/// Runs `work` `n` times on `stream`, each between two events; milliseconds per run.
pub fn time_runs(
    ctx: &Arc<CudaContext>,
    stream: &Arc<CudaStream>,
    n: usize,
    mut work: impl FnMut() -> Result<(), String>,
) -> Result<Vec<f64>, String> {
    let err = |e: cudarc::driver::DriverError| e.to_string();
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        let start = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(err)?;
        let end = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(err)?;
        start.record(stream).map_err(err)?;
        work()?;
        end.record(stream).map_err(err)?;
        events.push((start, end));
    }
    stream.synchronize().map_err(err)?;
    events.iter().map(|(s, e)| s.elapsed_ms(e).map(|ms| ms as f64).map_err(err)).collect()
}

pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}
