//! Scalar float operations that must compile to one specific instruction.

use core::arch::asm;

/// `2^x` by the special-function unit (`ex2.approx.ftz.f32`): relative error about 2^-22,
/// subnormal results flushed to zero, `2^-inf = 0`.
#[inline(always)]
pub fn exp2_approx(x: f32) -> f32 {
    let r: f32;
    // SAFETY: register-only.
    unsafe {
        asm!("ex2.approx.ftz.f32 {r}, {x};", r = out(reg32) r, x = in(reg32) x, options(pure, nomem, nostack))
    };
    r
}

/// `a * b + c` with one rounding (`fma.rn.f32`); Rust never contracts `a * b + c` by itself.
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    let r: f32;
    // SAFETY: register-only.
    unsafe {
        asm!("fma.rn.f32 {r}, {a}, {b}, {c};", r = out(reg32) r, a = in(reg32) a, b = in(reg32) b, c = in(reg32) c, options(pure, nomem, nostack))
    };
    r
}

/// `max.f32`: the larger of `a` and `b`; if one is NaN, the other.
#[inline(always)]
pub fn max(a: f32, b: f32) -> f32 {
    let r: f32;
    // SAFETY: register-only.
    unsafe {
        asm!("max.f32 {r}, {a}, {b};", r = out(reg32) r, a = in(reg32) a, b = in(reg32) b, options(pure, nomem, nostack))
    };
    r
}

/// `log2(x)` by the special-function unit (`lg2.approx.ftz.f32`).
#[inline(always)]
pub fn log2_approx(x: f32) -> f32 {
    let r: f32;
    // SAFETY: register-only.
    unsafe {
        asm!("lg2.approx.ftz.f32 {r}, {x};", r = out(reg32) r, x = in(reg32) x, options(pure, nomem, nostack))
    };
    r
}
