//! Attention backward: dQ, dK and dV of `O = softmax(scale · Q Kᵀ + mask) V` given dO, from the
//! forward's output and log-sum-exp (FlashAttention-2's algorithm: P is recomputed, never
//! stored).

use super::forward::{FlashAttention, ForwardOptions};
use super::validate_backward::{BackwardLens, BackwardPlan, dq_in_own_kernel, workspace_layout};
use crate::error::{DriverContext, Error, Result};
use crate::tensor::{DeviceTensor, DeviceTensorMut, RawTensor};
use crate::{Element, F32Precision};
use cudarc::driver::{CudaFunction, CudaStream, DevicePtr, DevicePtrMut, DeviceSlice, sys};
use rustflash_abi::{BackwardParams, BackwardTile};
use std::ffi::c_void;

/// Options of [`FlashAttention::backward`]. Build with [`BackwardOptions::default`] and the
/// setters, or from the forward's options (`BackwardOptions::from(&forward_options)`).
///
/// The scale and the mask must be the forward's: the backward recomputes the attention
/// probabilities from Q, K and the forward's log-sum-exp.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct BackwardOptions {
    /// The forward's factor on `Q Kᵀ`; default `1 / sqrt(headdim)`. The forward's rules: finite,
    /// with `scale · log2(e)` finite; 0 and negative values are allowed.
    pub softmax_scale: Option<f32>,
    /// The forward's causal masking, aligned to the bottom right. Rows that see no key get zero
    /// gradients.
    pub causal: bool,
    /// Bit-identical results run to run, at every head dim. Two schedules compute dQ:
    /// - *atomic*: the main kernel adds each key block's `dS K` into an f32 accumulator with
    ///   atomics (the order of the additions, hence the last bits of dQ, vary run to run), and
    ///   a conversion writes dQ; 5 matrix products per (query tile, key tile) pair;
    /// - *separate*: the main kernel computes dK and dV only, and a query-major kernel
    ///   recomputes S and dP to form dQ as a sum in a fixed order: 7 products per pair (the
    ///   main kernel's QKᵀ, dO Vᵀ, Pᵀ dO, dSᵀ Q and the dQ kernel's QKᵀ, dO Vᵀ, dS K), no atomics,
    ///   no accumulator in the workspace.
    ///
    /// The deterministic mode always runs the separate schedule. The default mode runs the
    /// atomic one only at head dims up to 64 (buckets 32 and 64) and the separate one above,
    /// where it measured faster on the H100 despite its extra work (the atomics and the dQ
    /// product cost the main kernel more than the second kernel costs; see
    /// docs/performance-notes.md): there the default mode is deterministic too, and determinism
    /// costs nothing. At head dims up to 64 it costs 2 extra products per pair, which measured
    /// within ±5% of the atomic schedule. [`FlashAttention::backward_workspace_len`] is
    /// `2 · rows` for the separate schedule and `(2 + bucket) · rows` for the atomic one.
    pub deterministic: bool,
    /// Force a tile class (tests, tuning); default: the first of [`BackwardTile::ALL`] whose
    /// kernels fit the GPU's shared memory.
    pub tile: Option<BackwardTile>,
    /// How f32 inputs are multiplied (ignored for f16 and bf16); default
    /// [`F32Precision::Accurate`]. Usually the forward's.
    pub f32_precision: F32Precision,
}

impl BackwardOptions {
    /// Turns causal masking, aligned to the bottom right, on or off (as the forward had it).
    pub fn causal(mut self, causal: bool) -> Self {
        self.causal = causal;
        self
    }
    /// Sets the factor on `Q Kᵀ` (the forward's), in place of the default `1 / sqrt(headdim)`.
    pub fn softmax_scale(mut self, scale: f32) -> Self {
        self.softmax_scale = Some(scale);
        self
    }
    /// Turns the deterministic mode (no atomics, bit-identical results) on or off.
    pub fn deterministic(mut self, deterministic: bool) -> Self {
        self.deterministic = deterministic;
        self
    }
    /// Forces the tile class, in place of the first in [`BackwardTile::ALL`] that fits the GPU.
    pub fn tile(mut self, tile: BackwardTile) -> Self {
        self.tile = Some(tile);
        self
    }
    /// Sets how f32 inputs are multiplied (the forward's, usually).
    pub fn f32_precision(mut self, precision: F32Precision) -> Self {
        self.f32_precision = precision;
        self
    }
}

impl From<&ForwardOptions> for BackwardOptions {
    /// The forward's scale, mask and f32 precision, in the default (non-deterministic) mode,
    /// with no forced tile (the forward's tile classes are not the backward's).
    fn from(forward: &ForwardOptions) -> Self {
        BackwardOptions {
            softmax_scale: forward.softmax_scale,
            causal: forward.causal,
            f32_precision: forward.f32_precision,
            ..Default::default()
        }
    }
}

/// Raw operands of [`FlashAttention::backward_raw`]: device addresses with layouts.
///
/// `q`, `out`, `dout`, `dq` are `(batch, seqlen_q, heads_q, headdim)`; `k`, `v`, `dk`, `dv`
/// are `(batch, seqlen_k, heads_kv, headdim)`, all of the call's element type with the head dim
/// contiguous; `lse` is the forward's `(batch, heads_q, seqlen_q)` f32 log-sum-exp, any strides;
/// `workspace` is 1-D f32, stride 1, 16-byte aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawBackward {
    /// The forward's queries; read.
    pub q: RawTensor,
    /// The forward's keys; read.
    pub k: RawTensor,
    /// The forward's values; read.
    pub v: RawTensor,
    /// The forward's output O, the shape of `q`; read.
    pub out: RawTensor,
    /// The forward's natural log-sum-exp, `(batch, heads_q, seqlen_q)` f32; read.
    pub lse: RawTensor<3>,
    /// The gradient of the loss with respect to O, the shape of `out`; read.
    pub dout: RawTensor,
    /// The gradient with respect to Q, the shape of `q`; written.
    pub dq: RawTensor,
    /// The gradient with respect to K, the shape of `k`; written.
    pub dk: RawTensor,
    /// The gradient with respect to V, the shape of `k`; written.
    pub dv: RawTensor,
    /// Scratch, `(len,)` f32 with `len >= FlashAttention::backward_workspace_len(..)`; written.
    pub workspace: RawTensor<1>,
}

impl FlashAttention {
    /// f32 elements of the workspace a backward of this problem needs: 0 for an empty problem
    /// (`batch`, `heads_q` or `seqlen_q` 0), else `rows · (2 + bucket)` in the default mode and
    /// `2 · rows` in the deterministic one, `rows = batch · heads_q · seqlen_q_rounded`
    /// (`seqlen_q` rounded up to [`BackwardWorkspace::ROW_ALIGN`](crate::BackwardWorkspace::ROW_ALIGN)
    /// = 128) and `bucket` the head dim rounded up to the next kernel bucket (a multiple of 32).
    /// The layout is [`BackwardWorkspace`](crate::BackwardWorkspace)'s: per row the LSE in base 2
    /// and `delta = rowsum(dO ∘ O)`, then (the atomic schedule only, see
    /// [`BackwardOptions::deterministic`]) the f32 dQ accumulator.
    ///
    /// Only `options.deterministic` matters of the options. Errors: [`Error::InvalidArgument`]
    /// naming `head_dim` outside 1..=256, or `seqlen_q` if the length overflows `usize`.
    pub fn backward_workspace_len(
        batch: usize,
        heads_q: usize,
        seqlen_q: usize,
        head_dim: usize,
        options: &BackwardOptions,
    ) -> Result<usize> {
        let Some(bucket) = super::dispatch::bucket(head_dim) else {
            return Err(Error::invalid("head_dim", "1..=256", head_dim));
        };
        let shape = [batch, heads_q, seqlen_q];
        let dq_kernel = dq_in_own_kernel(options, bucket);
        Ok(workspace_layout(batch, heads_q, seqlen_q, bucket, dq_kernel, "seqlen_q", &shape)?.1)
    }

    /// Backward attention: the gradients `dq`, `dk`, `dv` of `out = softmax(scale · q kᵀ + mask) v`
    /// given `dout`, from the forward's `out` and `lse` (with the forward's scale and mask in
    /// `options`). GQA/MQA: the gradient of a K/V head sums over its query heads. Rows that see
    /// no key (causal masking, `seqlen_k` 0) give zero gradients.
    ///
    /// - `q`, `out`, `dout`, `dq`: `(batch, seqlen_q, heads_q, headdim)`; `k`, `v`, `dk`, `dv`:
    ///   `(batch, seqlen_k, heads_kv, headdim)`, `heads_q` a multiple of `heads_kv`, `headdim`
    ///   1..=256; strides anything with the last one 1 (any when `headdim` is 1).
    /// - `lse`: the forward's `(batch, heads_q, seqlen_q)` f32 log-sum-exp, any strides.
    /// - `workspace`: 1-D f32 (stride 1) of at least [`FlashAttention::backward_workspace_len`]
    ///   elements, 16-byte aligned (a fresh `CudaSlice<f32>` is). Its contents need not be
    ///   initialised and are meaningless afterwards; one workspace serves any number of calls in
    ///   order on one stream.
    /// - Outputs `dq`, `dk`, `dv`, `workspace` may not overlap themselves, each other or any
    ///   input; inputs may overlap each other (q, k, v packed in one buffer; dq, dk, dv may be
    ///   disjoint slices of one packed gradient buffer). Every view must lie inside its `data`.
    /// - Empty problems are valid: batch or heads_q 0 launches nothing; seqlen_q 0 writes
    ///   dK = dV = 0; seqlen_k 0 writes dQ = 0.
    ///
    /// Up to three launches on `stream` (pre-pass, main kernel, then the dQ conversion or the
    /// dQ kernel: [`BackwardPlan::launches`]), with no host synchronisation and no allocation.
    /// At head dims up to 64 the default mode accumulates dQ with f32 atomics, so its last bits
    /// vary run to run; [`BackwardOptions::deterministic`] makes every output bit-identical
    /// (see it for the two schedules and their cost).
    ///
    /// Errors, before anything is launched: [`Error::InvalidArgument`] naming the argument at
    /// fault (`q`, `k`, `v`, `out`, `lse`, `dout`, `dq`, `dk`, `dv`, `workspace`, `stream`,
    /// `options.softmax_scale`, `options.tile`) as [`BackwardPlan::new`] states the rules, and
    /// for a stream or buffer of another device's context (and `q` for bfloat16 on the Volta
    /// path); [`Error::SharedMemoryLimit`] if no tile class (or not the forced one) fits (on a
    /// T4's 64 KB every class fits; see `docs/architecture.md`); driver errors from loading the
    /// kernels (all are loaded before the first launch) or launching them.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<T: Element>(
        &self,
        stream: &CudaStream,
        q: &DeviceTensor<'_, T>,
        k: &DeviceTensor<'_, T>,
        v: &DeviceTensor<'_, T>,
        out: &DeviceTensor<'_, T>,
        dout: &DeviceTensor<'_, T>,
        lse: &DeviceTensor<'_, f32, 3>,
        dq: &mut DeviceTensorMut<'_, T>,
        dk: &mut DeviceTensorMut<'_, T>,
        dv: &mut DeviceTensorMut<'_, T>,
        workspace: &mut DeviceTensorMut<'_, f32, 1>,
        options: &BackwardOptions,
    ) -> Result<()> {
        self.check_contexts(
            stream,
            &[
                ("q", q.data.stream()),
                ("k", k.data.stream()),
                ("v", v.data.stream()),
                ("out", out.data.stream()),
                ("dout", dout.data.stream()),
                ("lse", lse.data.stream()),
                ("dq", dq.data.stream()),
                ("dk", dk.data.stream()),
                ("dv", dv.data.stream()),
                ("workspace", workspace.data.stream()),
            ],
        )?;
        let lens = BackwardLens {
            q: q.data.len(),
            k: k.data.len(),
            v: v.data.len(),
            out: out.data.len(),
            lse: lse.data.len(),
            dout: dout.data.len(),
            dq: dq.data.len(),
            dk: dk.data.len(),
            dv: dv.data.len(),
            workspace: workspace.data.len(),
        };
        let (qp, _gq) = q.data.device_ptr(stream);
        let (kp, _gk) = k.data.device_ptr(stream);
        let (vp, _gv) = v.data.device_ptr(stream);
        let (op, _go) = out.data.device_ptr(stream);
        let (lp, _gl) = lse.data.device_ptr(stream);
        let (dop, _gdo) = dout.data.device_ptr(stream);
        let (dqp, _gdq) = dq.data.device_ptr_mut(stream);
        let (dkp, _gdk) = dk.data.device_ptr_mut(stream);
        let (dvp, _gdv) = dv.data.device_ptr_mut(stream);
        let (wp, _gw) = workspace.data.device_ptr_mut(stream);
        let args = RawBackward {
            q: RawTensor { ptr: qp, layout: q.layout },
            k: RawTensor { ptr: kp, layout: k.layout },
            v: RawTensor { ptr: vp, layout: v.layout },
            out: RawTensor { ptr: op, layout: out.layout },
            lse: RawTensor { ptr: lp, layout: lse.layout },
            dout: RawTensor { ptr: dop, layout: dout.layout },
            dq: RawTensor { ptr: dqp, layout: dq.layout },
            dk: RawTensor { ptr: dkp, layout: dk.layout },
            dv: RawTensor { ptr: dvp, layout: dv.layout },
            workspace: RawTensor { ptr: wp, layout: workspace.layout },
        };
        let plan = self.backward_plan::<T>(&args, Some(&lens), options)?;
        // SAFETY: the addresses come from live views of this context, each view checked to lie
        // inside its buffer; the stream belongs to the context; the guards above keep the
        // buffers' events ordered around the launches.
        unsafe { self.launch_backward(stream.cu_stream(), plan) }
    }

    /// [`FlashAttention::backward`] on raw device addresses and a raw stream, for frameworks
    /// that own their memory. Checks everything [`FlashAttention::backward`] does (shapes, sizes,
    /// offsets, alignment of every address, the workspace's length as its view states it,
    /// overlaps of the outputs) except what it cannot see: the buffers' lengths and the
    /// stream's context.
    ///
    /// # Safety
    /// Every non-empty view is inside a device allocation of this GPU's context (from its address
    /// to its highest element, as its layout names them); `stream` is a stream of that context
    /// (or null, the legacy default stream); the memory stays allocated, the inputs are not
    /// written and the outputs not accessed by anything else, until the launches complete.
    pub unsafe fn backward_raw<T: Element>(
        &self,
        stream: sys::CUstream,
        args: &RawBackward,
        options: &BackwardOptions,
    ) -> Result<()> {
        let plan = self.backward_plan::<T>(args, None, options)?;
        // SAFETY: the caller guarantees the addresses, the memory and the stream.
        unsafe { self.launch_backward(stream, plan) }
    }

    /// [`FlashAttention::forward`], keeping the operands for a later backward: `q`, `k`, `v`
    /// are borrowed for `'a`, and `out` and `lse` — written by the forward — become read-only
    /// views the result holds ([`SavedForward::out`], [`SavedForward::lse`]).
    ///
    /// Shapes, rules and errors are [`FlashAttention::forward`]'s.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_saved<'a, T: Element>(
        &self,
        stream: &CudaStream,
        q: DeviceTensor<'a, T>,
        k: DeviceTensor<'a, T>,
        v: DeviceTensor<'a, T>,
        mut out: DeviceTensorMut<'a, T>,
        mut lse: DeviceTensorMut<'a, f32, 3>,
        options: &ForwardOptions,
    ) -> Result<SavedForward<'a, T>> {
        self.forward(stream, &q, &k, &v, &mut out, &mut lse, options)?;
        Ok(SavedForward {
            attention: self.clone(),
            q,
            k,
            v,
            out: DeviceTensor { data: out.data.into_view(), layout: out.layout },
            lse: DeviceTensor { data: lse.data.into_view(), layout: lse.layout },
            options: options.clone(),
        })
    }

    /// The checks of [`BackwardPlan::new`] on this device; `None` when nothing is launched.
    fn backward_plan<T: Element>(
        &self,
        args: &RawBackward,
        lens: Option<&BackwardLens>,
        options: &BackwardOptions,
    ) -> Result<Option<BackwardPlan>> {
        let device = self.device();
        BackwardPlan::new::<T>(args, lens, options, device.path(), device.info().shared_memory_per_block)
    }

    /// Launches `plan` on `stream` (nothing for `None`): every kernel is loaded first, so a load
    /// error launches nothing.
    ///
    /// # Safety
    /// The plan's addresses are valid for what it launches, on `stream`, a stream of this
    /// device's context.
    unsafe fn launch_backward(&self, stream: sys::CUstream, plan: Option<BackwardPlan>) -> Result<()> {
        let Some(plan) = plan else { return Ok(()) };
        let device = self.device();
        // On the stack: a launch allocates nothing (a kernel's first use loads its module).
        let mut functions: [Option<CudaFunction>; 3] = [None, None, None];
        for (function, launch) in functions.iter_mut().zip(plan.launches()) {
            *function = Some(device.kernel(launch.name, launch.shared_bytes as usize)?);
        }
        device.context().bind_to_thread().during("making the context current")?;
        for (function, launch) in functions.iter().zip(plan.launches()) {
            let Some(function) = function else { continue };
            let mut params = plan.params_for(launch);
            let mut arg = [&mut params as *mut BackwardParams as *mut c_void];
            // SAFETY: every backward kernel takes one `BackwardParams` by value, which `arg`
            // points to; the caller guarantees the addresses inside it. Shared memory is below
            // the device's limit (`kernel` checked it).
            unsafe {
                cudarc::driver::result::launch_kernel(
                    function.cu_function(),
                    (launch.blocks, 1, 1),
                    (launch.threads, 1, 1),
                    launch.shared_bytes,
                    stream,
                    &mut arg,
                )
            }
            .during(launch.kernel.during())?;
        }
        Ok(())
    }
}

/// A forward's operands and options, kept for its backward ([`FlashAttention::forward_saved`]):
/// `q`, `k`, `v` and the forward's `out` and `lse` as read-only views, borrowed for `'a`.
/// `Send + Sync`.
pub struct SavedForward<'a, T: Element> {
    attention: FlashAttention,
    q: DeviceTensor<'a, T>,
    k: DeviceTensor<'a, T>,
    v: DeviceTensor<'a, T>,
    out: DeviceTensor<'a, T>,
    lse: DeviceTensor<'a, f32, 3>,
    options: ForwardOptions,
}

impl<'a, T: Element> SavedForward<'a, T> {
    /// The queries, `(batch, seqlen_q, heads_q, headdim)`.
    pub fn q(&self) -> &DeviceTensor<'a, T> {
        &self.q
    }
    /// The keys, `(batch, seqlen_k, heads_kv, headdim)`.
    pub fn k(&self) -> &DeviceTensor<'a, T> {
        &self.k
    }
    /// The values, the shape of the keys.
    pub fn v(&self) -> &DeviceTensor<'a, T> {
        &self.v
    }
    /// The forward's output, `(batch, seqlen_q, heads_q, headdim)`.
    pub fn out(&self) -> &DeviceTensor<'a, T> {
        &self.out
    }
    /// The forward's natural log-sum-exp, `(batch, heads_q, seqlen_q)` f32.
    pub fn lse(&self) -> &DeviceTensor<'a, f32, 3> {
        &self.lse
    }
    /// The backward's options: the forward's scale and mask, default mode, no forced tile.
    pub fn backward_options(&self) -> BackwardOptions {
        BackwardOptions::from(&self.options)
    }

    /// [`FlashAttention::backward`] of this forward given `dout` (the shape of [`Self::out`]),
    /// writing `dq` (the shape of q), `dk` and `dv` (the shape of k), with the forward's scale
    /// and mask, deterministic or not. `workspace`: at least
    /// [`FlashAttention::backward_workspace_len`] f32 elements for this problem and mode.
    /// Errors: [`FlashAttention::backward`]'s.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        stream: &CudaStream,
        dout: &DeviceTensor<'_, T>,
        dq: &mut DeviceTensorMut<'_, T>,
        dk: &mut DeviceTensorMut<'_, T>,
        dv: &mut DeviceTensorMut<'_, T>,
        workspace: &mut DeviceTensorMut<'_, f32, 1>,
        deterministic: bool,
    ) -> Result<()> {
        let options = self.backward_options().deterministic(deterministic);
        self.attention.backward(
            stream, &self.q, &self.k, &self.v, &self.out, dout, &self.lse, dq, dk, dv, workspace, &options,
        )
    }
}
