//! Packing f32 pairs into the 16-bit pairs tensor-core fragments hold.

use core::arch::asm;

/// `(lo, hi)` rounded to nearest-even f16 and packed, `lo` in the low half.
#[inline(always)]
pub fn pack_f16x2(lo: f32, hi: f32) -> u32 {
    let r: u32;
    // SAFETY: register-only. Two scalar conversions: `cvt.rn.f16x2.f32` needs sm_80.
    unsafe {
        asm!(
            "{{ .reg .b16 l, h; cvt.rn.f16.f32 l, {lo}; cvt.rn.f16.f32 h, {hi}; mov.b32 {r}, {{l, h}}; }}",
            r = out(reg32) r, lo = in(reg32) lo, hi = in(reg32) hi, options(pure, nomem, nostack)
        )
    };
    r
}

/// `(lo, hi)` rounded to nearest-even bf16 and packed, `lo` in the low half (sm_80).
#[cfg(target_feature = "sm_80")]
#[inline(always)]
pub fn pack_bf16x2(lo: f32, hi: f32) -> u32 {
    let r: u32;
    // SAFETY: register-only. The instruction takes the high element first.
    unsafe {
        asm!("cvt.rn.bf16x2.f32 {r}, {hi}, {lo};", r = out(reg32) r, lo = in(reg32) lo, hi = in(reg32) hi, options(pure, nomem, nostack))
    };
    r
}
