//! The arithmetic a reference evaluation runs in: float64 throughout ([`Exact`]), or f32 with
//! results rounded to the input type where a tensor-core kernel rounds them ([`Plain`]), or, for
//! f32 inputs, f32 with the operands of every product rounded as the TF32 modes round them
//! ([`Tf32Plain`], [`Tf32x3Plain`]).

use rustflash::Element;
use std::marker::PhantomData;
use std::ops::{Add, Div, Mul, Sub};

/// The few float operations the reference needs, for f32 and f64.
pub trait Float:
    Copy
    + Send
    + Sync
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
{
    const ZERO: Self;
    const NEG_INFINITY: Self;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
}

macro_rules! impl_float {
    ($t:ty) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
        }
    };
}
impl_float!(f32);
impl_float!(f64);

/// Where intermediate results are rounded.
pub trait Precision: Send + Sync {
    type F: Float;
    /// Rounds a value that a kernel stores in the input type (S, P, O, dP, dS, gradients).
    fn round(x: Self::F) -> Self::F;
    /// Rounds a value as it enters a matrix product (Q, K, V, dO, P, dS): unchanged unless the
    /// products take fewer bits than the type has (TF32).
    fn operand(x: Self::F) -> Self::F {
        x
    }
}

/// `x` rounded to TF32 (10 mantissa bits), to nearest with ties away from zero, as
/// `cvt.rna.tf32.f32` does; infinities and NaN unchanged.
pub fn round_tf32(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    // Adding half a TF32 unit to the magnitude bits and cutting the 13 low bits rounds the
    // magnitude to nearest, ties away from zero (a carry into the exponent is right too).
    f32::from_bits((x.to_bits() + 0x1000) & !0x1fff)
}

/// f32 attention as the TF32 mode computes it: every product's operands rounded to TF32,
/// accumulation and softmax in f32, nothing else rounded.
pub struct Tf32Plain;

impl Precision for Tf32Plain {
    type F = f32;
    fn round(x: f32) -> f32 {
        x
    }
    fn operand(x: f32) -> f32 {
        round_tf32(x)
    }
}

/// f32 attention as the accurate (3xTF32) mode computes it: every product's operands replaced by
/// the sum of their high and low TF32 parts (22 significant bits), accumulation and softmax in
/// f32. (The kernels also drop the `lo·lo` term, of the same order as the low part's rounding.)
pub struct Tf32x3Plain;

impl Precision for Tf32x3Plain {
    type F = f32;
    fn round(x: f32) -> f32 {
        x
    }
    fn operand(x: f32) -> f32 {
        let hi = round_tf32(x);
        hi + round_tf32(x - hi)
    }
}

/// Float64 throughout, no rounding: the reference results are compared against.
pub struct Exact;

impl Precision for Exact {
    type F = f64;
    fn round(x: f64) -> f64 {
        x
    }
}

/// "Plain" attention in the input precision `T`: products accumulated in f32, S, P, O (and dP,
/// dS and the gradients) rounded to `T`, softmax in f32. Its error against [`Exact`] sets the
/// bound a kernel must meet.
pub struct Plain<T>(PhantomData<T>);

impl<T: Element> Precision for Plain<T> {
    type F = f32;
    fn round(x: f32) -> f32 {
        T::round_f32(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf32_rounding_is_to_nearest_ties_away() {
        let one = 1.0f32;
        let unit = 2f32.powi(-10);
        assert_eq!(round_tf32(one + unit / 4.0), one);
        assert_eq!(round_tf32(one + unit / 2.0), one + unit);
        assert_eq!(round_tf32(-(one + unit / 2.0)), -(one + unit));
        assert_eq!(round_tf32(one + 3.0 * unit / 4.0), one + unit);
        assert_eq!(round_tf32(f32::INFINITY), f32::INFINITY);
        // The accurate mode's operand keeps 22 significant bits.
        let x = 1.0 + 2f32.powi(-20);
        assert_eq!(Tf32x3Plain::operand(x), x);
        assert_eq!(Tf32Plain::operand(x), 1.0);
    }
}
