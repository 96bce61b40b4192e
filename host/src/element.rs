//! The element types attention runs on.

use half::{bf16, f16};

/// An element type of attention's tensors: `f16`, `bf16` (16-bit tensor-core types) or `f32`
/// (TF32 tensor cores from 8.0, CUDA cores on 7.x; see [`F32Precision`]). Sealed. It is a `cudarc` device type, so
/// `CudaSlice<T>` buffers of it can be passed straight in.
pub trait Element:
    Copy
    + Default
    + Send
    + Sync
    + PartialEq
    + std::fmt::Debug
    + 'static
    + cudarc::driver::DeviceRepr
    + cudarc::driver::ValidAsZeroBits
    + sealed::Sealed
{
    /// `"f16"`, `"bf16"` or `"f32"`, as error messages and reports print it.
    const NAME: &'static str;
    /// Bits of mantissa stored (10 for f16, 7 for bf16, 23 for f32).
    const MANTISSA_BITS: u32;
    /// The exponent below which [`Element::ulp`] stops shrinking: f16's smallest normal (−14)
    /// for both 16-bit types (the tests' criterion has always floored there), f32's (−126).
    const ULP_FLOOR_EXPONENT: i32;
    /// The kernels' name for this type: selects the rows of the kernel configuration table.
    const DTYPE: rustflash_abi::Dtype;
    /// This value as f32 (exact).
    fn to_f32(self) -> f32;
    /// `x` rounded to the nearest value of this type (ties to even).
    fn from_f32(x: f32) -> Self;
    /// This value as f64 (exact).
    fn to_f64(self) -> f64 {
        self.to_f32() as f64
    }
    /// `x` rounded to the nearest value of this type (ties to even), back in f32.
    fn round_f32(x: f32) -> f32 {
        Self::from_f32(x).to_f32()
    }
    /// One unit in the last place of `|x|` in this type, at least that of `2^ULP_FLOOR_EXPONENT`.
    fn ulp(x: f64) -> f64 {
        let e = x.abs().max(f64::MIN_POSITIVE).log2().floor().max(Self::ULP_FLOOR_EXPONENT as f64);
        2f64.powf(e - Self::MANTISSA_BITS as f64)
    }
}

impl Element for f16 {
    const NAME: &'static str = "f16";
    const MANTISSA_BITS: u32 = 10;
    const ULP_FLOOR_EXPONENT: i32 = -14;
    const DTYPE: rustflash_abi::Dtype = rustflash_abi::Dtype::F16;
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}

impl Element for bf16 {
    const NAME: &'static str = "bf16";
    const MANTISSA_BITS: u32 = 7;
    const ULP_FLOOR_EXPONENT: i32 = -14;
    const DTYPE: rustflash_abi::Dtype = rustflash_abi::Dtype::Bf16;
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

impl Element for f32 {
    const NAME: &'static str = "f32";
    const MANTISSA_BITS: u32 = 23;
    const ULP_FLOOR_EXPONENT: i32 = -126;
    const DTYPE: rustflash_abi::Dtype = rustflash_abi::Dtype::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(x: f32) -> Self {
        x
    }
}

/// How float32 inputs are multiplied on compute capability 8.0 and newer (the option is ignored
/// for f16 and bf16). Both accumulate in f32 and keep the softmax in f32.
///
/// | mode | products | relative error of O, typical (head dim 64..128, N(0, 1) inputs) |
/// | --- | --- | --- |
/// | [`F32Precision::Tf32`] | one TF32 product per pair: operands rounded to 10 mantissa bits | ~1e-3 |
/// | [`F32Precision::Accurate`] | three TF32 products (`hi·hi + hi·lo + lo·hi`, "3xTF32") | ~1e-6 |
///
/// `Accurate` is the default, as PyTorch's float32 matrix products are full precision unless
/// TF32 is allowed. Tests bound each mode against a CPU attention that rounds the operands of
/// every product the same way (docs/testing.md).
///
/// On the Volta path (compute capability 7.x, which has no TF32) float32 runs on the CUDA cores,
/// plain float32 products and sums, in either mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum F32Precision {
    /// Operands split into high and low TF32 parts, three products: about float32's accuracy at
    /// a third of the TF32 tensor-core rate.
    #[default]
    Accurate,
    /// Operands rounded to TF32, one product: the tensor cores' full TF32 rate, about float16's
    /// relative precision with float32's range.
    Tf32,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
    impl Sealed for f32 {}
}
