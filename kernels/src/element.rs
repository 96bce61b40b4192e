//! The element types of attention's inputs and outputs, as the kernels see them.
//!
//! The kernel body and the mainloop are written once against [`Element`] (addresses scale by
//! [`Element::BYTES`], values are rounded and packed by [`Element::pack2`]). The parts that move
//! raw bits — the shared-memory tile layout, the tile loads and the epilogue's stores — are
//! written for 2-byte elements: a 4-byte input (f32 through TF32) brings its own implementations
//! of those parts and of the matrix-multiply family, not a new body.

#[cfg(target_feature = "sm_80")]
use crate::primitives::convert::{pack_bf16x2, unpack_bf16x2};
use crate::primitives::convert::{pack_f16x2, unpack_f16x2};

/// IEEE half precision.
pub enum F16 {}
/// bfloat16.
pub enum Bf16 {}

/// A 16-bit floating-point element type of the tensor cores.
pub trait Element: 'static {
    /// Bytes per element in memory.
    const BYTES: usize;
    /// Selects the `bf16` forms of the tensor-core instructions.
    const IS_BF16: bool;
    /// Flips the sign of both elements of a packed pair.
    const SIGN_BITS: u32;
    /// Rounds `(lo, hi)` to this type and packs them into one 32-bit register, `lo` in the low
    /// half (the order of consecutive elements in memory and in `mma` fragments).
    fn pack2(lo: f32, hi: f32) -> u32;
    /// The two elements of a packed pair as f32 (exact), the low half first.
    fn unpack2(x: u32) -> (f32, f32);
}

impl Element for F16 {
    const BYTES: usize = 2;
    const IS_BF16: bool = false;
    const SIGN_BITS: u32 = 0x8000_8000;
    #[inline(always)]
    fn pack2(lo: f32, hi: f32) -> u32 {
        pack_f16x2(lo, hi)
    }
    #[inline(always)]
    fn unpack2(x: u32) -> (f32, f32) {
        unpack_f16x2(x)
    }
}

// bf16 arithmetic starts with sm_80 (Volta and Turing have none).
#[cfg(target_feature = "sm_80")]
impl Element for Bf16 {
    const BYTES: usize = 2;
    const IS_BF16: bool = true;
    const SIGN_BITS: u32 = 0x8000_8000;
    #[inline(always)]
    fn pack2(lo: f32, hi: f32) -> u32 {
        pack_bf16x2(lo, hi)
    }
    #[inline(always)]
    fn unpack2(x: u32) -> (f32, f32) {
        unpack_bf16x2(x)
    }
}
