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
#[non_exhaustive]
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
    /// The workspace's layout (its `accum_cols` is 0 when dQ has its own kernel).
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
    ///   (`q`, `k`, `v`, `out`, `lse`, `dout`; inputs may overlap each other). Unlike the
    ///   forward's rule 6, two operands whose address ranges meet are accepted when they
    ///   provably share no byte by a periodic argument (see below): dq, dk, dv may interleave
    ///   in one packed `(batch, seqlen, 3, heads, headdim)` gradient buffer, as FlashAttention's
    ///   `qkvpacked` backward writes them.
    ///
    /// # Interleaved operands
    /// For a threshold `t` (in bytes), call a dimension of size 2 or more *outer* when its
    /// stride in bytes is at least `t`. Each view's bytes lie in blocks `[ptr + m·g, ptr + m·g + w)`,
    /// `g` the gcd of both views' outer strides in bytes and `w` the bytes spanned by the view's
    /// other dimensions (plus one element). With `r = (ptr_b − ptr_a) mod g`, views `a` and `b`
    /// share no byte when `w_a <= r` and `r + w_b <= g`; every stride of either view is tried as
    /// `t`. For packed gradients, `t` = the sequence stride gives `g = 3 · heads · headdim`
    /// elements, `w = heads · headdim` elements each, and residues 0, `w`, `2w`.
    ///
    /// Launches: see [`BackwardPlan::launches`]. With seqlen_q = 0 only the main kernel runs
    /// (it writes dK = dV = 0); with seqlen_k = 0 the main kernel does not run, and dQ = 0 is
    /// written (by the conversion of a zeroed accumulator, or the dQ kernel).
    ///
    /// A forced tile class that does not fit `shared_memory_per_block` (or none that does) is
    /// [`Error::SharedMemoryLimit`]; a class fits when both its main and its dQ kernel do
    /// ([`BackwardConfig::max_shared_bytes`]). The kernels are `path`'s, as the forward's.
    pub fn new<T: Element>(
        args: &RawBackward,
        lens: Option<&BackwardLens>,
        options: &BackwardOptions,
        path: crate::KernelPath,
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

        let config = dispatch::select_backward(
            path,
            T::DTYPE,
            options.f32_precision,
            p.d,
            options.tile,
            shared_memory_per_block,
        )?;
        let dq_kernel = dq_in_own_kernel(options, bucket);
        let align = BackwardWorkspace::ROW_ALIGN;
        let (padded_q, padded_k) = p.padded_lengths(align, align, &q.shape, &k.shape)?;
        let (workspace, workspace_len) = workspace_layout(b, hq, sq, bucket, dq_kernel, "q", &q.shape)?;
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
        let dq_blocks = if dq_kernel {
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
        check_views(&views, true)?;
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
            dq_accum: if dq_kernel { 0 } else { at(accum_at)? },
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
        let dq = if dq_kernel {
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

/// Whether dQ is computed by its own kernel (no accumulator): always when deterministic, and
/// where that schedule is the faster one (`default_atomic_dq`).
pub(crate) fn dq_in_own_kernel(options: &BackwardOptions, bucket: usize) -> bool {
    options.deterministic || !rustflash_abi::default_atomic_dq(bucket)
}

/// The workspace of a backward of `batch · heads_q` rows of `seqlen_q` queries at head-dim
/// bucket `bucket`, and its length in f32 elements (0 when `batch`, `heads_q` or `seqlen_q` is
/// 0); an error naming `argument` (of shape `shape`) if the length overflows `usize`.
pub(crate) fn workspace_layout(
    batch: usize,
    heads_q: usize,
    seqlen_q: usize,
    bucket: usize,
    dq_kernel: bool,
    argument: &'static str,
    shape: &[usize],
) -> Result<(BackwardWorkspace, usize)> {
    // The accumulator exists only for the atomic schedule.
    let accum_cols = if dq_kernel { 0 } else { bucket };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FlashAttention;
    use crate::layout::Layout;
    use crate::tensor::RawTensor;
    use half::{bf16, f16};
    use rustflash_abi::{BACKWARD_CONFIGS, BackwardTile};

    const H100: usize = 227 * 1024;
    const GB: u64 = 1 << 30;

    fn contiguous<const N: usize>(ptr: u64, shape: [usize; N]) -> RawTensor<N> {
        RawTensor { ptr, layout: Layout::contiguous(shape) }
    }

    /// A valid call on separate contiguous buffers, 1 GiB apart, with a workspace of exactly the
    /// default mode's length.
    fn call(b: usize, sq: usize, sk: usize, hq: usize, hkv: usize, d: usize) -> RawBackward {
        let q = [b, sq, hq, d];
        let kv = [b, sk, hkv, d];
        let bucket = crate::attention::dispatch::bucket(d).unwrap_or(32);
        let ws = workspace_layout(b, hq, sq, bucket, false, "q", &q).unwrap().1;
        RawBackward {
            q: contiguous(GB, q),
            k: contiguous(2 * GB, kv),
            v: contiguous(3 * GB, kv),
            out: contiguous(4 * GB, q),
            lse: contiguous(5 * GB, [b, hq, sq]),
            dout: contiguous(6 * GB, q),
            dq: contiguous(7 * GB, q),
            dk: contiguous(8 * GB, kv),
            dv: contiguous(9 * GB, kv),
            workspace: contiguous(10 * GB, [ws]),
        }
    }

    type Mutate = fn(&mut RawBackward);
    type Address = fn(&RawBackward) -> u64;
    type AddressMut = fn(&mut RawBackward) -> &mut u64;

    fn plan_with(a: &RawBackward, options: &BackwardOptions) -> Result<Option<BackwardPlan>> {
        BackwardPlan::new::<f16>(a, None, options, crate::KernelPath::Hopper, H100)
    }

    fn plan(a: &RawBackward) -> Result<Option<BackwardPlan>> {
        plan_with(a, &BackwardOptions::default())
    }

    fn kinds(p: &BackwardPlan) -> Vec<BackwardKernel> {
        p.launches().map(|l| l.kernel).collect()
    }

    /// The argument a rejected call names, and the message.
    fn rejected(r: Result<Option<BackwardPlan>>) -> (&'static str, String) {
        match r {
            Err(e @ Error::InvalidArgument { argument, .. }) => (argument, e.to_string()),
            other => panic!("expected an invalid argument, got {other:?}"),
        }
    }

    fn argument(r: Result<Option<BackwardPlan>>) -> &'static str {
        rejected(r).0
    }

    #[test]
    fn a_plain_call_plans_its_launches() {
        // GQA: 4 query heads over 2 K/V heads; f16 head dim 64: Large, block_m 64, block_n 128.
        let a = call(2, 300, 200, 4, 2, 64);
        let p = plan(&a).unwrap().unwrap();
        let c = p.config;
        assert_eq!((c.head_dim, c.tile, c.block_m, c.block_n), (64, BackwardTile::Large, 64, 128));
        assert!(c.name.contains("_f16_d64_"));
        let rows = 2 * 4 * 384;
        assert_eq!(p.workspace, BackwardWorkspace { seqlen_q_rounded: 384, rows, accum_cols: 64 });
        assert_eq!(p.workspace_len, rows * 66);
        assert_eq!(kinds(&p), [BackwardKernel::Pre, BackwardKernel::Main, BackwardKernel::Convert]);
        let row = |kernel, name| BackwardLaunch {
            kernel,
            name,
            blocks: rows as u32 / 8,
            threads: 256,
            shared_bytes: 0,
            num_m_blocks: 5,
        };
        assert_eq!(p.launch(BackwardKernel::Pre), Some(&row(BackwardKernel::Pre, "flash_bwd_pre_sm80_f16")));
        assert_eq!(
            p.launch(BackwardKernel::Convert),
            Some(&row(BackwardKernel::Convert, "flash_bwd_convert_sm80_f16"))
        );
        assert_eq!(
            p.launch(BackwardKernel::Main),
            Some(&BackwardLaunch {
                kernel: BackwardKernel::Main,
                name: c.name,
                blocks: 2 * 2 * 2,
                threads: c.threads() as u32,
                shared_bytes: c.shared_bytes() as u32,
                num_m_blocks: 5,
            })
        );
        assert_eq!(p.launch(BackwardKernel::Dq), None);

        let k = &p.params;
        let f = &k.fwd;
        assert_eq!((f.q, f.k, f.v, f.o, f.lse), (GB, 2 * GB, 3 * GB, 4 * GB, 5 * GB));
        assert_eq!((k.dout, k.dq, k.dk, k.dv), (6 * GB, 7 * GB, 8 * GB, 9 * GB));
        let q_strides = [300 * 4 * 64, 4 * 64, 64];
        let kv_strides = [200 * 2 * 64, 2 * 64, 64];
        assert_eq!(
            (f.q_strides, f.o_strides, k.dout_strides, k.dq_strides),
            (q_strides, q_strides, q_strides, q_strides)
        );
        assert_eq!(
            (f.k_strides, f.v_strides, k.dk_strides, k.dv_strides),
            (kv_strides, kv_strides, kv_strides, kv_strides)
        );
        assert_eq!(f.lse_strides, [4 * 300, 300, 1]);
        assert_eq!((f.seqlen_q, f.seqlen_k, f.heads_q, f.group, f.head_dim), (300, 200, 4, 2, 64));
        assert_eq!((f.num_m_blocks, f.causal), (5, 0));
        assert_eq!((f.load_bytes, f.store_bytes, k.o_load_bytes), (16, 16, 16));
        assert_eq!(k.scale, 0.125);
        assert_eq!(f.scale_log2, 0.125 * std::f32::consts::LOG2_E);
        let ws = 10 * GB;
        assert_eq!((k.lse_log2, k.delta, k.dq_accum), (ws, ws + 4 * rows as u64, ws + 8 * rows as u64));
        assert_eq!((k.seqlen_q_rounded, k.accum_cols, k.num_n_blocks), (384, 64, 2));
        for l in p.launches() {
            assert_eq!(p.params_for(l).fwd.num_m_blocks, l.num_m_blocks);
        }
    }

    #[test]
    fn the_deterministic_mode_plans_the_dq_kernel() {
        // Head dim 32, Large: the main kernel's 128 query rows, the dQ kernel's 64.
        let mut a = call(1, 300, 70, 3, 1, 32);
        let options = BackwardOptions::default().deterministic(true).causal(true).softmax_scale(-0.5);
        let rows = 3 * 384;
        // The deterministic workspace is smaller: a shorter one is enough.
        a.workspace.layout = Layout::contiguous([2 * rows]);
        let p = plan_with(&a, &options).unwrap().unwrap();
        let c = p.config;
        assert_eq!((c.block_m, c.dq_block_m, c.block_n), (128, 64, 128));
        assert_eq!(p.workspace_len, 2 * rows);
        assert_eq!(p.workspace.accum_cols, 0);
        assert_eq!(kinds(&p), [BackwardKernel::Pre, BackwardKernel::Main, BackwardKernel::Dq]);
        let dq = p.launch(BackwardKernel::Dq).unwrap();
        assert_eq!(
            *dq,
            BackwardLaunch {
                kernel: BackwardKernel::Dq,
                name: c.dq_name,
                blocks: 3 * 5,
                threads: c.dq_threads() as u32,
                shared_bytes: c.dq_shared_bytes() as u32,
                num_m_blocks: 5,
            }
        );
        let main = p.launch(BackwardKernel::Main).unwrap();
        assert_eq!((main.blocks, main.num_m_blocks), (1, 3));
        assert_eq!(p.params_for(dq).fwd.num_m_blocks, 5);
        assert_eq!(p.params_for(main).fwd.num_m_blocks, 3);
        let k = &p.params;
        assert_eq!(k.dq_accum, 0);
        assert_eq!((k.lse_log2, k.delta), (10 * GB, 10 * GB + 4 * rows as u64));
        assert_eq!(k.accum_cols, 32);
        assert_eq!((k.fwd.causal, k.scale, k.fwd.group), (1, -0.5, 3));
        // The default mode needs the accumulator: the same workspace is too small.
        let (arg, msg) = rejected(plan(&a));
        assert_eq!(arg, "workspace");
        assert!(msg.contains(&format!("at least {} f32 elements", rows * 34)), "{msg}");
    }

    #[test]
    fn the_workspace_length_is_the_plans() {
        let det = BackwardOptions::default().deterministic(true);
        let len = |b, h, s, d, o: &BackwardOptions| FlashAttention::backward_workspace_len(b, h, s, d, o);
        assert_eq!(len(2, 3, 129, 64, &BackwardOptions::default()).unwrap(), 2 * 3 * 256 * 66);
        assert_eq!(len(2, 3, 129, 59, &det).unwrap(), 2 * 3 * 256 * 2);
        assert_eq!(len(2, 3, 128, 1, &BackwardOptions::default()).unwrap(), 2 * 3 * 128 * 34);
        for (b, h, s) in [(0, 3, 5), (2, 0, 5), (2, 3, 0), (0, usize::MAX, usize::MAX)] {
            assert_eq!(len(b, h, s, 64, &BackwardOptions::default()).unwrap(), 0);
        }
        for d in [0, 257] {
            assert!(matches!(
                len(1, 1, 1, d, &det),
                Err(Error::InvalidArgument { argument: "head_dim", .. })
            ));
        }
        assert!(matches!(
            len(usize::MAX, 1, 1, 64, &det),
            Err(Error::InvalidArgument { argument: "seqlen_q", .. })
        ));
        for (b, sq, hq, d) in [(2, 300, 4, 64), (1, 1, 1, 1), (3, 129, 2, 256)] {
            for o in [BackwardOptions::default(), det.clone()] {
                let p = plan_with(&call(b, sq, 7, hq, 1, d), &o).unwrap().unwrap();
                assert_eq!(p.workspace_len, len(b, hq, sq, d, &o).unwrap());
            }
        }
    }

    #[test]
    fn shape_errors_name_the_argument() {
        let base = call(2, 30, 20, 4, 2, 64);
        let cases: [(&str, Mutate); 10] = [
            ("q", |a| a.q.layout.shape[3] = 300),
            ("k", |a| a.k.layout.shape[2] = 3),
            ("v", |a| a.v.layout.shape[1] = 21),
            ("out", |a| a.out.layout.shape[1] = 31),
            ("lse", |a| a.lse.layout.shape = [2, 30, 4]),
            ("dout", |a| a.dout.layout.shape[2] = 2),
            ("dq", |a| a.dq.layout.shape[0] = 1),
            ("dk", |a| a.dk.layout.shape[1] = 30),
            ("dv", |a| a.dv.layout.shape[3] = 32),
            ("options.softmax_scale", |_| {}),
        ];
        for (name, mutate) in cases {
            let mut a = base;
            mutate(&mut a);
            let options = if name == "options.softmax_scale" {
                BackwardOptions::default().softmax_scale(f32::INFINITY)
            } else {
                BackwardOptions::default()
            };
            let (arg, msg) = rejected(plan_with(&a, &options));
            assert_eq!(arg, name, "{msg}");
            let expected = match name {
                "dout" => "the shape of out",
                "dq" => "the shape of q",
                "dk" | "dv" => "the shape of k",
                "lse" => "(batch, heads_q, seqlen_q)",
                _ => "",
            };
            assert!(msg.contains(expected), "{msg}");
        }
        let huge = BackwardOptions::default().softmax_scale(3e38);
        assert_eq!(argument(plan_with(&base, &huge)), "options.softmax_scale");
    }

    #[test]
    fn workspace_errors() {
        // Head dim 64: the default mode's atomic schedule, with its accumulator.
        let a = call(1, 100, 50, 2, 2, 64);
        let need = 2 * 128 * (2 + 64);
        // Too small, by one element.
        let mut s = a;
        s.workspace.layout = Layout::contiguous([need - 1]);
        let (arg, msg) = rejected(plan(&s));
        assert_eq!(arg, "workspace");
        assert!(msg.contains(&format!("at least {need} f32 elements")), "{msg}");
        // Long enough as a view, but its buffer is not.
        let mut lens = BackwardLens {
            q: usize::MAX,
            k: usize::MAX,
            v: usize::MAX,
            out: usize::MAX,
            lse: usize::MAX,
            dout: usize::MAX,
            dq: usize::MAX,
            dk: usize::MAX,
            dv: usize::MAX,
            workspace: need - 1,
        };
        let with_lens = |lens: &BackwardLens| {
            BackwardPlan::new::<f16>(
                &a,
                Some(lens),
                &BackwardOptions::default(),
                crate::KernelPath::Hopper,
                H100,
            )
        };
        assert_eq!(argument(with_lens(&lens)), "workspace");
        lens.workspace = need;
        assert!(with_lens(&lens).unwrap().is_some());
        // Aligned to its f32 element but not to 16 bytes.
        for offset in [4, 8, 12] {
            let mut m = a;
            m.workspace.ptr += offset;
            let (arg, msg) = rejected(plan(&m));
            assert_eq!(arg, "workspace");
            assert!(msg.contains("16 bytes"), "{msg}");
        }
        // Strided.
        let mut m = a;
        m.workspace.layout.strides = [2];
        assert_eq!(argument(plan(&m)), "workspace");
        // A longer one is fine; an empty problem's workspace is never looked at.
        let mut m = a;
        m.workspace.layout = Layout::contiguous([need + 100]);
        assert!(plan(&m).unwrap().is_some());
        let mut m = call(1, 0, 50, 2, 2, 128);
        m.workspace = RawTensor::new(3, [0], [7]);
        assert!(plan(&m).unwrap().is_some());
    }

    #[test]
    fn outputs_may_not_overlap() {
        let a = call(2, 30, 20, 4, 2, 64);
        let dq_bytes = 2 * 30 * 4 * 64 * 2;
        // dq overlapping dk: the last element of dq is dk's first.
        let mut m = a;
        m.dk.ptr = m.dq.ptr + dq_bytes - 2;
        let (arg, msg) = rejected(plan(&m));
        assert_eq!(arg, "dk");
        assert!(msg.contains("`dq`"), "{msg}");
        // ... and right after it: fine.
        m.dk.ptr = m.dq.ptr + dq_bytes;
        assert!(plan(&m).unwrap().is_some());
        // Each output against each input, and the workspace against everything.
        let inputs: [(&str, Address); 6] = [
            ("q", |a| a.q.ptr),
            ("k", |a| a.k.ptr),
            ("v", |a| a.v.ptr),
            ("out", |a| a.out.ptr),
            ("lse", |a| a.lse.ptr),
            ("dout", |a| a.dout.ptr),
        ];
        let outputs: [(&str, AddressMut); 4] = [
            ("dq", |a| &mut a.dq.ptr),
            ("dk", |a| &mut a.dk.ptr),
            ("dv", |a| &mut a.dv.ptr),
            ("workspace", |a| &mut a.workspace.ptr),
        ];
        for (out, ptr) in outputs {
            for (input, at) in inputs {
                let mut m = a;
                *ptr(&mut m) = at(&a) + 16;
                let (arg, msg) = rejected(plan(&m));
                assert_eq!(arg, out, "{out} over {input}: {msg}");
                assert!(msg.contains(&format!("`{input}`")), "{msg}");
            }
            for (other, at) in outputs.iter().filter(|(o, _)| *o != out) {
                let mut m = a;
                let there = *at(&mut m.clone());
                *ptr(&mut m) = there + 16;
                let (arg, msg) = rejected(plan(&m));
                assert!(arg == out || arg == *other, "{out} over {other}: {msg}");
            }
        }
        // An output overlapping itself.
        let mut m = a;
        m.dv.layout.strides[1] = 0;
        assert_eq!(argument(plan(&m)), "dv");
        // Inputs may overlap each other: dout is out.
        let mut m = a;
        m.dout = m.out;
        assert!(plan(&m).unwrap().is_some());
    }

    /// q, k, v packed in one `(b, s, 3, h, d)` buffer and dq, dk, dv in another, as
    /// FlashAttention's qkvpacked functions lay them out: their address ranges interleave but no
    /// byte is shared.
    #[test]
    fn packed_gradients_are_accepted_when_disjoint() {
        let (b, s, h, d) = (2, 50, 3, 40);
        let strides = [s * 3 * h * d, 3 * h * d, d, 1];
        let packed = |base: u64| {
            [0, 1, 2].map(|i| RawTensor::new(base + (i * h * d * 2) as u64, [b, s, h, d], strides))
        };
        let mut a = call(b, s, s, h, h, d);
        [a.q, a.k, a.v] = packed(GB);
        [a.dq, a.dk, a.dv] = packed(7 * GB);
        let p = plan(&a).unwrap().unwrap();
        assert_eq!(p.params.dk, 7 * GB + (h * d * 2) as u64);
        assert_eq!(p.params.dq_strides, [strides[0] as u64, strides[1] as u64, strides[2] as u64]);
        // 80-byte head dim, 240-byte rows: 16-byte accesses.
        assert_eq!((p.params.fwd.load_bytes, p.params.fwd.store_bytes), (16, 16));
        // dk shifted by one element: it shares dq's last column of each row.
        let mut m = a;
        m.dk.ptr -= 2;
        assert_eq!(argument(plan(&m)), "dk");
        // dv in dk's place.
        let mut m = a;
        m.dv.ptr = m.dk.ptr;
        assert!(matches!(argument(plan(&m)), "dk" | "dv"));
        // Interleaved with an input: refused as well if they share a byte, accepted if not.
        let mut m = a;
        m.dq.ptr = m.q.ptr;
        assert_eq!(argument(plan(&m)), "dq");
        // Gradients packed in the gaps of a (b, s, 6, h, d) buffer holding q, k, v.
        let wide = [s * 6 * h * d, 6 * h * d, d, 1];
        let at = |i: usize| RawTensor::new(GB + (i * h * d * 2) as u64, [b, s, h, d], wide);
        let mut m = a;
        [m.q, m.k, m.v, m.dq, m.dk, m.dv] = [at(0), at(2), at(4), at(1), at(3), at(5)];
        assert!(plan(&m).unwrap().is_some());
        m.dk = at(4);
        assert_eq!(argument(plan(&m)), "dk");
    }

    #[test]
    fn empty_problems() {
        // No batch or no query heads: nothing, whatever the addresses.
        for (b, hq, hkv) in [(0, 4, 2), (2, 0, 0)] {
            let mut a = call(b, 30, 20, hq, hkv, 64);
            a.dq.ptr = 1;
            a.workspace.layout = Layout::contiguous([0]);
            assert_eq!(plan(&a).unwrap(), None);
        }
        // ... but shapes are checked.
        let mut a = call(0, 30, 20, 4, 2, 64);
        a.dk.layout.shape[1] = 21;
        assert_eq!(argument(plan(&a)), "dk");
        // No queries: the main kernel alone writes dK = dV = 0; no workspace is needed.
        for det in [false, true] {
            let mut a = call(2, 0, 20, 4, 2, 64);
            a.workspace = RawTensor::new(0, [0], [1]);
            let p = plan_with(&a, &BackwardOptions::default().deterministic(det)).unwrap().unwrap();
            assert_eq!(kinds(&p), [BackwardKernel::Main]);
            let main = p.launch(BackwardKernel::Main).unwrap();
            assert_eq!((main.blocks, main.num_m_blocks), (2 * 2, 0));
            assert_eq!((p.workspace_len, p.params.lse_log2, p.params.delta, p.params.dq_accum), (0, 0, 0, 0));
            assert_eq!((p.params.fwd.seqlen_q, p.params.seqlen_q_rounded), (0, 0));
        }
        // No keys: dQ = 0 from the pre-pass and the conversion, or the dQ kernel; k, v, dk, dv
        // are not looked at.
        for (det, last) in [(false, BackwardKernel::Convert), (true, BackwardKernel::Dq)] {
            let mut a = call(2, 30, 0, 4, 2, 64);
            a.k.ptr = 3;
            a.dv.ptr = a.dq.ptr;
            let p = plan_with(&a, &BackwardOptions::default().deterministic(det)).unwrap().unwrap();
            assert_eq!(kinds(&p), [BackwardKernel::Pre, last]);
            assert_eq!((p.params.num_n_blocks, p.params.fwd.seqlen_k), (0, 0));
        }
        // Neither: nothing.
        assert_eq!(plan(&call(2, 0, 0, 4, 2, 64)).unwrap(), None);
    }

    #[test]
    fn sizes_the_kernels_hold_in_32_bits() {
        // seqlen_q rounded up to 128 beyond u32 (strides 0 keep the views small).
        let mut a = call(1, 1, 1, 1, 1, 64);
        let sq = u32::MAX as usize - 5;
        for t in [&mut a.q, &mut a.out, &mut a.dout, &mut a.dq] {
            t.layout = Layout { shape: [1, sq, 1, 64], strides: [0, 0, 0, 1] };
        }
        a.lse.layout = Layout { shape: [1, 1, sq], strides: [0, 0, 0] };
        let (arg, msg) = rejected(plan(&a));
        assert_eq!(arg, "q", "{msg}");
        assert!(msg.contains("seqlen_q"), "{msg}");
        // The pre-pass grid: batch · heads_q · 128 / 8 blocks.
        let mut a = call(1, 1, 1, 1, 1, 64);
        let (b, hq) = (1 << 20, 1 << 8);
        for t in [&mut a.q, &mut a.out, &mut a.dout, &mut a.dq] {
            t.layout = Layout { shape: [b, 1, hq, 64], strides: [0, 0, 0, 1] };
        }
        for t in [&mut a.k, &mut a.v, &mut a.dk, &mut a.dv] {
            t.layout = Layout { shape: [b, 1, 1, 64], strides: [0, 0, 0, 1] };
        }
        a.lse.layout = Layout { shape: [b, hq, 1], strides: [0, 0, 0] };
        let (arg, msg) = rejected(plan(&a));
        assert_eq!(arg, "q", "{msg}");
        assert!(msg.contains("blocks"), "{msg}");
        // The main grid: batch · heads_kv · ⌈seqlen_k / block_n⌉ blocks (2^16 · 2^8 · 2^8).
        let mut a = call(1, 1, 1, 1, 1, 64);
        let (b, h, sk) = (1 << 16, 1 << 8, 1 << 15);
        for t in [&mut a.q, &mut a.out, &mut a.dout, &mut a.dq] {
            t.layout = Layout { shape: [b, 1, h, 64], strides: [0, 0, 0, 1] };
        }
        for t in [&mut a.k, &mut a.v, &mut a.dk, &mut a.dv] {
            t.layout = Layout { shape: [b, sk, h, 64], strides: [0, 0, 0, 1] };
        }
        a.lse.layout = Layout { shape: [b, h, 1], strides: [0, 0, 0] };
        let (arg, msg) = rejected(plan(&a));
        assert_eq!(arg, "k", "{msg}");
        assert!(msg.contains("heads_kv") && msg.contains("blocks"), "{msg}");
        // Half the keys: 2^31 blocks, still one too many; a quarter fits (then the workspace,
        // of the caller's one-element problem, is the fault).
        for t in [&mut a.k, &mut a.v, &mut a.dk, &mut a.dv] {
            t.layout.shape[1] = sk / 2;
        }
        assert_eq!(argument(plan(&a)), "k");
        for t in [&mut a.k, &mut a.v, &mut a.dk, &mut a.dv] {
            t.layout.shape[1] = sk / 4;
        }
        assert_eq!(argument(plan(&a)), "workspace");
    }

    #[test]
    fn the_tile_follows_shared_memory_and_the_dtype() {
        let a = call(1, 100, 100, 2, 2, 256);
        let on = |limit, options: &BackwardOptions| {
            BackwardPlan::new::<bf16>(&a, None, options, crate::KernelPath::Hopper, limit)
        };
        let large = on(H100, &BackwardOptions::default()).unwrap().unwrap();
        assert_eq!(large.config.tile, BackwardTile::Large);
        assert!(large.config.name.contains("_bf16_d256_"));
        let small = on(99 * 1024, &BackwardOptions::default()).unwrap().unwrap();
        assert_eq!(small.config.tile, BackwardTile::Small);
        let forced = on(H100, &BackwardOptions::default().tile(BackwardTile::Small)).unwrap().unwrap();
        assert_eq!(forced.config, small.config);
        assert_eq!(forced.launch(BackwardKernel::Main).unwrap().num_m_blocks, 100usize.div_ceil(32) as u32);
        assert!(matches!(on(64 * 1024, &BackwardOptions::default()), Err(Error::SharedMemoryLimit { .. })));
        // Every row is reachable, on its family's path.
        for c in BACKWARD_CONFIGS {
            let precision = match c.family {
                rustflash_abi::MmaFamily::Tf32 => crate::F32Precision::Tf32,
                _ => crate::F32Precision::Accurate,
            };
            let options = BackwardOptions::default().tile(c.tile).f32_precision(precision);
            let a = call(1, 3, 3, 1, 1, c.head_dim);
            let path = match c.family {
                rustflash_abi::MmaFamily::Wmma | rustflash_abi::MmaFamily::Simt => crate::KernelPath::Volta,
                _ => crate::KernelPath::Hopper,
            };
            let p = match c.dtype {
                rustflash_abi::Dtype::F16 => BackwardPlan::new::<f16>(&a, None, &options, path, H100),
                rustflash_abi::Dtype::Bf16 => BackwardPlan::new::<bf16>(&a, None, &options, path, H100),
                rustflash_abi::Dtype::F32 => BackwardPlan::new::<f32>(&a, None, &options, path, H100),
            };
            assert_eq!(p.unwrap().unwrap().config, c);
        }
    }

    #[test]
    fn options_from_the_forward() {
        let f = crate::ForwardOptions::default().causal(true).softmax_scale(0.3);
        let b = BackwardOptions::from(&f);
        assert_eq!(b, BackwardOptions::default().causal(true).softmax_scale(0.3));
        assert!(!b.deterministic && b.tile.is_none());
    }

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<crate::SavedForward<'static, f16>>();
        assert_send_sync::<BackwardPlan>();
        assert_send_sync::<BackwardOptions>();
    }
}
