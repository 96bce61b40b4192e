//! Copies a tile of rows from global memory into a swizzled shared tile, zero-filling rows past
//! `rows_valid` and columns past `cols_valid`, so partial tiles need no special case later.
//!
//! The access width follows the data's alignment, chosen by the host: 16-byte `cp.async` when
//! every address and stride allows it, 8 or 4 bytes otherwise, and plain 2-byte loads for tensors
//! aligned only to their element (an odd head dimension in a packed buffer, say). Copies by
//! `cp.async` complete at the caller's `wait_group`; 2-byte copies complete at once. Either way a
//! block barrier must come before other threads read the tile.

use super::smem_tile::SmemTile;
use crate::primitives::{index::thread_idx_x, shared};

/// The rows of a global tile: `rows_valid` rows of `cols_valid` elements from `src`, row `r` at
/// `src + r * row_stride`.
#[derive(Clone, Copy)]
pub struct GlobalRows {
    pub src: *const u16,
    pub row_stride: u64,
    pub rows_valid: u32,
    pub cols_valid: u32,
}

/// Copies `ROWS` rows into `tile` using all `THREADS` threads.
///
/// # Safety
/// `rows_valid >= 1`; every element named by `rows` is readable; `load_bytes` divides `src`'s
/// address and `2 * row_stride`; `tile` holds `ROWS` rows.
#[inline(always)]
pub unsafe fn load_tile<const ROWS: usize, const D: usize, const THREADS: usize>(
    tile: SmemTile<D>,
    rows: GlobalRows,
    load_bytes: u32,
) {
    let chunks = SmemTile::<D>::CHUNKS;
    let mut c = thread_idx_x() as usize;
    while c < ROWS * chunks {
        let (row, chunk) = ((c / chunks) as u32, (c % chunks) as u32);
        let col0 = 8 * chunk;
        let valid = if row < rows.rows_valid { rows.cols_valid.saturating_sub(col0).min(8) } else { 0 };
        // An address is needed even for a chunk copied as zeros: the tile's first element.
        let src = if valid > 0 {
            unsafe { rows.src.add(row as usize * rows.row_stride as usize + col0 as usize) }
        } else {
            rows.src
        };
        unsafe { copy_chunk(tile.chunk_addr(row, chunk), src, rows.src, valid, load_bytes) };
        c += THREADS;
    }
}

/// Copies `valid` (0..=8) elements from `src` into a 16-byte shared chunk, zeros after them.
#[inline(always)]
unsafe fn copy_chunk(dst: u32, src: *const u16, fallback: *const u16, valid: u32, load_bytes: u32) {
    #[cfg(target_feature = "sm_80")]
    {
        use crate::primitives::cp_async::cp_async;
        // Each piece of `n` elements copies what is valid of it; an empty piece reads nothing.
        let piece = |i: u32, n: u32| {
            let here = valid.saturating_sub(i * n).min(n);
            let from = if here > 0 { unsafe { src.add((i * n) as usize) } } else { fallback };
            (dst + 2 * i * n, from as *const u8, 2 * here)
        };
        match load_bytes {
            16 => {
                let (d, s, n) = piece(0, 8);
                unsafe { cp_async::<16>(d, s, n) };
                return;
            }
            8 => {
                for i in 0..2 {
                    let (d, s, n) = piece(i, 4);
                    unsafe { cp_async::<8>(d, s, n) };
                }
                return;
            }
            4 => {
                for i in 0..4 {
                    let (d, s, n) = piece(i, 2);
                    unsafe { cp_async::<4>(d, s, n) };
                }
                return;
            }
            _ => {}
        }
    }
    let _ = (fallback, load_bytes);
    for e in 0..8 {
        let x = if e < valid { unsafe { *src.add(e as usize) } } else { 0 };
        unsafe { shared::st_shared_u16(dst + 2 * e, x) };
    }
}
