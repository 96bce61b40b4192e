//! The backward's two row-wise kernels, one warp per query row of the padded workspace rows:
//!
//! - the **pre-pass** writes, per row, `delta = Σ dO ∘ O` and `lse · log2 e` (padded rows: 0 and
//!   +inf, so they contribute nothing to any product) and zeroes the row of the f32 dQ
//!   accumulator when there is one;
//! - the **conversion** writes `dQ = scale · accumulator` in the caller's dtype and layout.
//!
//! Each lane reads and writes 8 elements of the head dim (head dims up to 256): one 16-byte chunk
//! of a 16-bit type, two of f32.

use super::block_info::BlockInfo;
use super::epilogue::store_chunk;
use super::tile_load::load_chunk_regs;
use crate::element::Element;
use crate::primitives::global::{ld_global_v4, st_global_v4};
use crate::primitives::index::{block_idx_x, lane_id, thread_idx_x};
use crate::primitives::warp;
use rustflash_abi::{BackwardParams, ROW_KERNEL_THREADS};

/// Head-dim elements per lane (32 lanes cover the largest bucket, 256).
const LANE_ELEMENTS: usize = 8;

/// The warp's row: its index in the workspace's row arrays and its tile (one query row of one
/// (batch, head)), or `None` for a padded row.
#[inline(always)]
fn warp_row(p: &BackwardParams) -> (u64, Option<BlockInfo>) {
    let row = block_idx_x() as u64 * (ROW_KERNEL_THREADS / 32) as u64 + (thread_idx_x() / 32) as u64;
    let padded = p.seqlen_q_rounded as u64;
    let (bh, r) = (row / padded, (row % padded) as u32);
    let heads = p.fwd.heads_q as u64;
    let tile = (r < p.fwd.seqlen_q)
        .then(|| BlockInfo::at_tile(&p.fwd, (bh / heads) as u32, (bh % heads) as u32, r, 1));
    (row, tile)
}

/// The pre-pass.
///
/// # Safety
/// `p` as the host builds it (see `backward::backward`); launched with `ROW_KERNEL_THREADS`
/// threads and one warp per workspace row (`batch · heads_q · seqlen_q_rounded / 8` blocks).
#[inline(always)]
pub unsafe fn backward_pre<T: Element>(p: &BackwardParams) {
    let f = &p.fwd;
    let (row, tile) = warp_row(p);
    let lane = lane_id();
    let (mut lse2, mut delta) = (f32::INFINITY, 0.0);
    if let Some(tile) = tile {
        let mut sum = 0.0;
        for c in 0..LANE_ELEMENTS / T::PER_CHUNK {
            let col = (LANE_ELEMENTS * lane as usize + T::PER_CHUNK * c) as u32;
            let valid = f.head_dim.saturating_sub(col).min(T::PER_CHUNK as u32);
            if valid > 0 {
                let at = |base: u64, strides: &[u64; 3]| {
                    tile.query_rows::<T>(base, strides).wrapping_add(T::BYTES * col as usize)
                };
                // SAFETY: `valid` elements from column `col` of the row exist in O and dO, which
                // nothing writes during the launch.
                let (o, d) = unsafe {
                    (
                        load_chunk_regs::<T>(at(f.o, &f.o_strides), valid, p.o_load_bytes),
                        load_chunk_regs::<T>(at(p.dout, &p.dout_strides), valid, p.o_load_bytes),
                    )
                };
                for e in 0..T::PER_CHUNK {
                    sum += T::unpack(&o, e) * T::unpack(&d, e);
                }
            }
        }
        // SAFETY: the branch is uniform over the warp (one row per warp).
        delta = unsafe { warp::reduce::<32>(sum, |a, b| a + b) };
        // SAFETY: the row exists in the LSE.
        lse2 = unsafe { *tile.lse_rows(f) } * core::f32::consts::LOG2_E;
    }
    if lane == 0 {
        // SAFETY: `row` is a row of the workspace's arrays.
        unsafe {
            *((p.lse_log2 + 4 * row) as *mut f32) = lse2;
            *((p.delta + 4 * row) as *mut f32) = delta;
        }
    }
    if p.dq_accum != 0 {
        let cols = p.accum_cols as u64;
        let mut c = 4 * lane as u64;
        while c < cols {
            // SAFETY: 16 aligned bytes of the row's accumulator (`accum_cols` a multiple of 32).
            unsafe { st_global_v4((p.dq_accum + 4 * (row * cols + c)) as *mut u8, [0; 4]) };
            c += 128;
        }
    }
}

/// The conversion of the dQ accumulator.
///
/// # Safety
/// As for [`backward_pre`]; the main kernel has finished adding into the accumulator.
#[inline(always)]
pub unsafe fn backward_convert<T: Element>(p: &BackwardParams) {
    let f = &p.fwd;
    let (row, tile) = warp_row(p);
    let Some(tile) = tile else { return };
    let lane = lane_id();
    let first = LANE_ELEMENTS as u32 * lane;
    if f.head_dim <= first {
        return;
    }
    let src = p.dq_accum + 4 * (row * p.accum_cols as u64 + first as u64);
    // SAFETY: 8 f32 of the row's accumulator (columns `8 lane ..` below the bucket), 32-byte
    // aligned.
    let (a, b) = unsafe { (ld_global_v4(src as *const u8), ld_global_v4((src + 16) as *const u8)) };
    let x: [f32; LANE_ELEMENTS] =
        [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]].map(|w| f32::from_bits(w) * p.scale);
    for c in 0..LANE_ELEMENTS / T::PER_CHUNK {
        let col = first + (T::PER_CHUNK * c) as u32;
        let valid = f.head_dim.saturating_sub(col).min(T::PER_CHUNK as u32);
        if valid > 0 {
            let v = T::pack_chunk(&x[T::PER_CHUNK * c..T::PER_CHUNK * (c + 1)]);
            let dst = tile.query_rows::<T>(p.dq, &p.dq_strides).wrapping_add(T::BYTES * col as usize);
            // SAFETY: `valid` elements from column `col` of the row exist in dQ.
            unsafe { store_chunk::<T>(dst, v, valid, f.store_bytes) };
        }
    }
}
