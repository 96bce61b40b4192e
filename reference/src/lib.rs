//! Attention computed on the CPU, for checking rustflash's GPU kernels: used by its tests and
//! benchmark, not part of the library users link.
//!
//! - [`Attention::forward`] / [`Attention::backward`]: float64 throughout, the reference.
//! - [`Attention::forward_plain`] / [`Attention::backward_plain`]: "plain" attention in the input
//!   precision (products accumulated in f32; S, P, O, dP, dS and gradients rounded to the input
//!   type; softmax in f32). Its error against the reference is the yardstick of [`check`].
//!
//! Inputs are strided host views ([`HostView`] of f16 or bf16, [`F64View`] of f64) of shape
//! `(batch, seqlen, heads, headdim)`; causal masking is aligned to the bottom right (query `i`
//! sees key `j` when `j <= i + seqlen_k − seqlen_q`); heads_q is a multiple of heads_kv (GQA,
//! MQA). Fully masked rows give O = 0 and LSE = +inf. Work is spread over all cores, one task per
//! (batch, K/V head). The forward pass can evaluate a subset of query rows ([`Rows::Sample`]), for
//! checking 128k-long sequences. Arguments that do not fit the problem are an [`Error`] naming
//! the argument.

mod backward;
pub mod check;
mod error;
mod forward;
mod precision;

pub use backward::Gradients;
pub use error::{Error, Result};
pub use forward::ForwardOutput;
pub use precision::{Exact, Float, Plain, Precision, Tf32Plain, Tf32x3Plain, round_tf32};

use rustflash::layout::{AttentionShape, HostView, Layout4};
use rustflash::{Element, MmaFamily};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A 4-D host tensor whose elements the reference reads as f64.
pub trait Tensor4: Sync {
    fn layout(&self) -> Layout4;
    fn get(&self, idx: [usize; 4]) -> f64;
}

impl<T: Element> Tensor4 for HostView<'_, T> {
    fn layout(&self) -> Layout4 {
        self.layout
    }
    fn get(&self, idx: [usize; 4]) -> f64 {
        self.at(idx).to_f64()
    }
}

/// A float64 host tensor, for inputs made by hand (exact cases, central differences).
///
/// A wrapper, not `HostView<f64>` itself: a `Tensor4` impl for `HostView<f64>` beside the one for
/// every `HostView<T: Element>` would be rejected, since rustflash may one day make f64 an
/// `Element`.
#[derive(Clone, Copy, Debug)]
pub struct F64View<'a>(pub HostView<'a, f64>);

impl Tensor4 for F64View<'_> {
    fn layout(&self) -> Layout4 {
        self.0.layout
    }
    fn get(&self, idx: [usize; 4]) -> f64 {
        self.0.at(idx)
    }
}

/// Which query rows the forward pass evaluates.
#[derive(Clone, Debug)]
pub enum Rows {
    All,
    /// These query rows (same for every batch and head), e.g. a sample of a 128k sequence.
    Sample(Vec<usize>),
}

impl Rows {
    fn resolve(&self, seqlen_q: usize) -> Vec<usize> {
        match self {
            Rows::All => (0..seqlen_q).collect(),
            Rows::Sample(r) => r.clone(),
        }
    }
}

/// One attention problem: its shape, softmax scale and masking.
#[derive(Clone, Copy, Debug)]
pub struct Attention {
    pub shape: AttentionShape,
    pub softmax_scale: f64,
    pub causal: bool,
}

impl Attention {
    /// Exact (float64) forward pass: O and LSE for the chosen rows.
    pub fn forward(
        &self,
        q: &dyn Tensor4,
        k: &dyn Tensor4,
        v: &dyn Tensor4,
        rows: &Rows,
    ) -> Result<ForwardOutput> {
        self.forward_in::<Exact>(q, k, v, rows)
    }

    /// Plain attention in precision `T` (see the module documentation).
    pub fn forward_plain<T: Element>(
        &self,
        q: &dyn Tensor4,
        k: &dyn Tensor4,
        v: &dyn Tensor4,
        rows: &Rows,
    ) -> Result<ForwardOutput> {
        self.forward_in::<Plain<T>>(q, k, v, rows)
    }

    /// Plain attention for inputs of `T` as a kernel of `family` computes it: [`Tf32Plain`] or
    /// [`Tf32x3Plain`] for the TF32 families, [`Plain`] in `T` for the others (f16, bf16, and
    /// f32 on the CUDA cores).
    pub fn forward_plain_as<T: Element>(
        &self,
        family: MmaFamily,
        q: &dyn Tensor4,
        k: &dyn Tensor4,
        v: &dyn Tensor4,
        rows: &Rows,
    ) -> Result<ForwardOutput> {
        match family {
            MmaFamily::Tf32 => self.forward_in::<Tf32Plain>(q, k, v, rows),
            MmaFamily::Tf32x3 => self.forward_in::<Tf32x3Plain>(q, k, v, rows),
            _ => self.forward_in::<Plain<T>>(q, k, v, rows),
        }
    }

    /// Plain gradients for inputs of `T` as a kernel of `family` computes them (see
    /// [`Attention::forward_plain_as`]).
    pub fn backward_plain_as<T: Element>(
        &self,
        family: MmaFamily,
        q: &dyn Tensor4,
        k: &dyn Tensor4,
        v: &dyn Tensor4,
        dout: &dyn Tensor4,
    ) -> Result<Gradients> {
        match family {
            MmaFamily::Tf32 => self.backward_in::<Tf32Plain>(q, k, v, dout),
            MmaFamily::Tf32x3 => self.backward_in::<Tf32x3Plain>(q, k, v, dout),
            _ => self.backward_in::<Plain<T>>(q, k, v, dout),
        }
    }

    /// Exact (float64) gradients of `Σ O ∘ dout` with respect to Q, K and V.
    pub fn backward(
        &self,
        q: &dyn Tensor4,
        k: &dyn Tensor4,
        v: &dyn Tensor4,
        dout: &dyn Tensor4,
    ) -> Result<Gradients> {
        self.backward_in::<Exact>(q, k, v, dout)
    }

    /// Plain gradients in precision `T`.
    pub fn backward_plain<T: Element>(
        &self,
        q: &dyn Tensor4,
        k: &dyn Tensor4,
        v: &dyn Tensor4,
        dout: &dyn Tensor4,
    ) -> Result<Gradients> {
        self.backward_in::<Plain<T>>(q, k, v, dout)
    }

    /// The forward pass in precision `P`, after the shape checks.
    fn forward_in<P: Precision>(
        &self,
        q: &dyn Tensor4,
        k: &dyn Tensor4,
        v: &dyn Tensor4,
        rows: &Rows,
    ) -> Result<ForwardOutput> {
        let inputs = self.inputs(q, k, v, rows)?;
        Ok(forward::forward::<P>(&inputs, rows))
    }

    /// The gradients in precision `P`, after the shape checks.
    fn backward_in<P: Precision>(
        &self,
        q: &dyn Tensor4,
        k: &dyn Tensor4,
        v: &dyn Tensor4,
        dout: &dyn Tensor4,
    ) -> Result<Gradients> {
        let inputs = self.inputs(q, k, v, &Rows::All)?;
        check_shape("dout", dout, self.shape.q_shape())?;
        Ok(backward::backward::<P>(&inputs, &Operand(dout)))
    }

    fn inputs<'a>(
        &self,
        q: &'a dyn Tensor4,
        k: &'a dyn Tensor4,
        v: &'a dyn Tensor4,
        rows: &Rows,
    ) -> Result<Inputs<'a>> {
        let sh = self.shape;
        if sh.heads_kv == 0 || sh.heads_q % sh.heads_kv != 0 {
            return Err(Error::invalid(
                "heads_q",
                format!("a multiple of heads_kv = {}", sh.heads_kv),
                sh.heads_q,
            ));
        }
        check_shape("q", q, sh.q_shape())?;
        check_shape("k", k, sh.kv_shape())?;
        check_shape("v", v, sh.kv_shape())?;
        if let Rows::Sample(r) = rows {
            if let Some(&bad) = r.iter().find(|&&i| i >= sh.seqlen_q) {
                return Err(Error::invalid(
                    "rows",
                    format!("query rows below seqlen_q = {}", sh.seqlen_q),
                    bad,
                ));
            }
        }
        Ok(Inputs {
            shape: sh,
            scale: self.softmax_scale,
            causal: self.causal,
            q: Operand(q),
            k: Operand(k),
            v: Operand(v),
        })
    }
}

fn check_shape(name: &'static str, t: &dyn Tensor4, want: [usize; 4]) -> Result<()> {
    if t.layout().shape != want {
        return Err(Error::invalid(name, format!("shape {want:?}"), format!("{:?}", t.layout().shape)));
    }
    Ok(())
}

pub(crate) struct Inputs<'a> {
    shape: AttentionShape,
    scale: f64,
    causal: bool,
    q: Operand<'a>,
    k: Operand<'a>,
    v: Operand<'a>,
}

/// A tensor read one `headdim`-long row at a time, in the evaluation's float type.
pub(crate) struct Operand<'a>(&'a dyn Tensor4);

impl Operand<'_> {
    fn row<F: Float>(&self, b: usize, s: usize, h: usize) -> Vec<F> {
        let d = self.0.layout().shape[3];
        (0..d).map(|x| F::from_f64(self.0.get([b, s, h, x]))).collect()
    }

    /// Row `(b, s, h)` as the operand of a product in precision `P`.
    fn operand_row<P: Precision>(&self, b: usize, s: usize, h: usize) -> Vec<P::F> {
        self.row::<P::F>(b, s, h).into_iter().map(P::operand).collect()
    }

    /// Rows `0..n` of head `h` of batch `b` as operands of products in precision `P`.
    fn operand_rows<P: Precision>(&self, b: usize, h: usize, n: usize) -> Vec<Vec<P::F>> {
        (0..n).map(|s| self.operand_row::<P>(b, s, h)).collect()
    }
}

/// Runs `task(batch, kv_head)` for every pair on all cores; results in no particular order.
fn for_each_kv_head<R: Send>(shape: AttentionShape, task: impl Fn(usize, usize) -> R + Sync) -> Vec<R> {
    let pairs: Vec<(usize, usize)> =
        (0..shape.batch).flat_map(|b| (0..shape.heads_kv).map(move |h| (b, h))).collect();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(pairs.len()));
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(pairs.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(b, h)) = pairs.get(i) else { break };
                    let r = task(b, h);
                    results.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use half::f16;

    fn shape(seqlen_q: usize, seqlen_k: usize, heads_q: usize, heads_kv: usize) -> AttentionShape {
        AttentionShape { batch: 1, seqlen_q, seqlen_k, heads_q, heads_kv, headdim: 2 }
    }

    fn view(data: &[f64], shape: [usize; 4]) -> F64View<'_> {
        F64View(HostView { data, layout: Layout4::contiguous(shape) })
    }

    #[test]
    fn one_key_gives_its_value() {
        // One key: P = 1, O = v, LSE = scale · q·k.
        let att = Attention { shape: shape(1, 1, 1, 1), softmax_scale: 0.5, causal: false };
        let (q, k, v) = ([1.0, 2.0], [3.0, -1.0], [0.25, -7.0]);
        let s = [1, 1, 1, 2];
        let out = att.forward(&view(&q, s), &view(&k, s), &view(&v, s), &Rows::All).unwrap();
        assert_relative_eq!(out.o[0], 0.25);
        assert_relative_eq!(out.o[1], -7.0);
        assert_relative_eq!(out.lse[0], 0.5);
    }

    #[test]
    fn plain_output_is_in_the_input_type() {
        let att = Attention { shape: shape(3, 5, 2, 1), softmax_scale: 0.7, causal: false };
        let data: Vec<f16> = (0..20).map(|i| f16::from_f32((i as f32 * 0.37).sin())).collect();
        let (qs, ks) = ([1, 3, 2, 2], [1, 5, 1, 2]);
        let qv = HostView { data: &data[..12], layout: Layout4::contiguous(qs) };
        let kv = HostView { data: &data[..10], layout: Layout4::contiguous(ks) };
        let vv = HostView { data: &data[10..], layout: Layout4::contiguous(ks) };
        let exact = att.forward(&qv, &kv, &vv, &Rows::All).unwrap();
        let plain = att.forward_plain::<f16>(&qv, &kv, &vv, &Rows::All).unwrap();
        for (&p, &e) in plain.o.iter().zip(&exact.o) {
            assert_eq!(p, f16::from_f64(p).to_f64(), "{p} is not an f16");
            assert_relative_eq!(
                p,
                e,
                epsilon = 2.0 * f16::EPSILON.to_f64(),
                max_relative = f16::EPSILON.to_f64()
            );
        }
    }

    #[test]
    fn errors_name_the_argument() {
        let data = [0.0; 16];
        let att = Attention { shape: shape(2, 2, 3, 2), softmax_scale: 1.0, causal: false };
        let t = view(&data, [1, 2, 2, 2]);
        let e = att.forward(&view(&data, [1, 2, 3, 2]), &t, &t, &Rows::All).err().unwrap();
        assert_eq!(e.argument, "heads_q");
        assert_eq!(e.to_string(), "invalid argument `heads_q`: expected a multiple of heads_kv = 2, got 3");
        let att = Attention { shape: shape(2, 2, 2, 2), ..att };
        let e = att.forward(&t, &t, &view(&data[..8], [1, 2, 2, 1]), &Rows::All).err().unwrap();
        assert_eq!(e.argument, "v");
        let e = att.forward(&t, &t, &t, &Rows::Sample(vec![0, 2])).err().unwrap();
        assert_eq!(e.argument, "rows");
        let e = att.backward(&t, &t, &t, &view(&data, [1, 2, 1, 2])).err().unwrap();
        assert_eq!(e.argument, "dout");
    }
}
