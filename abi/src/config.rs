//! The table of forward kernel configurations.
//!
//! Each row is one kernel: element type, head-dim bucket (head dims are padded up to it inside
//! the kernel), query rows and keys per block, warps, and K/V pipeline stages. Everything else —
//! threads, shared memory, the kernel's name — is derived here, once. The kernels crate expands
//! [`forward_configs!`] into entry points; this crate expands it into [`FORWARD_CONFIGS`], which
//! the host dispatches from. A new tile shape or dtype is a new row.

/// The element type of Q, K, V and O.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// IEEE 754 half precision (`half::f16`): 5 exponent bits, 10 mantissa bits.
    F16,
    /// bfloat16 (`half::bf16`): 8 exponent bits, 7 mantissa bits.
    Bf16,
    /// IEEE 754 single precision: TF32 tensor cores (one product, or three for the accurate
    /// mode) on compute capability 8.0 and newer.
    F32,
}

impl Dtype {
    /// The size of one element in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            Dtype::F16 | Dtype::Bf16 => 2,
            Dtype::F32 => 4,
        }
    }
    /// `"f16"`, `"bf16"` or `"f32"`, as the kernels' names spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
            Dtype::F32 => "f32",
        }
    }
}

/// The warp matrix-multiply family a kernel is built on. It fixes the PTX module the kernel
/// lives in and its shared-memory layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MmaFamily {
    /// `mma.sync` m16n8k16, `ldmatrix`, `cp.async`: the `sm_80` and `sm_90a` modules. Tiles are
    /// swizzled rows of `2 · cols` bytes.
    Sm80,
    /// WMMA m16n16k16: the `sm_70` module (Volta and Turing; it runs on any GPU of compute
    /// capability 7.0 or newer). float16 only. WMMA loads take plain strided tiles, so rows are
    /// padded by 16 bytes instead of swizzled, and each warp has [`MmaFamily::scratch_bytes`]
    /// at the end of the block's shared memory, through which its accumulators reach the m16n8
    /// layout the kernels index (the WMMA layout is opaque).
    Wmma,
    /// `mma.sync` m16n8k8 on TF32 (float32 inputs, one product per operand pair, each operand
    /// rounded to TF32's 10 mantissa bits): the `sm_80` and `sm_90a` modules. Tiles are
    /// swizzled rows of `4 · cols` bytes.
    Tf32,
    /// As [`MmaFamily::Tf32`], with each operand split into a high and a low TF32 part and three
    /// products per pair (`hi·hi + hi·lo + lo·hi`, "3xTF32"): about float32's accuracy for three
    /// times the tensor-core work.
    Tf32x3,
    /// CUDA-core `fma.rn.f32` (float32 inputs, exact products summed in f32: plain float32
    /// arithmetic): the `sm_70` module's float32 family, where there is no TF32. Tiles are the
    /// module's padded rows, `4 · cols + 16` bytes; no scratch.
    Simt,
}

impl MmaFamily {
    /// `"sm80"`, `"sm70"`, `"tf32"`, `"tf32x3"` or `"simt"`, as kernel names spell it.
    pub const fn name(self) -> &'static str {
        match self {
            MmaFamily::Sm80 => "sm80",
            MmaFamily::Wmma => "sm70",
            MmaFamily::Tf32 => "tf32",
            MmaFamily::Tf32x3 => "tf32x3",
            MmaFamily::Simt => "simt",
        }
    }

    /// The element size of the family's operands in shared memory, in bytes.
    pub const fn element_bytes(self) -> usize {
        match self {
            MmaFamily::Sm80 | MmaFamily::Wmma => 2,
            MmaFamily::Tf32 | MmaFamily::Tf32x3 | MmaFamily::Simt => 4,
        }
    }

    /// Bytes per row of a shared-memory tile of `cols` elements.
    pub const fn tile_row_bytes(self, cols: usize) -> usize {
        match self {
            MmaFamily::Sm80 | MmaFamily::Tf32 | MmaFamily::Tf32x3 => self.element_bytes() * cols,
            // The sm_70 module pads rows by 16 bytes instead of swizzling them.
            MmaFamily::Wmma | MmaFamily::Simt => self.element_bytes() * cols + 16,
        }
    }

    /// Scratch bytes per warp at the end of dynamic shared memory (one 16 x 16 f32 tile).
    pub const fn scratch_bytes(self) -> usize {
        match self {
            MmaFamily::Sm80 | MmaFamily::Tf32 | MmaFamily::Tf32x3 | MmaFamily::Simt => 0,
            MmaFamily::Wmma => 1024,
        }
    }
}

/// The [`MmaFamily`] a row of the configuration tables names (`sm80`, `sm70`, `tf32`, `tf32x3`,
/// `simt`).
#[doc(hidden)]
#[macro_export]
macro_rules! mma_family {
    (sm80) => {
        $crate::MmaFamily::Sm80
    };
    (sm70) => {
        $crate::MmaFamily::Wmma
    };
    (tf32) => {
        $crate::MmaFamily::Tf32
    };
    (tf32x3) => {
        $crate::MmaFamily::Tf32x3
    };
    (simt) => {
        $crate::MmaFamily::Simt
    };
}

/// A class of tile shapes. The host picks the first class whose shared memory fits the GPU;
/// tests force each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ForwardTile {
    /// The fast shape for GPUs with at least ~100 KB of shared memory per block (A100, H100,
    /// RTX 30/40): 128 query rows (64 above head dim 128), 4 warps.
    Large,
    /// 64 query rows and 32 keys per block, 4 warps: fits 64 KB at head dim 256.
    Small,
}

impl ForwardTile {
    /// In order of preference.
    pub const ALL: [ForwardTile; 2] = [ForwardTile::Large, ForwardTile::Small];
}

/// One forward kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardConfig {
    /// The matrix-multiply family (and so the module) of the kernel.
    pub family: MmaFamily,
    /// The element type of Q, K, V and O this kernel reads and writes.
    pub dtype: Dtype,
    /// Head-dim bucket: a multiple of 32 up to 256.
    pub head_dim: usize,
    /// Query rows per block.
    pub block_m: usize,
    /// Keys per K/V tile.
    pub block_n: usize,
    /// Warps per block; the block has `32 · warps` threads.
    pub warps: usize,
    /// K/V tiles in shared memory at once, per operand. 1 in every row: the mainloop keeps one
    /// K and one V tile (FlashAttention-2's schedule), and the kernels refuse other values.
    pub kv_stages: usize,
    /// The tile class this row belongs to.
    pub tile: ForwardTile,
    /// The kernel's `.entry` name.
    pub name: &'static str,
}

impl ForwardConfig {
    /// Threads per block: `32 · warps`.
    pub const fn threads(&self) -> usize {
        32 * self.warps
    }

    /// Query rows per warp (16 per `mma` tile).
    pub const fn rows_per_warp(&self) -> usize {
        self.block_m / self.warps
    }

    /// Dynamic shared memory: the Q tile (reused for O in the epilogue), `kv_stages` K and V
    /// tiles, and the family's per-warp scratch.
    pub const fn shared_bytes(&self) -> usize {
        let row = self.family.tile_row_bytes(self.head_dim);
        self.block_m * row
            + 2 * self.kv_stages * self.block_n * row
            + self.warps * self.family.scratch_bytes()
    }

    /// Blocks along a query sequence of `seqlen_q` rows.
    pub const fn m_blocks(&self, seqlen_q: usize) -> usize {
        seqlen_q.div_ceil(self.block_m)
    }
}

/// A forward kernel's name: `flash_fwd_<family>_<dtype>_d<bucket>_m<rows>n<keys>w<warps>`.
#[macro_export]
macro_rules! forward_kernel_name {
    ($fam:ident, $dt:ident, $d:literal, $bm:literal, $bn:literal, $w:literal) => {
        concat!("flash_fwd_", stringify!($fam), "_", stringify!($dt), "_d", $d, "_m", $bm, "n", $bn, "w", $w)
    };
}

/// Calls `$callback!` with every forward configuration, one
/// `(family, dtype, Dtype variant, bucket, block_m, block_n, warps, kv_stages, ForwardTile variant)`
/// tuple per kernel; `family` is `sm80` or `sm70` ([`mma_family!`]).
///
/// `sm80` shapes (chosen by measurement on the H100, see docs/performance-notes.md): 4 warps; up
/// to head dim 128 each warp owns 32 query rows (two `mma` row tiles, so every K/V fragment read
/// from shared memory feeds two products); above it, 16 rows, to stay within 255 registers.
///
/// `sm70` shapes (WMMA, float16 only), sized for shared memory: Large fits a V100's 96 KB at every
/// head dim and a T4's 64 KB up to head dim 224; Small fits 64 KB everywhere.
///
/// `tf32` and `tf32x3` shapes (float32: tiles twice as wide in bytes, and P in registers twice
/// as large as float16's), one 16-row tile per warp: Large fits 99 KB (RTX 30/40) at every head
/// dim, Small 64 KB.
///
/// `simt` shapes (float32 on the CUDA cores, the `sm_70` module's padded rows): Large fits a
/// V100's 96 KB at every head dim, Small a T4's 64 KB.
#[macro_export]
macro_rules! forward_configs {
    ($callback:path) => {
        $crate::__forward_rows!($callback; [f16 F16, bf16 Bf16]; [f16 F16]; [tf32, tf32x3]);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __forward_rows {
    ($callback:path; [$($dt:ident $variant:ident),*]; [$($vdt:ident $vvariant:ident),*]; [$($ffam:ident),*]) => {
        $callback! {$(
            (sm80, $dt, $variant, 32, 128, 128, 4, 1, Large)
            (sm80, $dt, $variant, 64, 128, 128, 4, 1, Large)
            (sm80, $dt, $variant, 96, 128, 64, 4, 1, Large)
            (sm80, $dt, $variant, 128, 128, 64, 4, 1, Large)
            (sm80, $dt, $variant, 160, 64, 64, 4, 1, Large)
            (sm80, $dt, $variant, 192, 64, 64, 4, 1, Large)
            (sm80, $dt, $variant, 224, 64, 64, 4, 1, Large)
            (sm80, $dt, $variant, 256, 64, 64, 4, 1, Large)
            (sm80, $dt, $variant, 32, 64, 32, 4, 1, Small)
            (sm80, $dt, $variant, 64, 64, 32, 4, 1, Small)
            (sm80, $dt, $variant, 96, 64, 32, 4, 1, Small)
            (sm80, $dt, $variant, 128, 64, 32, 4, 1, Small)
            (sm80, $dt, $variant, 160, 64, 32, 4, 1, Small)
            (sm80, $dt, $variant, 192, 64, 32, 4, 1, Small)
            (sm80, $dt, $variant, 224, 64, 32, 4, 1, Small)
            (sm80, $dt, $variant, 256, 64, 32, 4, 1, Small)
        )* $(
            (sm70, $vdt, $vvariant, 32, 64, 64, 4, 1, Large)
            (sm70, $vdt, $vvariant, 64, 64, 64, 4, 1, Large)
            (sm70, $vdt, $vvariant, 96, 64, 64, 4, 1, Large)
            (sm70, $vdt, $vvariant, 128, 64, 64, 4, 1, Large)
            (sm70, $vdt, $vvariant, 160, 64, 32, 4, 1, Large)
            (sm70, $vdt, $vvariant, 192, 64, 32, 4, 1, Large)
            (sm70, $vdt, $vvariant, 224, 64, 32, 4, 1, Large)
            (sm70, $vdt, $vvariant, 256, 64, 32, 4, 1, Large)
            (sm70, $vdt, $vvariant, 32, 64, 32, 4, 1, Small)
            (sm70, $vdt, $vvariant, 64, 64, 32, 4, 1, Small)
            (sm70, $vdt, $vvariant, 96, 64, 32, 4, 1, Small)
            (sm70, $vdt, $vvariant, 128, 64, 32, 4, 1, Small)
            (sm70, $vdt, $vvariant, 160, 64, 16, 4, 1, Small)
            (sm70, $vdt, $vvariant, 192, 64, 16, 4, 1, Small)
            (sm70, $vdt, $vvariant, 224, 64, 16, 4, 1, Small)
            (sm70, $vdt, $vvariant, 256, 64, 16, 4, 1, Small)
        )* $(
            ($ffam, f32, F32, 32, 64, 64, 4, 1, Large)
            ($ffam, f32, F32, 64, 64, 64, 4, 1, Large)
            ($ffam, f32, F32, 96, 64, 64, 4, 1, Large)
            ($ffam, f32, F32, 128, 64, 64, 4, 1, Large)
            ($ffam, f32, F32, 160, 64, 32, 4, 1, Large)
            ($ffam, f32, F32, 192, 64, 32, 4, 1, Large)
            ($ffam, f32, F32, 224, 64, 16, 4, 1, Large)
            ($ffam, f32, F32, 256, 64, 16, 4, 1, Large)
            ($ffam, f32, F32, 32, 64, 32, 4, 1, Small)
            ($ffam, f32, F32, 64, 64, 32, 4, 1, Small)
            ($ffam, f32, F32, 96, 64, 32, 4, 1, Small)
            ($ffam, f32, F32, 128, 64, 32, 4, 1, Small)
            ($ffam, f32, F32, 160, 64, 16, 4, 1, Small)
            ($ffam, f32, F32, 192, 32, 16, 2, 1, Small)
            ($ffam, f32, F32, 224, 32, 16, 2, 1, Small)
            ($ffam, f32, F32, 256, 32, 16, 2, 1, Small)
        )*
            (simt, f32, F32, 32, 64, 64, 4, 1, Large)
            (simt, f32, F32, 64, 64, 64, 4, 1, Large)
            (simt, f32, F32, 96, 64, 64, 4, 1, Large)
            (simt, f32, F32, 128, 64, 32, 4, 1, Large)
            (simt, f32, F32, 160, 64, 32, 4, 1, Large)
            (simt, f32, F32, 192, 64, 16, 4, 1, Large)
            (simt, f32, F32, 224, 64, 16, 4, 1, Large)
            (simt, f32, F32, 256, 32, 16, 2, 1, Large)
            (simt, f32, F32, 32, 64, 32, 4, 1, Small)
            (simt, f32, F32, 64, 64, 32, 4, 1, Small)
            (simt, f32, F32, 96, 64, 32, 4, 1, Small)
            (simt, f32, F32, 128, 64, 16, 4, 1, Small)
            (simt, f32, F32, 160, 64, 16, 4, 1, Small)
            (simt, f32, F32, 192, 32, 16, 2, 1, Small)
            (simt, f32, F32, 224, 32, 16, 2, 1, Small)
            (simt, f32, F32, 256, 16, 16, 1, 1, Small)
        }
    };
}

/// The [`ForwardConfig`] of one row of [`forward_configs!`].
#[macro_export]
macro_rules! forward_config {
    ($fam:ident, $dt:ident, $variant:ident, $d:literal, $bm:literal, $bn:literal, $w:literal, $st:literal, $tile:ident) => {
        $crate::ForwardConfig {
            family: $crate::mma_family!($fam),
            dtype: $crate::Dtype::$variant,
            head_dim: $d,
            block_m: $bm,
            block_n: $bn,
            warps: $w,
            kv_stages: $st,
            tile: $crate::ForwardTile::$tile,
            name: $crate::forward_kernel_name!($fam, $dt, $d, $bm, $bn, $w),
        }
    };
}

macro_rules! config_table {
    ($(($fam:ident, $dt:ident, $variant:ident, $d:literal, $bm:literal, $bn:literal, $w:literal, $st:literal, $tile:ident))*) => {
        /// Every forward kernel, as [`forward_configs!`] lists them.
        pub static FORWARD_CONFIGS: &[ForwardConfig] = &[$(
            $crate::forward_config!($fam, $dt, $variant, $d, $bm, $bn, $w, $st, $tile),
        )*];
    };
}

forward_configs!(config_table);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_consistent() {
        for c in FORWARD_CONFIGS {
            assert!(c.head_dim % 32 == 0 && c.head_dim <= 256, "{}", c.name);
            assert!(c.rows_per_warp() % 16 == 0, "{}", c.name);
            assert!(c.block_n % 16 == 0, "{}", c.name);
            // Every class is present for every (family, dtype, bucket), so a forced tile always
            // exists.
            for tile in ForwardTile::ALL {
                assert!(FORWARD_CONFIGS.iter().any(|o| o.family == c.family
                    && o.dtype == c.dtype
                    && o.head_dim == c.head_dim
                    && o.tile == tile));
            }
            // Each family takes its own element types: WMMA f16, TF32 and the CUDA cores f32.
            assert_eq!(c.dtype.bytes(), c.family.element_bytes(), "{}", c.name);
            assert!(c.family != MmaFamily::Wmma || c.dtype == Dtype::F16, "{}", c.name);
            // Names are unique (one entry point each).
            assert_eq!(FORWARD_CONFIGS.iter().filter(|o| o.name == c.name).count(), 1, "{}", c.name);
        }
    }

    #[test]
    fn the_small_class_fits_64_kb() {
        for c in FORWARD_CONFIGS.iter().filter(|c| c.tile == ForwardTile::Small) {
            assert!(c.shared_bytes() <= 64 * 1024, "{} needs {}", c.name, c.shared_bytes());
        }
        for c in FORWARD_CONFIGS.iter().filter(|c| c.tile == ForwardTile::Large) {
            assert!(c.shared_bytes() <= 99 * 1024, "{} needs {}", c.name, c.shared_bytes());
        }
        // A V100 (96 KB) runs every row of the sm_70 module.
        for c in FORWARD_CONFIGS.iter().filter(|c| matches!(c.family, MmaFamily::Wmma | MmaFamily::Simt)) {
            assert!(c.shared_bytes() <= 96 * 1024, "{} needs {}", c.name, c.shared_bytes());
        }
    }
}
