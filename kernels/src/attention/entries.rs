//! The forward kernels' entry points: one per row of the configuration table
//! (`rustflash_abi::forward_configs!`), all instances of the one body in [`super::forward`].

use super::forward::forward;
use super::mma_sm80::Sm80;
use crate::element::{Bf16, F16};
use crate::kernel_attrs::KernelAttrs;
use rustflash_abi::{ForwardConfig, ForwardParams};

macro_rules! forward_entries {
    ($(($dt:ident, $variant:ident, $d:literal, $bm:literal, $bn:literal, $w:literal, $stages:literal, $tile:ident))*) => {$(
        const _: () = {
            const CONFIG: ForwardConfig = rustflash_abi::forward_config!($dt, $variant, $d, $bm, $bn, $w, $stages, $tile);
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
                name = rustflash_abi::forward_kernel_name!($dt, $d, $bm, $bn, $w),
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
            #[unsafe(export_name = rustflash_abi::forward_kernel_name!($dt, $d, $bm, $bn, $w))]
            pub unsafe extern "ptx-kernel" fn entry(p: ForwardParams) {
                // SAFETY: the host launches this entry as its configuration row says.
                unsafe {
                    forward::<$variant, Sm80, { CONFIG.head_dim }, { CONFIG.block_m }, { CONFIG.block_n }, THREADS, MT, NT, DT, { NT / 2 }, { DT / 2 }, { 2 * MT }, { 2 * NT }>(&p)
                }
            }
        };
    )*};
}

rustflash_abi::forward_configs!(forward_entries);
