//! The backward pass's launch parameters, workspace layout and configuration table.
//!
//! The backward is three launches on the caller's stream (FlashAttention-2's algorithm), with
//! dQ computed by one of two schedules ([`default_atomic_dq`]):
//!
//! 1. **pre-pass** (`flash_bwd_pre_<family>_<dtype>`): per query row, `delta = rowsum(dO ∘ O)` and
//!    `lse · log2(e)` into the workspace (padded rows: 0 and +inf), and, for the atomic
//!    schedule, zeros the f32 dQ accumulator.
//! 2. **main** (one per row of [`backward_configs!`]): a block owns `block_n` keys of one
//!    (batch, K/V head), walks every query tile of every query head of its group, recomputes P
//!    from Q, K and the LSE, and accumulates dK and dV in registers (so GQA's sums over a group
//!    need no atomics). In the atomic schedule it also adds `dS K` into the f32 dQ accumulator
//!    with atomics.
//! 3. atomic schedule: **convert** (`flash_bwd_convert_<family>_<dtype>`): dQ = scale ·
//!    accumulator, in the caller's dtype and layout. Separate schedule (the deterministic
//!    mode, and the default mode above head dim 64): **dQ** (one per row): a block owns query
//!    rows and walks the key tiles, recomputing P and dP, so dQ is a plain sum in a fixed order
//!    (no atomics at all).

/// The backward kernels' argument. `fwd` describes the forward's operands exactly as the
/// forward kernel received them (Q, K, V, O, LSE, their strides, sizes, scale and mask), with
/// `fwd.num_m_blocks` the launch's own query tiles (the main kernel's or the dQ kernel's),
/// `fwd.load_bytes` the access width of Q, K, V and dO, and `fwd.store_bytes` that of dQ, dK
/// and dV. O and the LSE are read, not written.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BackwardParams {
    /// The forward's operands; see the type's documentation.
    pub fwd: ForwardParams,
    /// Device address of dO, shaped like O.
    pub dout: u64,
    /// Strides of dO's (batch, seq, head), in elements.
    pub dout_strides: [u64; 3],
    /// Device address of dQ, shaped like Q (written).
    pub dq: u64,
    /// Strides of dQ's (batch, seq, head), in elements.
    pub dq_strides: [u64; 3],
    /// Device address of dK, shaped like K (written).
    pub dk: u64,
    /// Strides of dK's (batch, seq, head), in elements.
    pub dk_strides: [u64; 3],
    /// Device address of dV, shaped like V (written).
    pub dv: u64,
    /// Strides of dV's (batch, seq, head), in elements.
    pub dv_strides: [u64; 3],
    /// The workspace's `lse · log2(e)` rows (f32, see [`BackwardWorkspace`]).
    pub lse_log2: u64,
    /// The workspace's `delta` rows (f32).
    pub delta: u64,
    /// The workspace's f32 dQ accumulator; 0 when dQ has its own kernel (the deterministic mode, and the default mode above head dim 64: `default_atomic_dq`).
    pub dq_accum: u64,
    /// `seqlen_q` rounded up to [`BackwardWorkspace::ROW_ALIGN`]: rows per (batch, head) of
    /// the workspace's arrays.
    pub seqlen_q_rounded: u32,
    /// f32 columns per row of the dQ accumulator: the head-dim bucket.
    pub accum_cols: u32,
    /// Key tiles of the main kernel: `ceil(seqlen_k / block_n)`.
    pub num_n_blocks: u32,
    /// Width in bytes of the pre-pass's loads of O and dO (16, 8, 4 or 2).
    pub o_load_bytes: u32,
    /// The softmax scale itself (dK and dQ are scaled by it); `fwd.scale_log2` is it times
    /// log2(e).
    pub scale: f32,
}

use crate::ForwardParams;

/// The f32 workspace of one backward call, `rows = batch · heads_q · seqlen_q_rounded`:
/// `[lse_log2: rows][delta: rows][dq_accum: rows · bucket]` (the accumulator only in the
/// default mode), each row-major in (batch, head, row[, column]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackwardWorkspace {
    /// Rows per (batch, head).
    pub seqlen_q_rounded: usize,
    /// `batch · heads_q · seqlen_q_rounded`.
    pub rows: usize,
    /// Columns of the dQ accumulator (the head-dim bucket), 0 when dQ has its own kernel.
    pub accum_cols: usize,
}

impl BackwardWorkspace {
    /// Query rows are padded to a multiple of this (the largest query tile of any backward
    /// kernel), so every tile reads whole rows of the workspace.
    pub const ROW_ALIGN: usize = 128;

    /// The layout for `batch · heads_q` rows of `seqlen_q` queries and a dQ accumulator of
    /// `accum_cols` columns (0: none); `None` if a size overflows `usize`.
    pub const fn new(batch: usize, heads_q: usize, seqlen_q: usize, accum_cols: usize) -> Option<Self> {
        let Some(padded) = seqlen_q.div_ceil(Self::ROW_ALIGN).checked_mul(Self::ROW_ALIGN) else {
            return None;
        };
        let Some(bh) = batch.checked_mul(heads_q) else { return None };
        let Some(rows) = bh.checked_mul(padded) else { return None };
        Some(BackwardWorkspace { seqlen_q_rounded: padded, rows, accum_cols })
    }

    /// f32 elements of the whole workspace; `None` on overflow.
    pub const fn len(&self) -> Option<usize> {
        let Some(accum) = self.rows.checked_mul(self.accum_cols) else { return None };
        let Some(rows2) = self.rows.checked_mul(2) else { return None };
        rows2.checked_add(accum)
    }

    /// No rows at all (an empty problem): nothing to launch.
    pub const fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Element offsets of `lse_log2`, `delta` and `dq_accum` from the workspace's start.
    pub const fn offsets(&self) -> [usize; 3] {
        [0, self.rows, 2 * self.rows]
    }
}

/// A class of backward tile shapes. The host picks the first class whose kernels fit the GPU's
/// shared memory; tests force each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackwardTile {
    /// The fast shapes for A100/H100-sized shared memory (up to 144 KB per block).
    Large,
    /// Shapes for ~100 KB GPUs (RTX), 64 KB (T4-sized) up to head dim 224.
    Small,
}

impl BackwardTile {
    /// In order of preference.
    pub const ALL: [BackwardTile; 2] = [BackwardTile::Large, BackwardTile::Small];
}

/// The kernels of one backward configuration (element type, head-dim bucket, tile class).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackwardConfig {
    /// The matrix-multiply family (and so the module) of the kernels.
    pub family: MmaFamily,
    /// The element type of every tensor but the LSE.
    pub dtype: Dtype,
    /// Head-dim bucket (a multiple of 32 up to 256).
    pub head_dim: usize,
    /// The tile class this row belongs to.
    pub tile: BackwardTile,
    /// Main kernel: query rows per tile, keys per block.
    pub block_m: usize,
    /// Main kernel: keys per block.
    pub block_n: usize,
    /// Main kernel: warps along the keys (16 keys each) ...
    pub warps_n: usize,
    /// ... and along the head dim (dK and dV columns; each splits the query columns of S).
    pub warps_d: usize,
    /// Main kernel: buffers of the query tile (Q, dO and their statistics). With 2, the next
    /// tile's copies are issued as a tile starts and overlap all of its work; with 1 they wait
    /// until every warp is done with the tile's Q and dO.
    pub query_stages: usize,
    /// Deterministic dQ kernel: query rows per block (16 per warp).
    pub dq_block_m: usize,
    /// Deterministic dQ kernel: keys per tile.
    pub dq_block_n: usize,
    /// The main kernel's `.entry` name.
    pub name: &'static str,
    /// The deterministic dQ kernel's `.entry` name.
    pub dq_name: &'static str,
    /// The pre-pass's `.entry` name (one per element type).
    pub pre_name: &'static str,
    /// The dQ conversion's `.entry` name (one per element type).
    pub convert_name: &'static str,
}

/// Threads per block of the pre-pass and the conversion: one query row per warp at a time.
pub const ROW_KERNEL_THREADS: usize = 256;

impl BackwardConfig {
    /// Main kernel: warps.
    pub const fn warps(&self) -> usize {
        self.warps_n * self.warps_d
    }
    /// Main kernel: threads per block.
    pub const fn threads(&self) -> usize {
        32 * self.warps()
    }
    /// Main kernel: dynamic shared memory — K, V (`block_n` rows), dSᵀ (and Pᵀ when the head dim
    /// is split across warps), and per query-tile stage Q, dO (`block_m` rows) and the tile's
    /// `lse_log2` and `delta`; then the family's per-warp scratch.
    pub const fn shared_bytes(&self) -> usize {
        let row = self.family.tile_row_bytes(self.head_dim);
        let scores = self.block_n * self.family.tile_row_bytes(self.block_m);
        2 * self.block_n * row
            + self.query_stages * (2 * self.block_m * row + 2 * 4 * self.block_m)
            + scores * if self.warps_d > 1 { 2 } else { 1 }
            + self.warps() * self.family.scratch_bytes()
    }
    /// Deterministic dQ kernel: threads per block.
    pub const fn dq_threads(&self) -> usize {
        32 * (self.dq_block_m / 16)
    }
    /// Deterministic dQ kernel: dynamic shared memory — Q, dO (`dq_block_m` rows), K, V
    /// (`dq_block_n` rows), and the family's per-warp scratch.
    pub const fn dq_shared_bytes(&self) -> usize {
        let row = self.family.tile_row_bytes(self.head_dim);
        2 * self.dq_block_m * row
            + 2 * self.dq_block_n * row
            + self.dq_block_m / 16 * self.family.scratch_bytes()
    }
    /// The larger of the two kernels' shared memory (what the class needs of a GPU).
    pub const fn max_shared_bytes(&self) -> usize {
        let (a, b) = (self.shared_bytes(), self.dq_shared_bytes());
        if a > b { a } else { b }
    }
}

/// Whether the default mode of a head-dim bucket adds dQ into the f32 accumulator with atomics
/// in the main kernel; otherwise it computes dQ in the separate dQ kernel, as the deterministic
/// mode always does. Measured on the H100 (docs/performance-notes.md): the separate kernel is
/// faster from head dim 96 on (1.05x at 128, 1.4x at 256) and even at 64, so only buckets 32
/// and 64 keep the atomic schedule. The same for every tile class of a bucket, so the
/// workspace's size does not depend on the GPU.
pub const fn default_atomic_dq(bucket: usize) -> bool {
    bucket <= 64
}

/// The main backward kernel's name.
#[macro_export]
macro_rules! backward_kernel_name {
    ($fam:ident, $dt:ident, $d:literal, $bm:literal, $bn:literal, $wn:literal, $wd:literal, $qs:literal) => {
        concat!(
            "flash_bwd_",
            stringify!($fam),
            "_",
            stringify!($dt),
            "_d",
            $d,
            "_m",
            $bm,
            "n",
            $bn,
            "w",
            $wn,
            "x",
            $wd,
            "s",
            $qs
        )
    };
}

/// The deterministic dQ kernel's name.
#[macro_export]
macro_rules! backward_dq_kernel_name {
    ($fam:ident, $dt:ident, $d:literal, $bm:literal, $bn:literal) => {
        concat!("flash_bwd_dq_", stringify!($fam), "_", stringify!($dt), "_d", $d, "_m", $bm, "n", $bn)
    };
}

/// The pre-pass's name.
#[macro_export]
macro_rules! backward_pre_kernel_name {
    ($fam:ident, $dt:ident) => {
        concat!("flash_bwd_pre_", stringify!($fam), "_", stringify!($dt))
    };
}

/// The dQ conversion's name.
#[macro_export]
macro_rules! backward_convert_kernel_name {
    ($fam:ident, $dt:ident) => {
        concat!("flash_bwd_convert_", stringify!($fam), "_", stringify!($dt))
    };
}

/// Calls `$callback!` with every backward configuration, one
/// `(family, dtype, Dtype variant, bucket, tile, block_m, block_n, warps_n, warps_d, query_stages,
/// dq_block_m, dq_block_n)` tuple per row.
///
/// Shapes: each warp of the main kernel owns 16 keys and `bucket / warps_d` columns of dK and
/// dV in registers; up to head dim 128 one warp spans the whole head dim, above it two do
/// (each computing half of a tile's query columns of S and dP, exchanged through shared
/// memory), so dK and dV stay within 128 registers. The Large rows up to head dim 128 keep two
/// query-tile buffers (145 KB at 128, within the A100's 163 KB); above it one (two would need
/// 212 KB at 256).
///
/// `sm70` rows (WMMA, float16 only), sized for shared memory: Large fits a V100's 96 KB at every
/// head dim, Small a T4's 64 KB at every head dim (one query-tile buffer: there is no `cp.async`
/// to overlap).
///
/// `tf32` and `tf32x3` rows (float32, tiles twice as wide in bytes): 32 query rows per tile, so
/// that Pᵀ and dSᵀ in registers (twice float16's size) leave room for dK and dV; Large fits an
/// A100's 163 KB, Small 99 KB (RTX 30/40) up to head dim 224 (256 needs 100 KB).
///
/// `simt` rows (float32 on the CUDA cores, the `sm_70` module's padded rows of `4 · bucket + 16`
/// bytes): Large fits a V100's 96 KB up to head dim 224, Small a T4's 64 KB up to head dim 128.
/// There are no rows beyond those: above head dim 128 the head dim is split over two warps (to
/// keep dK and dV within the registers), so a tile has at least 32 query rows and 16 keys, which
/// need 66 KB at head dim 160 and 102 KB at 256.
#[macro_export]
macro_rules! backward_configs {
    ($callback:path) => {
        $crate::__backward_rows!($callback; [f16 F16, bf16 Bf16]; [f16 F16]; [tf32, tf32x3]);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __backward_rows {
    ($callback:path; [$($dt:ident $variant:ident),*]; [$($vdt:ident $vvariant:ident),*]; [$($ffam:ident),*]) => {
        $callback! {$(
            (sm80, $dt, $variant, 32, Large, 128, 128, 8, 1, 2, 64, 64)
            (sm80, $dt, $variant, 64, Large, 64, 128, 8, 1, 2, 64, 64)
            (sm80, $dt, $variant, 96, Large, 64, 128, 8, 1, 2, 64, 64)
            (sm80, $dt, $variant, 128, Large, 64, 128, 8, 1, 2, 64, 64)
            (sm80, $dt, $variant, 160, Large, 64, 64, 4, 2, 1, 64, 32)
            (sm80, $dt, $variant, 192, Large, 64, 64, 4, 2, 1, 64, 32)
            (sm80, $dt, $variant, 224, Large, 64, 64, 4, 2, 1, 64, 32)
            (sm80, $dt, $variant, 256, Large, 64, 64, 4, 2, 1, 64, 32)
            (sm80, $dt, $variant, 32, Small, 32, 64, 4, 1, 1, 32, 32)
            (sm80, $dt, $variant, 64, Small, 32, 64, 4, 1, 1, 32, 32)
            (sm80, $dt, $variant, 96, Small, 32, 64, 4, 1, 1, 32, 32)
            (sm80, $dt, $variant, 128, Small, 32, 64, 4, 1, 1, 32, 32)
            (sm80, $dt, $variant, 160, Small, 32, 32, 2, 2, 1, 32, 32)
            (sm80, $dt, $variant, 192, Small, 32, 32, 2, 2, 1, 32, 32)
            (sm80, $dt, $variant, 224, Small, 32, 32, 2, 2, 1, 32, 32)
            (sm80, $dt, $variant, 256, Small, 32, 32, 2, 2, 1, 32, 32)
        )* $(
            (sm70, $vdt, $vvariant, 32, Large, 64, 64, 4, 1, 1, 64, 64)
            (sm70, $vdt, $vvariant, 64, Large, 64, 64, 4, 1, 1, 64, 64)
            (sm70, $vdt, $vvariant, 96, Large, 64, 64, 4, 1, 1, 64, 64)
            (sm70, $vdt, $vvariant, 128, Large, 64, 64, 4, 1, 1, 64, 64)
            (sm70, $vdt, $vvariant, 160, Large, 32, 32, 2, 2, 1, 32, 32)
            (sm70, $vdt, $vvariant, 192, Large, 32, 32, 2, 2, 1, 32, 32)
            (sm70, $vdt, $vvariant, 224, Large, 32, 32, 2, 2, 1, 32, 32)
            (sm70, $vdt, $vvariant, 256, Large, 32, 32, 2, 2, 1, 32, 32)
            (sm70, $vdt, $vvariant, 32, Small, 32, 64, 4, 1, 1, 32, 32)
            (sm70, $vdt, $vvariant, 64, Small, 32, 64, 4, 1, 1, 32, 32)
            (sm70, $vdt, $vvariant, 96, Small, 32, 64, 4, 1, 1, 32, 32)
            (sm70, $vdt, $vvariant, 128, Small, 32, 64, 4, 1, 1, 32, 32)
            (sm70, $vdt, $vvariant, 160, Small, 32, 16, 1, 2, 1, 32, 16)
            (sm70, $vdt, $vvariant, 192, Small, 32, 16, 1, 2, 1, 32, 16)
            (sm70, $vdt, $vvariant, 224, Small, 32, 16, 1, 2, 1, 32, 16)
            (sm70, $vdt, $vvariant, 256, Small, 32, 16, 1, 2, 1, 32, 16)
        )* $(
            ($ffam, f32, F32, 32, Large, 32, 64, 4, 1, 2, 64, 64)
            ($ffam, f32, F32, 64, Large, 32, 64, 4, 1, 2, 64, 64)
            ($ffam, f32, F32, 96, Large, 32, 64, 4, 1, 2, 64, 64)
            ($ffam, f32, F32, 128, Large, 32, 64, 4, 1, 1, 64, 32)
            ($ffam, f32, F32, 160, Large, 32, 32, 2, 2, 1, 32, 32)
            ($ffam, f32, F32, 192, Large, 32, 32, 2, 2, 1, 32, 32)
            ($ffam, f32, F32, 224, Large, 32, 32, 2, 2, 1, 32, 32)
            ($ffam, f32, F32, 256, Large, 32, 32, 2, 2, 1, 32, 32)
            ($ffam, f32, F32, 32, Small, 32, 64, 4, 1, 1, 32, 32)
            ($ffam, f32, F32, 64, Small, 32, 64, 4, 1, 1, 32, 32)
            ($ffam, f32, F32, 96, Small, 32, 64, 4, 1, 1, 32, 32)
            ($ffam, f32, F32, 128, Small, 32, 32, 2, 1, 1, 32, 32)
            ($ffam, f32, F32, 160, Small, 32, 16, 1, 2, 1, 32, 16)
            ($ffam, f32, F32, 192, Small, 32, 16, 1, 2, 1, 32, 16)
            ($ffam, f32, F32, 224, Small, 32, 16, 1, 2, 1, 32, 16)
            ($ffam, f32, F32, 256, Small, 32, 16, 1, 2, 1, 32, 16)
        )*
            (simt, f32, F32, 32, Large, 32, 64, 4, 1, 1, 64, 64)
            (simt, f32, F32, 64, Large, 32, 64, 4, 1, 1, 64, 64)
            (simt, f32, F32, 96, Large, 32, 64, 4, 1, 1, 64, 32)
            (simt, f32, F32, 128, Large, 32, 32, 2, 1, 1, 32, 32)
            (simt, f32, F32, 160, Large, 32, 32, 2, 2, 1, 32, 32)
            (simt, f32, F32, 192, Large, 32, 16, 1, 2, 1, 32, 16)
            (simt, f32, F32, 224, Large, 32, 16, 1, 2, 1, 32, 16)
            (simt, f32, F32, 32, Small, 32, 32, 2, 1, 1, 32, 32)
            (simt, f32, F32, 64, Small, 32, 32, 2, 1, 1, 32, 32)
            (simt, f32, F32, 96, Small, 32, 32, 2, 1, 1, 32, 16)
            (simt, f32, F32, 128, Small, 32, 16, 1, 1, 1, 32, 16)
        }
    };
}

/// The [`BackwardConfig`] of one row of [`backward_configs!`].
#[macro_export]
macro_rules! backward_config {
    ($fam:ident, $dt:ident, $variant:ident, $d:literal, $tile:ident, $bm:literal, $bn:literal, $wn:literal, $wd:literal, $qs:literal, $qbm:literal, $qbn:literal) => {
        $crate::BackwardConfig {
            family: $crate::mma_family!($fam),
            dtype: $crate::Dtype::$variant,
            head_dim: $d,
            tile: $crate::BackwardTile::$tile,
            block_m: $bm,
            block_n: $bn,
            warps_n: $wn,
            warps_d: $wd,
            query_stages: $qs,
            dq_block_m: $qbm,
            dq_block_n: $qbn,
            name: $crate::backward_kernel_name!($fam, $dt, $d, $bm, $bn, $wn, $wd, $qs),
            dq_name: $crate::backward_dq_kernel_name!($fam, $dt, $d, $qbm, $qbn),
            pre_name: $crate::backward_pre_kernel_name!($fam, $dt),
            convert_name: $crate::backward_convert_kernel_name!($fam, $dt),
        }
    };
}

macro_rules! backward_table {
    ($(($fam:ident, $dt:ident, $variant:ident, $d:literal, $tile:ident, $bm:literal, $bn:literal, $wn:literal, $wd:literal, $qs:literal, $qbm:literal, $qbn:literal))*) => {
        /// Every backward configuration, as [`backward_configs!`] lists them.
        pub static BACKWARD_CONFIGS: &[BackwardConfig] = &[$(
            $crate::backward_config!($fam, $dt, $variant, $d, $tile, $bm, $bn, $wn, $wd, $qs, $qbm, $qbn),
        )*];
    };
}

backward_configs!(backward_table);

use crate::{Dtype, MmaFamily};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_consistent() {
        for c in BACKWARD_CONFIGS {
            assert_eq!(c.block_n, 16 * c.warps_n, "{}", c.name);
            assert!(c.head_dim.is_multiple_of(16 * c.warps_d), "{}", c.name);
            // S's query columns per warp: a whole number of 16-column pairs.
            assert!(c.block_m.is_multiple_of(16 * c.warps_d), "{}", c.name);
            // dQ's tile split over the warps: 16-row by 16-column pieces.
            assert!(c.warps().is_multiple_of((c.block_m / 16).min(c.warps())), "{}", c.name);
            assert!(
                BackwardWorkspace::ROW_ALIGN.is_multiple_of(c.block_m)
                    && BackwardWorkspace::ROW_ALIGN.is_multiple_of(c.dq_block_m)
            );
            assert!(c.dq_block_n.is_multiple_of(16) && c.dq_block_m.is_multiple_of(16));
            // Every class is present for every (family, dtype, bucket), so a forced tile exists,
            // but for the CUDA-core family's Small above head dim 128 (backward_configs!).
            for tile in BackwardTile::ALL {
                if c.family == MmaFamily::Simt && tile == BackwardTile::Small && c.head_dim > 128 {
                    continue;
                }
                assert!(BACKWARD_CONFIGS.iter().any(|o| o.family == c.family
                    && o.dtype == c.dtype
                    && o.head_dim == c.head_dim
                    && o.tile == tile));
            }
            assert_eq!(c.dtype.bytes(), c.family.element_bytes(), "{}", c.name);
            assert!(c.family != MmaFamily::Wmma || c.dtype == Dtype::F16, "{}", c.name);
            assert_eq!(BACKWARD_CONFIGS.iter().filter(|o| o.name == c.name).count(), 1, "{}", c.name);
            assert_eq!(
                BACKWARD_CONFIGS.iter().filter(|o| o.dq_name == c.dq_name).count(),
                1,
                "{}",
                c.dq_name
            );
        }
    }

    #[test]
    fn shared_memory_per_class() {
        for c in BACKWARD_CONFIGS {
            let limit = match (c.family, c.tile) {
                (MmaFamily::Wmma, BackwardTile::Large) => 96 * 1024,
                (MmaFamily::Simt, BackwardTile::Large) => 96 * 1024,
                (MmaFamily::Simt, BackwardTile::Small) => 64 * 1024,
                (_, BackwardTile::Large) => 163 * 1024,
                (MmaFamily::Wmma, BackwardTile::Small) => 64 * 1024,
                (MmaFamily::Tf32 | MmaFamily::Tf32x3, BackwardTile::Small) if c.head_dim <= 224 => 99 * 1024,
                (MmaFamily::Tf32 | MmaFamily::Tf32x3, BackwardTile::Small) => 101 * 1024,
                (_, BackwardTile::Small) if c.head_dim <= 224 => 64 * 1024,
                (_, BackwardTile::Small) => 99 * 1024,
            };
            assert!(c.max_shared_bytes() <= limit, "{} needs {}", c.name, c.max_shared_bytes());
        }
    }

    #[test]
    fn workspace_layout() {
        let w = BackwardWorkspace::new(2, 3, 129, 64).unwrap();
        assert_eq!(w.seqlen_q_rounded, 256);
        assert_eq!(w.rows, 2 * 3 * 256);
        assert_eq!(w.len(), Some(w.rows * 66));
        assert_eq!(w.offsets(), [0, w.rows, 2 * w.rows]);
        assert_eq!(BackwardWorkspace::new(usize::MAX, 2, 1, 0), None);
    }
}
