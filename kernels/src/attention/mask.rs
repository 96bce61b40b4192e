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

    /// Query tiles of `BM` rows from which on every query sees every key of the tile
    /// `n0 .. n0 + keys`: `None` if the tile is partial (keys past the end always need the mask).
    /// The backward's main kernel runs the query tiles before it with the mask.
    #[inline(always)]
    pub fn unmasked_from<const BM: usize, const BN: usize>(self, n0: u32, keys: u32) -> Option<u32> {
        if keys < BN as u32 {
            return None;
        }
        if !self.causal {
            return Some(0);
        }
        // Query q sees the tile's last key when q >= n0 + BN − 1 − diagonal.
        let first = (n0 as i64 + BN as i64 - 1 - self.diagonal).max(0);
        Some((first as u64).div_ceil(BM as u64).min(u32::MAX as u64) as u32)
    }

    /// The first query that sees key `key` (causal), `seqlen_q`-independent: 0 without masking.
    #[inline(always)]
    pub fn first_query(self, key: u32) -> i64 {
        if self.causal { (key as i64 - self.diagonal).max(0) } else { 0 }
    }

    /// Hides the scores of a transposed tile (the backward's `Sᵀ`: rows are keys, columns
    /// queries): `rows[r][c]` is the score of key `key(r)` and query `m0 + query(c)`, `query`
    /// known per lane. Keys past the end hide their whole row.
    #[inline(always)]
    pub fn apply_transposed<const R: usize, const N: usize>(
        self,
        rows: &mut [[f32; N]; R],
        m0: u32,
        key: impl Fn(usize) -> u32,
        query: impl Fn(usize) -> u32,
    ) {
        for (r, row) in rows.iter_mut().enumerate() {
            let k = key(r);
            // Hidden: queries before the first that sees the key, counted from the tile's first
            // query and clamped to 0..=i32::MAX (a 32-bit compare per element, exact for any
            // sequence length); every query when the key does not exist.
            let hidden_below = if k >= self.seqlen_k {
                i32::MAX as u32
            } else {
                (self.first_query(k) - m0 as i64).clamp(0, i32::MAX as i64) as u32
            };
            for (c, s) in row.iter_mut().enumerate() {
                if query(c) < hidden_below {
                    *s = f32::NEG_INFINITY;
                }
            }
        }
    }
}
