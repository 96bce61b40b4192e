//! Which (query, key) pairs a block must hide: keys past the end, and, with causal masking
//! aligned to the bottom right, keys after the query's diagonal (`key > query + seqlen_k −
//! seqlen_q`).

#[derive(Clone, Copy)]
pub struct Mask {
    pub seqlen_q: u32,
    pub seqlen_k: u32,
    pub causal: bool,
}

impl Mask {
    /// Whether `key` is hidden from `query`.
    #[inline(always)]
    pub fn hides(self, query: u32, key: u32) -> bool {
        key >= self.seqlen_k
            || (self.causal && key as i64 > query as i64 + self.seqlen_k as i64 - self.seqlen_q as i64)
    }

    /// How many keys the block of query rows `first_query .. first_query + rows` needs: all of
    /// them, or with causal masking up to the diagonal of its last row (0 if none sees any key).
    #[inline(always)]
    pub fn keys_needed(self, first_query: u32, rows: u32) -> u32 {
        if !self.causal {
            return self.seqlen_k;
        }
        let last_visible = (first_query + rows) as i64 + self.seqlen_k as i64 - self.seqlen_q as i64;
        last_visible.clamp(0, self.seqlen_k as i64) as u32
    }

    /// Whether a tile of keys `first_key .. first_key + keys` can hide anything from the block's
    /// queries starting at `first_query`: only such tiles pay for per-element masking.
    #[inline(always)]
    pub fn tile_needs_mask(self, first_query: u32, first_key: u32, keys: u32) -> bool {
        first_key + keys > self.seqlen_k
            || (self.causal
                && (first_key + keys - 1) as i64
                    > first_query as i64 + self.seqlen_k as i64 - self.seqlen_q as i64)
    }
}
