//! The arithmetic a reference evaluation runs in: float64 throughout ([`Exact`]), or f32 with
//! results rounded to the input type where a tensor-core kernel rounds them ([`Plain`]).

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
