//! The forward kernel body, written once against its parts (FlashAttention-2's
//! `compute_attn_1rowblock`): block info → Q load → mainloop → epilogue.

use super::block_info::BlockInfo;
use super::epilogue::{self, GlobalRows};
use super::mainloop::{self, Operands};
use super::mask::Mask;
use super::smem_tile::SmemTile;
use super::tile_load::load_tile;
use super::warp_mma::WarpMma;
use crate::element::Element;
use crate::primitives::cp_async::{commit_group, wait_group};
use crate::primitives::index::{block_idx_x, thread_idx_x};
use crate::primitives::shared;
use rustflash_abi::ForwardParams;

/// Attention forward for one block of `BM` query rows of one (batch, head).
///
/// Const parameters (all from one row of the configuration table): `D` head-dim bucket, `BM`
/// query rows, `BN` keys per tile, `THREADS = 32 · warps`, `MT` 16-row tiles per warp, and the
/// derived `NT = BN / 8`, `DT = D / 8`, `KT = BN / 16`, `KD = D / 16`, `R = 2 MT`, `C = 2 NT`
/// (Rust cannot yet compute array lengths from const parameters).
///
/// # Safety
/// `p` describes valid tensors (the host checks shapes, strides, buffer bounds and alignment:
/// see `ForwardParams`); launched with `THREADS` threads, `num_m_blocks · heads_q · batch`
/// blocks and the configuration row's `shared_bytes()` of dynamic shared memory (the Q tile,
/// one K and one V tile); `1 <= head_dim <= D`.
#[inline(always)]
pub unsafe fn forward<
    T: Element,
    M: WarpMma,
    const D: usize,
    const BM: usize,
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
    p: &ForwardParams,
) {
    const { assert!(BM == 16 * MT * (THREADS / 32)) };
    let block = BlockInfo::new(p, block_idx_x(), BM as u32);
    let warp_row = 16 * MT as u32 * (thread_idx_x() / 32);
    let mask = Mask::new(block.seqlen_q, block.seqlen_k, p.causal != 0);
    let key_tiles = mask.keys_needed(block.m0, block.rows).div_ceil(BN as u32);

    let smem = SmemTile::<T, D>::at(shared::dynamic_smem_base());
    let (q_tile, k_tile) = (smem, smem.offset(SmemTile::<T, D>::bytes(BM)));
    let v_tile = k_tile.offset(SmemTile::<T, D>::bytes(BN));
    let kv = block.kv_source::<T>(p);

    // Prologue: Q and the first K tile (the last one: the loop runs backwards). A block whose
    // rows see no key loads nothing: its epilogue writes O = 0 and LSE = +inf into the Q tile's
    // rows with no barrier, which a copy still in flight would race with.
    let scale = p.scale_log2.abs().max(f32::MIN_POSITIVE);
    if key_tiles > 0 {
        let q = block.query_tile::<T>(p.q, &p.q_strides, p.head_dim);
        // SAFETY: the block's Q rows are readable; nothing reads the tiles before the loop's
        // first barrier.
        unsafe { load_tile::<T, BM, D, THREADS>(q_tile, q, p.load_bytes) };
        // SAFETY: as above, for the K rows of the last needed tile.
        unsafe {
            load_tile::<T, BN, D, THREADS>(k_tile, kv.k_tile::<BN>(key_tiles - 1, p.head_dim), p.load_bytes)
        };
        commit_group();

        // The softmax needs a positive scale (zero becomes the smallest normal, so hidden scores
        // stay −inf): for a negative one, scores are computed as (−Q) Kᵀ · |scale|.
        if p.scale_log2 < 0.0 {
            negate_own_chunks::<T, BM, D, THREADS>(q_tile);
        }
    }

    let operands = Operands {
        q: q_tile,
        k: k_tile,
        v: v_tile,
        kv,
        cols: p.head_dim,
        width: p.load_bytes,
        mask,
        m0: block.m0,
        warp_row,
    };
    // SAFETY: every thread calls it; K/V rows of the needed tiles are readable.
    let out = unsafe {
        mainloop::run::<T, M, D, BN, THREADS, MT, NT, DT, KT, KD, R, C>(&operands, key_tiles, scale)
    };

    let o = GlobalRows {
        ptr: block.o_rows::<T>(p),
        stride: T::BYTES as u64 * p.o_strides[1],
        width: p.store_bytes,
        rows: block.rows,
        cols: p.head_dim,
    };
    // SAFETY: the warp's last reads of its Q rows were in its last `S = Q Kᵀ` (or none); its
    // O and LSE rows exist up to `block.rows`.
    unsafe {
        epilogue::store_forward::<T, M, D, MT, DT, R>(
            &out.acc,
            &out.softmax,
            q_tile,
            warp_row,
            &o,
            block.lse_rows(p),
            p.lse_strides[2],
        )
    };
}

/// Flips the sign of the Q tile's chunks this thread copied (the loads' chunk assignment:
/// chunk `c` by thread `c % THREADS`), once its own copies have landed. The loop's first
/// barrier then publishes them.
#[inline(always)]
fn negate_own_chunks<T: Element, const BM: usize, const D: usize, const THREADS: usize>(
    q_tile: SmemTile<T, D>,
) {
    wait_group::<0>();
    let chunks = SmemTile::<T, D>::CHUNKS;
    let mut c = thread_idx_x() as usize;
    while c < BM * chunks {
        let addr = q_tile.chunk_addr((c / chunks) as u32, (c % chunks) as u32);
        // SAFETY: a chunk of the Q tile that only this thread writes before the next barrier.
        unsafe {
            let x = shared::ld_shared_v4(addr);
            shared::st_shared_v4(addr, x.map(|w| w ^ T::SIGN_BITS));
        }
        c += THREADS;
    }
}
