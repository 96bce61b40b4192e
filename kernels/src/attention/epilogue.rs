//! Epilogues: accumulators through shared memory to global memory with 16-byte stores.
//!
//! Accumulators are first staged, rounded to the element type, into a shared-memory tile
//! ([`stage`]); then whole 16-byte chunks of rows go to global memory ([`copy_out`]): coalesced
//! 16-byte stores instead of scattered 4-byte ones. Rows past the tensor's end and columns past
//! the head dim are never written nor addressed; a chunk that is not whole and 16-byte aligned
//! in global memory is stored element by element ([`store_chunk`]).
//!
//! The forward's O ([`store_forward`]) stages each warp's rows into its own rows of the Q tile
//! (which only it has read), so a warp barrier suffices; the backward's dK and dV are staged by
//! every warp of the block and copied out by all of them after a block barrier.

use super::online_softmax::OnlineSoftmax;
use super::smem_tile::SmemTile;
use super::warp_mma::WarpMma;
use crate::element::Element;
use crate::primitives::global::st_global_v4;
use crate::primitives::index::lane_id;
use crate::primitives::{shared, sync, warp};

/// Rows of a `(.., seq, .., head dim)` tensor in global memory: `rows` rows of `cols` elements,
/// row `r` at `ptr + r · stride` bytes.
#[derive(Clone, Copy)]
pub struct GlobalRows {
    pub ptr: *mut u8,
    pub stride: u64,
    /// Widest aligned store (16, 8, 4, 2) that `ptr` and `stride` allow.
    pub width: u32,
    pub rows: u32,
    pub cols: u32,
}

/// Writes accumulators — `MT` 16-row tiles from tile row `row0`, `NT` 8-column tiles from column
/// `col0` (a multiple of 8) — each row `r` (`2 mt + h`, as the accumulator layout numbers a thread's rows)
/// multiplied by `factor(r)` and rounded to `T`, into `tile`.
///
/// # Safety
/// Every lane of the warp calls it; the tile holds those rows and chunks and nobody reads or
/// writes them until the caller's barrier.
#[inline(always)]
pub unsafe fn stage<T: Element, M: WarpMma, const D: usize, const MT: usize, const NT: usize>(
    acc: &[[[f32; 4]; NT]; MT],
    factor: impl Fn(usize) -> f32,
    tile: SmemTile<T, D>,
    row0: u32,
    col0: u32,
) {
    for (mt, row_tiles) in acc.iter().enumerate() {
        for h in 0..2 {
            let (row_in_tile, col) = M::position(2 * h);
            let row = row0 + 16 * mt as u32 + row_in_tile;
            let f = factor(2 * mt + h);
            for (nt, a) in row_tiles.iter().enumerate() {
                let addr = tile.element_addr(row, col0 + 8 * nt as u32 + col);
                // SAFETY: two elements (an even column and the next) of one of the caller's rows.
                unsafe { T::st_shared_pair(addr, a[2 * h] * f, a[2 * h + 1] * f) };
            }
        }
    }
}

/// Copies tile rows `first .. first + count` to the same rows of `dst` (tile row `t` is `dst`'s
/// row `t`), `threads` threads sharing the work, this one numbered `thread`.
///
/// # Safety
/// The rows are staged and visible to the calling threads; `dst` names writable rows.
#[inline(always)]
pub unsafe fn copy_out<T: Element, const D: usize>(
    tile: SmemTile<T, D>,
    first: u32,
    count: u32,
    dst: &GlobalRows,
    thread: u32,
    threads: u32,
) {
    let chunks = SmemTile::<T, D>::CHUNKS as u32;
    let per_chunk = T::PER_CHUNK as u32;
    let mut c = thread;
    while c < count * chunks {
        let (r, chunk) = (first + c / chunks, c % chunks);
        let valid = dst.cols.saturating_sub(per_chunk * chunk).min(per_chunk);
        // Rows past the tensor and chunks past the head dim are neither written nor addressed.
        if r < dst.rows && valid > 0 {
            // SAFETY: a chunk of a staged row.
            let v = unsafe { shared::ld_shared_v4(tile.chunk_addr(r, chunk)) };
            // SAFETY: row r exists; `valid` elements of it from chunk `chunk` are writable.
            unsafe {
                let p = dst.ptr.add(r as usize * dst.stride as usize + 16 * chunk as usize);
                store_chunk::<T>(p, v, valid, dst.width);
            }
        }
        c += threads;
    }
}

/// Stores the first `valid` (1..=`PER_CHUNK`) elements of the chunk `v` at `p`: one 16-byte
/// store when the chunk is whole and `width` is 16, else element by element.
///
/// # Safety
/// `valid` elements at `p` are writable; `p` is aligned to `width` and to the element size.
#[inline(always)]
pub unsafe fn store_chunk<T: Element>(p: *mut u8, v: [u32; 4], valid: u32, width: u32) {
    // SAFETY: forwarded to the caller.
    unsafe {
        if valid == T::PER_CHUNK as u32 && width == 16 {
            st_global_v4(p, v);
        } else if T::BYTES == 4 {
            for e in 0..valid {
                (p.add(4 * e as usize) as *mut u32).write(v[e as usize]);
            }
        } else {
            for e in 0..valid {
                let half = (v[e as usize / 2] >> (16 * (e % 2))) as u16;
                (p.add(2 * e as usize) as *mut u16).write(half);
            }
        }
    }
}

/// The forward's epilogue: the warp's `16 MT` rows of O, normalised, from row `warp_row` of the
/// block, through its own rows of `tile`; and their LSE (natural log, f32) at `lse`, `lse_stride`
/// elements apart.
///
/// # Safety
/// Every lane of the warp calls it; the warp has finished reading rows `warp_row .. + 16 MT` of
/// `tile`, and no other warp touches them; `o` names writable rows, and the LSE of each of them
/// is writable.
#[inline(always)]
pub unsafe fn store_forward<
    T: Element,
    M: WarpMma,
    const D: usize,
    const MT: usize,
    const DT: usize,
    const R: usize,
>(
    acc: &[[[f32; 4]; DT]; MT],
    softmax: &OnlineSoftmax<R>,
    tile: SmemTile<T, D>,
    warp_row: u32,
    o: &GlobalRows,
    lse: *mut f32,
    lse_stride: u64,
) {
    // SAFETY: `finish` calls it once per row in every lane, and every lane calls this.
    let finish = softmax.finish(|x| unsafe { warp::reduce::<4>(x, |a, b| a + b) });
    // SAFETY: the warp's own rows, which nobody else touches.
    unsafe { stage::<T, M, D, MT, DT>(acc, |r| finish[r].0, tile, warp_row, 0) };
    for mt in 0..MT {
        for h in 0..2 {
            let (row_in_tile, col) = M::position(2 * h);
            let row = warp_row + 16 * mt as u32 + row_in_tile;
            // The row's LSE, from the lane holding its first columns.
            if col == 0 && row < o.rows {
                // SAFETY: row < rows: an existing row of the LSE.
                unsafe { *lse.add(row as usize * lse_stride as usize) = finish[2 * mt + h].1 };
            }
        }
    }
    // SAFETY: every lane of the warp reaches it; orders the lanes' shared stores before the reads.
    unsafe { sync::warp_barrier() };
    // SAFETY: the warp's rows are staged; `o` names writable rows.
    unsafe { copy_out::<T, D>(tile, warp_row, 16 * MT as u32, o, lane_id(), 32) };
}
