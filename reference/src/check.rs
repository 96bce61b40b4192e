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
    /// This tolerance for the float32 families of f32 accuracy (3xTF32, the CUDA cores): the
    /// slack at least 32 ulp in f32 of `max(magnitude, 1)`, `magnitude` the largest `|ref|` of
    /// the tensor ([`max_abs_finite`]) or, for gradients, of dQ, dK and dV together. The kernels'
    /// arithmetic differs from plain attention's by more than rounding order at f32's scale:
    /// the tensor cores truncate each `mma`'s sum, `ex2.approx` is within 2 ulp, the low part's
    /// `lo · lo` product is dropped, and `D = rowsum(dO ∘ O)` is summed in another order than
    /// `dP`'s row, so a gradient whose exact value is 0 (one key: `dS = P (dP − D)` cancels, in
    /// plain attention exactly) keeps a residue summed over its key's rows as dV's values are,
    /// which f32's ulp of its own `max|ref| = 0` would not allow. Measured on the H100: 8 ulp of
    /// the tensor's own magnitude left a head-dim-1 gradient at 1.08 times its bound, and dK of a
    /// single key after 2400 query rows (CUDA cores) at 7.2 times it.
    pub fn f32_accurate(self, magnitude: f64) -> Self {
        let m = magnitude.max(1.0);
        let ulp = 2f64.powf(m.log2().floor() - 23.0);
        Tolerance { slack: self.slack.max(32.0 * ulp), ..self }
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

/// The largest finite `|x|`, 0 if none.
pub fn max_abs_finite(x: &[f64]) -> f64 {
    x.iter().filter(|v| v.is_finite()).fold(0.0, |m, v| m.max(v.abs()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::{assert_abs_diff_eq, assert_relative_eq};
    use half::{bf16, f16};

    #[test]
    fn tolerances_are_the_documented_ones() {
        // max|ref| = 3 (the infinity is left out): ulp(3) is 2^-9 in f16, 2^-6 in bf16.
        let reference = [0.5, -3.0, f64::INFINITY];
        let t = Tolerance::output::<f16>(&reference);
        assert_relative_eq!(t.factor, 2.0);
        assert_relative_eq!(t.slack, 2.0 * 2f64.powi(-9));
        let t = Tolerance::gradient::<bf16>(&reference);
        assert_relative_eq!(t.factor, 3.0);
        assert_relative_eq!(t.slack, 2.0 * 2f64.powi(-6));
        // LSE: 8 ulp of f32 at max(|ref|, 1).
        assert_relative_eq!(Tolerance::lse(&[5.0, f64::INFINITY]).slack, 8.0 * 2f64.powi(2 - 23));
        assert_relative_eq!(Tolerance::lse(&[0.1]).slack, 8.0 * 2f64.powi(-23));
    }

    #[test]
    fn compare_measures_the_largest_errors() {
        let reference = [1.0, 2.0, 3.0, 4.0];
        let plain = [1.1, 2.0, 3.0, 3.8];
        let ours = [1.0, 2.05, 3.0, 4.01];
        let c = compare("x", &[2, 2], &ours, &plain, &reference, Tolerance { factor: 2.0, slack: 0.1 });
        assert_abs_diff_eq!(c.error, 0.05, epsilon = 1e-12);
        assert_abs_diff_eq!(c.plain_error, 0.2, epsilon = 1e-12);
        assert_abs_diff_eq!(c.bound, 0.5, epsilon = 1e-12);
        assert_abs_diff_eq!(c.ratio, 0.1, epsilon = 1e-12);
        assert!(c.passed());
        assert_eq!(c.worst.map(|w| w.index), Some(vec![0, 1]));
    }

    #[test]
    fn an_error_just_over_the_bound_fails() {
        let reference = [1.0, 2.0];
        let plain = [1.25, 2.0];
        let tol = Tolerance { factor: 2.0, slack: 0.0 };
        let inside = compare("x", &[2], &[1.0, 2.5], &plain, &reference, tol);
        assert_relative_eq!(inside.ratio, 1.0);
        assert!(inside.passed());
        let outside = compare("x", &[2], &[1.0, 2.5 + 1e-9], &plain, &reference, tol);
        assert!(!outside.passed(), "{outside}");
    }

    #[test]
    fn nan_and_infinity_mismatches_fail() {
        let tol = Tolerance { factor: 2.0, slack: 1.0 };
        let c = compare("x", &[3], &[0.0, f64::NAN, 0.0], &[0.0; 3], &[0.0; 3], tol);
        assert!(!c.passed());
        assert_eq!(c.worst.map(|w| w.index), Some(vec![1]));
        // An infinite reference (LSE of a fully masked row) is matched exactly or not at all.
        let reference = [f64::INFINITY, 0.0];
        assert!(compare("x", &[2], &[f64::INFINITY, 0.0], &reference, &reference, tol).passed());
        let c = compare("x", &[2], &[1e300, 0.0], &reference, &reference, tol);
        assert!(!c.passed());
        assert_eq!(c.worst.map(|w| w.index), Some(vec![0]));
    }

    #[test]
    fn a_wrong_length_fails() {
        let tol = Tolerance { factor: 2.0, slack: 1.0 };
        let c = compare("x", &[2, 2], &[0.0; 3], &[0.0; 4], &[0.0; 4], tol);
        assert!(!c.passed());
        assert!(c.name.contains("lengths 3 / 4 / 4"), "{}", c.name);
    }

    #[test]
    fn unravel_is_row_major() {
        assert_eq!(unravel(0, &[2, 3, 4]), vec![0, 0, 0]);
        assert_eq!(unravel(23, &[2, 3, 4]), vec![1, 2, 3]);
        assert_eq!(unravel(13, &[2, 3, 4]), vec![1, 0, 1]);
    }
}
