//! [`WarpMma`] on WMMA m16n16k16 (Volta and Turing: the `sm_70` build, which runs on any GPU of
//! compute capability 7.0 or newer), float16 inputs, f32 accumulation.
//!
//! The PTX ISA leaves WMMA's fragment layout unspecified (it differs between architectures), so
//! nothing here reads a fragment element by position. Each 16 x 16 product is accumulated in an
//! opaque fragment over the whole contraction, stored to the warp's scratch in shared memory as
//! a row-major f32 tile, and read back by each lane at the positions the trait's m16n8 layout
//! gives it ([`WarpMma::position`]); an A operand in registers (P, dS) goes the other way, written
//! by position into the scratch and loaded as a fragment. So what passes on one GPU holds on all.
//!
//! Operand tiles are plain row-major rows padded by 16 bytes (`SmemTile`'s `sm_70` layout), which
//! WMMA loads take directly with a stride; every 16-row, 16-column block of them starts 32-byte
//! aligned, as WMMA requires, because tile rows start at multiples of 16 and columns at multiples
//! of 16 elements.
//!
//! The scratch is the last `SCRATCH_BYTES · warps` bytes of the block's dynamic shared memory,
//! warp `w` owning the `w + 1`-th kilobyte from the end; the configuration rows count it, so no
//! tile reaches it. Only its own warp touches it, so warp barriers order it.

use super::smem_tile::SmemTile;
use super::warp_mma::{HalfARegs, Major, Origin, WarpMma, half_to_a};
use crate::element::Element;
use crate::primitives::index::{lane_id, warp_id};
use crate::primitives::shared;
use crate::primitives::sync::warp_barrier;
use crate::primitives::wmma::{self, Accumulator, Fragment};

/// The WMMA family.
pub enum Wmma {}

/// f32 elements per scratch row (a 16 x 16 tile, no padding: 1 KB).
const SCRATCH_LD: u32 = 16;

impl Wmma {
    /// This warp's scratch: a 32-byte aligned kilobyte of shared memory only it uses.
    #[inline(always)]
    fn scratch() -> u32 {
        shared::dynamic_smem_base() + shared::dynamic_smem_size()
            - (warp_id() + 1) * Self::SCRATCH_BYTES as u32
    }

    /// Shared address of the 16 x 16 block of an operand tile `down` 16-row steps and `across`
    /// 16-column steps from `at`.
    #[inline(always)]
    fn block_addr<T: Element, const D: usize>(
        tile: SmemTile<T, D>,
        at: Origin,
        down: usize,
        across: usize,
    ) -> u32 {
        tile.element_addr(at.row + 16 * down as u32, at.col + 16 * across as u32)
    }

    /// Loads A's 16 x 16 block for row tile `mt` and k-step `ks`.
    ///
    /// # Safety
    /// The tile holds the block and is visible to the warp; every lane calls it.
    #[inline(always)]
    unsafe fn load_a<T: Element, A: Major, const DA: usize>(
        a: SmemTile<T, DA>,
        at: Origin,
        mt: usize,
        ks: usize,
    ) -> Fragment {
        let ld = SmemTile::<T, DA>::ROW_BYTES / 2;
        // SAFETY: forwarded; the block is 32-byte aligned (module documentation).
        unsafe {
            if A::K_MAJOR {
                wmma::load_a::<false>(Self::block_addr(a, at, mt, ks), ld)
            } else {
                wmma::load_a::<true>(Self::block_addr(a, at, ks, mt), ld)
            }
        }
    }

    /// Loads B's 16 x 16 block for column pair `np` (16 columns) and k-step `ks`.
    ///
    /// # Safety
    /// As for [`Wmma::load_a`].
    #[inline(always)]
    unsafe fn load_b<T: Element, B: Major, const DB: usize>(
        b: SmemTile<T, DB>,
        at: Origin,
        np: usize,
        ks: usize,
    ) -> Fragment {
        let ld = SmemTile::<T, DB>::ROW_BYTES / 2;
        // SAFETY: forwarded.
        unsafe {
            if B::K_MAJOR {
                wmma::load_b::<true>(Self::block_addr(b, at, np, ks), ld)
            } else {
                wmma::load_b::<false>(Self::block_addr(b, at, ks, np), ld)
            }
        }
    }

    /// Adds a 16 x 16 product to the two m16n8 accumulator tiles it covers (columns 0-7 and
    /// 8-15), through the warp's scratch.
    ///
    /// # Safety
    /// Every lane of the warp calls it.
    #[inline(always)]
    unsafe fn accumulate(lo: &mut [f32; 4], hi: &mut [f32; 4], c: Accumulator) {
        let scratch = Self::scratch();
        // SAFETY: the warp's own scratch holds the 16 x 16 f32 tile; every lane is here. The
        // barrier after the reads keeps the next store from overwriting values not yet read.
        unsafe {
            wmma::store_acc(scratch, c, SCRATCH_LD);
            warp_barrier();
            for (half, tile) in [lo, hi].into_iter().enumerate() {
                for (e, x) in tile.iter_mut().enumerate() {
                    let (r, col) = Self::position(e);
                    let at = scratch + 4 * (r * SCRATCH_LD + 8 * half as u32 + col);
                    *x += f32::from_bits(shared::ld_shared_u32(at));
                }
            }
            warp_barrier();
        }
    }

    /// An A operand in registers as a fragment, through the warp's scratch (16 x 16 f16,
    /// row-major).
    ///
    /// # Safety
    /// Every lane of the warp calls it.
    #[inline(always)]
    unsafe fn a_fragment(a: &HalfARegs) -> Fragment {
        let scratch = Self::scratch();
        let l = lane_id();
        let (g, t) = (l / 4, l % 4);
        // Rows of 16 f16: 32 bytes.
        let at = |row: u32, col: u32| scratch + 32 * row + 2 * col;
        // SAFETY: the warp's own scratch; every lane is here, and the barrier before the load
        // makes every lane's pairs visible; the one after keeps the next write from racing it.
        unsafe {
            shared::st_shared_u32(at(g, 2 * t), a[0]);
            shared::st_shared_u32(at(g + 8, 2 * t), a[1]);
            shared::st_shared_u32(at(g, 2 * t + 8), a[2]);
            shared::st_shared_u32(at(g + 8, 2 * t + 8), a[3]);
            warp_barrier();
            let f = wmma::load_a::<false>(scratch, 16);
            warp_barrier();
            f
        }
    }
}

impl WarpMma for Wmma {
    const SCRATCH_BYTES: usize = 1024;
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
        const {
            assert!(
                NT.is_multiple_of(2) && !T::IS_BF16 && T::BYTES == 2,
                "WMMA takes f16, in 16-column blocks"
            )
        };
        for (mt, acc_m) in acc.iter_mut().enumerate() {
            for np in 0..NT / 2 {
                let mut c = Accumulator::ZERO;
                for ks in 0..KS {
                    // SAFETY: forwarded to the caller.
                    let (fa, fb) = unsafe {
                        (Self::load_a::<T, A, DA>(a, a_at, mt, ks), Self::load_b::<T, B, DB>(b, b_at, np, ks))
                    };
                    c = match (A::K_MAJOR, B::K_MAJOR) {
                        (true, true) => wmma::mma::<false, true>(c, fa, fb),
                        (true, false) => wmma::mma::<false, false>(c, fa, fb),
                        (false, true) => wmma::mma::<true, true>(c, fa, fb),
                        (false, false) => wmma::mma::<true, false>(c, fa, fb),
                    };
                }
                let (lo, hi) = acc_m.split_at_mut(2 * np + 1);
                // SAFETY: every lane runs this loop (uniform bounds).
                unsafe { Self::accumulate(&mut lo[2 * np], &mut hi[0], c) };
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
        const {
            assert!(
                NT.is_multiple_of(2) && !T::IS_BF16 && T::BYTES == 2,
                "WMMA takes f16, in 16-column blocks"
            )
        };
        for (acc_m, a_m) in acc.iter_mut().zip(a) {
            let mut fa = [Fragment([0; 8]); KS];
            for (f, regs) in fa.iter_mut().zip(a_m) {
                // SAFETY: every lane runs this loop.
                *f = unsafe { Self::a_fragment(regs) };
            }
            for np in 0..NT / 2 {
                let mut c = Accumulator::ZERO;
                for (ks, &f) in fa.iter().enumerate() {
                    // SAFETY: forwarded to the caller.
                    let fb = unsafe { Self::load_b::<T, B, DB>(b, b_at, np, ks) };
                    c = if B::K_MAJOR {
                        wmma::mma::<false, true>(c, f, fb)
                    } else {
                        wmma::mma::<false, false>(c, f, fb)
                    };
                }
                let (lo, hi) = acc_m.split_at_mut(2 * np + 1);
                // SAFETY: every lane runs this loop.
                unsafe { Self::accumulate(&mut lo[2 * np], &mut hi[0], c) };
            }
        }
    }
}
