//! Tiny kernels that exercise one primitive each; the host checks their output against a CPU
//! computation (`tests/` crate, `primitives` test). Not used by the attention kernels.

use crate::primitives::{global, index::*, math, shared, sync, warp, wmma};

/// Per thread of a 2-D grid of 1-D blocks: `[tid.x, ctaid.x, lane, warp, ctaid.y]` at
/// `out[5 * (global thread index)]`.
///
/// # Safety
/// `out` holds `5 * blockDim.x * gridDim.x * gridDim.y` words.
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn selftest_indices(out: *mut u32) {
    let block = block_idx_y() * grid_dim_x() + block_idx_x();
    let t = (block * block_dim_x() + thread_idx_x()) as usize;
    let values = [thread_idx_x(), block_idx_x(), lane_id(), warp_id(), block_idx_y()];
    for (k, v) in values.into_iter().enumerate() {
        // SAFETY: `t` is below `blockDim.x * gridDim.x * gridDim.y`, and the caller gives `out`
        // five words per thread.
        unsafe { *out.add(5 * t + k) = v };
    }
}

/// Fills `words` words of dynamic shared memory with `7 i + 1`, waits at a block barrier, and
/// writes word `(i + 1) % words` to `out[i]`: only right if every thread's stores are visible.
///
/// # Safety
/// Launched with at least `4 * words` bytes of dynamic shared memory; `out` holds `words` words.
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn selftest_shared_barrier(out: *mut u32, words: u32) {
    let base = shared::dynamic_smem_base();
    let mut i = thread_idx_x();
    while i < words {
        // SAFETY: `i < words`, and the launch gives `4 * words` bytes of dynamic shared memory.
        unsafe { shared::st_shared_u32(base + 4 * i, 7 * i + 1) };
        i += block_dim_x();
    }
    // SAFETY: every thread leaves the loop above and reaches this barrier once.
    unsafe { sync::block_barrier() };
    let mut i = thread_idx_x();
    while i < words {
        // SAFETY: word `(i + 1) % words` is inside the `4 * words` bytes of shared memory.
        let v = unsafe { shared::ld_shared_u32(base + 4 * ((i + 1) % words)) };
        // SAFETY: `i < words`, and the caller gives `out` `words` words.
        unsafe { *out.add(i as usize) = v };
        i += block_dim_x();
    }
}

/// Copies `vectors` 16-byte vectors from `src` to `dst` with 16-byte loads (plain and read-only
/// path, alternating) and stores, through shared memory (`v4` shared accesses).
///
/// # Safety
/// `src` and `dst` are 16-byte aligned, `16 * vectors` bytes; launched with one block and
/// `16 * blockDim.x` bytes of dynamic shared memory.
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn selftest_global_v4(src: *const u8, dst: *mut u8, vectors: u32) {
    let slot = shared::dynamic_smem_base() + 16 * thread_idx_x();
    let mut i = thread_idx_x();
    while i < vectors {
        let offset = 16 * i as usize;
        // SAFETY: `i < vectors`: 16 aligned bytes of `src`, which no thread writes.
        let v = unsafe {
            if i.is_multiple_of(2) {
                global::ld_global_v4(src.add(offset))
            } else {
                global::ld_global_nc_v4(src.add(offset))
            }
        };
        // SAFETY: the thread's own 16-byte slot in the `16 * blockDim.x` bytes of shared memory.
        unsafe { shared::st_shared_v4(slot, v) };
        // SAFETY: as above.
        let back = unsafe { shared::ld_shared_v4(slot) };
        // SAFETY: `i < vectors`: 16 aligned bytes of `dst`.
        unsafe { global::st_global_v4(dst.add(offset), back) };
        i += block_dim_x();
    }
}

/// Thread `t` copies chunk `t` (`BYTES` bytes) of `src` into shared memory with `cp.async`,
/// zero-filling the chunks at or past `valid`, then writes its chunk to `dst` word by word.
///
/// # Safety
/// As for the kernels below; every thread of the block calls it.
#[inline(always)]
unsafe fn cp_async_roundtrip<const BYTES: u32>(src: *const u8, dst: *mut u8, valid: u32) {
    use crate::primitives::cp_async;
    let t = thread_idx_x();
    let smem = shared::dynamic_smem_base() + BYTES * t;
    let in_range = t < valid;
    // Past the end the address is clamped to the first chunk and nothing is read from it.
    // SAFETY: chunk `t < valid` is inside `src`.
    let chunk = if in_range { unsafe { src.add((BYTES * t) as usize) } } else { src };
    // SAFETY: the thread's own chunk of shared memory, `BYTES`-aligned; `chunk` is a valid global
    // address with `BYTES` readable bytes, or 0 bytes read past the end.
    unsafe { cp_async::cp_async::<BYTES>(smem, chunk, if in_range { BYTES } else { 0 }) };
    cp_async::commit_group();
    cp_async::wait_group::<0>();
    // SAFETY: straight-line code: every thread of the block reaches it once.
    unsafe { sync::block_barrier() };
    for w in 0..BYTES / 4 {
        // SAFETY: a word of the thread's own chunk of shared memory.
        let v = unsafe { shared::ld_shared_u32(smem + 4 * w) };
        // SAFETY: `dst` holds one chunk per thread; chunks are 4-byte aligned.
        unsafe { *(dst.add((BYTES * t + 4 * w) as usize) as *mut u32) = v };
    }
}

macro_rules! cp_async_kernels {
    ($($name:ident = $bytes:literal;)*) => {$(
        /// `cp.async` round trip of
        #[doc = stringify!($bytes)]
        /// -byte chunks, one per thread, chunks at or past `valid` zero-filled.
        ///
        /// # Safety
        /// `src` holds `valid >= 1` chunks, `dst` one per thread; dynamic shared memory holds
        /// one chunk per thread. (On `sm_70` the copy goes through registers: the same result.)
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(src: *const u8, dst: *mut u8, valid: u32) {
            // SAFETY: the caller's guarantees are the helper's; every thread runs it.
            unsafe { cp_async_roundtrip::<$bytes>(src, dst, valid) }
        }
    )*};
}

cp_async_kernels! {
    selftest_cp_async_4 = 4;
    selftest_cp_async_8 = 8;
    selftest_cp_async_16 = 16;
}

/// One warp: copies a 16x16 matrix of 16-bit elements (row-major) to shared memory and loads it
/// with `ldmatrix` variant `mode` (0..3: x1, x2, x4 plain; 3..6: x1, x2, x4 transposed). Lane `l`
/// writes its registers to `out[4 l ..]`, unused registers as 0.
///
/// Lane `l` addresses row `l % 8` of tile `l / 8`; tile `i` starts at row `8 (i % 2)`,
/// column `8 (i / 2)`.
///
/// # Safety
/// `src` holds 256 elements, `out` 128 words; one warp with 512 bytes of dynamic shared memory.
#[cfg(target_feature = "sm_80")]
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn selftest_ldmatrix(src: *const u32, out: *mut u32, mode: u32) {
    use crate::primitives::ldmatrix::*;
    let base = shared::dynamic_smem_base();
    let l = lane_id();
    for w in 0..4 {
        let word = 4 * l + w; // 128 words = 256 halves
        // SAFETY: `word < 128`: inside `src` and the 512 bytes of shared memory.
        unsafe { shared::st_shared_u32(base + 4 * word, *src.add(word as usize)) };
    }
    // SAFETY: straight-line code: the whole block (one warp) reaches it once.
    unsafe { sync::block_barrier() };
    let tile = l / 8;
    let row = 8 * (tile % 2) + l % 8;
    let addr = base + row * 32 + (tile / 2) * 16;
    let mut regs = [0u32; 4];
    // SAFETY: every lane gives a 16-byte aligned row address inside the 512 bytes of shared
    // memory, and `mode` is the same in every lane, so the whole warp runs the same `ldmatrix`.
    unsafe {
        match mode {
            0 => regs[0] = ldmatrix_x1::<false>(addr),
            1 => regs[..2].copy_from_slice(&ldmatrix_x2::<false>(addr)),
            2 => regs = ldmatrix_x4::<false>(addr),
            3 => regs[0] = ldmatrix_x1::<true>(addr),
            4 => regs[..2].copy_from_slice(&ldmatrix_x2::<true>(addr)),
            _ => regs = ldmatrix_x4::<true>(addr),
        }
    }
    for (r, v) in regs.into_iter().enumerate() {
        // SAFETY: `4 l + r < 128`, the size of `out`.
        unsafe { *out.add((4 * l) as usize + r) = v };
    }
}

/// One warp: `C = A B` for A 16x16 (row-major), B 16x8 given as Bᵀ (8x16 row-major, so each
/// `u32` holds two consecutive k), C 16x8 f32 row-major, fragments loaded per the documented
/// `mma.sync` layout.
///
/// # Safety
/// One whole warp calls it; `a` holds 128 words, `bt` 64, `c` 128 f32.
#[cfg(target_feature = "sm_80")]
#[inline(always)]
unsafe fn mma_tile<T: crate::element::Element>(a: *const u32, bt: *const u32, c: *mut f32) {
    let (g, t) = ((lane_id() / 4) as usize, (lane_id() % 4) as usize);
    // Row r, element pair p (columns 2p, 2p+1) of a 16-wide matrix of halves: word 8r + p.
    // SAFETY: `r < 16` and `p < 8` for A, `r < 8` for Bᵀ: inside the caller's matrices.
    let word = |m: *const u32, r: usize, p: usize| unsafe { *m.add(8 * r + p) };
    let af = [word(a, g, t), word(a, g + 8, t), word(a, g, t + 4), word(a, g + 8, t + 4)];
    let bf = [word(bt, g, t), word(bt, g, t + 4)];
    let d = crate::primitives::mma::mma_m16n8k16::<T>([0.0; 4], af, bf);
    // SAFETY: rows `g, g + 8 < 16`, columns `2 t + 1 < 8`: inside C's 128 f32.
    unsafe {
        *c.add(8 * g + 2 * t) = d[0];
        *c.add(8 * g + 2 * t + 1) = d[1];
        *c.add(8 * (g + 8) + 2 * t) = d[2];
        *c.add(8 * (g + 8) + 2 * t + 1) = d[3];
    }
}

/// `mma.sync` m16n8k16, f16 inputs.
///
/// # Safety
/// One warp; A 256 halves, Bᵀ 128 halves, C 128 f32.
#[cfg(target_feature = "sm_80")]
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn selftest_mma_f16(a: *const u32, bt: *const u32, c: *mut f32) {
    // SAFETY: the caller launches one warp with the matrices `mma_tile` needs.
    unsafe { mma_tile::<crate::primitives::mma::F16>(a, bt, c) }
}

/// `mma.sync` m16n8k16, bf16 inputs.
///
/// # Safety
/// As for `selftest_mma_f16`.
#[cfg(target_feature = "sm_80")]
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn selftest_mma_bf16(a: *const u32, bt: *const u32, c: *mut f32) {
    // SAFETY: as for `selftest_mma_f16`.
    unsafe { mma_tile::<crate::primitives::mma::Bf16>(a, bt, c) }
}

/// One warp: `C = A B` with WMMA m16n16k16 through shared memory; A 16x16 f16 row-major;
/// B 16x16 f16, row-major (`b_col_major == 0`, element (k, n) at `16 k + n`) or column-major
/// (element (k, n) at `16 n + k`); C 16x16 f32 row-major.
///
/// # Safety
/// One warp; A and B 256 halves each, C 256 f32; 2048 bytes of dynamic shared memory.
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn selftest_wmma_f16(
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    b_col_major: u32,
) {
    let base = shared::dynamic_smem_base();
    let (sa, sb, sc) = (base, base + 512, base + 1024);
    let l = lane_id();
    for w in 0..4 {
        let word = 4 * l + w;
        // SAFETY: `word < 128`: inside A, B and their 512-byte regions of shared memory.
        unsafe {
            shared::st_shared_u32(sa + 4 * word, *a.add(word as usize));
            shared::st_shared_u32(sb + 4 * word, *b.add(word as usize));
        }
    }
    // SAFETY: straight-line code: the whole block (one warp) reaches it once.
    unsafe { sync::block_barrier() };
    // SAFETY: a 16x16 f16 tile at a 512-byte aligned shared address; the whole warp loads it.
    let fa = unsafe { wmma::load_a::<false>(sa, 16) };
    // `b_col_major` is the same in every lane: the whole warp takes the same branch.
    let acc = if b_col_major != 0 {
        // SAFETY: as for A.
        let fb = unsafe { wmma::load_b::<true>(sb, 16) };
        wmma::mma::<false, true>(wmma::Accumulator::ZERO, fa, fb)
    } else {
        // SAFETY: as for A.
        let fb = unsafe { wmma::load_b::<false>(sb, 16) };
        wmma::mma::<false, false>(wmma::Accumulator::ZERO, fa, fb)
    };
    // SAFETY: a 16x16 f32 tile (1 KB) at `sc`, inside the 2048 bytes; the whole warp stores it.
    unsafe { wmma::store_acc(sc, acc, 16) };
    // SAFETY: straight-line code, as above.
    unsafe { sync::block_barrier() };
    for w in 0..8 {
        let i = 8 * l + w;
        // SAFETY: `i < 256`: inside C and the f32 tile in shared memory.
        unsafe { *c.add(i as usize) = f32::from_bits(shared::ld_shared_u32(sc + 4 * i)) };
    }
}

/// Per thread `t` with value `x[t]`: `out[4 t ..]` = warp max, warp sum, the value of lane
/// `(lane + 3) % 32`, and the sum over the thread's group of 4 lanes.
///
/// # Safety
/// `x` holds `blockDim.x` values (a multiple of 32), `out` four times as many; one block.
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn selftest_warp(x: *const f32, out: *mut f32) {
    let t = thread_idx_x() as usize;
    // SAFETY: `t < blockDim.x`, the length of `x`.
    let v = unsafe { *x.add(t) };
    // SAFETY: straight-line code, and the block is whole warps: every lane of each warp runs
    // each shuffle together.
    let results = unsafe {
        [
            warp::warp_max(v),
            warp::warp_sum(v),
            warp::shfl_idx(v, (lane_id() + 3) % 32),
            warp::reduce::<4>(v, |a, b| a + b),
        ]
    };
    for (k, r) in results.into_iter().enumerate() {
        // SAFETY: `out` holds four values per thread.
        unsafe { *out.add(4 * t + k) = r };
    }
}

/// `out[i] = [2^x[i], fma(x, x, 1), f16x2 packing of (x, -x) as bits]` for `i < n`.
///
/// # Safety
/// `x` holds `n` values, `out` `3 n`.
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn selftest_math(x: *const f32, out: *mut u32, n: u32) {
    let i = block_idx_x() * block_dim_x() + thread_idx_x();
    if i < n {
        // SAFETY: `i < n`, the length of `x`.
        let v = unsafe { *x.add(i as usize) };
        let o = 3 * i as usize;
        // SAFETY: `o + 2 < 3 n`, the length of `out`.
        unsafe {
            *out.add(o) = math::exp2_approx(v).to_bits();
            *out.add(o + 1) = math::fma(v, v, 1.0).to_bits();
            *out.add(o + 2) = crate::primitives::convert::pack_f16x2(v, -v);
        }
    }
}
