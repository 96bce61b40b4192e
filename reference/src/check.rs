//! The accuracy criterion: ours must be within twice (three times for gradients) the error of
//! plain attention in the input precision, plus a slack of a few units in the last place.
//!
//! Per tensor: `max|ours − ref| ≤ factor · max|plain − ref| + slack`. A NaN in ours fails at once
//! (outputs are poisoned with NaN before a launch, so an element never written is caught).
//! Infinite reference values (LSE of fully masked rows) must be matched exactly.

use rustflash::Element;
use std::fmt;

/// The margin of one comparison.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    /// 2 for outputs, 3 for gradients.
    pub factor: f64,
    /// Absolute slack added to the bound.
    pub slack: f64,
}

impl Tolerance {
    /// Forward outputs in type `T`: factor 2, slack 2 ulp of `max|ref|` in `T`.
    pub fn output<T: Element>(reference: &[f64]) -> Self {
        Tolerance { factor: 2.0, slack: 2.0 * T::ulp(max_abs_finite(reference)) }
    }
    /// Gradients in type `T`: factor 3, slack 2 ulp of `max|ref|` in `T`.
    pub fn gradient<T: Element>(reference: &[f64]) -> Self {
        Tolerance { factor: 3.0, slack: 2.0 * T::ulp(max_abs_finite(reference)) }
    }
    /// LSE, kept in f32: factor 2, slack 8 ulp of `max|ref|` in f32.
    pub fn lse(reference: &[f64]) -> Self {
        let m = max_abs_finite(reference).max(1.0);
        Tolerance { factor: 2.0, slack: 8.0 * 2f64.powf(m.log2().floor() - 23.0) }
    }
}

/// The outcome of comparing one tensor.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub name: String,
    /// `max|ours − ref|`.
    pub error: f64,
    /// `max|plain − ref|`.
    pub plain_error: f64,
    /// `factor · plain_error + slack`.
    pub bound: f64,
    /// `error / bound`: at most 1 to pass.
    pub ratio: f64,
    /// The element with the largest `|ours − ref|` (or the first NaN / infinity mismatch).
    pub worst: Option<Worst>,
}

#[derive(Clone, Debug)]
pub struct Worst {
    /// Multi-index in the tensor's shape.
    pub index: Vec<usize>,
    pub ours: f64,
    pub reference: f64,
    pub plain: f64,
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.ratio <= 1.0
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: max error {:.3e}, plain {:.3e}, bound {:.3e}, ratio {:.3}",
            self.name, self.error, self.plain_error, self.bound, self.ratio
        )?;
        if let Some(w) = &self.worst {
            write!(
                f,
                "; worst at {:?}: ours {}, reference {}, plain {}",
                w.index, w.ours, w.reference, w.plain
            )?;
        }
        Ok(())
    }
}

/// Compares `ours` with the reference, against the error of `plain`. All three are laid out
/// contiguously in `shape`.
pub fn compare(
    name: &str,
    shape: &[usize],
    ours: &[f64],
    plain: &[f64],
    reference: &[f64],
    tol: Tolerance,
) -> Comparison {
    let numel: usize = shape.iter().product();
    let mut c = Comparison {
        name: name.to_string(),
        error: 0.0,
        plain_error: 0.0,
        bound: 0.0,
        ratio: 0.0,
        worst: None,
    };
    if ours.len() != numel || plain.len() != numel || reference.len() != numel {
        c.error = f64::INFINITY;
        c.ratio = f64::INFINITY;
        c.name = format!(
            "{name} (lengths {} / {} / {}, expected {numel})",
            ours.len(),
            plain.len(),
            reference.len()
        );
        return c;
    }
    let worst_at = |i: usize| Worst {
        index: unravel(i, shape),
        ours: ours[i],
        reference: reference[i],
        plain: plain[i],
    };
    let mut worst = None;
    for i in 0..numel {
        let (o, r, p) = (ours[i], reference[i], plain[i]);
        if r.is_infinite() {
            if o != r {
                c.error = f64::INFINITY;
                worst.get_or_insert(i);
            }
            continue;
        }
        let e = (o - r).abs();
        if e.is_nan() || e > c.error {
            c.error = if e.is_nan() { f64::INFINITY } else { e };
            worst = Some(i);
            if e.is_nan() {
                break;
            }
        }
        c.plain_error = c.plain_error.max((p - r).abs());
    }
    c.bound = tol.factor * c.plain_error + tol.slack;
    c.ratio = if c.error == 0.0 { 0.0 } else { c.error / c.bound };
    c.worst = worst.map(worst_at);
    c
}

fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (k, &n) in shape.iter().enumerate().rev() {
        idx[k] = i % n.max(1);
        i /= n.max(1);
    }
    idx
}

fn max_abs_finite(x: &[f64]) -> f64 {
    x.iter().filter(|v| v.is_finite()).fold(0.0, |m, v| m.max(v.abs()))
}
