//! Global → shared copies of a tile of rows into a swizzled [`SmemTile`].
//!
//! Two paths, chosen per tile by a uniform branch:
//! - [`load_full`]: every row and every column of the tile is valid and 16-byte aligned: one
//!   16-byte `cp.async` per chunk, addresses advanced by compile-time row steps. Interior tiles
//!   of the usual head dims (64, 128, ...) take it.
//! - [`load_checked`]: anything else (the last partial tile, a head dim below the bucket, data
//!   aligned to less than 16 bytes). **It never reads a byte outside a row's valid elements**:
//!   a chunk is copied in pieces of the widest aligned width, and a piece that is only partly
//!   valid is read element by element; invalid elements become zeros in shared memory, so
//!   partial tiles need no special case later. No address past a row's end is even formed.
//!
//! `cp.async` copies complete at the caller's `wait_group`; the element-wise copies complete at
//! once. Either way a block barrier must come before other threads read the tile.

use super::smem_tile::SmemTile;
use crate::element::Element;
use crate::primitives::cp_async::cp_async;
use crate::primitives::index::thread_idx_x;
use crate::primitives::shared;

/// A tile's rows in global memory: `rows_valid` rows of `cols_valid` elements, row `r` at
/// `src + r · row_stride` bytes.
#[derive(Clone, Copy)]
pub struct GlobalTile {
    pub src: *const u8,
    /// Bytes from one row to the next.
    pub row_stride: u64,
    pub rows_valid: u32,
    pub cols_valid: u32,
}

/// Copies a tile by the path it allows: [`load_full`] when the tile is whole and 16-byte
/// aligned, [`load_checked`] otherwise.
///
/// # Safety
/// As for [`load_full`] / [`load_checked`]; every thread of the block calls it.
#[inline(always)]
pub unsafe fn load_tile<T: Element, const ROWS: usize, const D: usize, const THREADS: usize>(
    tile: SmemTile<T, D>,
    g: GlobalTile,
    width: u32,
) {
    // SAFETY: forwarded; the branch is uniform over the block.
    unsafe {
        if g.rows_valid == ROWS as u32 && g.cols_valid == D as u32 && width == 16 {
            load_full::<T, ROWS, D, THREADS>(tile, g)
        } else {
            load_checked::<T, ROWS, D, THREADS>(tile, g, width)
        }
    }
}

/// Copies a whole `ROWS x D` tile with 16-byte `cp.async`s, `THREADS` threads sharing it.
///
/// # Safety
/// All `ROWS` rows and `D` columns of `g` are readable; `g.src` and `g.row_stride` are
/// multiples of 16; `tile` holds `ROWS` rows and no thread reads it until after the copies'
/// `wait_group` and a block barrier.
#[inline(always)]
pub unsafe fn load_full<T: Element, const ROWS: usize, const D: usize, const THREADS: usize>(
    tile: SmemTile<T, D>,
    g: GlobalTile,
) {
    let chunks = SmemTile::<T, D>::CHUNKS;
    let per_thread = const { (ROWS * SmemTile::<T, D>::CHUNKS).div_ceil(THREADS) };
    let t = thread_idx_x() as usize;
    if THREADS.is_multiple_of(chunks) {
        // Each thread copies the same chunk column of rows `t / chunks + i · THREADS / chunks`:
        // one row offset per thread, then a constant step.
        let (row, chunk) = ((t / chunks) as u32, (t % chunks) as u32);
        let step_rows = (THREADS / chunks) as u32;
        // SAFETY: row < ROWS; the offset stays inside row `row` of the tile.
        let mut src = unsafe { g.src.add(row as usize * g.row_stride as usize + 16 * chunk as usize) };
        let step = step_rows as usize * g.row_stride as usize;
        for i in 0..per_thread as u32 {
            let r = row + i * step_rows;
            if ROWS.is_multiple_of(THREADS / chunks) || r < ROWS as u32 {
                // SAFETY: `src` is chunk `chunk` of readable row `r`, 16-byte aligned; the
                // destination is chunk `chunk` of tile row `r`.
                unsafe { cp_async::<16>(tile.chunk_addr(r, chunk), src, 16) };
            }
            if i + 1 < per_thread as u32 {
                // SAFETY: the next row this thread copies, if any, is inside the tile; past the
                // last one the pointer is not used.
                src = src.wrapping_add(step);
            }
        }
    } else {
        for i in 0..per_thread {
            let c = t + i * THREADS;
            if c < ROWS * chunks {
                let (row, chunk) = (c / chunks, c % chunks);
                // SAFETY: row < ROWS and chunk < CHUNKS, inside the readable tile.
                let src = unsafe { g.src.add(row * g.row_stride as usize + 16 * chunk) };
                // SAFETY: as above; 16-byte aligned source and destination.
                unsafe { cp_async::<16>(tile.chunk_addr(row as u32, chunk as u32), src, 16) };
            }
        }
    }
}

/// Copies the valid part of a `ROWS x D` tile and zero-fills the rest, reading nothing outside
/// the valid elements. `width` is the widest access (16, 8, 4 or 2 bytes) that `g.src` and
/// `g.row_stride` are multiples of.
///
/// # Safety
/// Rows `0..rows_valid` hold `cols_valid <= D` readable elements each (nothing beyond is
/// read); `g.src` and `g.row_stride` are multiples of `width` and of the element size; `tile`
/// holds `ROWS` rows and no thread reads it until after `wait_group` and a block barrier.
#[inline(always)]
pub unsafe fn load_checked<T: Element, const ROWS: usize, const D: usize, const THREADS: usize>(
    tile: SmemTile<T, D>,
    g: GlobalTile,
    width: u32,
) {
    let chunks = SmemTile::<T, D>::CHUNKS;
    let per_chunk = T::PER_CHUNK as u32;
    let mut c = thread_idx_x() as usize;
    while c < ROWS * chunks {
        let (row, chunk) = ((c / chunks) as u32, (c % chunks) as u32);
        let dst = tile.chunk_addr(row, chunk);
        let valid = if row < g.rows_valid {
            g.cols_valid.saturating_sub(per_chunk * chunk).min(per_chunk)
        } else {
            0
        };
        if valid == 0 {
            // SAFETY: `dst` is a 16-byte chunk of the tile.
            unsafe { shared::st_shared_v4(dst, [0; 4]) };
        } else {
            // SAFETY: `valid > 0` elements from chunk `chunk` of row `row` are readable.
            let src = unsafe { g.src.add(row as usize * g.row_stride as usize + 16 * chunk as usize) };
            // SAFETY: forwarded: `valid` elements at `src` readable, `src` aligned to `width`.
            unsafe { copy_chunk::<T>(dst, src, valid, width) };
        }
        c += THREADS;
    }
}

/// Copies the first `valid` (1..=`PER_CHUNK`) elements of a chunk from `src` and zeros after
/// them.
///
/// # Safety
/// `valid` elements at `src` are readable; `src` is aligned to `width` and to the element size;
/// `dst` is a 16-byte chunk of shared memory.
#[inline(always)]
unsafe fn copy_chunk<T: Element>(dst: u32, src: *const u8, valid: u32, width: u32) {
    if valid == T::PER_CHUNK as u32 && width == 16 {
        // SAFETY: 16 readable, aligned bytes.
        unsafe { cp_async::<16>(dst, src, 16) };
        return;
    }
    // Pieces of `width` bytes that lie wholly inside the valid elements go by `cp.async`; the
    // rest element by element, so nothing past the last valid element is read.
    let valid_bytes = T::BYTES as u32 * valid;
    let whole = if width >= 4 { valid_bytes / width * width } else { 0 };
    let mut at = 0;
    while at < whole {
        // SAFETY: bytes `at .. at + width` of the chunk are valid and `width`-aligned.
        unsafe {
            let s = src.add(at as usize);
            match width {
                16 => cp_async::<16>(dst + at, s, 16),
                8 => cp_async::<8>(dst + at, s, 8),
                _ => cp_async::<4>(dst + at, s, 4),
            }
        }
        at += width;
    }
    while at < 16 {
        // SAFETY: the element at byte `at` is valid when `at < valid_bytes`; `src` is aligned to
        // the element size; the destination is inside the 16-byte shared chunk.
        unsafe {
            if T::BYTES == 4 {
                let x = if at < valid_bytes { (src.add(at as usize) as *const u32).read() } else { 0 };
                shared::st_shared_u32(dst + at, x);
            } else {
                let x = if at < valid_bytes { (src.add(at as usize) as *const u16).read() } else { 0 };
                shared::st_shared_u16(dst + at, x);
            }
        }
        at += T::BYTES as u32;
    }
}

/// Reads the first `valid` (1..=`PER_CHUNK`) elements of a chunk at `src` into registers, zeros
/// after them: one 16-byte load when the chunk is whole and `width` is 16, else element by
/// element, so nothing past the last valid element is read. For data no thread of the launch
/// writes.
///
/// # Safety
/// `valid` elements at `src` are readable and not written during the launch; `src` is aligned
/// to `width` and to the element size.
#[inline(always)]
pub unsafe fn load_chunk_regs<T: Element>(src: *const u8, valid: u32, width: u32) -> [u32; 4] {
    if valid == T::PER_CHUNK as u32 && width == 16 {
        // SAFETY: 16 readable, aligned bytes nothing writes.
        return unsafe { crate::primitives::global::ld_global_nc_v4(src) };
    }
    let mut v = [0u32; 4];
    for e in 0..valid {
        // SAFETY: element `e < valid` is readable; `src` is aligned to the element size.
        unsafe {
            if T::BYTES == 4 {
                v[e as usize] = (src.add(4 * e as usize) as *const u32).read();
            } else {
                let x = (src.add(2 * e as usize) as *const u16).read();
                v[e as usize / 2] |= (x as u32) << (16 * (e % 2));
            }
        }
    }
    v
}
