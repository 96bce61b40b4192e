//! Warp shuffles and reductions over all 32 lanes.
//!
//! Each is `shfl.sync` with the full member mask: undefined unless every lane of the warp
//! executes it, hence `unsafe fn`.

use core::arch::asm;

/// The value of `v` in lane `lane ^ mask` (`shfl.sync.bfly`).
///
/// # Safety
/// All 32 lanes of the warp reach this call together, in code they all execute.
#[inline(always)]
pub unsafe fn shfl_xor(v: f32, mask: u32) -> f32 {
    let r: f32;
    // SAFETY: register-only; not `pure`: the shuffle must stay where all lanes execute it, which
    // the caller guarantees.
    unsafe {
        asm!("shfl.sync.bfly.b32 {r}, {v}, {m}, 0x1f, 0xffffffff;", r = out(reg32) r, v = in(reg32) v, m = in(reg32) mask, options(nomem, nostack))
    };
    r
}

/// The value of `v` in lane `src_lane` (`shfl.sync.idx`).
///
/// # Safety
/// As for [`shfl_xor`].
#[inline(always)]
pub unsafe fn shfl_idx(v: f32, src_lane: u32) -> f32 {
    let r: f32;
    // SAFETY: as for `shfl_xor`.
    unsafe {
        asm!("shfl.sync.idx.b32 {r}, {v}, {s}, 0x1f, 0xffffffff;", r = out(reg32) r, v = in(reg32) v, s = in(reg32) src_lane, options(nomem, nostack))
    };
    r
}

/// Combines `v` over groups of `WIDTH` consecutive lanes (a power of two up to 32) with a
/// butterfly: every lane of a group ends with the group's result. `WIDTH = 4` reduces the four
/// lanes that share a row of an `mma.sync` accumulator.
///
/// # Safety
/// As for [`shfl_xor`]: all 32 lanes call it, whatever `WIDTH`.
#[inline(always)]
pub unsafe fn reduce<const WIDTH: u32>(mut v: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    const { assert!(WIDTH.is_power_of_two() && WIDTH <= 32) };
    let mut mask = WIDTH / 2;
    while mask > 0 {
        // SAFETY: every lane runs the same iterations (`mask` depends only on `WIDTH`) and the
        // caller brings all 32 lanes here.
        v = op(v, unsafe { shfl_xor(v, mask) });
        mask /= 2;
    }
    v
}

/// The maximum of `v` over the warp, in every lane.
///
/// # Safety
/// As for [`shfl_xor`].
#[inline(always)]
pub unsafe fn warp_max(v: f32) -> f32 {
    // SAFETY: the caller brings all 32 lanes here.
    unsafe { reduce::<32>(v, crate::primitives::math::max) }
}

/// The sum of `v` over the warp, in every lane.
///
/// # Safety
/// As for [`shfl_xor`].
#[inline(always)]
pub unsafe fn warp_sum(v: f32) -> f32 {
    // SAFETY: the caller brings all 32 lanes here.
    unsafe { reduce::<32>(v, |a, b| a + b) }
}
