//! The forward kernel body on `mma.sync` (sm_80 and newer).
//!
//! Block: `BM = 16 WARPS` query rows of one (batch, head); shared memory holds the Q tile and one
//! K and one V tile (`BN` keys). Per key tile `j`, loads overlap compute:
//!
//! ```text
//!   issue V_j | wait K_j | S = Q K_jᵀ | barrier, issue K_j+1 | softmax | wait V_j | O += P V_j | barrier
//! ```

use super::masking::Mask;
use super::mma_sm80::{accumulate_pv, fragment_position, from_rows, scores, to_rows};
use super::online_softmax::OnlineSoftmax;
use super::smem_tile::SmemTile;
use super::tile_load::{GlobalRows, load_tile};
use crate::primitives::cp_async::{commit_group, wait_group};
use crate::primitives::index::{block_idx_x, lane_id, thread_idx_x};
use crate::primitives::mma::MmaInput;
use crate::primitives::{shared, sync, warp};
use rustflash_abi::ForwardParams;

/// # Safety
/// `p` describes valid tensors (the host checks shapes, strides, buffer sizes and alignment);
/// launched with `THREADS = 32 · BM / 16` threads, `ceil(seqlen_q / BM) · heads_q · batch` blocks
/// and `2 D (BM + 2 BN)` bytes of dynamic shared memory; `head_dim <= D`.
#[inline(always)]
pub unsafe fn forward<
    T: MmaInput,
    const D: usize,
    const DT: usize,
    const BM: usize,
    const BN: usize,
    const NT: usize,
    const N2: usize,
    const THREADS: usize,
>(
    p: &ForwardParams,
) {
    const { assert!(BM * 2 == THREADS && DT * 8 == D && NT * 8 == BN) };
    let (warp_idx, lane) = (thread_idx_x() / 32, lane_id());

    // Block -> (query tile, head, batch); the heaviest causal tiles (the last) start first.
    let bid = block_idx_x();
    let m_block = p.num_m_blocks - 1 - bid % p.num_m_blocks;
    let head = (bid / p.num_m_blocks) % p.heads_q;
    let batch = bid / p.num_m_blocks / p.heads_q;
    let kv_head = head / p.group;
    let m0 = m_block * BM as u32;
    let rows_q = (p.seqlen_q - m0).min(BM as u32);
    let mask = Mask { seqlen_q: p.seqlen_q, seqlen_k: p.seqlen_k, causal: p.causal != 0 };

    let at = |base: u64, strides: &[u64; 3], b: u32, s: u32, h: u32| {
        (base + 2 * (b as u64 * strides[0] + s as u64 * strides[1] + h as u64 * strides[2])) as *const u16
    };
    let q = GlobalRows {
        src: at(p.q, &p.q_strides, batch, m0, head),
        row_stride: p.q_strides[1],
        rows_valid: rows_q,
        cols_valid: p.head_dim,
    };
    let k0 = at(p.k, &p.k_strides, batch, 0, kv_head);
    let v0 = at(p.v, &p.v_strides, batch, 0, kv_head);
    let kv_rows = |base: *const u16, stride: u64, n0: u32| GlobalRows {
        src: unsafe { base.add(n0 as usize * stride as usize) },
        row_stride: stride,
        rows_valid: (p.seqlen_k - n0).min(BN as u32),
        cols_valid: p.head_dim,
    };

    let smem = shared::dynamic_smem_base();
    let q_tile = SmemTile::<D> { base: smem };
    let k_tile = SmemTile::<D> { base: smem + SmemTile::<D>::bytes(BM) as u32 };
    let v_tile = SmemTile::<D> { base: k_tile.base + SmemTile::<D>::bytes(BN) as u32 };

    let keys = mask.keys_needed(m0, rows_q);
    let key_tiles = keys.div_ceil(BN as u32);
    unsafe { load_tile::<BM, D, THREADS>(q_tile, q, p.load_bytes) };
    if key_tiles > 0 {
        unsafe { load_tile::<BN, D, THREADS>(k_tile, kv_rows(k0, p.k_strides[1], 0), p.load_bytes) };
    }
    commit_group();

    let row0 = m0 + 16 * warp_idx;
    let mut acc = [[0.0f32; 4]; DT];
    let mut softmax = OnlineSoftmax::<2>::new();
    let quad_max = |x: f32| warp::reduce::<4>(x, crate::primitives::math::max);
    for j in 0..key_tiles {
        let n0 = j * BN as u32;
        unsafe { load_tile::<BN, D, THREADS>(v_tile, kv_rows(v0, p.v_strides[1], n0), p.load_bytes) };
        commit_group();
        wait_group::<1>(); // Q and K_j have landed (V_j may still be in flight)
        sync::block_barrier();

        let s = unsafe { scores::<T, D, NT>(q_tile, 16 * warp_idx, k_tile) };
        sync::block_barrier(); // every warp is done with K_j: its buffer takes K_j+1
        if j + 1 < key_tiles {
            unsafe {
                load_tile::<BN, D, THREADS>(k_tile, kv_rows(k0, p.k_strides[1], n0 + BN as u32), p.load_bytes)
            };
        }
        commit_group(); // possibly empty, so that the group count stays the same

        let mut rows = to_rows::<NT, N2>(&s);
        let needs_mask = mask.tile_needs_mask(m0, n0, BN as u32);
        for (r, row) in rows.iter_mut().enumerate() {
            for (c, x) in row.iter_mut().enumerate() {
                *x *= p.scale_log2;
                if needs_mask {
                    let (fr, fc) = fragment_position(2 * r + c % 2);
                    if mask.hides(row0 + fr, n0 + 8 * (c as u32 / 2) + fc) {
                        *x = f32::NEG_INFINITY;
                    }
                }
            }
        }
        let rescale = softmax.update(&mut rows, quad_max);
        for a in acc.iter_mut() {
            a[0] *= rescale[0];
            a[1] *= rescale[0];
            a[2] *= rescale[1];
            a[3] *= rescale[1];
        }
        let probs = from_rows::<NT, N2>(&rows);

        wait_group::<1>(); // V_j has landed
        sync::block_barrier();
        unsafe { accumulate_pv::<T, D, DT, NT>(&mut acc, &probs, v_tile) };
        sync::block_barrier(); // every warp is done with V_j before V_j+1 overwrites it
    }

    let finish = softmax.finish(|x| warp::reduce::<4>(x, |a, b| a + b));
    let o_base = p.o as *mut u16;
    for (r, &(inv, lse)) in finish.iter().enumerate() {
        let (fr, _) = fragment_position(2 * r);
        let query = row0 + fr;
        if query >= p.seqlen_q {
            continue;
        }
        let o_row = (batch as u64 * p.o_strides[0]
            + query as u64 * p.o_strides[1]
            + head as u64 * p.o_strides[2]) as usize;
        for (dt, a) in acc.iter().enumerate() {
            let (_, fc) = fragment_position(2 * r);
            let col = 8 * dt as u32 + fc;
            let packed = T::pack(a[2 * r] * inv, a[2 * r + 1] * inv);
            let dst = unsafe { o_base.add(o_row + col as usize) };
            if col + 1 < p.head_dim && (dst as usize) % 4 == 0 {
                unsafe { *(dst as *mut u32) = packed };
            } else {
                if col < p.head_dim {
                    unsafe { *dst = packed as u16 };
                }
                if col + 1 < p.head_dim {
                    unsafe { *dst.add(1) = (packed >> 16) as u16 };
                }
            }
        }
        if lane % 4 == 0 {
            let lse_at = (batch as u64 * p.heads_q as u64 + head as u64) * p.seqlen_q as u64 + query as u64;
            unsafe { *(p.lse as *mut f32).add(lse_at as usize) = lse };
        }
    }
}
