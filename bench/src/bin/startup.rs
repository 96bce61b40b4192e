//! `startup`: how long a fresh process waits for its first attention result.
//!
//! Opens device 0, runs one forward call on a small f16 problem (batch 1, seqlen 128, 1 head,
//! head dim 64) and prints the time from process start to the synchronised result, the part of it
//! spent loading kernels (the driver's JIT compilation of their PTX, unless its cache has them)
//! and the GPU's name. `run.sh startup` in a bundle runs it with a cold and a warm driver cache.

use half::f16;
use rustflash::{Device, DeviceTensor, DeviceTensorMut, FlashAttention, ForwardOptions};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let main_start = Instant::now();
    let before_main = process_age();
    match run(main_start, before_main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("startup: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(main_start: Instant, before_main: Option<Duration>) -> Result<(), String> {
    let err = |e: rustflash::Error| e.to_string();
    let drv = |e: rustflash::cudarc::driver::DriverError| e.to_string();

    let device = Device::new(0).map_err(err)?;
    let opened = main_start.elapsed();
    let stream = device.new_stream().map_err(err)?;
    let shape = [1, 128, 1, 64];
    let n: usize = shape.iter().product();
    let host: Vec<f16> = (0..n).map(|i| f16::from_f32(((i * 7919) % 97) as f32 / 97.0 - 0.5)).collect();
    let q = stream.clone_htod(&host).map_err(drv)?;
    let k = stream.clone_htod(&host).map_err(drv)?;
    let v = stream.clone_htod(&host).map_err(drv)?;
    let mut out = stream.alloc_zeros::<f16>(n).map_err(drv)?;
    let mut lse = stream.alloc_zeros::<f32>(shape[0] * shape[2] * shape[1]).map_err(drv)?;

    let fa = FlashAttention::new(device.clone());
    fa.forward(
        &stream,
        &DeviceTensor::contiguous(q.slice(0..), shape),
        &DeviceTensor::contiguous(k.slice(0..), shape),
        &DeviceTensor::contiguous(v.slice(0..), shape),
        &mut DeviceTensorMut::contiguous(out.slice_mut(0..), shape),
        &mut DeviceTensorMut::contiguous(lse.slice_mut(0..), [shape[0], shape[2], shape[1]]),
        &ForwardOptions::default(),
    )
    .map_err(err)?;
    stream.synchronize().map_err(drv)?;
    let first_result = main_start.elapsed();

    let result = stream.clone_dtoh(&out).map_err(drv)?;
    if !result.iter().all(|x| x.is_finite()) {
        return Err("the forward call wrote non-finite values".into());
    }
    let loads = device.loaded_kernels();
    let load: Duration = loads.iter().map(|(_, t)| *t).sum();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;

    let info = device.info();
    let (major, minor) = info.compute_capability;
    println!("gpu: {} (compute capability {major}.{minor}, {} path)", info.name, device.path());
    println!(
        "driver JIT cache: {}",
        std::env::var("CUDA_CACHE_PATH").map_or("default (~/.nv/ComputeCache)".into(), |p| p)
    );
    for (name, t) in &loads {
        println!("kernel load: {name} {:.1} ms", ms(*t));
    }
    println!("kernel load total: {:.1} ms ({} kernel(s))", ms(load), loads.len());
    println!("device open: {:.1} ms", ms(opened));
    match before_main {
        Some(b) => println!(
            "first result: {:.1} ms after process start ({:.1} ms after main; exec to main ~{:.0} ms, 10 ms resolution)",
            ms(b + first_result),
            ms(first_result),
            ms(b)
        ),
        None => println!("first result: {:.1} ms after main", ms(first_result)),
    }
    Ok(())
}

/// How long ago the process started, from `/proc` (Linux; clock ticks of 10 ms).
fn process_age() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 22, starttime, counted after the `)` that closes the command name (field 2).
    let after_name = &stat[stat.rfind(')')? + 1..];
    let start_ticks: f64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 =
        std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()?;
    const TICKS_PER_SECOND: f64 = 100.0;
    Some(Duration::from_secs_f64((uptime - start_ticks / TICKS_PER_SECOND).max(0.0)))
}
