//! [`WarpMma`] on the CUDA cores (`fma.rn.f32`), for f32 tiles: the float32 family of the
//! `sm_70` build. Volta and Turing have no TF32 tensor cores, and WMMA's f16 inputs would round
//! each f32 operand to 11 bits, so their float32 attention is plain float32 arithmetic.
//!
//! Each lane computes its own accumulator elements in the trait's m16n8 layout (rows `g`,
//! `g + 8` and columns `2t`, `2t + 1` of each 16 x 8 tile, `g = lane / 4`, `t = lane % 4`): an
//! exact product per pair, added by one `fma` in k order, as plain float32 attention does. Per k a
//! lane reads A at its two rows and B at its two columns of every 8-column tile, and makes the
//! four products of those pairs; a K-major operand is read four k at a time (one 16-byte chunk of
//! a row), an MN-major B two columns at a time.
//!
//! An A operand in registers (P, dS) is its accumulators as they lie: the value at row `g`,
//! column `k` of an 8-column tile is in lane `4g + (k % 8) / 2` of the same quad, so
//! [`WarpMma::gemm_rs`] broadcasts it within the quad by a shuffle per row and pair of k.
//!
//! Tiles are the `sm_70` build's padded rows, `4 · D + 16` bytes with `D` a multiple of 32: row
//! starts are 4 banks apart, so 16-byte reads at one column of 8 consecutive rows (A's rows `g`)
//! cover the 32 banks once, and the other reads are broadcasts or consecutive words.

use super::smem_tile::SmemTile;
use super::warp_mma::{Major, Origin, WarpMma};
use crate::element::Element;
use crate::primitives::index::lane_id;
use crate::primitives::math::fma;
use crate::primitives::shared::{ld_shared_u32, ld_shared_v2, ld_shared_v4};
use crate::primitives::warp::shfl_idx;
use core::array::from_fn;

/// The CUDA-core family.
pub enum Simt {}

/// A fragment of `N` consecutive k values at a lane's two rows (A) or two columns (B).
type Pairs<const N: usize> = [[f32; N]; 2];

impl Simt {
    /// `N` (2 or 4) consecutive f32 values of a row from `addr`, in one load.
    ///
    /// # Safety
    /// `addr` is `4 · N`-byte aligned and the values lie in dynamic shared memory.
    #[inline(always)]
    unsafe fn ld<const N: usize>(addr: u32) -> [f32; N] {
        const { assert!(N == 2 || N == 4) };
        // SAFETY: forwarded to the caller.
        let w = unsafe {
            if N == 4 {
                ld_shared_v4(addr)
            } else {
                let [x, y] = ld_shared_v2(addr);
                [x, y, 0, 0]
            }
        };
        from_fn(|j| f32::from_bits(w[j]))
    }

    /// A at this lane's rows (`g`, `g + 8`) of row tile `mt`, for the four k from `k`.
    ///
    /// # Safety
    /// The tile holds the rows and columns addressed and is visible to the warp; `k` is a
    /// multiple of 4.
    #[inline(always)]
    unsafe fn load_a<T: Element, A: Major, const DA: usize>(
        a: SmemTile<T, DA>,
        at: Origin,
        mt: usize,
        k: u32,
    ) -> Pairs<4> {
        let m = 16 * mt as u32 + lane_id() / 4;
        // SAFETY: forwarded to the caller; origins' columns are multiples of 16 and `k` of 4, so
        // a K-major read is one aligned chunk.
        unsafe {
            if A::K_MAJOR {
                [0, 8].map(|r| Self::ld::<4>(a.element_addr(at.row + m + r, at.col + k)))
            } else {
                [0, 8].map(|r| {
                    from_fn(|j| {
                        f32::from_bits(ld_shared_u32(a.element_addr(at.row + k + j as u32, at.col + m + r)))
                    })
                })
            }
        }
    }

    /// B at this lane's columns (`2t`, `2t + 1`) of 8-column tile `nt`, for the `N` k from `k`.
    ///
    /// # Safety
    /// As for [`Simt::load_a`]; `k` is a multiple of `N`.
    #[inline(always)]
    unsafe fn load_b<T: Element, B: Major, const DB: usize, const N: usize>(
        b: SmemTile<T, DB>,
        at: Origin,
        nt: usize,
        k: u32,
    ) -> Pairs<N> {
        let n = 8 * nt as u32 + 2 * (lane_id() % 4);
        // SAFETY: forwarded to the caller; a K-major read is `N` values at a multiple of `N`, an
        // MN-major one the two columns `n` (even) and `n + 1`.
        unsafe {
            if B::K_MAJOR {
                [0, 1].map(|c| Self::ld::<N>(b.element_addr(at.row + n + c, at.col + k)))
            } else {
                let rows: [[f32; 2]; N] =
                    from_fn(|j| Self::ld::<2>(b.element_addr(at.row + k + j as u32, at.col + n)));
                [0, 1].map(|c| from_fn(|j| rows[j][c]))
            }
        }
    }

    /// `acc += A · B` over `N` k: element `e` of the m16n8 accumulator is row `e / 2` of `a`
    /// times column `e % 2` of `b`.
    #[inline(always)]
    fn fma_pairs<const N: usize>(acc: &mut [f32; 4], a: &Pairs<N>, b: &Pairs<N>) {
        for j in 0..N {
            for (e, x) in acc.iter_mut().enumerate() {
                *x = fma(a[e / 2][j], b[e % 2][j], *x);
            }
        }
    }
}

impl WarpMma for Simt {
    const SCRATCH_BYTES: usize = 0;
    /// The accumulators of the tile's two 8-column halves, as they lie.
    type ARegs = [[f32; 4]; 2];

    #[inline(always)]
    fn to_a<T: Element, const MT: usize, const NT: usize, const KS: usize>(
        acc: &[[[f32; 4]; NT]; MT],
    ) -> [[[[f32; 4]; 2]; KS]; MT] {
        // f32 operands: nothing to round.
        const { assert!(NT == 2 * KS && T::BYTES == 4, "the CUDA-core family takes f32") };
        from_fn(|mt| from_fn(|ks| [acc[mt][2 * ks], acc[mt][2 * ks + 1]]))
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
        const { assert!(T::BYTES == 4, "the CUDA-core family takes f32") };
        for k4 in 0..4 * KS {
            let k = 4 * k4 as u32;
            // SAFETY: forwarded to the caller.
            let fa: [Pairs<4>; MT] = from_fn(|mt| unsafe { Self::load_a::<T, A, DA>(a, a_at, mt, k) });
            for nt in 0..NT {
                // SAFETY: forwarded to the caller.
                let fb = unsafe { Self::load_b::<T, B, DB, 4>(b, b_at, nt, k) };
                for (acc_m, fa_m) in acc.iter_mut().zip(&fa) {
                    Self::fma_pairs(&mut acc_m[nt], fa_m, &fb);
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
        a: &[[[[f32; 4]; 2]; KS]; MT],
        b: SmemTile<T, DB>,
        b_at: Origin,
    ) {
        const { assert!(T::BYTES == 4, "the CUDA-core family takes f32") };
        let quad = lane_id() & !3;
        // `a` is indexed by row tile first (inside `from_fn`), so `ks` and `h` stay indices.
        #[allow(clippy::needless_range_loop)]
        for ks in 0..KS {
            for h in 0..2 {
                for s in 0..4u32 {
                    // Columns 2s and 2s + 1 of this half: lane `quad + s`'s elements (rows g: 0, 1;
                    // rows g + 8: 2, 3).
                    let fa: [Pairs<2>; MT] = from_fn(|mt| {
                        // SAFETY: every lane runs these loops (uniform bounds), and so each shuffle.
                        let c = a[mt][ks][h].map(|x| unsafe { shfl_idx(x, quad + s) });
                        [[c[0], c[1]], [c[2], c[3]]]
                    });
                    let k = 16 * ks as u32 + 8 * h as u32 + 2 * s;
                    for nt in 0..NT {
                        // SAFETY: forwarded to the caller.
                        let fb = unsafe { Self::load_b::<T, B, DB, 2>(b, b_at, nt, k) };
                        for (acc_m, fa_m) in acc.iter_mut().zip(&fa) {
                            Self::fma_pairs(&mut acc_m[nt], fa_m, &fb);
                        }
                    }
                }
            }
        }
    }
}
