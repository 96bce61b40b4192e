//! Each device primitive checked on the GPU against a host computation, on every kernel path
//! the GPU can run (an H100 runs the Volta, Ampere and Hopper modules).

use half::{bf16, f16};
use rustflash::KernelPath;
use rustflash::cudarc::driver::{LaunchConfig, PushKernelArg};
use rustflash_tests::gpu::{download, one_block, open, poisoned, upload};
use rustflash_tests::harness::{Context, TestResult, Trial, ensure, fail, run};
use std::process::ExitCode;

type Body = fn(KernelPath, &Context) -> TestResult;

/// Primitives every module has.
const COMMON: &[(&str, Body)] = &[
    ("smoke_axpy", smoke_axpy),
    ("indices", indices),
    ("shared_memory_and_barrier", shared_barrier),
    ("global_16_byte_loads_and_stores", global_v4),
    ("wmma_m16n16k16_f16", wmma),
    ("warp_shuffles_and_reductions", warp),
    ("exp2_fma_and_f16_packing", math),
    // `cp.async` on sm_80 and newer; on sm_70 the same function copies through registers.
    ("cp_async_4_bytes_zero_fill", cp_async_4),
    ("cp_async_8_bytes_zero_fill", cp_async_8),
    ("cp_async_16_bytes_zero_fill", cp_async_16),
];

/// Primitives of the `sm_80` and `sm_90a` modules.
const AMPERE_UP: &[(&str, Body)] =
    &[("ldmatrix_all_variants", ldmatrix), ("mma_m16n8k16_f16", mma_f16), ("mma_m16n8k16_bf16", mma_bf16)];

fn main() -> ExitCode {
    let mut trials = Vec::new();
    for path in KernelPath::ALL {
        let sets = if path == KernelPath::Volta { vec![COMMON] } else { vec![COMMON, AMPERE_UP] };
        for &(name, body) in sets.into_iter().flatten() {
            let label = format!("primitives::{name}::{}", path.arch());
            trials.push(Trial::gpu(label, move |ctx| body(path, ctx)).sanitize());
        }
    }
    run(trials)
}

fn smoke_axpy(path: KernelPath, ctx: &Context) -> TestResult {
    let (dev, stream) = open(path)?;
    let n = 10_000usize;
    let mut rng = ctx.rng();
    let x = rng.uniform_vec(n, -1.0, 1.0);
    let y = rng.uniform_vec(n, -1.0, 1.0);
    let (dx, mut dy) = (upload(&stream, &x)?, upload(&stream, &y)?);
    let f = dev.kernel("smoke_axpy_f32", 0)?;
    let cfg = LaunchConfig {
        grid_dim: (n.div_ceil(256) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let (nn, a) = (n as u32, 2.5f32);
    unsafe { stream.launch_builder(&f).arg(&nn).arg(&a).arg(&dx).arg(&mut dy).launch(cfg) }?;
    let got = download(&stream, &dy)?;
    for i in 0..n {
        // Rust does not contract `a * x + y`: the kernel rounds the product, then the sum.
        let want = a * x[i] + y[i];
        ensure(got[i] == want, || format!("y[{i}] = {}, expected {want}", got[i]))?;
    }
    Ok(())
}

fn indices(path: KernelPath, _: &Context) -> TestResult {
    let (dev, stream) = open(path)?;
    let (gx, gy, threads) = (3u32, 2u32, 96u32);
    let n = (gx * gy * threads) as usize;
    let mut out = poisoned(&stream, 5 * n, u32::MAX)?;
    let cfg = LaunchConfig { grid_dim: (gx, gy, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
    let f = dev.kernel("selftest_indices", 0)?;
    unsafe { stream.launch_builder(&f).arg(&mut out).launch(cfg) }?;
    let got = download(&stream, &out)?;
    for by in 0..gy {
        for bx in 0..gx {
            for t in 0..threads {
                let g = ((by * gx + bx) * threads + t) as usize;
                let want = [t, bx, t % 32, t / 32, by];
                ensure(got[5 * g..5 * g + 5] == want, || {
                    format!(
                        "thread {t} of block ({bx}, {by}): {:?}, expected {want:?}",
                        &got[5 * g..5 * g + 5]
                    )
                })?;
            }
        }
    }
    Ok(())
}

fn shared_barrier(path: KernelPath, _: &Context) -> TestResult {
    let (dev, stream) = open(path)?;
    // Once within the default 48 KB, once with all the shared memory a block may have
    // (raising the kernel's limit).
    for bytes in [40_000usize, dev.info().shared_memory_per_block] {
        let words = (bytes / 4) as u32;
        let mut out = poisoned(&stream, words as usize, u32::MAX)?;
        let f = dev.kernel("selftest_shared_barrier", bytes)?;
        unsafe { stream.launch_builder(&f).arg(&mut out).arg(&words).launch(one_block(256, bytes as u32)) }?;
        let got = download(&stream, &out)?;
        for i in 0..words {
            let want = 7 * ((i + 1) % words) + 1;
            ensure(got[i as usize] == want, || {
                format!("{bytes} B: word {i} = {}, expected {want}", got[i as usize])
            })?;
        }
    }
    Ok(())
}

fn global_v4(path: KernelPath, ctx: &Context) -> TestResult {
    let (dev, stream) = open(path)?;
    let vectors = 1000u32;
    let mut rng = ctx.rng();
    let src: Vec<u8> = (0..16 * vectors).map(|_| rng.next_u64() as u8).collect();
    let dsrc = upload(&stream, &src)?;
    let mut dst = poisoned(&stream, src.len(), 0u8)?;
    let f = dev.kernel("selftest_global_v4", 16 * 128)?;
    unsafe {
        stream.launch_builder(&f).arg(&dsrc).arg(&mut dst).arg(&vectors).launch(one_block(128, 16 * 128))
    }?;
    let got = download(&stream, &dst)?;
    match got.iter().zip(&src).position(|(a, b)| a != b) {
        Some(i) => Err(fail(format!("byte {i}: {}, expected {}", got[i], src[i]))),
        None => Ok(()),
    }
}

fn cp_async<const BYTES: usize>(path: KernelPath, ctx: &Context) -> TestResult {
    let (dev, stream) = open(path)?;
    let (threads, valid) = (64usize, 37u32);
    let mut rng = ctx.rng();
    let src: Vec<u8> = (0..BYTES * valid as usize).map(|_| 1 + (rng.next_u64() % 255) as u8).collect();
    let dsrc = upload(&stream, &src)?;
    let mut dst = poisoned(&stream, BYTES * threads, 0xAB_u8)?;
    let f = dev.kernel(&format!("selftest_cp_async_{BYTES}"), BYTES * threads)?;
    let cfg = one_block(threads as u32, (BYTES * threads) as u32);
    unsafe { stream.launch_builder(&f).arg(&dsrc).arg(&mut dst).arg(&valid).launch(cfg) }?;
    let got = download(&stream, &dst)?;
    for (i, &g) in got.iter().enumerate() {
        let want = src.get(i).copied().unwrap_or(0);
        ensure(g == want, || format!("byte {i} (chunk {}): {g:#x}, expected {want:#x}", i / BYTES))?;
    }
    Ok(())
}

fn cp_async_4(p: KernelPath, c: &Context) -> TestResult {
    cp_async::<4>(p, c)
}
fn cp_async_8(p: KernelPath, c: &Context) -> TestResult {
    cp_async::<8>(p, c)
}
fn cp_async_16(p: KernelPath, c: &Context) -> TestResult {
    cp_async::<16>(p, c)
}

fn ldmatrix(path: KernelPath, ctx: &Context) -> TestResult {
    let (dev, stream) = open(path)?;
    let mut rng = ctx.rng();
    let m: Vec<u16> = (0..256).map(|_| rng.next_u64() as u16).collect();
    let words: Vec<u32> = m.chunks(2).map(|p| p[0] as u32 | (p[1] as u32) << 16).collect();
    let dsrc = upload(&stream, &words)?;
    let f = dev.kernel("selftest_ldmatrix", 512)?;
    for mode in 0u32..6 {
        let (tiles, trans) = ([1, 2, 4][(mode % 3) as usize], mode >= 3);
        let mut out = poisoned(&stream, 128, 0xDEAD_BEEF_u32)?;
        unsafe { stream.launch_builder(&f).arg(&dsrc).arg(&mut out).arg(&mode).launch(one_block(32, 512)) }?;
        let got = download(&stream, &out)?;
        for lane in 0..32usize {
            for tile in 0..4usize {
                let (r0, c0) = (8 * (tile % 2), 8 * (tile / 2));
                let (i, j) = (lane / 4, 2 * (lane % 4));
                let at = |r: usize, c: usize| m[16 * (r0 + r) + c0 + c] as u32;
                let want = match (tile < tiles, trans) {
                    (false, _) => 0,
                    (true, false) => at(i, j) | at(i, j + 1) << 16,
                    (true, true) => at(j, i) | at(j + 1, i) << 16,
                };
                let g = got[4 * lane + tile];
                ensure(g == want, || {
                    format!(
                        "x{tiles}{}: lane {lane} register {tile} = {g:#010x}, expected {want:#010x}",
                        if trans { ".trans" } else { "" }
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// Inputs in [-1, 1] rounded to a 16-bit type: (bits, the rounded values as f64).
fn halves(rng: &mut rustflash_tests::rng::Rng, n: usize, bf: bool) -> (Vec<u16>, Vec<f64>) {
    (0..n)
        .map(|_| {
            let x = rng.uniform(-1.0, 1.0) as f32;
            if bf {
                let h = bf16::from_f32(x);
                (h.to_bits(), h.to_f64())
            } else {
                let h = f16::from_f32(x);
                (h.to_bits(), h.to_f64())
            }
        })
        .unzip()
}

fn pack(bits: &[u16]) -> Vec<u32> {
    bits.chunks(2).map(|p| p[0] as u32 | (p[1] as u32) << 16).collect()
}

/// Checks `got` (rows x cols, row-major) against `a (rows x 16) · b`, where `b_at(k, n)` gives B.
fn check_product(
    got: &[f32],
    a: &[f64],
    b_at: impl Fn(usize, usize) -> f64,
    rows: usize,
    cols: usize,
) -> TestResult {
    for r in 0..rows {
        for c in 0..cols {
            let (mut sum, mut mag) = (0.0, 0.0);
            for k in 0..16 {
                sum += a[16 * r + k] * b_at(k, c);
                mag += (a[16 * r + k] * b_at(k, c)).abs();
            }
            let g = got[cols * r + c] as f64;
            // f32 accumulation of 16 exact products: a few units of 2^-23 of their magnitude.
            let tol = mag * 2f64.powi(-20) + 1e-30;
            ensure((g - sum).abs() <= tol, || {
                format!("C[{r}][{c}] = {g}, expected {sum} (tolerance {tol:e})")
            })?;
        }
    }
    Ok(())
}

fn mma<const BF16: bool>(path: KernelPath, ctx: &Context) -> TestResult {
    let (dev, stream) = open(path)?;
    let mut rng = ctx.rng();
    let (a_bits, a) = halves(&mut rng, 256, BF16);
    let (bt_bits, bt) = halves(&mut rng, 128, BF16); // Bᵀ: 8 x 16
    let (da, dbt) = (upload(&stream, &pack(&a_bits))?, upload(&stream, &pack(&bt_bits))?);
    let mut c = poisoned(&stream, 128, f32::NAN)?;
    let f = dev.kernel(if BF16 { "selftest_mma_bf16" } else { "selftest_mma_f16" }, 0)?;
    unsafe { stream.launch_builder(&f).arg(&da).arg(&dbt).arg(&mut c).launch(one_block(32, 0)) }?;
    check_product(&download(&stream, &c)?, &a, |k, n| bt[16 * n + k], 16, 8)
}

fn mma_f16(p: KernelPath, c: &Context) -> TestResult {
    mma::<false>(p, c)
}
fn mma_bf16(p: KernelPath, c: &Context) -> TestResult {
    mma::<true>(p, c)
}

fn wmma(path: KernelPath, ctx: &Context) -> TestResult {
    let (dev, stream) = open(path)?;
    let mut rng = ctx.rng();
    let (a_bits, a) = halves(&mut rng, 256, false);
    let (b_bits, b) = halves(&mut rng, 256, false);
    let (da, db) = (upload(&stream, &pack(&a_bits))?, upload(&stream, &pack(&b_bits))?);
    let f = dev.kernel("selftest_wmma_f16", 2048)?;
    for col_major in [0u32, 1] {
        let mut c = poisoned(&stream, 256, f32::NAN)?;
        unsafe {
            stream
                .launch_builder(&f)
                .arg(&da)
                .arg(&db)
                .arg(&mut c)
                .arg(&col_major)
                .launch(one_block(32, 2048))
        }?;
        let got = download(&stream, &c)?;
        let b_at = |k: usize, n: usize| if col_major == 1 { b[16 * n + k] } else { b[16 * k + n] };
        check_product(&got, &a, b_at, 16, 16).map_err(|e| match e {
            rustflash_tests::harness::Failure::Fail(m) => fail(format!("B col-major = {col_major}: {m}")),
            skip => skip,
        })?;
    }
    Ok(())
}

fn warp(path: KernelPath, ctx: &Context) -> TestResult {
    let (dev, stream) = open(path)?;
    let threads = 64usize;
    let x = ctx.rng().uniform_vec(threads, -10.0, 10.0);
    let dx = upload(&stream, &x)?;
    let mut out = poisoned(&stream, 4 * threads, f32::NAN)?;
    let f = dev.kernel("selftest_warp", 0)?;
    unsafe { stream.launch_builder(&f).arg(&dx).arg(&mut out).launch(one_block(threads as u32, 0)) }?;
    let got = download(&stream, &out)?;
    for t in 0..threads {
        let warp = &x[32 * (t / 32)..32 * (t / 32) + 32];
        let quad = &x[4 * (t / 4)..4 * (t / 4) + 4];
        let max = warp.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = warp.iter().map(|&v| v as f64).sum();
        let quad_sum: f64 = quad.iter().map(|&v| v as f64).sum();
        let lane_src = x[32 * (t / 32) + (t % 32 + 3) % 32];
        let g = &got[4 * t..4 * t + 4];
        ensure(g[0] == max, || format!("thread {t}: warp max {}, expected {max}", g[0]))?;
        ensure((g[1] as f64 - sum).abs() <= 1e-4, || {
            format!("thread {t}: warp sum {}, expected {sum}", g[1])
        })?;
        ensure(g[2] == lane_src, || format!("thread {t}: shfl.idx {}, expected {lane_src}", g[2]))?;
        ensure((g[3] as f64 - quad_sum).abs() <= 1e-5, || {
            format!("thread {t}: quad sum {}, expected {quad_sum}", g[3])
        })?;
    }
    Ok(())
}

fn math(path: KernelPath, ctx: &Context) -> TestResult {
    let (dev, stream) = open(path)?;
    let mut x = ctx.rng().uniform_vec(1000, -30.0, 30.0);
    x.extend([0.0, 1.0, -1.0, f32::NEG_INFINITY, 100_000.0, 1e-3]);
    let n = x.len() as u32;
    let dx = upload(&stream, &x)?;
    let mut out = poisoned(&stream, 3 * x.len(), u32::MAX)?;
    let f = dev.kernel("selftest_math", 0)?;
    let cfg = LaunchConfig { grid_dim: (n.div_ceil(128), 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
    unsafe { stream.launch_builder(&f).arg(&dx).arg(&mut out).arg(&n).launch(cfg) }?;
    let got = download(&stream, &out)?;
    for (i, &v) in x.iter().enumerate() {
        let e = f32::from_bits(got[3 * i]) as f64;
        let want = (v as f64).exp2();
        let ok = if want.is_finite() && want >= f32::MIN_POSITIVE as f64 {
            ((e - want) / want).abs() <= 2f64.powi(-21)
        } else {
            want == 0.0 && e == 0.0 || want.is_infinite() && e.is_infinite()
        };
        ensure(ok, || format!("exp2({v}) = {e}, expected {want}"))?;
        if v.is_finite() {
            let fma = f32::from_bits(got[3 * i + 1]);
            let want = v.mul_add(v, 1.0);
            ensure(fma == want, || format!("fma({v}, {v}, 1) = {fma}, expected {want}"))?;
            let packed = got[3 * i + 2];
            let want = f16::from_f32(v).to_bits() as u32 | (f16::from_f32(-v).to_bits() as u32) << 16;
            ensure(packed == want, || format!("pack_f16x2({v}, {}) = {packed:#x}, expected {want:#x}", -v))?;
        }
    }
    Ok(())
}
