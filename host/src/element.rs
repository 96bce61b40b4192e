//! The element types attention runs on.

use half::{bf16, f16};

/// A 16-bit floating-point element type of the tensor cores (`f16`, `bf16`). Sealed. It is a
/// `cudarc` device type, so `CudaSlice<T>` buffers of it can be passed straight in.
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
    /// `"f16"` or `"bf16"`, as error messages and reports print it.
    const NAME: &'static str;
    /// Bits of mantissa stored (10 for f16, 7 for bf16).
    const MANTISSA_BITS: u32;
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
    /// One unit in the last place of `|x|` in this type (of the smallest normal at zero).
    fn ulp(x: f64) -> f64 {
        let e = x.abs().max(f64::MIN_POSITIVE).log2().floor().max(-14.0);
        2f64.powf(e - Self::MANTISSA_BITS as f64)
    }
}

impl Element for f16 {
    const NAME: &'static str = "f16";
    const MANTISSA_BITS: u32 = 10;
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
    const DTYPE: rustflash_abi::Dtype = rustflash_abi::Dtype::Bf16;
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}
