//! WMMA m16n16k16 (sm_70+): Volta's tensor cores, f16 inputs, f32 accumulation.
//!
//! The PTX ISA leaves the element-to-register mapping of WMMA fragments unspecified and
//! architecture-dependent, so code never reads a fragment by position: accumulators go to
//! shared memory with [`store_acc`] before softmax or masking touches single elements.
//! Addresses are shared-window addresses, 32-byte aligned; strides are in elements.

use core::arch::asm;

/// A 16x16 f16 A or B fragment (eight registers of two halves; layout opaque).
#[derive(Clone, Copy)]
pub struct Fragment(pub [u32; 8]);

/// A 16x16 f32 accumulator fragment (layout opaque).
#[derive(Clone, Copy)]
pub struct Accumulator(pub [f32; 8]);

impl Accumulator {
    pub const ZERO: Accumulator = Accumulator([0.0; 8]);
}

/// A WMMA load of one 16 x 16 f16 operand: `$op` is `a` or `b`, `$layout` `row` or `col`.
macro_rules! wmma_load {
    ($op:literal, $layout:literal, $addr:expr, $ld:expr) => {{
        let mut r = [0u32; 8];
        // SAFETY: the caller guarantees an aligned tile inside shared memory and that all lanes of
        // the warp execute this `.sync.aligned` load together.
        unsafe {
            asm!(
                concat!("wmma.load.", $op, ".sync.aligned.", $layout, ".m16n16k16.shared.f16 {{{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}}}, [{a}], {ld};"),
                out(reg32) r[0], out(reg32) r[1], out(reg32) r[2], out(reg32) r[3],
                out(reg32) r[4], out(reg32) r[5], out(reg32) r[6], out(reg32) r[7],
                a = in(reg32) $addr, ld = in(reg32) $ld, options(nostack, readonly)
            )
        };
        Fragment(r)
    }};
}

/// Loads A (16 x 16, m x k). `COL = false` (`.row`): row `m` is
/// contiguous (`A[m][k]` at `m · ld + k`, a K-major operand such as Q in `Q Kᵀ`); `COL = true`
/// (`.col`): column `k` is (`A[m][k]` at `k · ld + m`, an M-major operand such as a stored Pᵀ).
///
/// # Safety
/// The whole tile is inside shared memory; `addr` is 32-byte aligned and `ld` (elements) a
/// multiple of 8; all lanes call it.
#[inline(always)]
pub unsafe fn load_a<const COL: bool>(addr: u32, ld: u32) -> Fragment {
    if COL { wmma_load!("a", "col", addr, ld) } else { wmma_load!("a", "row", addr, ld) }
}

/// Loads B (16 x 16, k x n). `COL = true` (`.col`): column `n` is contiguous (`B[k][n]` at
/// `n · ld + k`, a K-major operand such as K in `Q Kᵀ`); `COL = false` (`.row`): row `k` is (an
/// N-major operand such as V).
///
/// # Safety
/// As for [`load_a`].
#[inline(always)]
pub unsafe fn load_b<const COL: bool>(addr: u32, ld: u32) -> Fragment {
    if COL { wmma_load!("b", "col", addr, ld) } else { wmma_load!("b", "row", addr, ld) }
}

/// `acc + A · B` for operands loaded with the same layouts (`A_COL`, `B_COL`).
macro_rules! wmma_mma {
    ($layouts:literal, $acc:expr, $a:expr, $b:expr) => {{
        let mut d = $acc.0;
        let (a, b) = ($a.0, $b.0);
        // SAFETY: register-only. The whole warp must execute it (see `mma`); its callers ensure
        // that.
        unsafe {
            asm!(
                concat!("wmma.mma.sync.aligned.", $layouts, ".m16n16k16.f32.f32 {{{d0}, {d1}, {d2}, {d3}, {d4}, {d5}, {d6}, {d7}}}, {{{a0}, {a1}, {a2}, {a3}, {a4}, {a5}, {a6}, {a7}}}, {{{b0}, {b1}, {b2}, {b3}, {b4}, {b5}, {b6}, {b7}}}, {{{d0}, {d1}, {d2}, {d3}, {d4}, {d5}, {d6}, {d7}}};"),
                d0 = inout(reg32) d[0], d1 = inout(reg32) d[1], d2 = inout(reg32) d[2], d3 = inout(reg32) d[3],
                d4 = inout(reg32) d[4], d5 = inout(reg32) d[5], d6 = inout(reg32) d[6], d7 = inout(reg32) d[7],
                a0 = in(reg32) a[0], a1 = in(reg32) a[1], a2 = in(reg32) a[2], a3 = in(reg32) a[3],
                a4 = in(reg32) a[4], a5 = in(reg32) a[5], a6 = in(reg32) a[6], a7 = in(reg32) a[7],
                b0 = in(reg32) b[0], b1 = in(reg32) b[1], b2 = in(reg32) b[2], b3 = in(reg32) b[3],
                b4 = in(reg32) b[4], b5 = in(reg32) b[5], b6 = in(reg32) b[6], b7 = in(reg32) b[7],
                options(pure, nomem, nostack)
            )
        };
        Accumulator(d)
    }};
}

/// `acc + A · B`. `A_COL` and `B_COL` must match how `a` and `b` were loaded.
///
/// Warp-collective (`.sync.aligned`): all 32 lanes must execute it together, in code they all
/// run. Not yet an `unsafe fn`, like `mma::mma_m16n8k16`: that requirement is the caller's.
#[inline(always)]
pub fn mma<const A_COL: bool, const B_COL: bool>(acc: Accumulator, a: Fragment, b: Fragment) -> Accumulator {
    match (A_COL, B_COL) {
        (false, false) => wmma_mma!("row.row", acc, a, b),
        (false, true) => wmma_mma!("row.col", acc, a, b),
        (true, false) => wmma_mma!("col.row", acc, a, b),
        (true, true) => wmma_mma!("col.col", acc, a, b),
    }
}

/// Stores the accumulator as a row-major 16x16 f32 tile (row stride `ld` elements).
///
/// # Safety
/// As for [`load_a_row`], for a 16 x `ld` f32 tile.
#[inline(always)]
pub unsafe fn store_acc(addr: u32, acc: Accumulator, ld: u32) {
    let d = acc.0;
    // SAFETY: the caller guarantees the aligned tile lies in shared memory and that all lanes of
    // the warp execute this `.sync.aligned` store together.
    unsafe {
        asm!(
            "wmma.store.d.sync.aligned.row.m16n16k16.shared.f32 [{a}], {{{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}}}, {ld};",
            in(reg32) d[0], in(reg32) d[1], in(reg32) d[2], in(reg32) d[3],
            in(reg32) d[4], in(reg32) d[5], in(reg32) d[6], in(reg32) d[7],
            a = in(reg32) addr, ld = in(reg32) ld, options(nostack)
        )
    }
}
