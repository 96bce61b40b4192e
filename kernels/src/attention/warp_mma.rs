//! The matrix-multiply part: a warp's share of a tile product, one implementation per
//! instruction family.
//!
//! Accumulators are `[[[f32; 4]; NT]; MT]`: `MT` row tiles of 16 rows by `NT` column tiles of 8,
//! each `[f32; 4]` in the m16n8 accumulator layout (lane `l`, `g = l / 4`, `t = l % 4`: rows `g`
//! and `g + 8`, columns `2t` and `2t + 1`). `mma.sync` produces that layout directly, and so does
//! each warp of a Hopper `wgmma` warpgroup; a family whose fragments are opaque (Volta's WMMA)
//! implements the trait by staging its results through shared memory. That layout is part of
//! the trait's contract: the mainloop and the epilogue index accumulator elements by it
//! ([`WarpMma::position`] names each element's row and column) and combine a row's values
//! across the four lanes that hold it.
//!
//! Operands come from shared-memory tiles ([`SmemTile`]) in either orientation, which covers
//! the products of the forward and the backward:
//!
//! | product | A | B |
//! | --- | --- | --- |
//! | `S = Q Kᵀ`, `dP = dO Vᵀ` | rows of Q (K-major) | rows of K (K-major) |
//! | `O += P V`, `dQ += dS K` | P in registers | rows of V (N-major) |
//! | `dV += Pᵀ dO`, `dK += dSᵀ Q` | Pᵀ from shared memory (M-major) | rows of dO (N-major) |

use super::smem_tile::SmemTile;
use crate::element::Element;
use crate::primitives::index::lane_id;

/// The 16-bit families' A operand in registers: one 16 x 16 tile in the `mma.m16n8k16` A layout
/// (lane `l`, `g = l / 4`, `t = l % 4`: registers hold the pairs at (row, columns) `(g, 2t)`,
/// `(g + 8, 2t)`, `(g, 2t + 8)`, `(g + 8, 2t + 8)`), two elements per register: what the m16n8
/// accumulators of two adjacent 8-column tiles become when rounded in place.
pub type HalfARegs = [u32; 4];

/// [`WarpMma::to_a`] of the 16-bit families: accumulators rounded to `T` and paired in place.
#[inline(always)]
pub fn half_to_a<T: Element, const MT: usize, const NT: usize, const KS: usize>(
    acc: &[[[f32; 4]; NT]; MT],
) -> [[HalfARegs; KS]; MT] {
    const { assert!(NT == 2 * KS && T::BYTES == 2) };
    let mut a = [[[0u32; 4]; KS]; MT];
    for mt in 0..MT {
        for ks in 0..KS {
            // The accumulators of two adjacent 8-column tiles are exactly an A fragment.
            let (lo, hi) = (&acc[mt][2 * ks], &acc[mt][2 * ks + 1]);
            a[mt][ks] = [
                T::pack2(lo[0], lo[1]),
                T::pack2(lo[2], lo[3]),
                T::pack2(hi[0], hi[1]),
                T::pack2(hi[2], hi[3]),
            ];
        }
    }
    a
}

/// How an operand tile is stored: `KMajor` when the contraction dimension is contiguous (a row
/// of the tile is one m or n index), `MnMajor` when the other one is.
pub trait Major {
    const K_MAJOR: bool;
}
pub enum KMajor {}
pub enum MnMajor {}
impl Major for KMajor {
    const K_MAJOR: bool = true;
}
impl Major for MnMajor {
    const K_MAJOR: bool = false;
}

/// Where an operand starts in its tile: `row` and column of the tile's first element the warp
/// uses (for a K-major operand, the first m/n row and k column; for an MN-major one, the first k
/// row and m/n column). Columns are multiples of 16.
#[derive(Clone, Copy)]
pub struct Origin {
    pub row: u32,
    pub col: u32,
}

/// A warp-level matrix-multiply family with m16n8 accumulators.
pub trait WarpMma {
    /// Shared memory the family needs per warp, at the end of the block's dynamic shared memory
    /// (the configuration row counts it: `rustflash_abi::MmaFamily::scratch_bytes`).
    const SCRATCH_BYTES: usize;

    /// An A operand of one 16 x 16 tile in registers (P, dS), in the family's own layout, made
    /// from accumulators by [`WarpMma::to_a`] and consumed by [`WarpMma::gemm_rs`] only.
    type ARegs: Copy;

    /// Row and column, within its 16 x 8 tile, of element `e` (0..4) of this lane's
    /// accumulator.
    #[inline(always)]
    fn position(e: usize) -> (u32, u32) {
        let l = lane_id();
        (l / 4 + 8 * (e as u32 / 2), 2 * (l % 4) + (e as u32 % 2))
    }

    /// `acc += A · B` over `16 KS` values of k: A is `16 MT` rows, B is `8 NT` columns, both read
    /// from shared memory in the given orientations.
    ///
    /// # Safety
    /// Both tiles are filled and visible to the warp and hold the rows and chunks named.
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
    );

    /// `acc += A · B` with A already in registers (`KS` k-steps of 16), B from shared memory.
    ///
    /// # Safety
    /// As for [`WarpMma::gemm_ss`].
    unsafe fn gemm_rs<
        T: Element,
        B: Major,
        const MT: usize,
        const NT: usize,
        const KS: usize,
        const DB: usize,
    >(
        acc: &mut [[[f32; 4]; NT]; MT],
        a: &[[Self::ARegs; KS]; MT],
        b: SmemTile<T, DB>,
        b_at: Origin,
    );

    /// Accumulators of 16 x 16 tiles (two adjacent 8-column tiles each), rounded to `T`, as A
    /// operands of the next product: how P feeds `P V` without shared memory.
    fn to_a<T: Element, const MT: usize, const NT: usize, const KS: usize>(
        acc: &[[[f32; 4]; NT]; MT],
    ) -> [[Self::ARegs; KS]; MT];
}
