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

/// The two f16 halves of `x` as f32, the low half first.
#[inline(always)]
pub fn unpack_f16x2(x: u32) -> (f32, f32) {
    let (lo, hi): (f32, f32);
    // SAFETY: register-only; f16 → f32 is exact.
    unsafe {
        asm!(
            "{{ .reg .b16 l, h; mov.b32 {{l, h}}, {x}; cvt.f32.f16 {lo}, l; cvt.f32.f16 {hi}, h; }}",
            x = in(reg32) x, lo = out(reg32) lo, hi = out(reg32) hi, options(pure, nomem, nostack)
        )
    };
    (lo, hi)
}

/// The two bf16 halves of `x` as f32, the low half first: a bf16 is the high half of an f32.
#[inline(always)]
pub fn unpack_bf16x2(x: u32) -> (f32, f32) {
    (f32::from_bits(x << 16), f32::from_bits(x & 0xffff_0000))
}
