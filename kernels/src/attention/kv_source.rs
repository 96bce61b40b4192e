//! Where key tile `j` of the block's K/V head lives in global memory. The only part that knows
//! how keys are stored: a paged KV cache (a block table mapping key tiles to pages) changes this
//! file alone.

use super::tile_load::GlobalTile;

/// K and V of one head: `seqlen_k` rows each, `stride` bytes apart.
#[derive(Clone, Copy)]
pub struct KvSource {
    pub k: *const u8,
    pub v: *const u8,
    pub k_stride: u64,
    pub v_stride: u64,
    pub seqlen_k: u32,
}

/// One tile's rows: the first row's address and how many of `BN` rows exist.
#[derive(Clone, Copy)]
pub struct KvTile {
    pub k: *const u8,
    pub v: *const u8,
    pub rows: u32,
}

impl KvSource {
    /// The K rows of key tile `j`, `cols` columns each, as the tile loads take them.
    #[inline(always)]
    pub fn k_tile<const BN: usize>(&self, j: u32, cols: u32) -> GlobalTile {
        let t = self.tile::<BN>(j);
        GlobalTile { src: t.k, row_stride: self.k_stride, rows_valid: t.rows, cols_valid: cols }
    }

    /// The V rows of key tile `j`.
    #[inline(always)]
    pub fn v_tile<const BN: usize>(&self, j: u32, cols: u32) -> GlobalTile {
        let t = self.tile::<BN>(j);
        GlobalTile { src: t.v, row_stride: self.v_stride, rows_valid: t.rows, cols_valid: cols }
    }

    /// Key tile `j` (keys `j · BN .. (j + 1) · BN`); `j · BN < seqlen_k`.
    #[inline(always)]
    pub fn tile<const BN: usize>(&self, j: u32) -> KvTile {
        let n0 = j * BN as u32;
        KvTile {
            k: self.k.wrapping_add(n0 as usize * self.k_stride as usize),
            v: self.v.wrapping_add(n0 as usize * self.v_stride as usize),
            rows: (self.seqlen_k - n0).min(BN as u32),
        }
    }
}
