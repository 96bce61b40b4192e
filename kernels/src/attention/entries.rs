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
                    forward::<$variant, Sm80, $d, $bm, $bn, THREADS, { $bm / 16 / $w }, { $bn / 8 }, { $d / 8 }, { $bn / 16 }, { $d / 16 }, { 2 * ($bm / 16 / $w) }, { $bn / 4 }>(&p)
                }
            }
        };
    )*};
}

rustflash_abi::forward_configs!(forward_entries);
