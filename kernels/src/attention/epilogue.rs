//! The epilogue: normalised O through shared memory to global memory with 16-byte stores, and
//! the LSE.
//!
//! Each warp writes its rows of O into its own rows of the Q tile (which only it has read, so a
//! warp barrier suffices), then copies whole 16-byte chunks of rows to global memory: coalesced
//! 16-byte stores instead of scattered 4-byte ones. Rows past `seqlen_q` and columns past the
//! head dim are never written; a chunk that is not whole and 16-byte aligned in global memory is
//! stored element by element.

use super::online_softmax::OnlineSoftmax;
use super::smem_tile::SmemTile;
use super::warp_mma::WarpMma;
use crate::element::Element;
use crate::primitives::global::st_global_v4;
use crate::primitives::index::lane_id;
use crate::primitives::{shared, sync, warp};

/// Where the block's O and LSE rows go.
pub struct Destination {
    /// O's first row of the block, and bytes between rows.
    pub o: *mut u8,
    pub o_stride: u64,
    /// Widest aligned store into O (16, 8, 4, 2).
    pub width: u32,
    /// The LSE of the block's first row, and f32 elements between rows.
    pub lse: *mut f32,
    pub lse_stride: u64,
    /// Rows of the block that exist, and columns of O (the real head dim).
    pub rows: u32,
    pub cols: u32,
}

/// Writes the warp's `16 MT` rows, starting at row `warp_row` of the block.
///
/// # Safety
/// Every lane of the warp calls it; the warp has finished reading rows `warp_row .. + 16 MT` of
/// `tile`, and no other warp touches them; `dst` names writable rows.
#[inline(always)]
pub unsafe fn store<
    T: Element,
    M: WarpMma,
    const D: usize,
    const MT: usize,
    const DT: usize,
    const R: usize,
>(
    acc: &[[[f32; 4]; DT]; MT],
    softmax: &OnlineSoftmax<R>,
    tile: SmemTile<D>,
    warp_row: u32,
    dst: &Destination,
) {
    // SAFETY: `finish` calls it once per row in every lane, and every lane calls `store`.
    let finish = softmax.finish(|x| unsafe { warp::reduce::<4>(x, |a, b| a + b) });
    let l = lane_id();
    for mt in 0..MT {
        for h in 0..2 {
            let (row_in_tile, col) = M::position(2 * h);
            let row = warp_row + 16 * mt as u32 + row_in_tile;
            let inv = finish[2 * mt + h].0;
            for (dt, a) in acc[mt].iter().enumerate() {
                let packed = T::pack2(a[2 * h] * inv, a[2 * h + 1] * inv);
                // SAFETY: 4 bytes inside chunk `dt` of one of the warp's rows.
                unsafe { shared::st_shared_u32(tile.chunk_addr(row, dt as u32) + 2 * col, packed) };
            }
            // The row's LSE, from the lane holding its first columns.
            if col == 0 && row < dst.rows {
                // SAFETY: row < rows: an existing row of the LSE.
                unsafe { *dst.lse.add(row as usize * dst.lse_stride as usize) = finish[2 * mt + h].1 };
            }
        }
    }
    // SAFETY: every lane of the warp reaches it; orders the lanes' shared stores before the reads.
    unsafe { sync::warp_barrier() };

    let chunks = SmemTile::<D>::CHUNKS as u32;
    let rows = 16 * MT as u32;
    let mut c = l;
    while c < rows * chunks {
        let (r, chunk) = (warp_row + c / chunks, c % chunks);
        let valid = dst.cols.saturating_sub(8 * chunk).min(8);
        // Rows past the sequence and chunks past the head dim are neither written nor addressed.
        if r < dst.rows && valid > 0 {
            // SAFETY: chunk of one of the warp's rows.
            let v = unsafe { shared::ld_shared_v4(tile.chunk_addr(r, chunk)) };
            // SAFETY: row r exists; elements `8 chunk .. 8 chunk + valid` of it are writable.
            unsafe {
                let p = dst.o.add(r as usize * dst.o_stride as usize + 16 * chunk as usize);
                if valid == 8 && dst.width == 16 {
                    st_global_v4(p, v);
                } else {
                    for e in 0..valid {
                        let half = (v[e as usize / 2] >> (16 * (e % 2))) as u16;
                        (p.add(2 * e as usize) as *mut u16).write(half);
                    }
                }
            }
        }
        c += 32;
    }
}
