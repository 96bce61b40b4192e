//! A `ROWS x D` tile of 16-bit elements in shared memory, rows of `D / 8` 16-byte chunks.
//!
//! Chunk `c` of row `r` is stored at chunk position `c ^ (r % S)`, `S` the largest power of two
//! (at most 8) dividing the chunks per row. `ldmatrix` reads one chunk from each of 8 consecutive
//! rows; without the swizzle those all fall in the same banks whenever a row is a multiple of
//! 128 bytes long, and the 8 reads would be served one after another.

/// A tile of `D` columns (`D` a multiple of 32) at a shared-window address.
#[derive(Clone, Copy)]
pub struct SmemTile<const D: usize> {
    pub base: u32,
}

impl<const D: usize> SmemTile<D> {
    pub const CHUNKS: usize = D / 8;
    const ROW_BYTES: u32 = 2 * D as u32;
    const SWIZZLE: u32 = {
        let mut s = 8;
        while !(D / 8).is_multiple_of(s) {
            s /= 2;
        }
        s as u32
    };

    /// Bytes a tile of `rows` rows takes.
    pub const fn bytes(rows: usize) -> usize {
        rows * 2 * D
    }

    /// Shared address of chunk `chunk` (elements `8 chunk .. 8 chunk + 8`) of row `row`.
    #[inline(always)]
    pub fn chunk_addr(self, row: u32, chunk: u32) -> u32 {
        self.base + row * Self::ROW_BYTES + ((chunk ^ (row % Self::SWIZZLE)) << 4)
    }
}
