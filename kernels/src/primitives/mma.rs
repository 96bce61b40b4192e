//! `mma.sync.aligned.m16n8k16.row.col` (sm_80): a warp multiplies a 16x16 tile of A by a 16x8
//! tile of B and accumulates into 16x8 f32.
//!
//! Fragments (lane `l`, `g = l / 4`, `t = l % 4`; each `u32` holds two consecutive-k elements,
//! the lower k in the low half):
//! `a = [A[g][2t..], A[g+8][2t..], A[g][2t+8..], A[g+8][2t+8..]]`,
//! `b = [B[2t..][g], B[2t+8..][g]]`,
//! `c = [C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1]]`.

use core::arch::asm;

use crate::element::Element;
pub use crate::element::{Bf16, F16};

/// `acc += A * B` for one m16n8k16 tile, inputs of type `T`, f32 accumulation.
///
/// Warp-collective (`.sync.aligned`): all 32 lanes must execute it together, in code they all
/// run. Not yet an `unsafe fn` (its callers in `attention/` are being rewritten): that
/// requirement is the caller's.
#[inline(always)]
pub fn mma_m16n8k16<T: Element>(acc: [f32; 4], a: [u32; 4], b: [u32; 2]) -> [f32; 4] {
    let [mut d0, mut d1, mut d2, mut d3] = acc;
    // SAFETY: register-only; `pure, nomem` lets LLVM schedule independent products freely. The
    // whole warp must execute it (see above); its callers ensure that.
    unsafe {
        if T::IS_BF16 {
            asm!(
                "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {{{d0}, {d1}, {d2}, {d3}}}, {{{a0}, {a1}, {a2}, {a3}}}, {{{b0}, {b1}}}, {{{d0}, {d1}, {d2}, {d3}}};",
                d0 = inout(reg32) d0, d1 = inout(reg32) d1, d2 = inout(reg32) d2, d3 = inout(reg32) d3,
                a0 = in(reg32) a[0], a1 = in(reg32) a[1], a2 = in(reg32) a[2], a3 = in(reg32) a[3],
                b0 = in(reg32) b[0], b1 = in(reg32) b[1],
                options(pure, nomem, nostack)
            );
        } else {
            asm!(
                "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {{{d0}, {d1}, {d2}, {d3}}}, {{{a0}, {a1}, {a2}, {a3}}}, {{{b0}, {b1}}}, {{{d0}, {d1}, {d2}, {d3}}};",
                d0 = inout(reg32) d0, d1 = inout(reg32) d1, d2 = inout(reg32) d2, d3 = inout(reg32) d3,
                a0 = in(reg32) a[0], a1 = in(reg32) a[1], a2 = in(reg32) a[2], a3 = in(reg32) a[3],
                b0 = in(reg32) b[0], b1 = in(reg32) b[1],
                options(pure, nomem, nostack)
            );
        }
    }
    [d0, d1, d2, d3]
}

/// `acc += A * B` for one m16n8k8 tile of TF32 inputs (`mma.sync.aligned.m16n8k8.row.col`),
/// f32 accumulation. Fragments (lane `l`, `g = l / 4`, `t = l % 4`, one element per register):
/// `a = [A[g][t], A[g+8][t], A[g][t+4], A[g+8][t+4]]`, `b = [B[t][g], B[t+4][g]]`, `c` as for
/// [`mma_m16n8k16`]. The instruction reads only the TF32 bits of each operand (sign, exponent,
/// 10 mantissa bits); [`cvt_rna_tf32`] rounds to them.
///
/// Warp-collective, as [`mma_m16n8k16`].
#[inline(always)]
pub fn mma_m16n8k8_tf32(acc: [f32; 4], a: [u32; 4], b: [u32; 2]) -> [f32; 4] {
    let [mut d0, mut d1, mut d2, mut d3] = acc;
    // SAFETY: register-only, as for `mma_m16n8k16`.
    unsafe {
        asm!(
            "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {{{d0}, {d1}, {d2}, {d3}}}, {{{a0}, {a1}, {a2}, {a3}}}, {{{b0}, {b1}}}, {{{d0}, {d1}, {d2}, {d3}}};",
            d0 = inout(reg32) d0, d1 = inout(reg32) d1, d2 = inout(reg32) d2, d3 = inout(reg32) d3,
            a0 = in(reg32) a[0], a1 = in(reg32) a[1], a2 = in(reg32) a[2], a3 = in(reg32) a[3],
            b0 = in(reg32) b[0], b1 = in(reg32) b[1],
            options(pure, nomem, nostack)
        );
    }
    [d0, d1, d2, d3]
}

/// `x` rounded to TF32 (10 mantissa bits, to nearest, ties away from zero), as f32 bits whose
/// low 13 bits are zero.
#[inline(always)]
pub fn cvt_rna_tf32(x: f32) -> u32 {
    let r: u32;
    // SAFETY: register-only conversion.
    unsafe {
        asm!("cvt.rna.tf32.f32 {r}, {x};", r = out(reg32) r, x = in(reg32) x, options(pure, nomem, nostack))
    };
    r
}
