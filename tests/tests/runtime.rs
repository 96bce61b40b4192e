//! The runtime: device limits, one handle shared by threads, and errors instead of panics.

use rustflash::cudarc::driver::{LaunchConfig, PushKernelArg};
use rustflash::{Device, Error, KernelPath};
use rustflash_tests::gpu::{download, upload};
use rustflash_tests::harness::{Context, TestResult, Trial, ensure, fail, run};
use std::process::ExitCode;

fn main() -> ExitCode {
    run(vec![
        Trial::cpu("runtime::missing_driver_or_device_is_an_error", missing_driver_or_device),
        Trial::gpu("runtime::device_limits_are_read", device_limits),
        Trial::gpu("runtime::threads_share_one_device", threads_share_one_device).sanitize(),
        Trial::gpu("runtime::bad_requests_are_errors", bad_requests),
    ])
}

/// Without a driver every entry point says so; with one, an absent ordinal is `NoDevice`.
fn missing_driver_or_device(_: &Context) -> TestResult {
    match rustflash::driver_available() {
        Err(_) => {
            ensure(matches!(rustflash::device_count(), Err(Error::NoDriver)), || "device_count".into())?;
            ensure(matches!(Device::new(0), Err(Error::NoDriver)), || "Device::new".into())?;
            ensure(matches!(Device::with_path(0, KernelPath::Volta), Err(Error::NoDriver)), || {
                "with_path".into()
            })
        }
        Ok(()) => match Device::new(1000) {
            Err(Error::NoDevice { ordinal: 1000, .. }) => Ok(()),
            other => Err(fail(format!("Device::new(1000) gave {:?}", other.map(|d| d.info().clone())))),
        },
    }
}

fn device_limits(_: &Context) -> TestResult {
    let d = Device::new(0)?;
    let i = d.info();
    println!(
        "    device 0: {} cc {}.{}, {} SMs, {} B shared memory per block, path {}",
        i.name,
        i.compute_capability.0,
        i.compute_capability.1,
        i.multiprocessors,
        i.shared_memory_per_block,
        d.path()
    );
    ensure(
        i.multiprocessors > 0 && i.shared_memory_per_block >= 48 * 1024 && i.max_threads_per_block >= 1024,
        || format!("implausible limits: {i:?}"),
    )?;
    let (ma, mi) = i.compute_capability;
    ensure(Some(d.path()) == KernelPath::native(ma, mi), || {
        format!("native path {} on cc {ma}.{mi}", d.path())
    })
}

/// Eight threads, one `Device` handle, a stream each, many launches: all results right.
fn threads_share_one_device(ctx: &Context) -> TestResult {
    let device = Device::new(0)?;
    let seed = ctx.seed;
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            let device = device.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let stream = device.new_stream().map_err(|e| e.to_string())?;
                let n = 4096usize;
                let mut rng = rustflash_tests::rng::Rng::new(seed ^ w);
                let x = rng.uniform_vec(n, -1.0, 1.0);
                let dx = upload(&stream, &x).map_err(|e| format!("{e:?}"))?;
                let mut dy = upload(&stream, &vec![0f32; n]).map_err(|e| format!("{e:?}"))?;
                let f = device.kernel("smoke_axpy_f32", 0).map_err(|e| e.to_string())?;
                let cfg = LaunchConfig { grid_dim: (16, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
                let (nn, a) = (n as u32, 1.0f32);
                for _ in 0..50 {
                    unsafe { stream.launch_builder(&f).arg(&nn).arg(&a).arg(&dx).arg(&mut dy).launch(cfg) }
                        .map_err(|e| e.to_string())?;
                }
                let y = download(&stream, &dy).map_err(|e| format!("{e:?}"))?;
                // y = 50 x, accumulated one addition at a time in f32.
                for i in 0..n {
                    let want = (0..50).fold(0f32, |acc, _| acc + x[i]);
                    if y[i] != want {
                        return Err(format!("thread {w}: y[{i}] = {}, expected {want}", y[i]));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| fail("a worker thread panicked"))?.map_err(fail)?;
    }
    Ok(())
}

fn bad_requests(_: &Context) -> TestResult {
    let d = Device::new(0)?;
    match d.kernel("no_such_kernel", 0) {
        Err(Error::MissingKernel { .. }) => {}
        other => return Err(fail(format!("missing kernel gave {:?}", other.map(|_| ())))),
    }
    let too_much = d.info().shared_memory_per_block + 1;
    match d.kernel("selftest_shared_barrier", too_much) {
        Err(Error::SharedMemoryLimit { .. }) => {}
        other => return Err(fail(format!("{too_much} B of shared memory gave {:?}", other.map(|_| ())))),
    }
    // The Volta module lacks the sm_80 instructions: its kernels are not there.
    let volta = Device::with_path(0, KernelPath::Volta)?;
    ensure(matches!(volta.kernel("selftest_mma_f16", 0), Err(Error::MissingKernel { .. })), || {
        "the Volta module has an mma.sync kernel".into()
    })
}
