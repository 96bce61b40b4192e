//! The loop over key tiles (FlashAttention-2's schedule) on `mma.sync`-style families.
//!
//! Shared memory holds the Q tile and one K and one V tile. Key tiles run from the last to the
//! first, so the tiles that need a mask (the end of the sequence, the causal diagonal) come first
//! and the rest run a copy of the body compiled without mask code. Loads overlap compute, with
//! two block barriers per tile:
//!
//! ```text
//!   wait K_j, barrier | issue V_j   | S = Q K_jᵀ, mask, online softmax
//!   wait V_j, barrier | issue K_j−1 | O += P V_j
//! ```
//!
//! The first barrier also tells every warp that all others are done reading V_j+1 (so V_j may
//! overwrite it), the second that all are done reading K_j.

use super::kv_source::KvSource;
use super::mask::Mask;
use super::online_softmax::OnlineSoftmax;
use super::smem_tile::SmemTile;
use super::tile_load::load_tile;
use super::warp_mma::{KMajor, MnMajor, Origin, WarpMma};
use crate::element::Element;
use crate::primitives::cp_async::{commit_group, wait_group};
use crate::primitives::{math, sync, warp};

/// What the loop reads.
pub struct Operands<T: Element, const D: usize> {
    pub q: SmemTile<T, D>,
    pub k: SmemTile<T, D>,
    pub v: SmemTile<T, D>,
    pub kv: KvSource,
    /// Columns of K and V that exist (the real head dim).
    pub cols: u32,
    /// Widest aligned global access of K and V (16, 8, 4, 2).
    pub width: u32,
    pub mask: Mask,
    /// The block's first query row, and the warp's first row within the block's Q tile.
    pub m0: u32,
    pub warp_row: u32,
}

/// The output accumulators (`MT` row tiles by `DT` 8-column tiles) and the softmax state of
/// the warp's rows, after every needed key tile.
pub struct Accumulated<const MT: usize, const DT: usize, const R: usize> {
    pub acc: [[[f32; 4]; DT]; MT],
    pub softmax: OnlineSoftmax<R>,
}

/// Runs the key tiles `0 .. key_tiles` (K of the last one already issued by the caller, Q
/// loaded) and returns the warp's accumulators.
///
/// # Safety
/// Every thread of the block calls it with the same arguments but `warp_row`; the tiles are
/// laid out as `o` says; K/V rows `0 .. key_tiles · BN` (clipped to `seqlen_k`) are readable.
#[inline(always)]
pub unsafe fn run<
    T: Element,
    M: WarpMma,
    const D: usize,
    const BN: usize,
    const THREADS: usize,
    const MT: usize,
    const NT: usize,
    const DT: usize,
    const KT: usize,
    const KD: usize,
    const R: usize,
    const C: usize,
>(
    o: &Operands<T, D>,
    key_tiles: u32,
    scale: f32,
) -> Accumulated<MT, DT, R> {
    const { assert!(R == 2 * MT && C == 2 * NT && NT == 2 * KT && DT * 8 == D && KD * 16 == D && NT * 8 == BN) };
    let mut state = Accumulated { acc: [[[0.0; 4]; DT]; MT], softmax: OnlineSoftmax::new(scale) };
    let unmasked = o.mask.unmasked_tiles::<BN>(o.m0).min(key_tiles);
    for j in (unmasked..key_tiles).rev() {
        // SAFETY: forwarded.
        unsafe { step::<T, M, true, D, BN, THREADS, MT, NT, DT, KT, KD, R, C>(o, &mut state, j) };
    }
    for j in (0..unmasked).rev() {
        // SAFETY: forwarded.
        unsafe { step::<T, M, false, D, BN, THREADS, MT, NT, DT, KT, KD, R, C>(o, &mut state, j) };
    }
    state
}

/// One key tile. `MASK = false` compiles the body without mask code.
///
/// # Safety
/// As for [`run`].
#[inline(always)]
unsafe fn step<
    T: Element,
    M: WarpMma,
    const MASK: bool,
    const D: usize,
    const BN: usize,
    const THREADS: usize,
    const MT: usize,
    const NT: usize,
    const DT: usize,
    const KT: usize,
    const KD: usize,
    const R: usize,
    const C: usize,
>(
    o: &Operands<T, D>,
    state: &mut Accumulated<MT, DT, R>,
    j: u32,
) {
    wait_group::<0>();
    // SAFETY: every thread of the block reaches this barrier (uniform loop bounds).
    unsafe { sync::block_barrier() };
    // SAFETY: the V buffer is free (barrier above); the tile's V rows are readable.
    unsafe { load_tile::<T, BN, D, THREADS>(o.v, o.kv.v_tile::<BN>(j, o.cols), o.width) };
    commit_group();

    let mut s = [[[0.0f32; 4]; NT]; MT];
    // SAFETY: Q and K_j are in shared memory and visible (wait + barrier above).
    unsafe {
        M::gemm_ss::<T, KMajor, KMajor, MT, NT, KD, D, D>(
            &mut s,
            o.q,
            Origin { row: o.warp_row, col: 0 },
            o.k,
            Origin { row: 0, col: 0 },
        )
    };

    let mut rows = to_rows::<MT, NT, R, C>(&s);
    if MASK {
        let n0 = j * BN as u32;
        let first_row = o.m0 + o.warp_row;
        o.mask.apply(
            &mut rows,
            n0,
            |r| first_row + 16 * (r as u32 / 2) + M::position(2 * (r % 2)).0,
            |c| 8 * (c as u32 / 2) + M::position(c % 2).1,
        );
    }
    // SAFETY: `update` calls it once per row in every lane; every thread runs this step.
    let quad_max = |x: f32| unsafe { warp::reduce::<4>(x, math::max) };
    let rescale = state.softmax.update(&mut rows, quad_max);
    for (mt, row_tiles) in state.acc.iter_mut().enumerate() {
        for a in row_tiles.iter_mut() {
            a[0] *= rescale[2 * mt];
            a[1] *= rescale[2 * mt];
            a[2] *= rescale[2 * mt + 1];
            a[3] *= rescale[2 * mt + 1];
        }
    }
    let p = M::to_a::<T, MT, NT, KT>(&from_rows::<MT, NT, R, C>(&rows));

    wait_group::<0>();
    // SAFETY: as above.
    unsafe { sync::block_barrier() };
    if j > 0 {
        // SAFETY: every warp is done with K_j (barrier above); K_j−1's rows are readable.
        unsafe { load_tile::<T, BN, D, THREADS>(o.k, o.kv.k_tile::<BN>(j - 1, o.cols), o.width) };
        commit_group();
    }
    // SAFETY: V_j is in shared memory and visible.
    unsafe { M::gemm_rs::<T, MnMajor, MT, DT, KT, D>(&mut state.acc, &p, o.v, Origin { row: 0, col: 0 }) };
}

/// The accumulators as this thread's rows: row `2 mt + h` is row `g + 8 h` of row tile `mt`,
/// `C = 2 NT` values each.
#[inline(always)]
pub fn to_rows<const MT: usize, const NT: usize, const R: usize, const C: usize>(
    s: &[[[f32; 4]; NT]; MT],
) -> [[f32; C]; R] {
    let mut rows = [[0.0; C]; R];
    for mt in 0..MT {
        for nt in 0..NT {
            for h in 0..2 {
                rows[2 * mt + h][2 * nt] = s[mt][nt][2 * h];
                rows[2 * mt + h][2 * nt + 1] = s[mt][nt][2 * h + 1];
            }
        }
    }
    rows
}

/// The inverse of [`to_rows`].
#[inline(always)]
pub fn from_rows<const MT: usize, const NT: usize, const R: usize, const C: usize>(
    rows: &[[f32; C]; R],
) -> [[[f32; 4]; NT]; MT] {
    let mut s = [[[0.0; 4]; NT]; MT];
    for mt in 0..MT {
        for nt in 0..NT {
            for h in 0..2 {
                s[mt][nt][2 * h] = rows[2 * mt + h][2 * nt];
                s[mt][nt][2 * h + 1] = rows[2 * mt + h][2 * nt + 1];
            }
        }
    }
    s
}
