//! The separate schedule's dQ kernel (the deterministic mode, and the default mode above head
//! dim 64): a block owns `BM` query rows of one (batch, head), as the forward does, and walks the
//! key tiles its rows see, recomputing `P` and `dP` to sum `dQ = scale · Σ_j dS_j K_j` in
//! registers in a fixed order: no atomics, bit-identical results from run to run. Per (query,
//! key) tile pair it does three tile products (`S`, `dP` again, then `dS K`) where the atomic
//! schedule does one (`dS K` in the main kernel): 7 in all instead of 5; see
//! docs/architecture.md.
//!
//! ```text
//!   wait K_j, V_j, barrier | S = Q K_jᵀ, mask, P = 2^(S c − lse₂), dP = dO V_jᵀ, dS
//!   barrier                | issue V_j−1 | dQ += dS K_j
//!   barrier                | issue K_j−1
//! ```

use super::block_info::BlockInfo;
use super::epilogue::{self, GlobalRows};
use super::mainloop::{from_rows, to_rows};
use super::mask::Mask;
use super::smem_tile::SmemTile;
use super::tile_load::load_tile;
use super::warp_mma::{KMajor, MnMajor, Origin, WarpMma};
use crate::element::Element;
use crate::primitives::cp_async::{commit_group, wait_group};
use crate::primitives::index::{block_idx_x, lane_id, thread_idx_x};
use crate::primitives::{math, shared, sync};
use rustflash_abi::BackwardParams;

/// Shared-memory tiles and the key source of the dQ kernel.
struct Operands<T: Element, const D: usize> {
    q: SmemTile<T, D>,
    dout: SmemTile<T, D>,
    k: SmemTile<T, D>,
    v: SmemTile<T, D>,
    kv: super::kv_source::KvSource,
}

/// dQ for one block of `BM` query rows (16 per warp).
///
/// Const parameters (from the row): `D` bucket, `BM` rows, `BN` keys per tile,
/// `THREADS = 2 BM`; derived: `NT = BN / 8`, `DT = D / 8`, `KT = BN / 16`, `KD = D / 16`,
/// `C = 2 NT`.
///
/// # Safety
/// As for `backward::backward`; launched with `THREADS` threads, `num_m_blocks · heads_q ·
/// batch` blocks, `fwd.num_m_blocks = ceil(seqlen_q / BM)` and the row's `dq_shared_bytes()`.
#[inline(always)]
pub unsafe fn backward_dq<
    T: Element,
    M: WarpMma,
    const D: usize,
    const BM: usize,
    const BN: usize,
    const THREADS: usize,
    const NT: usize,
    const DT: usize,
    const KT: usize,
    const KD: usize,
    const C: usize,
>(
    p: &BackwardParams,
) {
    const {
        assert!(
            THREADS == 2 * BM && NT * 8 == BN && DT * 8 == D && KT * 2 == NT && KD * 16 == D && C == 2 * NT
        )
    };
    let f = &p.fwd;
    let block = BlockInfo::new(f, block_idx_x(), BM as u32);
    let warp_row = 16 * (thread_idx_x() / 32);
    let mask = Mask::new(f.seqlen_q, f.seqlen_k, f.causal != 0);
    let key_tiles = mask.keys_needed(block.m0, block.rows).div_ceil(BN as u32);

    let q = SmemTile::<T, D>::at(shared::dynamic_smem_base());
    let dout = q.offset(SmemTile::<T, D>::bytes(BM));
    let k = dout.offset(SmemTile::<T, D>::bytes(BM));
    let v = k.offset(SmemTile::<T, D>::bytes(BN));
    let o = Operands { q, dout, k, v, kv: block.kv_source::<T>(f) };

    // The statistics of this lane's two rows (padded rows: lse₂ = +inf, so P = 0 there).
    let row0 = block.workspace_row(f, p.seqlen_q_rounded) + (warp_row + M::position(0).0) as u64;
    let stat = |base: u64, row: u64| {
        // SAFETY: a padded row of the workspace (rows are padded to 128 per head).
        unsafe { *((base + 4 * row) as *const f32) }
    };
    let lse2 = [stat(p.lse_log2, row0), stat(p.lse_log2, row0 + 8)];
    let delta = [stat(p.delta, row0), stat(p.delta, row0 + 8)];

    if key_tiles > 0 {
        let rows = |base: u64, strides: &[u64; 3]| block.query_tile::<T>(base, strides, f.head_dim);
        // SAFETY: the block's rows and the last needed key tile are readable; nothing reads the
        // tiles before the first step's barrier.
        unsafe {
            load_tile::<T, BM, D, THREADS>(q, rows(f.q, &f.q_strides), f.load_bytes);
            load_tile::<T, BM, D, THREADS>(dout, rows(p.dout, &p.dout_strides), f.load_bytes);
            load_tile::<T, BN, D, THREADS>(k, o.kv.k_tile::<BN>(key_tiles - 1, f.head_dim), f.load_bytes);
            load_tile::<T, BN, D, THREADS>(v, o.kv.v_tile::<BN>(key_tiles - 1, f.head_dim), f.load_bytes);
        }
        commit_group();
    }

    let mut dq = [[[0.0f32; 4]; DT]; 1];
    let unmasked = mask.unmasked_tiles::<BN>(block.m0).min(key_tiles);
    for j in (unmasked..key_tiles).rev() {
        // SAFETY: every thread runs the same steps; forwarded.
        unsafe {
            step::<T, M, true, D, BN, THREADS, NT, DT, KT, KD, C>(
                p, &o, &mask, &block, warp_row, &lse2, &delta, &mut dq, j,
            )
        };
    }
    for j in (0..unmasked).rev() {
        // SAFETY: as above.
        unsafe {
            step::<T, M, false, D, BN, THREADS, NT, DT, KT, KD, C>(
                p, &o, &mask, &block, warp_row, &lse2, &delta, &mut dq, j,
            )
        };
    }

    // The warp read only its own rows of the Q tile (as the A operand of S), and no copy is in
    // flight: it stages its dQ rows there.
    // SAFETY: the warp's own rows.
    unsafe { epilogue::stage::<T, M, D, 1, DT>(&dq, |_| p.scale, q, warp_row, 0) };
    // SAFETY: every lane of the warp reaches it.
    unsafe { sync::warp_barrier() };
    let dst = GlobalRows {
        ptr: block.query_rows::<T>(p.dq, &p.dq_strides),
        stride: T::BYTES as u64 * p.dq_strides[1],
        width: f.store_bytes,
        rows: block.rows,
        cols: f.head_dim,
    };
    // SAFETY: staged rows; dQ rows exist up to `block.rows`.
    unsafe { epilogue::copy_out::<T, D>(q, warp_row, 16, &dst, lane_id(), 32) };
}

/// Key tile `j`.
///
/// # Safety
/// As for [`backward_dq`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn step<
    T: Element,
    M: WarpMma,
    const MASK: bool,
    const D: usize,
    const BN: usize,
    const THREADS: usize,
    const NT: usize,
    const DT: usize,
    const KT: usize,
    const KD: usize,
    const C: usize,
>(
    p: &BackwardParams,
    o: &Operands<T, D>,
    mask: &Mask,
    block: &BlockInfo,
    warp_row: u32,
    lse2: &[f32; 2],
    delta: &[f32; 2],
    dq: &mut [[[f32; 4]; DT]; 1],
    j: u32,
) {
    let f = &p.fwd;
    wait_group::<0>();
    // SAFETY: every thread of the block reaches it (uniform loop bounds).
    unsafe { sync::block_barrier() };
    let mut s = [[[0.0f32; 4]; NT]; 1];
    let mut dp = [[[0.0f32; 4]; NT]; 1];
    // SAFETY: Q, dO, K_j and V_j are in shared memory and visible.
    unsafe {
        M::gemm_ss::<T, KMajor, KMajor, 1, NT, KD, D, D>(
            &mut s,
            o.q,
            Origin { row: warp_row, col: 0 },
            o.k,
            Origin { row: 0, col: 0 },
        );
        M::gemm_ss::<T, KMajor, KMajor, 1, NT, KD, D, D>(
            &mut dp,
            o.dout,
            Origin { row: warp_row, col: 0 },
            o.v,
            Origin { row: 0, col: 0 },
        );
    }
    // The exponent `s c − lse₂` first, then the mask (−inf whatever the scale's sign), then P.
    let mut probs = to_rows::<1, NT, 2, C>(&s);
    for (row, l) in probs.iter_mut().zip(lse2) {
        for x in row.iter_mut() {
            *x = math::fma(*x, f.scale_log2, -l);
        }
    }
    if MASK {
        let first_row = block.m0 + warp_row;
        mask.apply(
            &mut probs,
            j * BN as u32,
            |r| first_row + M::position(2 * r).0,
            |c| 8 * (c as u32 / 2) + M::position(c % 2).1,
        );
    }
    let mut ds = to_rows::<1, NT, 2, C>(&dp);
    for r in 0..2 {
        for c in 0..C {
            ds[r][c] = math::exp2_approx(probs[r][c]) * (ds[r][c] - delta[r]);
        }
    }
    let a = M::to_a::<T, 1, NT, KT>(&from_rows::<1, NT, 2, C>(&ds));

    // SAFETY: every thread of the block reaches it.
    unsafe { sync::block_barrier() };
    if j > 0 {
        // SAFETY: every warp is done with V_j (barrier above); V_j−1's rows are readable.
        unsafe { load_tile::<T, BN, D, THREADS>(o.v, o.kv.v_tile::<BN>(j - 1, f.head_dim), f.load_bytes) };
        commit_group();
    }
    // SAFETY: K_j is in shared memory and visible.
    unsafe { M::gemm_rs::<T, MnMajor, 1, DT, KT, D>(dq, &a, o.k, Origin { row: 0, col: 0 }) };
    // SAFETY: every thread of the block reaches it.
    unsafe { sync::block_barrier() };
    if j > 0 {
        // SAFETY: every warp is done with K_j; K_j−1's rows are readable.
        unsafe { load_tile::<T, BN, D, THREADS>(o.k, o.kv.k_tile::<BN>(j - 1, f.head_dim), f.load_bytes) };
        commit_group();
    }
}
