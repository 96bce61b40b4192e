//! The online softmax of FlashAttention, on rows of raw scores, in base 2.
//!
//! A thread holds `ROWS` rows, `N` scores of each; the rows' other scores sit in other threads,
//! which `row_max` / `row_sum` combine (for `mma.sync`, the 4 lanes of a quad). The state knows
//! nothing of fragment layouts, so every matrix-multiply family shares it.
//!
//! The scale is folded into the exponent: `p = 2^(s · c − m · c)` is one `fma` and one `ex2` per
//! score, with `c = softmax_scale · log2(e)`. `c` must be positive (the kernel flips Q's sign for
//! a negative scale), so the maximum of the raw scores is the maximum of the scaled ones.

use crate::primitives::math::{exp2_approx, fma, log2_approx, max};

pub struct OnlineSoftmax<const ROWS: usize> {
    /// Running maximum of each row's scaled scores (base 2), −inf before any visible key.
    pub max: [f32; ROWS],
    /// This thread's share of each row's running sum of `2^(s c − max)`.
    pub sum: [f32; ROWS],
    /// `c`, positive.
    scale: f32,
}

impl<const ROWS: usize> OnlineSoftmax<ROWS> {
    #[inline(always)]
    pub fn new(scale: f32) -> Self {
        OnlineSoftmax { max: [f32::NEG_INFINITY; ROWS], sum: [0.0; ROWS], scale }
    }

    /// Folds a new tile of raw scores in (hidden ones −inf): replaces `scores` by
    /// `2^(s c − max)` and returns, per row, the factor by which earlier output accumulators
    /// must be scaled.
    #[inline(always)]
    pub fn update<const N: usize>(
        &mut self,
        scores: &mut [[f32; N]; ROWS],
        row_max: impl Fn(f32) -> f32,
    ) -> [f32; ROWS] {
        let mut rescale = [1.0; ROWS];
        for r in 0..ROWS {
            // A tree of maxima: independent pairs first, so the chain is log2(N) deep.
            let m = max(row_max(tree_max(&scores[r])) * self.scale, self.max[r]);
            // A row that has seen only hidden keys keeps −inf; measure from 0 so that
            // 2^(−inf − 0) = 0 instead of NaN.
            let base = if m == f32::NEG_INFINITY { 0.0 } else { m };
            rescale[r] = exp2_approx(self.max[r] - base);
            let mut sum = 0.0;
            for s in scores[r].iter_mut() {
                *s = exp2_approx(fma(*s, self.scale, -base));
                sum += *s;
            }
            self.sum[r] = fma(self.sum[r], rescale[r], sum);
            self.max[r] = m;
        }
        rescale
    }

    /// Per row: the factor that normalises the output (0 for a row that saw no key) and the
    /// natural-log LSE (+inf for such a row). A row whose scaled scores overflowed f32 (a
    /// maximum of +inf: every `2^(s c − max)` is then 0) gives NaN, as a softmax over an infinite
    /// score does, never the silent "saw no key" result.
    #[inline(always)]
    pub fn finish(&self, row_sum: impl Fn(f32) -> f32) -> [(f32, f32); ROWS] {
        let mut out = [(0.0, f32::INFINITY); ROWS];
        for (r, row) in out.iter_mut().enumerate() {
            let l = row_sum(self.sum[r]);
            if l > 0.0 {
                *row = (1.0 / l, (self.max[r] + log2_approx(l)) * core::f32::consts::LN_2);
            } else if self.max[r] == f32::INFINITY {
                *row = (f32::NAN, f32::NAN);
            }
        }
        out
    }
}

/// The maximum of `x`, as a balanced tree.
#[inline(always)]
fn tree_max<const N: usize>(x: &[f32; N]) -> f32 {
    let mut v = *x;
    let mut n = N;
    while n > 1 {
        let half = n / 2;
        for i in 0..half {
            v[i] = max(v[i], v[i + half]);
        }
        if n % 2 == 1 {
            v[0] = max(v[0], v[n - 1]);
        }
        n = half;
    }
    v[0]
}
