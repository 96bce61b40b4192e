//! [`WarpMma`] on `mma.sync.aligned.m16n8k16` (sm_80 and newer), operands from shared memory by
//! `ldmatrix`.
//!
//! Each `ldmatrix.x4` loads four 8 x 8 tiles; the lanes' row addresses are a per-lane base
//! ([`SmemTile::lane_plus`]) plus compile-time offsets, so a fully unrolled product issues one
//! `ldmatrix` per fragment and little else. With two or more row tiles per warp (`MT >= 2`), each
//! B fragment loaded feeds `MT` products.

use super::smem_tile::SmemTile;
use super::warp_mma::{HalfARegs, Major, Origin, WarpMma, half_to_a};
use crate::element::Element;
use crate::primitives::index::lane_id;
use crate::primitives::ldmatrix::ldmatrix_x4;
use crate::primitives::mma::mma_m16n8k16;

/// The `mma.sync` family.
pub enum Sm80 {}

impl Sm80 {
    /// A fragment of the 16 x 16 A tile number `mt` (rows `16 mt ..`) at k-step `ks` (32 bytes
    /// of k). Its K-major form is also the TF32 family's k8 A fragment (`mma_tf32`).
    ///
    /// # Safety
    /// The tile holds the rows and chunks addressed and is visible to the warp.
    #[inline(always)]
    pub(super) unsafe fn load_a<T: Element, A: Major, const DA: usize>(
        a: SmemTile<T, DA>,
        at: Origin,
        mt: usize,
        ks: usize,
    ) -> [u32; 4] {
        let l = lane_id();
        let at_chunk = SmemTile::<T, DA>::col_chunk(at.col);
        // SAFETY: forwarded to the caller; every lane gives a 16-byte aligned row address.
        unsafe {
            if A::K_MAJOR {
                // Lanes 0-15: rows 0-15 at the k-step's first 8 columns, lanes 16-31: the next 8.
                let lane = a.lane_plus(at.row + l % 16, l / 16).down::<T, DA>(16 * mt as u32);
                ldmatrix_x4::<false>(lane.chunk(at_chunk + 2 * ks as u32))
            } else {
                // Stored k-rows: transposed 8 x 8 tiles (k 0-7, m 0-7), (k 0-7, m 8-15),
                // (k 8-15, m 0-7), (k 8-15, m 8-15).
                let lane =
                    a.lane_plus(at.row + (l / 16) * 8 + l % 8, (l / 8) % 2).down::<T, DA>(16 * ks as u32);
                ldmatrix_x4::<true>(lane.chunk(at_chunk + 2 * mt as u32))
            }
        }
    }

    /// B fragments of the two 8-column tiles `2 np`, `2 np + 1` at k-step `ks` (32 bytes of k).
    /// Its K-major form is also the TF32 family's pair of k8 B fragments (`mma_tf32`).
    ///
    /// # Safety
    /// As for [`Sm80::load_a`].
    #[inline(always)]
    pub(super) unsafe fn load_b<T: Element, B: Major, const DB: usize>(
        b: SmemTile<T, DB>,
        at: Origin,
        np: usize,
        ks: usize,
    ) -> [u32; 4] {
        let l = lane_id();
        let at_chunk = SmemTile::<T, DB>::col_chunk(at.col);
        // SAFETY: forwarded to the caller.
        unsafe {
            if B::K_MAJOR {
                // Stored n-rows: lanes 0-7 rows 0-7 first half of k, 8-15 second half; 16-31 the
                // same for rows 8-15.
                let lane =
                    b.lane_plus(at.row + (l / 16) * 8 + l % 8, (l / 8) % 2).down::<T, DB>(16 * np as u32);
                ldmatrix_x4::<false>(lane.chunk(at_chunk + 2 * ks as u32))
            } else {
                // Stored k-rows, transposed: keys run along k.
                let lane =
                    b.lane_plus(at.row + ((l / 8) % 2) * 8 + l % 8, l / 16).down::<T, DB>(16 * ks as u32);
                ldmatrix_x4::<true>(lane.chunk(at_chunk + 2 * np as u32))
            }
        }
    }
}

impl WarpMma for Sm80 {
    const SCRATCH_BYTES: usize = 0;
    type ARegs = HalfARegs;

    #[inline(always)]
    fn to_a<T: Element, const MT: usize, const NT: usize, const KS: usize>(
        acc: &[[[f32; 4]; NT]; MT],
    ) -> [[HalfARegs; KS]; MT] {
        half_to_a::<T, MT, NT, KS>(acc)
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
        const { assert!(NT.is_multiple_of(2) && T::BYTES == 2, "m16n8k16 takes 16-bit types") };
        for ks in 0..KS {
            let mut frag_a = [[0u32; 4]; MT];
            for (mt, f) in frag_a.iter_mut().enumerate() {
                // SAFETY: forwarded to the caller.
                *f = unsafe { Self::load_a::<T, A, DA>(a, a_at, mt, ks) };
            }
            for np in 0..NT / 2 {
                // SAFETY: forwarded to the caller.
                let fb = unsafe { Self::load_b::<T, B, DB>(b, b_at, np, ks) };
                for mt in 0..MT {
                    acc[mt][2 * np] = mma_m16n8k16::<T>(acc[mt][2 * np], frag_a[mt], [fb[0], fb[1]]);
                    acc[mt][2 * np + 1] = mma_m16n8k16::<T>(acc[mt][2 * np + 1], frag_a[mt], [fb[2], fb[3]]);
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
        a: &[[HalfARegs; KS]; MT],
        b: SmemTile<T, DB>,
        b_at: Origin,
    ) {
        const { assert!(NT.is_multiple_of(2) && T::BYTES == 2, "m16n8k16 takes 16-bit types") };
        for ks in 0..KS {
            for np in 0..NT / 2 {
                // SAFETY: forwarded to the caller.
                let fb = unsafe { Self::load_b::<T, B, DB>(b, b_at, np, ks) };
                for (acc_m, a_m) in acc.iter_mut().zip(a) {
                    acc_m[2 * np] = mma_m16n8k16::<T>(acc_m[2 * np], a_m[ks], [fb[0], fb[1]]);
                    acc_m[2 * np + 1] = mma_m16n8k16::<T>(acc_m[2 * np + 1], a_m[ks], [fb[2], fb[3]]);
                }
            }
        }
    }
}
