//! The element types of attention's inputs and outputs, as the kernels see them.
//!
//! The kernel bodies, the mainloop, the tile loads and the epilogues are written once against
//! [`Element`]: addresses scale by [`Element::BYTES`], a 16-byte chunk holds
//! [`Element::PER_CHUNK`] elements, and values enter and leave chunks through
//! [`Element::pack_chunk`] and [`Element::unpack`]. A matrix-multiply family takes the types its
//! instructions do (`mma.sync` f16/bf16, WMMA f16, TF32 f32) and checks that at compile time.

#[cfg(target_feature = "sm_80")]
use crate::primitives::convert::{pack_bf16x2, unpack_bf16x2};
use crate::primitives::convert::{pack_f16x2, unpack_f16x2};
use crate::primitives::shared;

/// IEEE half precision.
#[derive(Clone, Copy)]
pub enum F16 {}
/// bfloat16.
#[derive(Clone, Copy)]
pub enum Bf16 {}
/// IEEE single precision.
#[derive(Clone, Copy)]
pub enum F32 {}

/// An element type of Q, K, V, O and the gradients.
pub trait Element: Copy + 'static {
    /// Bytes per element in memory: 2 or 4.
    const BYTES: usize;
    /// Elements per 16-byte chunk (the unit of tile copies and stores).
    const PER_CHUNK: usize = 16 / Self::BYTES;
    /// Selects the `bf16` forms of the tensor-core instructions.
    const IS_BF16: bool;
    /// Flips the sign of every element of a 32-bit word.
    const SIGN_BITS: u32;
    /// Rounds `(lo, hi)` to this 16-bit type and packs them into one 32-bit register, `lo` in
    /// the low half (the order of consecutive elements in memory and in `mma` fragments). Only
    /// the 16-bit families call it (they assert `BYTES == 2` at compile time); for f32 it keeps
    /// `lo`.
    fn pack2(lo: f32, hi: f32) -> u32;
    /// Element `e` (`< PER_CHUNK`) of a chunk's words, as f32 (exact).
    fn unpack(chunk: &[u32; 4], e: usize) -> f32;
    /// The chunk whose first elements are `x` (at most `PER_CHUNK`) rounded to this type, zeros
    /// after them.
    fn pack_chunk(x: &[f32]) -> [u32; 4];
    /// Stores `lo, hi` rounded to this type as two consecutive elements at shared `addr`.
    ///
    /// # Safety
    /// `addr` is shared memory aligned to `2 · BYTES`, owned by the caller.
    unsafe fn st_shared_pair(addr: u32, lo: f32, hi: f32);
}

/// The 16-bit types' chunk operations, from their pair packing.
macro_rules! half_chunks {
    () => {
        #[inline(always)]
        fn unpack(chunk: &[u32; 4], e: usize) -> f32 {
            let (lo, hi) = Self::unpack2(chunk[e / 2]);
            if e % 2 == 0 { lo } else { hi }
        }
        #[inline(always)]
        fn pack_chunk(x: &[f32]) -> [u32; 4] {
            let at = |i: usize| x.get(i).copied().unwrap_or(0.0);
            [0, 1, 2, 3].map(|w| Self::pack2(at(2 * w), at(2 * w + 1)))
        }
        #[inline(always)]
        unsafe fn st_shared_pair(addr: u32, lo: f32, hi: f32) {
            // SAFETY: forwarded to the caller (4-byte aligned, owned).
            unsafe { shared::st_shared_u32(addr, Self::pack2(lo, hi)) }
        }
    };
}

impl F16 {
    #[inline(always)]
    fn unpack2(x: u32) -> (f32, f32) {
        unpack_f16x2(x)
    }
}

impl Element for F16 {
    const BYTES: usize = 2;
    const IS_BF16: bool = false;
    const SIGN_BITS: u32 = 0x8000_8000;
    #[inline(always)]
    fn pack2(lo: f32, hi: f32) -> u32 {
        pack_f16x2(lo, hi)
    }
    half_chunks!();
}

// bf16 arithmetic starts with sm_80 (Volta and Turing have none).
#[cfg(target_feature = "sm_80")]
impl Bf16 {
    #[inline(always)]
    fn unpack2(x: u32) -> (f32, f32) {
        unpack_bf16x2(x)
    }
}

#[cfg(target_feature = "sm_80")]
impl Element for Bf16 {
    const BYTES: usize = 2;
    const IS_BF16: bool = true;
    const SIGN_BITS: u32 = 0x8000_8000;
    #[inline(always)]
    fn pack2(lo: f32, hi: f32) -> u32 {
        pack_bf16x2(lo, hi)
    }
    half_chunks!();
}

impl Element for F32 {
    const BYTES: usize = 4;
    const IS_BF16: bool = false;
    const SIGN_BITS: u32 = 0x8000_0000;
    #[inline(always)]
    fn pack2(lo: f32, _hi: f32) -> u32 {
        lo.to_bits()
    }
    #[inline(always)]
    fn unpack(chunk: &[u32; 4], e: usize) -> f32 {
        f32::from_bits(chunk[e])
    }
    #[inline(always)]
    fn pack_chunk(x: &[f32]) -> [u32; 4] {
        [0, 1, 2, 3].map(|i| x.get(i).copied().unwrap_or(0.0).to_bits())
    }
    #[inline(always)]
    unsafe fn st_shared_pair(addr: u32, lo: f32, hi: f32) {
        // SAFETY: forwarded to the caller (8-byte aligned, owned).
        unsafe { shared::st_shared_v2(addr, [lo.to_bits(), hi.to_bits()]) }
    }
}
