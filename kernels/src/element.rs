//! The element types of attention's inputs and outputs, as the kernels see them.
//!
//! A kernel body is written once against [`Element`]; a new input type (f32 through TF32, say)
//! is a new implementation here and of the matrix-multiply family that consumes it, not a new
//! body.

pub use crate::primitives::mma::{Bf16, F16};
use crate::primitives::mma::MmaInput;

/// A 16-bit floating-point element type of the tensor cores.
pub trait Element: MmaInput + 'static {
    /// Bytes per element in memory.
    const BYTES: usize;
    /// Rounds `(lo, hi)` to this type and packs them into one 32-bit register, `lo` in the low
    /// half (the order of consecutive elements in memory and in `mma` fragments).
    #[inline(always)]
    fn pack2(lo: f32, hi: f32) -> u32 {
        <Self as MmaInput>::pack(lo, hi)
    }
    /// Flips the sign of both elements of a packed pair.
    const SIGN_BITS: u32;
}

impl Element for F16 {
    const BYTES: usize = 2;
    const SIGN_BITS: u32 = 0x8000_8000;
}

impl Element for Bf16 {
    const BYTES: usize = 2;
    const SIGN_BITS: u32 = 0x8000_8000;
}
