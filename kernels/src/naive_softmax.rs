//! The softmax of naive attention (the benchmark's baseline): `P = softmax(scale · S + mask)`
//! row by row over a materialised `S` matrix, which two cuBLAS products surround.

use crate::primitives::index::{block_dim_x, block_idx_x, thread_idx_x};
use crate::primitives::math::{exp2_approx, max};
use crate::primitives::{shared, sync, warp};

/// Element conversions of the 16-bit types, for the baseline's loads and stores.
trait Half {
    fn to_f32(bits: u16) -> f32;
    fn from_f32(x: f32) -> u16;
}

enum F16 {}
enum Bf16 {}

impl Half for F16 {
    fn to_f32(bits: u16) -> f32 {
        let r: f32;
        // SAFETY: register-only conversion.
        unsafe {
            core::arch::asm!("cvt.f32.f16 {r}, {h};", r = out(reg32) r, h = in(reg16) bits, options(pure, nomem, nostack))
        };
        r
    }
    fn from_f32(x: f32) -> u16 {
        crate::primitives::convert::pack_f16x2(x, 0.0) as u16
    }
}

impl Half for Bf16 {
    fn to_f32(bits: u16) -> f32 {
        f32::from_bits((bits as u32) << 16)
    }
    fn from_f32(x: f32) -> u16 {
        // Round to nearest even (inputs are finite or ±inf, never NaN here).
        let b = x.to_bits();
        ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
    }
}

/// Combines `v` over the block (256 threads at most) with `op`; every thread gets the result.
///
/// # Safety
/// Every thread of the block calls it together (it holds two block barriers and warp
/// shuffles); the block is whole warps, at most 8, with 32 bytes of dynamic shared memory.
#[inline(always)]
unsafe fn block_reduce(v: f32, op: impl Fn(f32, f32) -> f32 + Copy) -> f32 {
    let scratch = shared::dynamic_smem_base();
    // SAFETY: the caller brings every thread, so every lane of every warp.
    let v = unsafe { warp::reduce::<32>(v, op) };
    let (w, warps) = (thread_idx_x() / 32, block_dim_x() / 32);
    if thread_idx_x().is_multiple_of(32) {
        // SAFETY: `w < 8`: word `w` of the 32 bytes of shared memory.
        unsafe { shared::st_shared_u32(scratch + 4 * w, v.to_bits()) };
    }
    // SAFETY: every thread leaves the branch above and reaches this barrier; the caller brings
    // the whole block.
    unsafe { sync::block_barrier() };
    // SAFETY: word 0 of the scratch words.
    let mut r = f32::from_bits(unsafe { shared::ld_shared_u32(scratch) });
    for i in 1..warps {
        // SAFETY: `i < warps <= 8`: one of the scratch words.
        r = op(r, f32::from_bits(unsafe { shared::ld_shared_u32(scratch + 4 * i) }));
    }
    // SAFETY: as above; every thread runs the same `warps - 1` iterations.
    unsafe { sync::block_barrier() }; // the scratch words are reused by the next reduction
    r
}

/// Block `r` normalises row `r` of `s` (`rows` rows of `cols` 16-bit elements, query index
/// `r % seqlen_q`) into `p`, which may alias `s`.
///
/// # Safety
/// As for the kernels below; every thread of the block calls it.
#[inline(always)]
unsafe fn softmax_rows<T: Half>(
    s: *const u16,
    p: *mut u16,
    cols: u32,
    seqlen_q: u32,
    scale_log2: f32,
    causal: u32,
) {
    let row = block_idx_x();
    let query = row % seqlen_q;
    let visible = if causal != 0 {
        (query as i64 + 1 + cols as i64 - seqlen_q as i64).clamp(0, cols as i64) as u32
    } else {
        cols
    };
    // SAFETY: `row < gridDim.x`, and the caller gives `s` and `p` `gridDim.x · cols` elements.
    let (s, p) = unsafe { (s.add(row as usize * cols as usize), p.add(row as usize * cols as usize)) };
    let mut m = f32::NEG_INFINITY;
    let mut j = thread_idx_x();
    while j < visible {
        // SAFETY: `j < visible <= cols`: inside the row.
        m = max(m, T::to_f32(unsafe { *s.add(j as usize) }) * scale_log2);
        j += block_dim_x();
    }
    // SAFETY: every thread leaves the loop above and reaches this call (the caller runs the
    // whole block here); the launch gives at most 256 threads and 32 bytes of shared memory.
    let m = unsafe { block_reduce(m, max) };
    let base = if m == f32::NEG_INFINITY { 0.0 } else { m };
    let mut sum = 0.0;
    let mut j = thread_idx_x();
    while j < visible {
        // SAFETY: `j < visible <= cols`: inside the row.
        sum += exp2_approx(T::to_f32(unsafe { *s.add(j as usize) }) * scale_log2 - base);
        j += block_dim_x();
    }
    // SAFETY: as for the first reduction.
    let sum = unsafe { block_reduce(sum, |a, b| a + b) };
    let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
    let mut j = thread_idx_x();
    while j < cols {
        let x = if j < visible {
            // SAFETY: `j < visible <= cols`: inside the row.
            exp2_approx(T::to_f32(unsafe { *s.add(j as usize) }) * scale_log2 - base) * inv
        } else {
            0.0
        };
        // SAFETY: `j < cols`: inside the row of `p`.
        unsafe { *p.add(j as usize) = T::from_f32(x) };
        j += block_dim_x();
    }
}

/// f16 rows.
///
/// # Safety
/// One block per row, at most 256 threads (a multiple of 32), 32 bytes of dynamic shared
/// memory; `s` and `p` hold `gridDim.x · cols` elements.
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn naive_softmax_f16(
    s: *const u16,
    p: *mut u16,
    cols: u32,
    seqlen_q: u32,
    scale_log2: f32,
    causal: u32,
) {
    // SAFETY: the caller's guarantees are the helper's; every thread of the block runs it.
    unsafe { softmax_rows::<F16>(s, p, cols, seqlen_q, scale_log2, causal) }
}

/// bf16 rows.
///
/// # Safety
/// As for `naive_softmax_f16`.
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn naive_softmax_bf16(
    s: *const u16,
    p: *mut u16,
    cols: u32,
    seqlen_q: u32,
    scale_log2: f32,
    causal: u32,
) {
    // SAFETY: as for `naive_softmax_f16`.
    unsafe { softmax_rows::<Bf16>(s, p, cols, seqlen_q, scale_log2, causal) }
}

/// Block `r` writes row `r` of softmax's backward, `dS = P ∘ (dP − Σ_j P ∘ dP)` (the
/// baseline's own row sum of `P ∘ dP`, which equals FlashAttention's `rowsum(dO ∘ O)`), into
/// `ds`, which may alias `dp`.
///
/// # Safety
/// As for the kernels below; every thread of the block calls it.
#[inline(always)]
unsafe fn softmax_backward_rows<T: Half>(p: *const u16, dp: *const u16, ds: *mut u16, cols: u32) {
    let off = block_idx_x() as usize * cols as usize;
    // SAFETY: `row < gridDim.x`, and the caller gives each buffer `gridDim.x · cols` elements.
    let (p, dp, ds) = unsafe { (p.add(off), dp.add(off), ds.add(off)) };
    let mut dot = 0.0;
    let mut j = thread_idx_x();
    while j < cols {
        // SAFETY: `j < cols`: inside the row.
        dot += unsafe { T::to_f32(*p.add(j as usize)) * T::to_f32(*dp.add(j as usize)) };
        j += block_dim_x();
    }
    // SAFETY: every thread leaves the loop above and reaches this call; the launch gives at
    // most 256 threads and 32 bytes of shared memory.
    let dot = unsafe { block_reduce(dot, |a, b| a + b) };
    let mut j = thread_idx_x();
    while j < cols {
        // SAFETY: `j < cols`: inside the row; each element is read before this thread writes it.
        unsafe {
            let (x, y) = (T::to_f32(*p.add(j as usize)), T::to_f32(*dp.add(j as usize)));
            *ds.add(j as usize) = T::from_f32(x * (y - dot));
        }
        j += block_dim_x();
    }
}

/// f16 rows of softmax's backward.
///
/// # Safety
/// One block per row, at most 256 threads (a multiple of 32), 32 bytes of dynamic shared
/// memory; `p`, `dp` and `ds` hold `gridDim.x · cols` elements (`ds` may be `dp`).
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn naive_softmax_backward_f16(
    p: *const u16,
    dp: *const u16,
    ds: *mut u16,
    cols: u32,
) {
    // SAFETY: the caller's guarantees are the helper's; every thread of the block runs it.
    unsafe { softmax_backward_rows::<F16>(p, dp, ds, cols) }
}

/// bf16 rows of softmax's backward.
///
/// # Safety
/// As for `naive_softmax_backward_f16`.
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn naive_softmax_backward_bf16(
    p: *const u16,
    dp: *const u16,
    ds: *mut u16,
    cols: u32,
) {
    // SAFETY: as for `naive_softmax_backward_f16`.
    unsafe { softmax_backward_rows::<Bf16>(p, dp, ds, cols) }
}
