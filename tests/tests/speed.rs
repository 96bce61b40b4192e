//! A first speed figure: forward TFLOPS at FlashAttention's reference shape, timed with CUDA
//! events (median of 30 runs after 5 warm-ups). `cargo xtask bench` is the full benchmark.

use half::f16;
use rustflash::cudarc::driver::sys::CUevent_flags;
use rustflash::{Device, DeviceTensor, DeviceTensorMut, FlashAttention, ForwardOptions};
use rustflash_tests::harness::{Context, TestResult, Trial, run};
use std::process::ExitCode;

fn main() -> ExitCode {
    run(vec![Trial::gpu("speed::forward_f16_b8_s2048_h16_d128", forward_tflops).full_only()])
}

fn forward_tflops(ctx: &Context) -> TestResult {
    let (b, s, h, d) = (8usize, 2048usize, 16usize, 128usize);
    let device = Device::new(0)?;
    let stream = device.new_stream()?;
    let fa = FlashAttention::new(device.clone());
    let mut rng = ctx.rng();
    let n = b * s * h * d;
    let data: Vec<f16> = (0..3 * n).map(|_| f16::from_f32(rng.normal() as f32)).collect();
    let qkv = stream.clone_htod(&data)?;
    let mut out = stream.alloc_zeros::<f16>(n)?;
    let mut lse = stream.alloc_zeros::<f32>(b * h * s)?;
    let shape = [b, s, h, d];
    for causal in [false, true] {
        let opts = ForwardOptions::default().causal(causal);
        let mut times = Vec::new();
        for i in 0..35 {
            let (q, k, v) = (
                DeviceTensor::contiguous(qkv.slice(0..n), shape),
                DeviceTensor::contiguous(qkv.slice(n..2 * n), shape),
                DeviceTensor::contiguous(qkv.slice(2 * n..3 * n), shape),
            );
            let mut o = DeviceTensorMut::contiguous(out.slice_mut(0..), shape);
            let start = device.context().new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
            let end = device.context().new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
            start.record(&stream)?;
            fa.forward(&stream, &q, &k, &v, &mut o, &mut lse.slice_mut(0..), &opts)?;
            end.record(&stream)?;
            end.synchronize()?;
            if i >= 5 {
                times.push(start.elapsed_ms(&end)? as f64);
            }
        }
        times.sort_by(f64::total_cmp);
        let ms = times[times.len() / 2];
        let flops = 4.0 * (b * s * s * h * d) as f64 / if causal { 2.0 } else { 1.0 };
        println!(
            "    rustflash forward f16 (8, 2048, 16, 128) causal={causal}: {ms:.3} ms, {:.1} TFLOPS",
            flops / ms / 1e9
        );
    }
    Ok(())
}
