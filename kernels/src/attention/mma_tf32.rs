//! [`WarpMma`] on `mma.sync.aligned.m16n8k8` with TF32 inputs (sm_80 and newer), for f32 tiles.
//!
//! `X3 = false` rounds each operand to TF32 (10 mantissa bits) and runs one product per pair.
//! `X3 = true` is the accurate mode ("3xTF32"): each operand `x` splits into `hi = tf32(x)` and
//! `lo = tf32(x − hi)` (the subtraction is exact), and the pair's product is `lo·hi + hi·lo +
//! hi·hi`, small terms first; the dropped `lo·lo` and `lo`'s own rounding leave about 2⁻²²
//! relative error per product, near float32's 2⁻²⁴.
//!
//! Fragments: one k-step of 16 (the trait's unit) is two m16n8k8 steps of 8. A K-major operand
//! comes by `ldmatrix`: a 16-byte chunk is 4 f32, so an 8 x 8 "b16" matrix of `ldmatrix` is an
//! 8 x 4 f32 block, lane `l` getting element `(l / 4, l % 4)` — exactly the TF32 A and B
//! fragments' layout, at the same row and chunk addresses as a 16-bit k-step, so the 16-bit
//! family's loaders serve (`Sm80::load_a`, `Sm80::load_b`). An MN-major operand is read element
//! by element (`ldmatrix` cannot transpose 32-bit elements).
//!
//! An A operand in registers (P, dS) is its accumulators as they lie: the m16n8 accumulator holds
//! columns `2t, 2t + 1` where the k8 A fragment wants `t, t + 4`, so the fragment's k slots are
//! permuted (slot `t` is column `2t`, slot `t + 4` column `2t + 1`) and [`WarpMma::gemm_rs`] reads
//! B's k rows in the same order. With k rows `2t` (and `2t + 1`) across a quad, the four rows of
//! one read fall in different chunks of the swizzle, so those reads are free of bank conflicts.

use super::mma_sm80::Sm80;
use super::smem_tile::SmemTile;
use super::warp_mma::{Major, Origin, WarpMma};
use crate::element::Element;
use crate::primitives::index::lane_id;
use crate::primitives::mma::{cvt_rna_tf32, mma_m16n8k8_tf32};
use crate::primitives::shared::ld_shared_u32;

/// The TF32 family; `X3` selects the accurate mode.
pub enum Tf32<const X3: bool> {}

/// An operand fragment in the form the products take: its TF32 high part and, in the accurate
/// mode, its low part.
#[derive(Clone, Copy)]
struct Split<const N: usize> {
    hi: [u32; N],
    lo: [u32; N],
}

impl<const X3: bool> Tf32<X3> {
    /// Raw f32 bits as the products take them.
    #[inline(always)]
    fn split<const N: usize>(x: [u32; N]) -> Split<N> {
        let hi = x.map(|w| cvt_rna_tf32(f32::from_bits(w)));
        let mut lo = [0u32; N];
        if X3 {
            for i in 0..N {
                lo[i] = cvt_rna_tf32(f32::from_bits(x[i]) - f32::from_bits(hi[i]));
            }
        }
        Split { hi, lo }
    }

    /// `acc + A · B` for one m16n8k8 step.
    ///
    /// The accurate mode sums the step's three products in a fresh accumulator and adds it to
    /// `acc` with the CUDA cores: the tensor cores truncate each `mma`'s sum to f32, so adding
    /// into the running `acc` three times per step left an error growing with `k` (2 to 5 times
    /// plain f32 attention's, measured on the H100), where one rounded addition per step
    /// behaves as an f32 sum does.
    #[inline(always)]
    fn product(acc: [f32; 4], a: &Split<4>, b: &Split<2>) -> [f32; 4] {
        if X3 {
            let mut step = mma_m16n8k8_tf32([0.0; 4], a.lo, b.hi);
            step = mma_m16n8k8_tf32(step, a.hi, b.lo);
            step = mma_m16n8k8_tf32(step, a.hi, b.hi);
            [acc[0] + step[0], acc[1] + step[1], acc[2] + step[2], acc[3] + step[3]]
        } else {
            mma_m16n8k8_tf32(acc, a.hi, b.hi)
        }
    }

    /// The A fragment of row tile `mt` at k8 step `k8`, natural k order.
    ///
    /// # Safety
    /// The tile holds the rows and columns addressed and is visible to the warp.
    #[inline(always)]
    unsafe fn load_a<T: Element, A: Major, const DA: usize>(
        a: SmemTile<T, DA>,
        at: Origin,
        mt: usize,
        k8: usize,
    ) -> [u32; 4] {
        let l = lane_id();
        let (g, t) = (l / 4, l % 4);
        // SAFETY: forwarded to the caller.
        unsafe {
            if A::K_MAJOR {
                // A k8 step of f32 is 32 bytes of k, as a 16-bit k-step: the same `ldmatrix`.
                Sm80::load_a::<T, A, DA>(a, at, mt, k8)
            } else {
                let (k0, m0) = (at.row + 8 * k8 as u32, at.col + 16 * mt as u32);
                let x = |k: u32, m: u32| ld_shared_u32(a.element_addr(k0 + k, m0 + m));
                [x(t, g), x(t, g + 8), x(t + 4, g), x(t + 4, g + 8)]
            }
        }
    }

    /// B fragments of the 8-column tiles `2 np` and `2 np + 1` at k8 step `k8`, natural k order.
    ///
    /// # Safety
    /// As for [`Tf32::load_a`].
    #[inline(always)]
    unsafe fn load_b_pair<T: Element, B: Major, const DB: usize>(
        b: SmemTile<T, DB>,
        at: Origin,
        np: usize,
        k8: usize,
    ) -> [u32; 4] {
        if B::K_MAJOR {
            // As for A: the 16-bit family's `ldmatrix` of a 32-byte k-step.
            // SAFETY: forwarded to the caller.
            unsafe { Sm80::load_b::<T, B, DB>(b, at, np, k8) }
        } else {
            // SAFETY: forwarded to the caller.
            let (lo, hi) = unsafe {
                (
                    Self::load_b::<T, B, DB, false>(b, at, 2 * np, k8),
                    Self::load_b::<T, B, DB, false>(b, at, 2 * np + 1, k8),
                )
            };
            [lo[0], lo[1], hi[0], hi[1]]
        }
    }

    /// The B fragment of 8-column tile `nt` at k8 step `k8`, element by element: k slots in the
    /// natural order, or permuted as the A operands in registers have them (`PERM`).
    ///
    /// # Safety
    /// As for [`Tf32::load_a`].
    #[inline(always)]
    unsafe fn load_b<T: Element, B: Major, const DB: usize, const PERM: bool>(
        b: SmemTile<T, DB>,
        at: Origin,
        nt: usize,
        k8: usize,
    ) -> [u32; 2] {
        let l = lane_id();
        let (g, t) = (l / 4, l % 4);
        let (k_lo, k_hi) = if PERM { (2 * t, 2 * t + 1) } else { (t, t + 4) };
        let (k0, n) = (8 * k8 as u32, 8 * nt as u32 + g);
        let x = |k: u32| {
            let addr = if B::K_MAJOR {
                b.element_addr(at.row + n, at.col + k0 + k)
            } else {
                b.element_addr(at.row + k0 + k, at.col + n)
            };
            // SAFETY: forwarded to the caller.
            unsafe { ld_shared_u32(addr) }
        };
        [x(k_lo), x(k_hi)]
    }
}

impl<const X3: bool> WarpMma for Tf32<X3> {
    const SCRATCH_BYTES: usize = 0;
    /// The two k8 A fragments of a 16 x 16 tile, raw f32 bits, k slots permuted (module
    /// documentation).
    type ARegs = [[u32; 4]; 2];

    #[inline(always)]
    fn to_a<T: Element, const MT: usize, const NT: usize, const KS: usize>(
        acc: &[[[f32; 4]; NT]; MT],
    ) -> [[[[u32; 4]; 2]; KS]; MT] {
        const { assert!(NT == 2 * KS) };
        let mut a = [[[[0u32; 4]; 2]; KS]; MT];
        for mt in 0..MT {
            for ks in 0..KS {
                for h in 0..2 {
                    let c = &acc[mt][2 * ks + h];
                    // Slot t: column 2t (c[0], c[2] for rows g, g + 8); slot t + 4: 2t + 1.
                    a[mt][ks][h] = [c[0], c[2], c[1], c[3]].map(f32::to_bits);
                }
            }
        }
        a
    }

    #[inline(always)]
    unsafe fn gemm_ss<
        T: Element,
        A: Major,
        B: Major,
        const MT: usize,
        const NT: usize,
        const KS: usize,
        const DA: usize,
        const DB: usize,
    >(
        acc: &mut [[[f32; 4]; NT]; MT],
        a: SmemTile<T, DA>,
        a_at: Origin,
        b: SmemTile<T, DB>,
        b_at: Origin,
    ) {
        const { assert!(NT.is_multiple_of(2) && T::BYTES == 4, "TF32 takes f32") };
        for k8 in 0..2 * KS {
            let mut fa = [Split { hi: [0; 4], lo: [0; 4] }; MT];
            for (mt, f) in fa.iter_mut().enumerate() {
                // SAFETY: forwarded to the caller.
                *f = Self::split(unsafe { Self::load_a::<T, A, DA>(a, a_at, mt, k8) });
            }
            for np in 0..NT / 2 {
                // SAFETY: forwarded to the caller.
                let fb = unsafe { Self::load_b_pair::<T, B, DB>(b, b_at, np, k8) };
                let (b0, b1) = (Self::split([fb[0], fb[1]]), Self::split([fb[2], fb[3]]));
                for mt in 0..MT {
                    acc[mt][2 * np] = Self::product(acc[mt][2 * np], &fa[mt], &b0);
                    acc[mt][2 * np + 1] = Self::product(acc[mt][2 * np + 1], &fa[mt], &b1);
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn gemm_rs<
        T: Element,
        B: Major,
        const MT: usize,
        const NT: usize,
        const KS: usize,
        const DB: usize,
    >(
        acc: &mut [[[f32; 4]; NT]; MT],
        a: &[[[[u32; 4]; 2]; KS]; MT],
        b: SmemTile<T, DB>,
        b_at: Origin,
    ) {
        const { assert!(T::BYTES == 4, "TF32 takes f32") };
        for ks in 0..KS {
            for h in 0..2 {
                let mut fa = [Split { hi: [0; 4], lo: [0; 4] }; MT];
                for (f, a_m) in fa.iter_mut().zip(a) {
                    *f = Self::split(a_m[ks][h]);
                }
                for nt in 0..NT {
                    // SAFETY: forwarded to the caller.
                    let fb = Self::split(unsafe { Self::load_b::<T, B, DB, true>(b, b_at, nt, 2 * ks + h) });
                    for (acc_m, f) in acc.iter_mut().zip(&fa) {
                        acc_m[nt] = Self::product(acc_m[nt], f, &fb);
                    }
                }
            }
        }
    }
}
