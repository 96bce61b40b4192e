//! Attention backward: dQ, dK, dV from dO, recomputing P row by row.
//!
//! With `D_i = dO_i · O_i`, `dP = dO Vᵀ`, `dS = P ∘ (dP − D)`: `dV = Pᵀ dO`,
//! `dQ = scale · dS K`, `dK = scale · dSᵀ Q` (summed over the query heads of a K/V head).

use super::Inputs;
use super::forward::{dot, row_softmax};
use super::precision::{Float, Precision};

/// Gradients as f64, contiguous: dQ like Q `(batch, seqlen_q, heads_q, headdim)`, dK and dV
/// like K `(batch, seqlen_k, heads_kv, headdim)`.
pub struct Gradients {
    pub dq: Vec<f64>,
    pub dk: Vec<f64>,
    pub dv: Vec<f64>,
}

pub(super) fn backward<P: Precision>(inputs: &Inputs<'_>, dout: &super::Operand<'_>) -> Gradients {
    let sh = inputs.shape;
    let (d, sq, sk) = (sh.headdim, sh.seqlen_q, sh.seqlen_k);
    let mut grads = Gradients {
        dq: vec![0.0; sh.batch * sq * sh.heads_q * d],
        dk: vec![0.0; sh.batch * sk * sh.heads_kv * d],
        dv: vec![0.0; sh.batch * sk * sh.heads_kv * d],
    };
    let scale = P::F::from_f64(inputs.scale);

    let tasks = super::for_each_kv_head(sh, |b, hk| {
        let keys = inputs.k.operand_rows::<P>(b, hk, sk);
        let values = inputs.v.operand_rows::<P>(b, hk, sk);
        let mut dk = vec![vec![P::F::ZERO; d]; sk];
        let mut dv = vec![vec![P::F::ZERO; d]; sk];
        let mut dq_rows = Vec::new();
        for h in hk * sh.group_size()..(hk + 1) * sh.group_size() {
            for i in 0..sq {
                let q = inputs.q.operand_row::<P>(b, i, h);
                // D from dO as stored; the products take dO as an operand.
                let dout_i = dout.row::<P::F>(b, i, h);
                let dout_op = dout.operand_row::<P>(b, i, h);
                let visible = sh.visible_keys(i, inputs.causal);
                let p = row_softmax::<P>(&q, &keys, visible, inputs.scale).p;
                let mut o = vec![P::F::ZERO; d];
                for (pj, v) in p.iter().zip(&values) {
                    axpy(&mut o, P::operand(*pj), v);
                }
                let o: Vec<P::F> = o.into_iter().map(P::round).collect();
                let big_d = dot(&dout_i, &o);
                let mut dq = vec![P::F::ZERO; d];
                for j in 0..visible {
                    let dp = P::round(dot(&dout_op, &values[j]));
                    let ds = P::round(p[j] * (dp - big_d));
                    axpy(&mut dq, P::operand(ds), &keys[j]);
                    axpy(&mut dk[j], P::operand(ds), &q);
                    axpy(&mut dv[j], P::operand(p[j]), &dout_op);
                }
                dq_rows.push((
                    i,
                    h,
                    dq.into_iter().map(|x| P::round(scale * x).to_f64()).collect::<Vec<_>>(),
                ));
            }
        }
        let dk: Vec<Vec<f64>> =
            dk.into_iter().map(|r| r.into_iter().map(|x| P::round(scale * x).to_f64()).collect()).collect();
        let dv: Vec<Vec<f64>> =
            dv.into_iter().map(|r| r.into_iter().map(|x| P::round(x).to_f64()).collect()).collect();
        (b, hk, dq_rows, dk, dv)
    });
    for (b, hk, dq_rows, dk, dv) in tasks {
        for (i, h, row) in dq_rows {
            let at = ((b * sq + i) * sh.heads_q + h) * d;
            grads.dq[at..at + d].copy_from_slice(&row);
        }
        for j in 0..sk {
            let at = ((b * sk + j) * sh.heads_kv + hk) * d;
            grads.dk[at..at + d].copy_from_slice(&dk[j]);
            grads.dv[at..at + d].copy_from_slice(&dv[j]);
        }
    }
    grads
}

fn axpy<F: Float>(acc: &mut [F], a: F, x: &[F]) {
    for (y, &xi) in acc.iter_mut().zip(x) {
        *y = *y + a * xi;
    }
}
