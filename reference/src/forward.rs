//! Attention forward, row by row: `O = softmax(scale · Q Kᵀ + mask) V` and `LSE`.

use super::precision::{Float, Precision};
use super::{Inputs, Rows};

/// O `(batch, rows, heads_q, headdim)` and LSE `(batch, heads_q, rows)` as f64, for the chosen
/// rows. Fully masked rows give O = 0 and LSE = +inf.
pub struct ForwardOutput {
    pub o: Vec<f64>,
    pub lse: Vec<f64>,
    /// The query rows evaluated, in order.
    pub rows: Vec<usize>,
}

/// One query row's softmax over the keys it sees, in precision `P`.
pub(super) struct RowSoftmax<F> {
    /// Rounded probabilities, one per visible key.
    pub p: Vec<F>,
    /// `max + ln(sum)` of the scaled scores, or +inf when no key is visible.
    pub lse: f64,
}

/// Scores `scale · round(q · k_j)`, then softmax in `P::F` with `P` rounded.
pub(super) fn row_softmax<P: Precision>(
    q: &[P::F],
    keys: &[Vec<P::F>],
    visible: usize,
    scale: f64,
) -> RowSoftmax<P::F> {
    if visible == 0 {
        return RowSoftmax { p: Vec::new(), lse: f64::INFINITY };
    }
    let scale = P::F::from_f64(scale);
    let s: Vec<P::F> = keys[..visible].iter().map(|k| scale * P::round(dot(q, k))).collect();
    let max = s.iter().fold(P::F::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    let e: Vec<P::F> = s.iter().map(|&x| (x - max).exp()).collect();
    let sum = e.iter().fold(P::F::ZERO, |a, &x| a + x);
    let p = e.iter().map(|&x| P::round(x / sum)).collect();
    RowSoftmax { p, lse: (max + sum.ln()).to_f64() }
}

pub(super) fn dot<F: Float>(a: &[F], b: &[F]) -> F {
    a.iter().zip(b).fold(F::ZERO, |acc, (&x, &y)| acc + x * y)
}

pub(super) fn forward<P: Precision>(inputs: &Inputs<'_>, rows: &Rows) -> ForwardOutput {
    let sh = inputs.shape;
    let rows = rows.resolve(sh.seqlen_q);
    let (nr, d, hq) = (rows.len(), sh.headdim, sh.heads_q);
    let mut o = vec![0.0; sh.batch * nr * hq * d];
    let mut lse = vec![0.0; sh.batch * hq * nr];

    // One task per (batch, kv head): it owns the O and LSE entries of its query heads.
    let tasks = super::for_each_kv_head(sh, |b, hk| {
        let keys = inputs.k.operand_rows::<P>(b, hk, sh.seqlen_k);
        let values = inputs.v.operand_rows::<P>(b, hk, sh.seqlen_k);
        let mut out = Vec::new();
        for h in hk * sh.group_size()..(hk + 1) * sh.group_size() {
            for (ri, &i) in rows.iter().enumerate() {
                let q = inputs.q.operand_row::<P>(b, i, h);
                let visible = sh.visible_keys(i, inputs.causal);
                let sm = row_softmax::<P>(&q, &keys, visible, inputs.scale);
                let mut acc = vec![P::F::ZERO; d];
                for (&p, v) in sm.p.iter().zip(&values) {
                    let p = P::operand(p);
                    for (a, &x) in acc.iter_mut().zip(v) {
                        *a = *a + p * x;
                    }
                }
                let row: Vec<f64> = acc.into_iter().map(|x| P::round(x).to_f64()).collect();
                out.push((h, ri, row, sm.lse));
            }
        }
        (b, out)
    });
    for (b, results) in tasks {
        for (h, ri, row, l) in results {
            let at = ((b * nr + ri) * hq + h) * d;
            o[at..at + d].copy_from_slice(&row);
            lse[(b * hq + h) * nr + ri] = l;
        }
    }
    ForwardOutput { o, lse, rows }
}
