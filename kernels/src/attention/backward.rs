//! The backward's main kernel (FlashAttention-2's `compute_dq_dk_dv_1colblock`): a block owns
//! `BN` keys of one (batch, K/V head) and walks the query tiles of every query head of its
//! group, recomputing `P` from Q, K and the saved LSE, so no `seqlen_q x seqlen_k` buffer exists.
//! dK and dV stay in registers for the whole walk (a GQA group's sum included); dQ, which every
//! key block contributes to, is added into an f32 accumulator with atomics (the atomic schedule)
//! or left to the query-major dQ kernel ([`super::backward_dq`], the separate schedule: the
//! deterministic mode, and the default mode above head dim 64).
//!
//! Warps form a `WN x WD` grid: warp `(n, d)` owns keys `16 n .. 16 n + 16` and dK/dV columns
//! `d · D / WD ..`; for `Sᵀ` and `dPᵀ` it takes the tile's query columns `d · BM / WD ..`. With
//! `WD = 1` a warp holds all of its keys' scores, and `Pᵀ` and `dSᵀ` feed `dV` and `dK` straight
//! from registers; with `WD > 1` they go through shared memory. Per query tile:
//!
//! ```text
//!   wait Q_i, dO_i, barrier    | Sᵀ = K Q_iᵀ, mask, Pᵀ = 2^(Sᵀ c − lse₂)
//!                              | dPᵀ = V dO_iᵀ, dSᵀ = Pᵀ ∘ (dPᵀ − delta)
//!                              | (WD = 1) dV += Pᵀ dO_i, dK += dSᵀ Q_i;  dSᵀ (and Pᵀ) → shared
//!   barrier                    | (WD > 1) dV += Pᵀ dO_i, dK += dSᵀ Q_i from shared; barrier
//!   issue Q_i+1, dO_i+1        | dQ_i += dS K (atomics)
//! ```
//!
//! With two query-tile stages (`QS = 2`, the Large rows up to head dim 128), Q_i+1 and dO_i+1 are
//! issued into the other buffers right after the first barrier, so their copies overlap the
//! whole tile.
//!
//! The first barrier also says that every warp is done reading the previous tile's dSᵀ (for dQ).

use super::block_info::{BlockInfo, KeyBlock};
use super::epilogue::{self, GlobalRows};
use super::mainloop;
use super::mask::Mask;
use super::smem_tile::SmemTile;
use super::tile_load::load_tile;
use super::warp_mma::{KMajor, MnMajor, Origin, WarpMma};
use crate::element::Element;
use crate::primitives::cp_async::{commit_group, cp_async, wait_group};
use crate::primitives::global::red_add_f32;
use crate::primitives::index::{block_idx_x, thread_idx_x};
use crate::primitives::{math, shared, sync};
use rustflash_abi::BackwardParams;

/// Shared-memory tiles of the main kernel: K, V, dSᵀ, Pᵀ once; Q, dO and the statistics once
/// per query-tile stage (`at_stage`).
#[derive(Clone, Copy)]
struct Tiles<T: Element, const D: usize, const BM: usize> {
    k: SmemTile<T, D>,
    v: SmemTile<T, D>,
    q: SmemTile<T, D>,
    dout: SmemTile<T, D>,
    /// dSᵀ: a row per key, a column per query of the tile.
    ds: SmemTile<T, BM>,
    /// Pᵀ, when the head dim is split across warps.
    p: SmemTile<T, BM>,
    /// The tile's `lse · log2 e` and `delta`, `BM` f32 each.
    lse2: u32,
    delta: u32,
}

impl<T: Element, const D: usize, const BM: usize> Tiles<T, D, BM> {
    /// The query tile's buffers of stage `s` (stage 0 is `self`'s).
    #[inline(always)]
    fn at_stage(self, s: u32) -> Self {
        let tiles = s as usize * 2 * SmemTile::<T, D>::bytes(BM);
        let stats = s * 8 * BM as u32;
        Tiles {
            q: self.q.offset(tiles),
            dout: self.dout.offset(tiles),
            lse2: self.lse2 + stats,
            delta: self.delta + stats,
            ..self
        }
    }
}

/// One warp's place in the block.
#[derive(Clone, Copy)]
struct WarpPlace {
    /// First key (row of K, V, dK, dV) of the warp's 16.
    key_row: u32,
    /// First query column of the tile's `Sᵀ` the warp computes.
    q_col: u32,
    /// First dK/dV column the warp owns.
    d_col: u32,
    /// First row and chunk of the warp's piece of the tile's dQ.
    dq_row: u32,
    dq_col: u32,
}

/// The key block's running gradients (the warp's 16 keys by `8 DN` columns).
struct Grads<const DN: usize> {
    dk: [[[f32; 4]; DN]; 1],
    dv: [[[f32; 4]; DN]; 1],
}

/// The backward for one block of `BN` keys.
///
/// Const parameters, from one row of the configuration table: `D` head-dim bucket, `BM` query
/// rows per tile, `BN = 16 WN` keys, `WN x WD` warps, `THREADS = 32 WN WD`; derived (Rust cannot
/// yet compute array lengths from const parameters): `SN = BM / WD / 8` score tiles per warp,
/// `SK = SN / 2`, `C = 2 SN`, `DN = D / WD / 8`, `KD = D / 16`, `KM = BM / 16`, `QM x QN` dQ
/// tiles per warp (16-row by 8-column), `KN = BN / 16`.
///
/// # Safety
/// `p` describes valid tensors and a workspace laid out as `BackwardWorkspace` says (the host
/// checks them); the pre-pass has written this call's `lse_log2` and `delta` (and zeroed
/// `dq_accum` if it is not null); launched with `THREADS` threads, `num_n_blocks · heads_kv ·
/// batch` blocks, `fwd.num_m_blocks = ceil(seqlen_q / BM)` and the row's `shared_bytes()`.
#[inline(always)]
pub unsafe fn backward<
    T: Element,
    M: WarpMma,
    const D: usize,
    const BM: usize,
    const BN: usize,
    const WN: usize,
    const WD: usize,
    const QS: usize,
    const THREADS: usize,
    const SN: usize,
    const SK: usize,
    const C: usize,
    const DN: usize,
    const KD: usize,
    const KM: usize,
    const QM: usize,
    const QN: usize,
    const KN: usize,
>(
    p: &BackwardParams,
) {
    const {
        assert!(BN == 16 * WN && THREADS == 32 * WN * WD);
        assert!(SN * 8 * WD == BM && SK * 2 == SN && C == 2 * SN && DN * 8 * WD == D);
        assert!(KD * 16 == D && KM * 16 == BM && KN * 16 == BN);
        assert!(QM * 16 * (BM / 16 / QM) == BM && QN * 8 * (WN * WD / (BM / 16 / QM)) == D);
    };
    let f = &p.fwd;
    let block = KeyBlock::new(f, block_idx_x(), p.num_n_blocks, BN as u32);
    let warp = thread_idx_x() / 32;
    let dq_warps_m = (BM / 16 / QM) as u32;
    let place = WarpPlace {
        key_row: 16 * (warp % WN as u32),
        q_col: (warp / WN as u32) * (BM / WD) as u32,
        d_col: (warp / WN as u32) * 8 * DN as u32,
        dq_row: 16 * QM as u32 * (warp % dq_warps_m),
        dq_col: (warp / dq_warps_m) * 8 * QN as u32,
    };

    // Shared memory: K, V, dSᵀ, Pᵀ (WD > 1), then `QS` x (Q, dO), then `QS` x (lse₂, delta).
    let k = SmemTile::<T, D>::at(shared::dynamic_smem_base());
    let v = k.offset(SmemTile::<T, D>::bytes(BN));
    let ds = v.then::<BM>(SmemTile::<T, D>::bytes(BN));
    let p_tile = ds.offset(SmemTile::<T, BM>::bytes(BN));
    let q = p_tile.then::<D>(if WD > 1 { SmemTile::<T, BM>::bytes(BN) } else { 0 });
    let dout = q.offset(SmemTile::<T, D>::bytes(BM));
    let lse2 = q.offset(QS * 2 * SmemTile::<T, D>::bytes(BM)).base;
    let tiles = Tiles::<T, D, BM> { k, v, q, dout, ds, p: p_tile, lse2, delta: lse2 + 4 * BM as u32 };

    let mask = Mask::new(f.seqlen_q, f.seqlen_k, f.causal != 0);
    // Query tiles that see any key of the block, and those that need no mask.
    let first_query = mask.first_query(block.n0);
    let m_first =
        if first_query < f.seqlen_q as i64 { (first_query / BM as i64) as u32 } else { f.num_m_blocks };
    let m_end = f.num_m_blocks;
    let m_unmasked =
        mask.unmasked_from::<BM, BN>(block.n0, block.keys).unwrap_or(m_end).clamp(m_first, m_end);

    const { assert!(QS == 1 || QS == 2) };
    let mut grads = Grads::<DN> { dk: [[[0.0; 4]; DN]; 1], dv: [[[0.0; 4]; DN]; 1] };
    // The query tiles' buffers alternate between the stages.
    let mut stage = 0u32;
    if m_first < m_end {
        let kv = block.kv_source::<T>(f);
        let n_block = block.n0 / BN as u32;
        // SAFETY: the block's K and V rows are readable; nothing reads the tiles before the first
        // step's barrier.
        unsafe {
            load_tile::<T, BN, D, THREADS>(k, kv.k_tile::<BN>(n_block, f.head_dim), f.load_bytes);
            load_tile::<T, BN, D, THREADS>(v, kv.v_tile::<BN>(n_block, f.head_dim), f.load_bytes);
            load_query_tile::<T, D, BM, THREADS>(p, &tiles, &block.query_tile(f, 0, m_first, BM as u32));
        }
        commit_group();
    }
    let group = f.group;
    for g in 0..group {
        // The tile after (g, m): the next of this head, or the first of the next head.
        let next = |m: u32| {
            if m + 1 < m_end {
                Some((g, m + 1))
            } else if g + 1 < group {
                Some((g + 1, m_first))
            } else {
                None
            }
        };
        for m in m_first..m_unmasked {
            // SAFETY: every thread runs the same steps (uniform bounds); forwarded.
            unsafe {
                step::<T, M, true, D, BM, BN, WD, QS, THREADS, SN, SK, C, DN, KD, KM, QM, QN, KN>(
                    p,
                    &tiles,
                    stage,
                    place,
                    &block,
                    &mask,
                    &mut grads,
                    (g, m),
                    next(m),
                )
            };
            stage = (stage + 1) % QS as u32;
        }
        for m in m_unmasked..m_end {
            // SAFETY: as above.
            unsafe {
                step::<T, M, false, D, BM, BN, WD, QS, THREADS, SN, SK, C, DN, KD, KM, QM, QN, KN>(
                    p,
                    &tiles,
                    stage,
                    place,
                    &block,
                    &mask,
                    &mut grads,
                    (g, m),
                    next(m),
                )
            };
            stage = (stage + 1) % QS as u32;
        }
    }

    // Epilogue: dK (scaled) and dV through the K and V tiles, which every warp is done with
    // (no copy in flight, barrier), to 16-byte stores by the whole block.
    wait_group::<0>();
    // SAFETY: every thread of the block reaches it.
    unsafe { sync::block_barrier() };
    // SAFETY: each warp stages its own keys and columns; read after the barrier below.
    unsafe {
        epilogue::stage::<T, M, D, 1, DN>(&grads.dk, |_| p.scale, k, place.key_row, place.d_col);
        epilogue::stage::<T, M, D, 1, DN>(&grads.dv, |_| 1.0, v, place.key_row, place.d_col);
    }
    // SAFETY: every thread of the block reaches it.
    unsafe { sync::block_barrier() };
    let rows = |base: u64, strides: &[u64; 3]| GlobalRows {
        ptr: block.key_rows::<T>(base, strides),
        stride: T::BYTES as u64 * strides[1],
        width: f.store_bytes,
        rows: block.keys,
        cols: f.head_dim,
    };
    // SAFETY: the tiles are staged and visible; the block's dK and dV rows exist up to `keys`.
    unsafe {
        epilogue::copy_out::<T, D>(
            k,
            0,
            BN as u32,
            &rows(p.dk, &p.dk_strides),
            thread_idx_x(),
            THREADS as u32,
        );
        epilogue::copy_out::<T, D>(
            v,
            0,
            BN as u32,
            &rows(p.dv, &p.dv_strides),
            thread_idx_x(),
            THREADS as u32,
        );
    }
}

/// Issues the copies of query tile `tile`'s Q and dO rows and its `lse₂` and `delta` (the
/// caller commits them).
///
/// # Safety
/// Every thread of the block calls it; the tile's rows are readable; nothing reads the tiles
/// until the copies' `wait_group` and a block barrier, and nothing else writes them meanwhile.
#[inline(always)]
unsafe fn load_query_tile<T: Element, const D: usize, const BM: usize, const THREADS: usize>(
    p: &BackwardParams,
    tiles: &Tiles<T, D, BM>,
    tile: &BlockInfo,
) {
    let f = &p.fwd;
    let rows = |base: u64, strides: &[u64; 3]| tile.query_tile::<T>(base, strides, f.head_dim);
    // SAFETY: forwarded.
    unsafe {
        load_tile::<T, BM, D, THREADS>(tiles.q, rows(f.q, &f.q_strides), f.load_bytes);
        load_tile::<T, BM, D, THREADS>(tiles.dout, rows(p.dout, &p.dout_strides), f.load_bytes);
    }
    // The workspace's rows: whole, 16-byte aligned (rows padded to 128 per head).
    let row = tile.workspace_row(f, p.seqlen_q_rounded);
    let chunks = (BM / 4) as u32;
    let mut c = thread_idx_x();
    while c < 2 * chunks {
        let (src, dst) = if c < chunks { (p.lse_log2, tiles.lse2) } else { (p.delta, tiles.delta) };
        let chunk = c % chunks;
        // SAFETY: 16 bytes of the workspace row `row + 4 chunk ..`, inside the padded rows.
        unsafe { cp_async::<16>(dst + 16 * chunk, (src + 4 * (row + 4 * chunk as u64)) as *const u8, 16) };
        c += THREADS as u32;
    }
}

/// One query tile `(g, m)`, in buffer stage `stage`; `next`, if any, is issued into the other
/// stage as the tile starts (two stages), or into this one once every warp is done with its Q
/// and dO (one stage).
///
/// # Safety
/// As for [`backward`]; every thread of the block calls it with the same tiles.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn step<
    T: Element,
    M: WarpMma,
    const MASK: bool,
    const D: usize,
    const BM: usize,
    const BN: usize,
    const WD: usize,
    const QS: usize,
    const THREADS: usize,
    const SN: usize,
    const SK: usize,
    const C: usize,
    const DN: usize,
    const KD: usize,
    const KM: usize,
    const QM: usize,
    const QN: usize,
    const KN: usize,
>(
    p: &BackwardParams,
    tiles: &Tiles<T, D, BM>,
    stage: u32,
    w: WarpPlace,
    block: &KeyBlock,
    mask: &Mask,
    grads: &mut Grads<DN>,
    (g, m): (u32, u32),
    next: Option<(u32, u32)>,
) {
    let f = &p.fwd;
    let tile = block.query_tile(f, g, m, BM as u32);
    let t = &tiles.at_stage(stage);
    wait_group::<0>();
    // SAFETY: every thread of the block reaches it (uniform loop bounds).
    unsafe { sync::block_barrier() };
    if QS == 2
        && let Some((g, m)) = next
    {
        // SAFETY: the other stage was last read in the previous tile, which every warp has left
        // (barrier above); the next tile's rows are readable.
        unsafe {
            load_query_tile::<T, D, BM, THREADS>(
                p,
                &tiles.at_stage(stage ^ 1),
                &block.query_tile(f, g, m, BM as u32),
            )
        };
        commit_group();
    }

    // Sᵀ = K Q_iᵀ and dPᵀ = V dO_iᵀ for the warp's keys and query columns.
    let mut s = [[[0.0f32; 4]; SN]; 1];
    let mut dp = [[[0.0f32; 4]; SN]; 1];
    // SAFETY: K, V, Q_i and dO_i are in shared memory and visible (wait + barrier above).
    unsafe {
        M::gemm_ss::<T, KMajor, KMajor, 1, SN, KD, D, D>(
            &mut s,
            t.k,
            Origin { row: w.key_row, col: 0 },
            t.q,
            Origin { row: w.q_col, col: 0 },
        );
    }
    // This lane's query columns of the tile: `C` of them, the same for both of its rows.
    let query = |c: usize| w.q_col + 8 * (c as u32 / 2) + M::position(c % 2).1;
    let mut lse2 = [0.0f32; C];
    let mut delta = [0.0f32; C];
    for c in 0..C {
        // SAFETY: inside the tile's statistics, loaded and visible.
        unsafe {
            lse2[c] = f32::from_bits(shared::ld_shared_u32(t.lse2 + 4 * query(c)));
            delta[c] = f32::from_bits(shared::ld_shared_u32(t.delta + 4 * query(c)));
        }
    }
    // The exponent `s c − lse₂` first, then the mask (−inf whatever the scale's sign), then P.
    let mut probs = mainloop::to_rows::<1, SN, 2, C>(&s);
    for row in probs.iter_mut() {
        for (x, l) in row.iter_mut().zip(&lse2) {
            *x = math::fma(*x, f.scale_log2, -l);
        }
    }
    if MASK {
        let key0 = block.n0 + w.key_row;
        mask.apply_transposed(&mut probs, tile.m0, |r| key0 + M::position(2 * r).0, query);
    }
    for row in probs.iter_mut() {
        for x in row.iter_mut() {
            *x = math::exp2_approx(*x);
        }
    }
    // SAFETY: as above.
    unsafe {
        M::gemm_ss::<T, KMajor, KMajor, 1, SN, KD, D, D>(
            &mut dp,
            t.v,
            Origin { row: w.key_row, col: 0 },
            t.dout,
            Origin { row: w.q_col, col: 0 },
        );
    }
    let mut dscores = mainloop::to_rows::<1, SN, 2, C>(&dp);
    for (ds_row, p_row) in dscores.iter_mut().zip(&probs) {
        for c in 0..C {
            ds_row[c] = p_row[c] * (ds_row[c] - delta[c]);
        }
    }
    let (p_acc, ds_acc) =
        (mainloop::from_rows::<1, SN, 2, C>(&probs), mainloop::from_rows::<1, SN, 2, C>(&dscores));

    if WD == 1 {
        // This warp holds all of its keys' scores: dV += Pᵀ dO_i and dK += dSᵀ Q_i from registers.
        let pa = M::to_a::<T, 1, SN, SK>(&p_acc);
        let dsa = M::to_a::<T, 1, SN, SK>(&ds_acc);
        // SAFETY: dO_i and Q_i are in shared memory and visible.
        unsafe {
            M::gemm_rs::<T, MnMajor, 1, DN, SK, D>(&mut grads.dv, &pa, t.dout, Origin { row: 0, col: 0 });
            M::gemm_rs::<T, MnMajor, 1, DN, SK, D>(&mut grads.dk, &dsa, t.q, Origin { row: 0, col: 0 });
        }
    } else {
        // SAFETY: the warp's own keys and query columns of Pᵀ; read after the barrier below.
        unsafe { epilogue::stage::<T, M, BM, 1, SN>(&p_acc, |_| 1.0, t.p, w.key_row, w.q_col) };
    }
    // SAFETY: as above, for dSᵀ (every warp is past the previous tile's dQ: first barrier).
    unsafe { epilogue::stage::<T, M, BM, 1, SN>(&ds_acc, |_| 1.0, t.ds, w.key_row, w.q_col) };
    // SAFETY: every thread of the block reaches it.
    unsafe { sync::block_barrier() };

    if WD > 1 {
        // SAFETY: Pᵀ and dSᵀ are complete and visible (barrier above); dO_i and Q_i too.
        unsafe {
            M::gemm_ss::<T, KMajor, MnMajor, 1, DN, KM, BM, D>(
                &mut grads.dv,
                t.p,
                Origin { row: w.key_row, col: 0 },
                t.dout,
                Origin { row: 0, col: w.d_col },
            );
            M::gemm_ss::<T, KMajor, MnMajor, 1, DN, KM, BM, D>(
                &mut grads.dk,
                t.ds,
                Origin { row: w.key_row, col: 0 },
                t.q,
                Origin { row: 0, col: w.d_col },
            );
            // Every warp is done with Q_i and dO_i before the next tile's copies overwrite them.
            sync::block_barrier();
        }
    }
    if QS == 1
        && let Some((g, m)) = next
    {
        // SAFETY: every warp is done reading Q_i, dO_i and the statistics (barrier above); the
        // next tile's rows are readable.
        unsafe { load_query_tile::<T, D, BM, THREADS>(p, t, &block.query_tile(f, g, m, BM as u32)) };
        commit_group();
    }

    // Only buckets whose default mode is atomic carry this code (the host computes dQ in the dQ
    // kernel everywhere else, and without it the larger head dims keep their registers).
    if const { rustflash_abi::default_atomic_dq(D) } && p.dq_accum != 0 {
        // dQ_i += dS K: the warp's piece of the tile, added into the f32 accumulator.
        let mut dq = [[[0.0f32; 4]; QN]; QM];
        // SAFETY: dSᵀ is complete and visible; K is in shared memory.
        unsafe {
            M::gemm_ss::<T, MnMajor, MnMajor, QM, QN, KN, BM, D>(
                &mut dq,
                t.ds,
                Origin { row: 0, col: w.dq_row },
                t.k,
                Origin { row: 0, col: w.dq_col },
            );
        }
        let cols = p.accum_cols as u64;
        let accum = (p.dq_accum + 4 * tile.workspace_row(f, p.seqlen_q_rounded) * cols) as *mut f32;
        for (mt, row_tiles) in dq.iter().enumerate() {
            for (nt, acc) in row_tiles.iter().enumerate() {
                for (e, &x) in acc.iter().enumerate() {
                    let (r, c) = M::position(e);
                    let row = (w.dq_row + 16 * mt as u32 + r) as u64;
                    let col = (w.dq_col + 8 * nt as u32 + c) as u64;
                    // SAFETY: a padded row and column of the tile's accumulator rows, which the
                    // workspace holds (rows padded to 128, `accum_cols` columns).
                    unsafe { red_add_f32(accum.add((row * cols + col) as usize), x) };
                }
            }
        }
    }
}
