//! The forward kernels' entry points: one per (element type, head-dim bucket, tile shape),
//! all instances of the one generic body in `forward_sm80`.
//!
//! Names: `flash_fwd_sm80_<dtype>_d<bucket>_m<BM>n<BN>`. The host keeps the same table.

use super::forward_sm80::forward;
use crate::kernel_attrs::KernelAttrs;
use crate::primitives::mma::{Bf16, F16};
use rustflash_abi::ForwardParams;

macro_rules! forward_kernels {
    ($($name:ident: $t:ty, d = $d:literal, m = $bm:literal, n = $bn:literal;)*) => {$(
        kernel_attrs!($name, KernelAttrs::new().max_threads(2 * $bm).min_blocks_per_sm(1).hot());

        /// Attention forward (see `forward_sm80::forward`).
        ///
        /// # Safety
        /// As for `forward_sm80::forward`.
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: ForwardParams) {
            unsafe { forward::<$t, $d, { $d / 8 }, $bm, $bn, { $bn / 8 }, { $bn / 4 }, { 2 * $bm }>(&p) }
        }
    )*};
}

// Two tile shapes per bucket: 128 x 64 (8 warps; 128 x 32 above d = 128) where shared memory
// allows, 64 x 32 (4 warps) everywhere else.
forward_kernels! {
    flash_fwd_sm80_f16_d32_m128n64: F16, d = 32, m = 128, n = 64;
    flash_fwd_sm80_f16_d64_m128n64: F16, d = 64, m = 128, n = 64;
    flash_fwd_sm80_f16_d96_m128n64: F16, d = 96, m = 128, n = 64;
    flash_fwd_sm80_f16_d128_m128n64: F16, d = 128, m = 128, n = 64;
    flash_fwd_sm80_f16_d160_m128n32: F16, d = 160, m = 128, n = 32;
    flash_fwd_sm80_f16_d192_m128n32: F16, d = 192, m = 128, n = 32;
    flash_fwd_sm80_f16_d224_m128n32: F16, d = 224, m = 128, n = 32;
    flash_fwd_sm80_f16_d256_m128n32: F16, d = 256, m = 128, n = 32;
    flash_fwd_sm80_f16_d32_m64n32: F16, d = 32, m = 64, n = 32;
    flash_fwd_sm80_f16_d64_m64n32: F16, d = 64, m = 64, n = 32;
    flash_fwd_sm80_f16_d96_m64n32: F16, d = 96, m = 64, n = 32;
    flash_fwd_sm80_f16_d128_m64n32: F16, d = 128, m = 64, n = 32;
    flash_fwd_sm80_f16_d160_m64n32: F16, d = 160, m = 64, n = 32;
    flash_fwd_sm80_f16_d192_m64n32: F16, d = 192, m = 64, n = 32;
    flash_fwd_sm80_f16_d224_m64n32: F16, d = 224, m = 64, n = 32;
    flash_fwd_sm80_f16_d256_m64n32: F16, d = 256, m = 64, n = 32;
    flash_fwd_sm80_bf16_d32_m128n64: Bf16, d = 32, m = 128, n = 64;
    flash_fwd_sm80_bf16_d64_m128n64: Bf16, d = 64, m = 128, n = 64;
    flash_fwd_sm80_bf16_d96_m128n64: Bf16, d = 96, m = 128, n = 64;
    flash_fwd_sm80_bf16_d128_m128n64: Bf16, d = 128, m = 128, n = 64;
    flash_fwd_sm80_bf16_d160_m128n32: Bf16, d = 160, m = 128, n = 32;
    flash_fwd_sm80_bf16_d192_m128n32: Bf16, d = 192, m = 128, n = 32;
    flash_fwd_sm80_bf16_d224_m128n32: Bf16, d = 224, m = 128, n = 32;
    flash_fwd_sm80_bf16_d256_m128n32: Bf16, d = 256, m = 128, n = 32;
    flash_fwd_sm80_bf16_d32_m64n32: Bf16, d = 32, m = 64, n = 32;
    flash_fwd_sm80_bf16_d64_m64n32: Bf16, d = 64, m = 64, n = 32;
    flash_fwd_sm80_bf16_d96_m64n32: Bf16, d = 96, m = 64, n = 32;
    flash_fwd_sm80_bf16_d128_m64n32: Bf16, d = 128, m = 64, n = 32;
    flash_fwd_sm80_bf16_d160_m64n32: Bf16, d = 160, m = 64, n = 32;
    flash_fwd_sm80_bf16_d192_m64n32: Bf16, d = 192, m = 64, n = 32;
    flash_fwd_sm80_bf16_d224_m64n32: Bf16, d = 224, m = 64, n = 32;
    flash_fwd_sm80_bf16_d256_m64n32: Bf16, d = 256, m = 64, n = 32;
}
