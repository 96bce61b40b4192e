//! The online softmax of FlashAttention, on rows of scores in base 2.
//!
//! A thread holds `ROWS` rows, `N` scores of each; the rows' other scores sit in other threads,
//! which `row_max` / `row_sum` combine (for `mma.sync`, the 4 lanes of a quad). The state knows
//! nothing of fragment layouts, so every matrix-multiply family shares it.

use crate::primitives::math::{exp2_approx, log2_approx, max};

pub struct OnlineSoftmax<const ROWS: usize> {
    /// Running maximum of each row's scores (base 2), −inf before any visible key.
    pub max: [f32; ROWS],
    /// This thread's share of each row's running sum of `2^(s − max)`.
    pub sum: [f32; ROWS],
}

impl<const ROWS: usize> OnlineSoftmax<ROWS> {
    #[inline(always)]
    pub fn new() -> Self {
        OnlineSoftmax { max: [f32::NEG_INFINITY; ROWS], sum: [0.0; ROWS] }
    }

    /// Folds a new tile of scores in: replaces `scores` by `2^(s − max)` and returns, per row,
    /// the factor by which earlier output accumulators must be scaled.
    #[inline(always)]
    pub fn update<const N: usize>(
        &mut self,
        scores: &mut [[f32; N]; ROWS],
        row_max: impl Fn(f32) -> f32,
    ) -> [f32; ROWS] {
        let mut rescale = [1.0; ROWS];
        for r in 0..ROWS {
            let mut m = self.max[r];
            for &s in scores[r].iter() {
                m = max(m, s);
            }
            let m = row_max(m);
            // A row that has seen only hidden keys keeps −inf; measure from 0 so that
            // 2^(−inf − 0) = 0 instead of NaN.
            let base = if m == f32::NEG_INFINITY { 0.0 } else { m };
            rescale[r] = exp2_approx(self.max[r] - base);
            let mut sum = self.sum[r] * rescale[r];
            for s in scores[r].iter_mut() {
                *s = exp2_approx(*s - base);
                sum += *s;
            }
            self.sum[r] = sum;
            self.max[r] = m;
        }
        rescale
    }

    /// Per row: the factor that normalises the output (0 for a row that saw no key) and the
    /// natural-log LSE (+inf for such a row).
    #[inline(always)]
    pub fn finish(&self, row_sum: impl Fn(f32) -> f32) -> [(f32, f32); ROWS] {
        let mut out = [(0.0, f32::INFINITY); ROWS];
        for (r, row) in out.iter_mut().enumerate() {
            let l = row_sum(self.sum[r]);
            if l > 0.0 {
                *row = (1.0 / l, (self.max[r] + log2_approx(l)) * core::f32::consts::LN_2);
            }
        }
        out
    }
}

impl<const ROWS: usize> Default for OnlineSoftmax<ROWS> {
    fn default() -> Self {
        Self::new()
    }
}
