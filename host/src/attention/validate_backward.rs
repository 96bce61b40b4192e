//! Validation of a backward call: one pure function (no GPU), [`BackwardPlan::new`], from the
//! operands, the options and, where known, the buffers' lengths to the launches. `backward` and
//! `backward_raw` share it; it shares the forward's shape, scale and size rules
//! ([`Problem`], [`softmax_scale`]) and the per-view rules ([`View`], [`check_views`]).
//!
//! All arithmetic on caller input is checked; nothing wraps.

use super::backward::{BackwardOptions, RawBackward};
use super::dispatch;
use super::validate::{
    OFFSET_LIMIT, Problem, View, access_width, check_views, forward_params, grid, same_shape, softmax_scale,
};
use crate::Element;
use crate::error::{Error, Result};
use rustflash_abi::{BackwardConfig, BackwardParams, BackwardWorkspace, ROW_KERNEL_THREADS};

/// Rows of the workspace one block of the pre-pass or the conversion covers (one per warp).
const ROWS_PER_ROW_BLOCK: usize = ROW_KERNEL_THREADS / 32;

/// Alignment, in bytes, of the workspace's address (its three arrays are 16-byte aligned then:
/// each starts a multiple of [`BackwardWorkspace::ROW_ALIGN`] rows in).
pub const BACKWARD_WORKSPACE_ALIGN: u64 = 16;

/// Lengths, in elements, of the buffers behind a backward call's operands: each view must lie in
/// the first `len` elements from its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackwardLens {
    /// Elements of `q`'s buffer from its address.
    pub q: usize,
    /// Elements of `k`'s buffer from its address.
    pub k: usize,
    /// Elements of `v`'s buffer from its address.
    pub v: usize,
    /// Elements of `out`'s buffer from its address.
    pub out: usize,
    /// f32 elements of `lse`'s buffer from its address.
    pub lse: usize,
    /// Elements of `dout`'s buffer from its address.
    pub dout: usize,
    /// Elements of `dq`'s buffer from its address.
    pub dq: usize,
    /// Elements of `dk`'s buffer from its address.
    pub dk: usize,
    /// Elements of `dv`'s buffer from its address.
    pub dv: usize,
    /// f32 elements of `workspace`'s buffer from its address.
    pub workspace: usize,
}

/// The four kernels of a backward call (see [`BackwardConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackwardKernel {
    /// Per query row: `delta = rowsum(dO ∘ O)` and `lse · log2(e)` into the workspace; in the
    /// default mode it also zeroes the dQ accumulator. [`BackwardConfig::pre_name`].
    Pre,
    /// Per block of keys: dK and dV (and, in the default mode, dQ into the accumulator, with
    /// atomics). [`BackwardConfig::name`].
    Main,
    /// Default mode: dQ = scale · accumulator, in the caller's type and layout.
    /// [`BackwardConfig::convert_name`].
    Convert,
    /// Deterministic mode: dQ by query rows, walking the keys in a fixed order.
    /// [`BackwardConfig::dq_name`].
    Dq,
}

impl BackwardKernel {
    /// What launching it is, for driver errors.
    pub(crate) fn during(self) -> &'static str {
        match self {
            BackwardKernel::Pre => "launching the backward pre-pass",
            BackwardKernel::Main => "launching the backward main kernel",
            BackwardKernel::Convert => "launching the backward dQ conversion",
            BackwardKernel::Dq => "launching the deterministic backward dQ kernel",
        }
    }
}

/// One launch of a backward call: every kernel takes the plan's [`BackwardParams`] with
/// `fwd.num_m_blocks` set to this launch's `num_m_blocks` ([`BackwardPlan::params_for`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackwardLaunch {
    /// Which of the four kernels.
    pub kernel: BackwardKernel,
    /// Its `.entry` name.
    pub name: &'static str,
    /// Blocks along `grid.x` (at most 2^31 − 1; never 0: a launch with no blocks is left out).
    pub blocks: u32,
    /// Threads per block.
    pub threads: u32,
    /// Dynamic shared memory per block, in bytes.
    pub shared_bytes: u32,
    /// `fwd.num_m_blocks` of this launch: the main kernel's `⌈seqlen_q / block_m⌉`, the dQ
    /// kernel's `⌈seqlen_q / dq_block_m⌉`; the pre-pass and the conversion (which walk workspace
    /// rows, not tiles) get the main kernel's value.
    pub num_m_blocks: u32,
}

/// What a backward call launches, computed without a GPU by [`BackwardPlan::new`]: one to three
/// launches, in order, on one stream.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackwardPlan {
    /// The kernels' argument, with `fwd.num_m_blocks` the main kernel's (each launch sets its
    /// own: [`BackwardPlan::params_for`]).
    pub params: BackwardParams,
    /// The configuration row: the four kernels, their tiles, threads and shared memory.
    pub config: &'static BackwardConfig,
    /// The workspace's layout (its `accum_cols` is 0 in the deterministic mode).
    pub workspace: BackwardWorkspace,
    /// f32 elements of the workspace the launches use: `workspace.len()`.
    pub workspace_len: usize,
    launches: [Option<BackwardLaunch>; 3],
}

impl BackwardPlan {
    /// The launches, in order: the pre-pass (unless `seqlen_q` is 0), the main kernel (unless
    /// `seqlen_k` is 0), then the conversion (default mode) or the dQ kernel (deterministic
    /// mode), unless `seqlen_q` is 0.
    pub fn launches(&self) -> impl Iterator<Item = &BackwardLaunch> + '_ {
        self.launches.iter().flatten()
    }

    /// The launch of `kernel`, if the plan has one.
    pub fn launch(&self, kernel: BackwardKernel) -> Option<&BackwardLaunch> {
        self.launches().find(|l| l.kernel == kernel)
    }

    /// The argument `launch` is given: [`BackwardPlan::params`] with its own `num_m_blocks`.
    pub fn params_for(&self, launch: &BackwardLaunch) -> BackwardParams {
        let mut params = self.params;
        params.fwd.num_m_blocks = launch.num_m_blocks;
        params
    }

    /// Validates a backward call of element type `T` and plans its launches; `Ok(None)` when
    /// there is nothing to launch (batch or heads_q is 0, or both sequence lengths are).
    ///
    /// `lens`: the buffers' lengths in elements, when known (`backward` knows them,
    /// `backward_raw` does not). `shared_memory_per_block`: the most dynamic shared memory a
    /// block may use on the GPU (it chooses the tile class).
    ///
    /// The rules, each failing as [`Error::InvalidArgument`] naming the argument at fault:
    /// - `q`, `k`, `v`, `out`, `lse`: the forward's shape rules ([`crate::ForwardPlan::new`]).
    ///   `dout` the shape of `out`, `dq` that of `q`, `dk` and `dv` that of `k`.
    /// - `options.softmax_scale`: as the forward's (finite, and finite times log2(e)).
    /// - Then, unless nothing is launched: seqlen_q and seqlen_k rounded up to
    ///   [`BackwardWorkspace::ROW_ALIGN`] and heads_q held in 32 bits (`q`, `k`); the grids at
    ///   most 2^31 − 1 blocks — `batch · heads_q · seqlen_q_rounded / 8` (pre-pass and
    ///   conversion, `q`), `batch · heads_kv · ⌈seqlen_k / block_n⌉` (main, `k`),
    ///   `batch · heads_q · ⌈seqlen_q / dq_block_m⌉` (dQ kernel, `q`).
    /// - `workspace`: a 1-D f32 tensor (stride 1) of at least
    ///   [`crate::FlashAttention::backward_workspace_len`] elements, its address a multiple of
    ///   16 bytes (both only when that length is not 0).
    /// - Every view: the forward's rules for one view ([`crate::ForwardPlan::new`]), with the
    ///   padded box of `q`, `out`, `dout`, `dq` (and the LSE's rows) rounded up to 128 rows, of
    ///   `k`, `v`, `dk`, `dv` to 128 keys, the head dim to its bucket. The outputs are `dq`,
    ///   `dk`, `dv` and `workspace`: none may overlap itself, another output or any input
    ///   (`q`, `k`, `v`, `out`, `lse`, `dout`; inputs may overlap each other, and dq, dk, dv may
    ///   be disjoint slices of one packed buffer).
    ///
    /// Launches: see [`BackwardPlan::launches`]. With seqlen_q = 0 only the main kernel runs
    /// (it writes dK = dV = 0); with seqlen_k = 0 the main kernel does not run, and dQ = 0 is
    /// written (by the conversion of a zeroed accumulator, or the dQ kernel).
    ///
    /// A forced tile class that does not fit `shared_memory_per_block` (or none that does) is
    /// [`Error::SharedMemoryLimit`]; a class fits when both its main and its dQ kernel do
    /// ([`BackwardConfig::max_shared_bytes`]).
    pub fn new<T: Element>(
        args: &RawBackward,
        lens: Option<&BackwardLens>,
        options: &BackwardOptions,
        shared_memory_per_block: usize,
    ) -> Result<Option<BackwardPlan>> {
        let (q, k) = (&args.q.layout, &args.k.layout);
        let p = Problem::new(q, k, &args.v.layout, &args.out.layout, &args.lse.layout)?;
        same_shape("dout", &args.dout.layout.shape, "out", &args.out.layout.shape)?;
        same_shape("dq", &args.dq.layout.shape, "q", &q.shape)?;
        same_shape("dk", &args.dk.layout.shape, "k", &k.shape)?;
        same_shape("dv", &args.dv.layout.shape, "k", &k.shape)?;
        let (scale, scale_log2) = softmax_scale(options.softmax_scale, p.d)?;
        let Problem { b, sq, sk, hq, hkv, bucket, .. } = p;
        if b == 0 || hq == 0 || (sq == 0 && sk == 0) {
            return Ok(None);
        }

        let config = dispatch::select_backward(T::DTYPE, p.d, options.tile, shared_memory_per_block)?;
        let align = BackwardWorkspace::ROW_ALIGN;
        let (padded_q, padded_k) = p.padded_lengths(align, align, &q.shape, &k.shape)?;
        let (workspace, workspace_len) =
            workspace_layout(b, hq, sq, bucket, options.deterministic, "q", &q.shape)?;
        let row_blocks = grid("q", [workspace.rows / ROWS_PER_ROW_BLOCK, 1, 1], &q.shape, || {
            format!(
                "batch · heads_q · seqlen_q rounded up to {align}, over {ROWS_PER_ROW_BLOCK} rows a block,"
            )
        })?;
        let (bm, bn, dq_bm) = (config.block_m, config.block_n, config.dq_block_m);
        let n_blocks = sk.div_ceil(bn);
        let main_blocks =
            grid("k", [b, hkv, n_blocks], &k.shape, || format!("batch · heads_kv · ⌈seqlen_k / {bn}⌉"))?;
        let m_blocks = sq.div_ceil(bm);
        let dq_m_blocks = sq.div_ceil(dq_bm);
        let dq_blocks = if options.deterministic {
            grid("q", [b, hq, dq_m_blocks], &q.shape, || format!("batch · heads_q · ⌈seqlen_q / {dq_bm}⌉"))?
        } else {
            0
        };

        let ws = &args.workspace;
        if workspace_len > 0 {
            if ws.layout.shape[0] < workspace_len {
                return Err(Error::invalid(
                    "workspace",
                    format!(
                        "at least {workspace_len} f32 elements (FlashAttention::backward_workspace_len, {} mode)",
                        if options.deterministic { "deterministic" } else { "default" }
                    ),
                    format!("shape {:?}", ws.layout.shape),
                ));
            }
            if ws.ptr % BACKWARD_WORKSPACE_ALIGN != 0 {
                return Err(Error::invalid(
                    "workspace",
                    format!("an address aligned to {BACKWARD_WORKSPACE_ALIGN} bytes"),
                    format!("{:#x}", ws.ptr),
                ));
            }
        }

        let e = T::DTYPE.bytes() as u64;
        let len = |f: fn(&BackwardLens) -> usize| lens.map(f);
        let q_reach = [b, padded_q, hq, bucket];
        let kv_reach = [b, padded_k, hkv, bucket];
        let lse_reach = [b, hq, padded_q];
        let views = [
            View::tensor4("q", &args.q, e, len(|l| l.q), false, &q_reach),
            View::tensor4("k", &args.k, e, len(|l| l.k), false, &kv_reach),
            View::tensor4("v", &args.v, e, len(|l| l.v), false, &kv_reach),
            View::tensor4("out", &args.out, e, len(|l| l.out), false, &q_reach),
            View::lse(&args.lse, len(|l| l.lse), false, &lse_reach),
            View::tensor4("dout", &args.dout, e, len(|l| l.dout), false, &q_reach),
            View::tensor4("dq", &args.dq, e, len(|l| l.dq), true, &q_reach),
            View::tensor4("dk", &args.dk, e, len(|l| l.dk), true, &kv_reach),
            View::tensor4("dv", &args.dv, e, len(|l| l.dv), true, &kv_reach),
            View {
                name: "workspace",
                ptr: ws.ptr,
                shape: &ws.layout.shape,
                strides: &ws.layout.strides,
                elem_bytes: 4,
                len: len(|l| l.workspace),
                output: true,
                contiguous_last: true,
                // The kernels address its first `workspace_len` elements, at most its shape.
                reach: &ws.layout.shape,
            },
        ];
        check_views(&views)?;
        let [vq, vk, vv, vo, vl, vdo, vdq, vdk, vdv, _] = &views;

        let mut fwd = forward_params(&p, [vq, vk, vv, vo, vl], options.causal, scale_log2);
        fwd.num_m_blocks = m_blocks as u32;
        fwd.load_bytes = access_width(&[vq, vk, vv, vdo]);
        fwd.store_bytes = access_width(&[vdq, vdk, vdv]);
        // The workspace holds at least `workspace_len` elements, its bytes below 2^63 from an
        // address whose range ends below 2^64: these sums cannot overflow (checked anyway).
        let at = |offset: usize| -> Result<u64> {
            if workspace_len == 0 {
                return Ok(0);
            }
            let bytes = (offset as u128) * 4;
            let address = (ws.ptr as u128) + bytes;
            if bytes >= OFFSET_LIMIT || address >= 1u128 << 64 {
                return Err(Error::invalid("workspace", "an address range that ends below 2^64", ws.ptr));
            }
            Ok(address as u64)
        };
        let [lse_at, delta_at, accum_at] = workspace.offsets();
        // Every size below was bounded to 32 bits above: the casts are exact.
        let params = BackwardParams {
            fwd,
            dout: vdo.ptr,
            dout_strides: vdo.strides3(),
            dq: vdq.ptr,
            dq_strides: vdq.strides3(),
            dk: vdk.ptr,
            dk_strides: vdk.strides3(),
            dv: vdv.ptr,
            dv_strides: vdv.strides3(),
            lse_log2: at(lse_at)?,
            delta: at(delta_at)?,
            dq_accum: if options.deterministic { 0 } else { at(accum_at)? },
            seqlen_q_rounded: workspace.seqlen_q_rounded as u32,
            accum_cols: bucket as u32,
            num_n_blocks: n_blocks as u32,
            o_load_bytes: access_width(&[vo, vdo]),
            scale,
        };

        let row_launch = |kernel, name| BackwardLaunch {
            kernel,
            name,
            blocks: row_blocks,
            threads: ROW_KERNEL_THREADS as u32,
            shared_bytes: 0,
            num_m_blocks: m_blocks as u32,
        };
        let pre = (row_blocks > 0).then(|| row_launch(BackwardKernel::Pre, config.pre_name));
        let main = (main_blocks > 0).then_some(BackwardLaunch {
            kernel: BackwardKernel::Main,
            name: config.name,
            blocks: main_blocks,
            threads: config.threads() as u32,
            shared_bytes: config.shared_bytes() as u32,
            num_m_blocks: m_blocks as u32,
        });
        let dq = if options.deterministic {
            (dq_blocks > 0).then_some(BackwardLaunch {
                kernel: BackwardKernel::Dq,
                name: config.dq_name,
                blocks: dq_blocks,
                threads: config.dq_threads() as u32,
                shared_bytes: config.dq_shared_bytes() as u32,
                num_m_blocks: dq_m_blocks as u32,
            })
        } else {
            (row_blocks > 0).then(|| row_launch(BackwardKernel::Convert, config.convert_name))
        };
        let plan = BackwardPlan { params, config, workspace, workspace_len, launches: [pre, main, dq] };
        Ok(plan.launches().next().is_some().then_some(plan))
    }
}

/// The workspace of a backward of `batch · heads_q` rows of `seqlen_q` queries at head-dim
/// bucket `bucket`, and its length in f32 elements (0 when `batch`, `heads_q` or `seqlen_q` is
/// 0); an error naming `argument` (of shape `shape`) if the length overflows `usize`.
pub(crate) fn workspace_layout(
    batch: usize,
    heads_q: usize,
    seqlen_q: usize,
    bucket: usize,
    deterministic: bool,
    argument: &'static str,
    shape: &[usize],
) -> Result<(BackwardWorkspace, usize)> {
    let accum_cols = if deterministic { 0 } else { bucket };
    if batch == 0 || heads_q == 0 || seqlen_q == 0 {
        let empty = BackwardWorkspace { seqlen_q_rounded: 0, rows: 0, accum_cols };
        return Ok((empty, 0));
    }
    let ws = BackwardWorkspace::new(batch, heads_q, seqlen_q, accum_cols);
    match ws.and_then(|w| Some((w, w.len()?))) {
        Some(pair) => Ok(pair),
        None => Err(Error::invalid(
            argument,
            format!(
                "a workspace of batch · heads_q · seqlen_q rounded up to {} · ({} + {accum_cols}) f32 \
                 elements that fits in usize",
                BackwardWorkspace::ROW_ALIGN,
                2
            ),
            format!("shape {shape:?}"),
        )),
    }
}
