//! A `ROWS x D` tile of elements of `T` in shared memory, rows of `D · T::BYTES / 16` 16-byte
//! chunks (8 elements of a 16-bit type, 4 of f32).
//!
//! Chunk `c` of row `r` is stored at chunk position `c ^ (r % S)`, `S` the largest power of two
//! (at most 8) dividing the chunks per row. `ldmatrix` reads one chunk from each of 8 consecutive
//! rows; without the swizzle those all fall in the same banks whenever a row is a multiple of
//! 128 bytes long, and the 8 reads would be served one after another.
//!
//! WMMA (the `sm_70` build) loads plain strided tiles, so there rows are not swizzled but padded
//! by 16 bytes instead, which spreads the rows of a 16-row load over the banks (the family's
//! [`rustflash_abi::MmaFamily::tile_row_bytes`] says the same to the host). Every part addresses
//! tiles through [`SmemTile::chunk_addr`] and its per-lane form, so no other code knows which.
//!
//! Addresses split into a per-lane part computed once ([`SmemTile::lane`]) and a compile-time
//! part per chunk, so an unrolled loop over chunks costs one `xor` and an immediate offset per
//! access instead of a full address computation.

use crate::element::Element;
use core::marker::PhantomData;

/// A tile of `D` columns (`D` a multiple of 32) of `T` at a shared-window address.
pub struct SmemTile<T: Element, const D: usize> {
    pub base: u32,
    element: PhantomData<T>,
}

impl<T: Element, const D: usize> Clone for SmemTile<T, D> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: Element, const D: usize> Copy for SmemTile<T, D> {}

/// One lane's row of a tile: the row's address and its swizzle.
#[derive(Clone, Copy)]
pub struct LaneRow {
    row_addr: u32,
    /// `16 · (row % S)`, xor-ed into the chunk offset.
    swizzle: u32,
}

impl<T: Element, const D: usize> SmemTile<T, D> {
    pub const CHUNKS: usize = D * T::BYTES / 16;
    #[cfg(target_feature = "sm_80")]
    pub const ROW_BYTES: u32 = (D * T::BYTES) as u32;
    #[cfg(not(target_feature = "sm_80"))]
    pub const ROW_BYTES: u32 = (D * T::BYTES) as u32 + 16;
    #[cfg(target_feature = "sm_80")]
    const SWIZZLE: u32 = {
        let mut s = 8;
        while !Self::CHUNKS.is_multiple_of(s) {
            s /= 2;
        }
        s as u32
    };

    /// The tile at shared address `base`.
    #[inline(always)]
    pub fn at(base: u32) -> Self {
        SmemTile { base, element: PhantomData }
    }

    /// The chunk that holds column `col`.
    #[inline(always)]
    pub fn col_chunk(col: u32) -> u32 {
        col / T::PER_CHUNK as u32
    }

    /// Shared address of element `(row, col)`.
    #[inline(always)]
    pub fn element_addr(self, row: u32, col: u32) -> u32 {
        let within = (col % T::PER_CHUNK as u32) * T::BYTES as u32;
        self.chunk_addr(row, Self::col_chunk(col)) + within
    }

    /// Bytes a tile of `rows` rows takes.
    pub const fn bytes(rows: usize) -> usize {
        rows * Self::ROW_BYTES as usize
    }

    /// The tile `bytes` further on in shared memory.
    #[inline(always)]
    pub fn offset(self, bytes: usize) -> Self {
        Self::at(self.base + bytes as u32)
    }

    /// The same shared address as a tile of `D2` columns (another region of the same buffer).
    #[inline(always)]
    pub fn then<const D2: usize>(self, bytes: usize) -> SmemTile<T, D2> {
        SmemTile::at(self.base + bytes as u32)
    }

    /// Shared address of chunk `chunk` (elements `PER_CHUNK · chunk ..`) of row `row`.
    #[inline(always)]
    pub fn chunk_addr(self, row: u32, chunk: u32) -> u32 {
        self.lane(row).chunk(chunk)
    }

    /// Row `row`, for repeated chunk addresses.
    #[inline(always)]
    pub fn lane(self, row: u32) -> LaneRow {
        self.lane_plus(row, 0)
    }

    /// The chunk permutation of row `row` (xor-ed into chunk numbers).
    #[cfg(target_feature = "sm_80")]
    #[inline(always)]
    fn row_swizzle(row: u32) -> u32 {
        row % Self::SWIZZLE
    }
    #[cfg(not(target_feature = "sm_80"))]
    #[inline(always)]
    fn row_swizzle(_row: u32) -> u32 {
        0
    }

    /// Row `row`, whose chunks are `c + extra` for compile-time even `c` and `extra` 0 or 1 (a
    /// lane-dependent half of an `ldmatrix` address): since `c + extra = c ^ extra`, `extra`
    /// joins the swizzle and the chunk offset stays a compile-time constant.
    #[inline(always)]
    pub fn lane_plus(self, row: u32, extra: u32) -> LaneRow {
        LaneRow {
            row_addr: self.base + row * Self::ROW_BYTES,
            swizzle: (Self::row_swizzle(row) ^ extra) << 4,
        }
    }
}

impl LaneRow {
    /// Chunk `chunk` of the row; with `chunk` known at compile time the high bits fold into
    /// an immediate offset.
    #[inline(always)]
    pub fn chunk(self, chunk: u32) -> u32 {
        let c = chunk << 4;
        self.row_addr + ((c & !0x70) | ((c & 0x70) ^ self.swizzle))
    }

    /// The same column position `rows` rows further down, for rows a multiple of 8 apart (the
    /// swizzle repeats every 8 rows).
    #[inline(always)]
    pub fn down<T: Element, const D: usize>(self, rows: u32) -> LaneRow {
        LaneRow { row_addr: self.row_addr + rows * SmemTile::<T, D>::ROW_BYTES, swizzle: self.swizzle }
    }
}
