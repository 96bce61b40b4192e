//! Warp-level attention products on `mma.sync` m16n8k16 (sm_80): a warp owns 16 query rows.
//!
//! Accumulator fragments are `[f32; 4]` per 8 columns: lane `l` (`g = l / 4`, `t = l % 4`) holds
//! columns `2t, 2t + 1` of rows `g` (elements 0, 1) and `g + 8` (elements 2, 3). The
//! probabilities P stay in registers: the accumulators of two adjacent 8-key tiles are exactly
//! an A fragment of the next product, so P never goes through shared memory.

use super::smem_tile::SmemTile;
use crate::primitives::index::lane_id;
use crate::primitives::ldmatrix::ldmatrix_x4;
use crate::primitives::mma::{MmaInput, mma_m16n8k16};

/// Row (0..16) and column (0..8) within a warp tile of element `c` (0..4) of a fragment.
#[inline(always)]
pub fn fragment_position(c: usize) -> (u32, u32) {
    let l = lane_id();
    (l / 4 + 8 * (c as u32 / 2), 2 * (l % 4) + (c as u32 % 2))
}

/// `S = Q Kᵀ` for the warp's 16 query rows starting at `q_row0` of `q` and all `8 NT` keys of `k`.
///
/// # Safety
/// Both tiles are filled and visible to the warp; `q` has rows `q_row0 .. q_row0 + 16`.
#[inline(always)]
pub unsafe fn scores<T: MmaInput, const D: usize, const NT: usize>(
    q: SmemTile<D>,
    q_row0: u32,
    k: SmemTile<D>,
) -> [[f32; 4]; NT] {
    const { assert!(NT % 2 == 0 && D % 16 == 0) };
    let l = lane_id();
    let mut s = [[0.0f32; 4]; NT];
    for ks in 0..(D / 16) as u32 {
        // Lanes 0-15 address rows 0-15 at the k-step's first 8 columns, lanes 16-31 the next 8:
        // registers come back as a0..a3 of the A fragment.
        let a = unsafe { ldmatrix_x4::<false>(q.chunk_addr(q_row0 + l % 16, 2 * ks + l / 16)) };
        for np in 0..NT / 2 {
            // Two 8-key tiles at once: b0, b1 of keys 16np..+8, then of keys 16np+8..+8.
            let key = 16 * np as u32 + (l / 16) * 8 + l % 8;
            let b = unsafe { ldmatrix_x4::<false>(k.chunk_addr(key, 2 * ks + (l / 8) % 2)) };
            s[2 * np] = mma_m16n8k16::<T>(s[2 * np], a, [b[0], b[1]]);
            s[2 * np + 1] = mma_m16n8k16::<T>(s[2 * np + 1], a, [b[2], b[3]]);
        }
    }
    s
}

/// `acc += P V` with P the warp's 16 x `8 NT` probabilities (accumulator layout, rounded to `T`
/// here) and `v` the `8 NT` x `D` value tile.
///
/// # Safety
/// `v` is filled and visible to the warp.
#[inline(always)]
pub unsafe fn accumulate_pv<T: MmaInput, const D: usize, const DT: usize, const NT: usize>(
    acc: &mut [[f32; 4]; DT],
    p: &[[f32; 4]; NT],
    v: SmemTile<D>,
) {
    const { assert!(DT * 8 == D && DT % 2 == 0 && NT % 2 == 0) };
    let l = lane_id();
    for kt in 0..NT / 2 {
        let (lo, hi) = (&p[2 * kt], &p[2 * kt + 1]);
        let a = [T::pack(lo[0], lo[1]), T::pack(lo[2], lo[3]), T::pack(hi[0], hi[1]), T::pack(hi[2], hi[3])];
        let key = 16 * kt as u32 + ((l / 8) % 2) * 8 + l % 8;
        for dp in 0..DT / 2 {
            // Transposed loads: keys run along k. b0, b1 of columns 16dp..+8, then 16dp+8..+8.
            let b = unsafe { ldmatrix_x4::<true>(v.chunk_addr(key, 2 * dp as u32 + l / 16)) };
            acc[2 * dp] = mma_m16n8k16::<T>(acc[2 * dp], a, [b[0], b[1]]);
            acc[2 * dp + 1] = mma_m16n8k16::<T>(acc[2 * dp + 1], a, [b[2], b[3]]);
        }
    }
}

/// The fragment's values as this thread's two rows (`g` and `g + 8`), `N2 = 2 NT` each.
#[inline(always)]
pub fn to_rows<const NT: usize, const N2: usize>(s: &[[f32; 4]; NT]) -> [[f32; N2]; 2] {
    const { assert!(N2 == 2 * NT) };
    let mut rows = [[0.0; N2]; 2];
    for nt in 0..NT {
        rows[0][2 * nt] = s[nt][0];
        rows[0][2 * nt + 1] = s[nt][1];
        rows[1][2 * nt] = s[nt][2];
        rows[1][2 * nt + 1] = s[nt][3];
    }
    rows
}

/// The inverse of [`to_rows`].
#[inline(always)]
pub fn from_rows<const NT: usize, const N2: usize>(rows: &[[f32; N2]; 2]) -> [[f32; 4]; NT] {
    let mut s = [[0.0; 4]; NT];
    for nt in 0..NT {
        s[nt] = [rows[0][2 * nt], rows[0][2 * nt + 1], rows[1][2 * nt], rows[1][2 * nt + 1]];
    }
    s
}
