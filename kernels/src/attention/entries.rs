//! The attention kernels' entry points: one per row of the configuration tables
//! (`rustflash_abi::forward_configs!`, `backward_configs!`), all instances of the bodies in
//! [`super::forward`], [`super::backward`], [`super::backward_dq`] and [`super::backward_rows`].

//!
//! Each build instantiates the rows of the matrix-multiply families it has ([`for_family!`],
//! [`family!`]): the `sm_80` and `sm_90a` builds the `sm80` rows on `mma.sync` and the `tf32`
//! and `tf32x3` rows on TF32 `mma.sync`, the `sm_70` build the `sm70` rows on WMMA and the
//! `simt` rows on the CUDA cores. The other rows expand to nothing.

use super::backward::backward;
use super::backward_dq::backward_dq;
use super::backward_rows::{backward_convert, backward_pre};
use super::forward::forward;
use super::warp_mma::WarpMma;
#[cfg(target_feature = "sm_80")]
use crate::element::Bf16;
use crate::element::{F16, F32};
use crate::kernel_attrs::KernelAttrs;
use rustflash_abi::{BackwardConfig, BackwardParams, ForwardConfig, ForwardParams, ROW_KERNEL_THREADS};

/// The [`WarpMma`] implementation of a row's family.
macro_rules! family {
    (sm80) => {
        super::mma_sm80::Sm80
    };
    (tf32) => {
        super::mma_tf32::Tf32<false>
    };
    (tf32x3) => {
        super::mma_tf32::Tf32<true>
    };
    (sm70) => {
        super::mma_wmma::Wmma
    };
    (simt) => {
        super::mma_simt::Simt
    };
}

/// The items, if the row's family is built into this module.
macro_rules! for_family {
    (sm70, $($item:item)*) => {$(
        #[cfg(not(target_feature = "sm_80"))]
        $item
    )*};
    (simt, $($item:item)*) => {$(
        #[cfg(not(target_feature = "sm_80"))]
        $item
    )*};
    ($fam:ident, $($item:item)*) => {$(
        #[cfg(target_feature = "sm_80")]
        $item
    )*};
}

macro_rules! forward_entries {
    ($(($fam:ident, $dt:ident, $variant:ident, $d:literal, $bm:literal, $bn:literal, $w:literal, $stages:literal, $tile:ident))*) => {$(
        for_family!($fam, const _: () = {
            const CONFIG: ForwardConfig = rustflash_abi::forward_config!($fam, $dt, $variant, $d, $bm, $bn, $w, $stages, $tile);
            // The row's shared memory counts the family's scratch.
            type Family = family!($fam);
            const { assert!(<Family as WarpMma>::SCRATCH_BYTES == CONFIG.family.scratch_bytes()) };
            const THREADS: usize = CONFIG.threads();
            // The body's schedule (FlashAttention-2's: K_j+1 loads during P V_j, V_j during
            // Q K_jᵀ) keeps one K and one V tile; it measured best on the H100 (see
            // docs/performance-notes.md). A row with more stages needs the mainloop's
            // multi-stage variant first.
            const { assert!(CONFIG.kv_stages == 1, "the mainloop has one K/V stage") };
            // Register tiles, all derived from the row (Rust cannot yet size arrays from
            // expressions of const parameters inside the body).
            const MT: usize = CONFIG.rows_per_warp() / 16;
            const NT: usize = CONFIG.block_n / 8;
            const DT: usize = CONFIG.head_dim / 8;
            kernel_attrs!(
                name = rustflash_abi::forward_kernel_name!($fam, $dt, $d, $bm, $bn, $w),
                KernelAttrs::new()
                    .max_threads(THREADS as u32)
                    .min_blocks_per_sm(1)
                    .dynamic_shared_bytes(CONFIG.shared_bytes() as u32)
                    .hot()
            );

            /// Attention forward (see `attention::forward::forward`).
            ///
            /// # Safety
            /// As for `attention::forward::forward`.
            #[unsafe(export_name = rustflash_abi::forward_kernel_name!($fam, $dt, $d, $bm, $bn, $w))]
            pub unsafe extern "ptx-kernel" fn entry(p: ForwardParams) {
                // SAFETY: the host launches this entry as its configuration row says.
                unsafe {
                    forward::<$variant, Family, { CONFIG.head_dim }, { CONFIG.block_m }, { CONFIG.block_n }, THREADS, MT, NT, DT, { NT / 2 }, { DT / 2 }, { 2 * MT }, { 2 * NT }>(&p)
                }
            }
        };);
    )*};
}

rustflash_abi::forward_configs!(forward_entries);

/// The backward's main and deterministic dQ kernels: one of each per row of
/// `rustflash_abi::backward_configs!`, instances of [`backward`] and [`backward_dq`].
macro_rules! backward_entries {
    ($(($fam:ident, $dt:ident, $variant:ident, $d:literal, $tile:ident, $bm:literal, $bn:literal, $wn:literal, $wd:literal, $qs:literal, $qbm:literal, $qbn:literal))*) => {$(
        for_family!($fam, const _: () = {
            const CONFIG: BackwardConfig =
                rustflash_abi::backward_config!($fam, $dt, $variant, $d, $tile, $bm, $bn, $wn, $wd, $qs, $qbm, $qbn);
            type Family = family!($fam);
            const { assert!(<Family as WarpMma>::SCRATCH_BYTES == CONFIG.family.scratch_bytes()) };
            const THREADS: usize = CONFIG.threads();
            const D: usize = CONFIG.head_dim;
            const BM: usize = CONFIG.block_m;
            const WD: usize = CONFIG.warps_d;
            const SN: usize = BM / WD / 8;
            // dQ's tile split: one 16-row tile per warp along the rows while there are enough.
            const DQ_WARPS_M: usize = if BM / 16 < CONFIG.warps() { BM / 16 } else { CONFIG.warps() };
            const QM: usize = BM / 16 / DQ_WARPS_M;
            const QN: usize = D / 8 / (CONFIG.warps() / DQ_WARPS_M);
            kernel_attrs!(
                name = rustflash_abi::backward_kernel_name!($fam, $dt, $d, $bm, $bn, $wn, $wd, $qs),
                KernelAttrs::new()
                    .max_threads(THREADS as u32)
                    .min_blocks_per_sm(1)
                    .dynamic_shared_bytes(CONFIG.shared_bytes() as u32)
                    .hot()
            );

            /// Attention backward, main kernel (see `attention::backward::backward`).
            ///
            /// # Safety
            /// As for `attention::backward::backward`.
            #[unsafe(export_name = rustflash_abi::backward_kernel_name!($fam, $dt, $d, $bm, $bn, $wn, $wd, $qs))]
            pub unsafe extern "ptx-kernel" fn main(p: BackwardParams) {
                // SAFETY: the host launches this entry as its configuration row says.
                unsafe {
                    backward::<$variant, Family, D, BM, { CONFIG.block_n }, { CONFIG.warps_n }, WD, { CONFIG.query_stages }, THREADS, SN, { SN / 2 }, { 2 * SN }, { D / WD / 8 }, { D / 16 }, { BM / 16 }, QM, QN, { CONFIG.block_n / 16 }>(&p)
                }
            }

            const DQ_THREADS: usize = CONFIG.dq_threads();
            const DQ_BN: usize = CONFIG.dq_block_n;
            kernel_attrs!(
                name = rustflash_abi::backward_dq_kernel_name!($fam, $dt, $d, $qbm, $qbn),
                KernelAttrs::new()
                    .max_threads(DQ_THREADS as u32)
                    .min_blocks_per_sm(1)
                    .dynamic_shared_bytes(CONFIG.dq_shared_bytes() as u32)
                    .hot()
            );

            /// Attention backward, deterministic dQ (see `attention::backward_dq::backward_dq`).
            ///
            /// # Safety
            /// As for `attention::backward_dq::backward_dq`.
            #[unsafe(export_name = rustflash_abi::backward_dq_kernel_name!($fam, $dt, $d, $qbm, $qbn))]
            pub unsafe extern "ptx-kernel" fn dq(p: BackwardParams) {
                // SAFETY: the host launches this entry as its configuration row says.
                unsafe {
                    backward_dq::<$variant, Family, D, { CONFIG.dq_block_m }, DQ_BN, DQ_THREADS, { DQ_BN / 8 }, { D / 8 }, { DQ_BN / 16 }, { D / 16 }, { DQ_BN / 4 }>(&p)
                }
            }
        };);
    )*};
}

rustflash_abi::backward_configs!(backward_entries);

/// The backward's row-wise kernels, one pre-pass and one conversion per element type.
macro_rules! backward_row_entries {
    ($fam:ident: $($dt:ident $variant:ident),*) => {$(
        for_family!($fam, const _: () = {
            kernel_attrs!(
                name = rustflash_abi::backward_pre_kernel_name!($fam, $dt),
                KernelAttrs::new().max_threads(ROW_KERNEL_THREADS as u32)
            );
            /// The backward's pre-pass (see `attention::backward_rows::backward_pre`).
            ///
            /// # Safety
            /// As for `attention::backward_rows::backward_pre`.
            #[unsafe(export_name = rustflash_abi::backward_pre_kernel_name!($fam, $dt))]
            pub unsafe extern "ptx-kernel" fn pre(p: BackwardParams) {
                // SAFETY: the host launches it as the function requires.
                unsafe { backward_pre::<$variant>(&p) }
            }

            kernel_attrs!(
                name = rustflash_abi::backward_convert_kernel_name!($fam, $dt),
                KernelAttrs::new().max_threads(ROW_KERNEL_THREADS as u32)
            );
            /// The dQ conversion (see `attention::backward_rows::backward_convert`).
            ///
            /// # Safety
            /// As for `attention::backward_rows::backward_convert`.
            #[unsafe(export_name = rustflash_abi::backward_convert_kernel_name!($fam, $dt))]
            pub unsafe extern "ptx-kernel" fn convert(p: BackwardParams) {
                // SAFETY: the host launches it as the function requires.
                unsafe { backward_convert::<$variant>(&p) }
            }
        };);
    )*};
}

backward_row_entries!(sm80: f16 F16, bf16 Bf16);
backward_row_entries!(tf32: f32 F32);
backward_row_entries!(tf32x3: f32 F32);
backward_row_entries!(sm70: f16 F16);
backward_row_entries!(simt: f32 F32);
