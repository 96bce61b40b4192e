//! Which (query, key) pairs are hidden: keys past the end, and, with causal masking aligned to
//! the bottom right, keys after the query's diagonal (`key > query + seqlen_k − seqlen_q`).
//!
//! The mainloop asks [`Mask::unmasked_tiles`] how many key tiles need no mask at all and runs
//! them through a copy of the loop body compiled without mask code (`MASK = false`); only the
//! few tiles at the end of the sequence or across the diagonal pay for per-element checks.

#[derive(Clone, Copy)]
pub struct Mask {
    pub seqlen_k: u32,
    pub causal: bool,
    /// `seqlen_k − seqlen_q`: the diagonal's offset.
    pub diagonal: i64,
}

impl Mask {
    #[inline(always)]
    pub fn new(seqlen_q: u32, seqlen_k: u32, causal: bool) -> Self {
        Mask { seqlen_k, causal, diagonal: seqlen_k as i64 - seqlen_q as i64 }
    }

    /// Query `query` sees keys `0 .. key_limit(query)`.
    #[inline(always)]
    pub fn key_limit(self, query: u32) -> u32 {
        if self.causal {
            (query as i64 + 1 + self.diagonal).clamp(0, self.seqlen_k as i64) as u32
        } else {
            self.seqlen_k
        }
    }

    /// Keys the block of query rows `first_query .. first_query + rows` needs: up to the limit
    /// of its last row (0 if none sees any key).
    #[inline(always)]
    pub fn keys_needed(self, first_query: u32, rows: u32) -> u32 {
        self.key_limit(first_query + rows - 1)
    }

    /// Key tiles `0 .. n` of `BN` keys are visible to every query row from `first_query` on:
    /// they need no mask.
    #[inline(always)]
    pub fn unmasked_tiles<const BN: usize>(self, first_query: u32) -> u32 {
        self.key_limit(first_query) / BN as u32
    }

    /// Hides the scores of a tile whose first key is `n0`: `rows[r][c]` is the score of query
    /// `query(r)` and key `n0 + key(c)`, both offsets known per lane.
    #[inline(always)]
    pub fn apply<const R: usize, const N: usize>(
        self,
        rows: &mut [[f32; N]; R],
        n0: u32,
        query: impl Fn(usize) -> u32,
        key: impl Fn(usize) -> u32,
    ) {
        for (r, row) in rows.iter_mut().enumerate() {
            // Visible keys of this row counted from the tile's first key, clamped to
            // 0..=i32::MAX in 64-bit arithmetic: tile offsets `key(c)` are small, so the
            // per-element test is one 32-bit compare, exact for any sequence length.
            let limit = (self.key_limit(query(r)) as i64 - n0 as i64).clamp(0, i32::MAX as i64) as u32;
            for (c, s) in row.iter_mut().enumerate() {
                if key(c) >= limit {
                    *s = f32::NEG_INFINITY;
                }
            }
        }
    }
}
