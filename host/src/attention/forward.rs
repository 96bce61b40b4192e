//! Attention forward: `O = softmax(scale · Q Kᵀ + mask) V`, and the log-sum-exp of each row.

use super::validate::{ForwardLens, ForwardPlan};
use crate::error::{DriverContext, Error, Result};
use crate::tensor::{DeviceTensor, DeviceTensorMut, RawTensor};
use crate::{Device, Element, F32Precision};
use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut, DeviceSlice, sys};
use rustflash_abi::{ForwardParams, ForwardTile};
use std::ffi::c_void;
use std::sync::Arc;

/// Options of [`FlashAttention::forward`]. Build with [`ForwardOptions::default`] and the setters.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ForwardOptions {
    /// Multiplies `Q Kᵀ` before the softmax; default `1 / sqrt(headdim)`. Must be finite with
    /// `scale · log2(e)` finite (|scale| < 2.36e38); 0 and negative values are allowed. A row
    /// whose scaled scores overflow f32 (huge scales with large inputs) comes out NaN, as a
    /// softmax over an infinite score does.
    pub softmax_scale: Option<f32>,
    /// Causal masking aligned to the bottom right: query `i` sees key `j` when
    /// `j <= i + seqlen_k − seqlen_q`. Rows that see no key give O = 0 and LSE = +inf.
    pub causal: bool,
    /// Force a tile shape (tests, tuning); default: the largest that fits the GPU.
    pub tile: Option<ForwardTile>,
    /// How f32 inputs are multiplied (ignored for f16 and bf16); default
    /// [`F32Precision::Accurate`].
    pub f32_precision: F32Precision,
}

impl ForwardOptions {
    /// Turns causal masking, aligned to the bottom right, on or off.
    pub fn causal(mut self, causal: bool) -> Self {
        self.causal = causal;
        self
    }
    /// Sets the factor on `Q Kᵀ`, in place of the default `1 / sqrt(headdim)`.
    pub fn softmax_scale(mut self, scale: f32) -> Self {
        self.softmax_scale = Some(scale);
        self
    }
    /// Forces the tile class, in place of the first in [`ForwardTile::ALL`] that fits the GPU.
    pub fn tile(mut self, tile: ForwardTile) -> Self {
        self.tile = Some(tile);
        self
    }
    /// Sets how f32 inputs are multiplied.
    pub fn f32_precision(mut self, precision: F32Precision) -> Self {
        self.f32_precision = precision;
        self
    }
}

/// Raw operands of [`FlashAttention::forward_raw`]: device addresses with layouts. `q`, `k`,
/// `v`, `out` are `(batch, seqlen, heads, headdim)` tensors of the call's element type; `lse` is
/// the `(batch, heads_q, seqlen_q)` f32 log-sum-exp, with any strides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawForward {
    /// Queries, `(batch, seqlen_q, heads_q, headdim)`; read.
    pub q: RawTensor,
    /// Keys, `(batch, seqlen_k, heads_kv, headdim)`; read.
    pub k: RawTensor,
    /// Values, the shape of `k`; read.
    pub v: RawTensor,
    /// The attention output, the shape of `q`; written.
    pub out: RawTensor,
    /// The natural log-sum-exp of each row of scores, `(batch, heads_q, seqlen_q)` f32; written.
    pub lse: RawTensor<3>,
}

/// Exact attention on one GPU. Cheap to clone, `Send + Sync`; launches go on the caller's
/// stream, with no host synchronisation and no allocation, so they can be captured in CUDA graphs.
///
/// Mapping from FlashAttention and candle (`q`, `k`, `v` of shape `(batch, seqlen, heads, headdim)`
/// in both):
///
/// | caller | rustflash |
/// | --- | --- |
/// | `flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=s, causal=c)` | `fa.forward(stream, &q, &k, &v, &mut out, &mut lse, &ForwardOptions::default().softmax_scale(s).causal(c))` |
/// | `candle_flash_attn::flash_attn(&q, &k, &v, s, c)` | the same; `out` is allocated by the caller, the log-sum-exp (FlashAttention's `softmax_lse`, `(batch, heads_q, seqlen_q)` f32) is written to `lse` |
///
/// Dropout is not supported (`dropout_p` must be 0); `softmax_scale = None` is FlashAttention's
/// default `1 / sqrt(headdim)`.
#[derive(Clone)]
pub struct FlashAttention {
    device: Device,
}

impl FlashAttention {
    /// Attention on `device`, with the kernels of its path.
    pub fn new(device: Device) -> Self {
        FlashAttention { device }
    }

    /// The device this runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Forward attention: `out = softmax(scale · q kᵀ + mask) v` and the natural log-sum-exp of
    /// each row of scores into `lse`.
    ///
    /// - `q`: `(batch, seqlen_q, heads_q, headdim)`; `k`, `v`: `(batch, seqlen_k, heads_kv,
    ///   headdim)` with `heads_q` a multiple of `heads_kv` (GQA/MQA); `headdim` 1..=256; strides
    ///   anything with the last one 1 (any when `headdim` is 1); inputs may overlap each other.
    /// - `out`: `(batch, seqlen_q, heads_q, headdim)` like `q`; `lse`: `(batch, heads_q, seqlen_q)`
    ///   f32 with any strides. Neither may overlap itself, the other or an input.
    /// - Every view must lie inside its `data` (which may be longer).
    /// - Empty problems are valid: batch, seqlen_q or heads_q 0 launches nothing; seqlen_k 0
    ///   writes O = 0 and LSE = +inf (as rows that causal masking leaves without keys).
    ///
    /// The checks are [`ForwardPlan::new`]'s, with the buffers' lengths; `stream` must belong to
    /// this device's context.
    ///
    /// Errors, before anything is launched: [`Error::InvalidArgument`] naming the argument at
    /// fault (`q`, `k`, `v`, `out`, `lse`, `stream`, `options.softmax_scale`, `options.tile`) for
    /// any shape, stride, size, offset, alignment, overlap or buffer-length violation, and `q`
    /// for bfloat16 on the Volta path (it has no bfloat16 kernels); [`Error::SharedMemoryLimit`] if
    /// no tile (or not the forced one) fits; driver errors from loading the kernel or the launch.
    #[allow(clippy::too_many_arguments)]
    pub fn forward<T: Element>(
        &self,
        stream: &CudaStream,
        q: &DeviceTensor<'_, T>,
        k: &DeviceTensor<'_, T>,
        v: &DeviceTensor<'_, T>,
        out: &mut DeviceTensorMut<'_, T>,
        lse: &mut DeviceTensorMut<'_, f32, 3>,
        options: &ForwardOptions,
    ) -> Result<()> {
        self.check_contexts(
            stream,
            &[
                ("q", q.data.stream()),
                ("k", k.data.stream()),
                ("v", v.data.stream()),
                ("out", out.data.stream()),
                ("lse", lse.data.stream()),
            ],
        )?;
        let lens = ForwardLens {
            q: q.data.len(),
            k: k.data.len(),
            v: v.data.len(),
            out: out.data.len(),
            lse: lse.data.len(),
        };
        let (qp, _gq) = q.data.device_ptr(stream);
        let (kp, _gk) = k.data.device_ptr(stream);
        let (vp, _gv) = v.data.device_ptr(stream);
        let (op, _go) = out.data.device_ptr_mut(stream);
        let (lp, _gl) = lse.data.device_ptr_mut(stream);
        let args = RawForward {
            q: RawTensor { ptr: qp, layout: q.layout },
            k: RawTensor { ptr: kp, layout: k.layout },
            v: RawTensor { ptr: vp, layout: v.layout },
            out: RawTensor { ptr: op, layout: out.layout },
            lse: RawTensor { ptr: lp, layout: lse.layout },
        };
        let plan = self.plan::<T>(&args, Some(&lens), options)?;
        // SAFETY: the addresses come from live views of this context, each view checked to lie
        // inside its buffer; the stream belongs to the context; the guards above keep the
        // buffers' events ordered around the launch.
        unsafe { self.launch(stream.cu_stream(), plan) }
    }

    /// [`FlashAttention::forward`] on raw device addresses and a raw stream, for frameworks
    /// that own their memory. Checks everything [`FlashAttention::forward`] does (shapes, sizes,
    /// offsets, alignment of every address including `lse`'s, overlaps of the outputs) except
    /// what it cannot see: the buffers' lengths and the stream's context.
    ///
    /// # Safety
    /// Every non-empty view is inside a device allocation of this GPU's context (from its address
    /// to its highest element, as its layout names them); `stream` is a stream of that context
    /// (or null, the legacy default stream); the memory stays allocated, and is not written by
    /// anything else, until the launch completes.
    pub unsafe fn forward_raw<T: Element>(
        &self,
        stream: sys::CUstream,
        args: &RawForward,
        options: &ForwardOptions,
    ) -> Result<()> {
        let plan = self.plan::<T>(args, None, options)?;
        // SAFETY: the caller guarantees the addresses, the memory and the stream.
        unsafe { self.launch(stream, plan) }
    }

    /// `stream`, and the stream of each buffer (named by its argument), belong to this device's
    /// context: an address of another GPU's allocation would be meaningless (or another buffer)
    /// here.
    pub(super) fn check_contexts(
        &self,
        stream: &CudaStream,
        buffers: &[(&'static str, &Arc<CudaStream>)],
    ) -> Result<()> {
        let (ours, theirs) = (self.device.context(), stream.context());
        if **ours != **theirs {
            return Err(Error::invalid(
                "stream",
                format!("a stream of this device's context (device {})", ours.ordinal()),
                format!("a stream of device {}'s context {:?}", theirs.ordinal(), theirs.cu_ctx()),
            ));
        }
        for &(name, owner) in buffers {
            let theirs = owner.context();
            if **ours != **theirs {
                return Err(Error::invalid(
                    name,
                    format!("a buffer of this device's context (device {})", ours.ordinal()),
                    format!("a buffer of device {}'s context {:?}", theirs.ordinal(), theirs.cu_ctx()),
                ));
            }
        }
        Ok(())
    }

    /// The checks of [`ForwardPlan::new`] on this device; `None` when there is nothing to launch.
    fn plan<T: Element>(
        &self,
        args: &RawForward,
        lens: Option<&ForwardLens>,
        options: &ForwardOptions,
    ) -> Result<Option<ForwardPlan>> {
        ForwardPlan::new::<T>(
            args,
            lens,
            options,
            self.device.path(),
            self.device.info().shared_memory_per_block,
        )
    }

    /// Launches `plan` on `stream` (nothing for `None`).
    ///
    /// # Safety
    /// The plan's addresses are valid for what it launches, on `stream`, a stream of this
    /// device's context.
    unsafe fn launch(&self, stream: sys::CUstream, plan: Option<ForwardPlan>) -> Result<()> {
        let Some(plan) = plan else { return Ok(()) };
        let c = plan.config;
        let f = self.device.kernel(c.name, c.shared_bytes())?;
        self.device.context().bind_to_thread().during("making the context current")?;
        let mut params = plan.params;
        let mut arg = [&mut params as *mut ForwardParams as *mut c_void];
        // SAFETY: the kernel takes one `ForwardParams` by value, which `arg` points to; the
        // caller guarantees the addresses inside it. Shared memory is below the device's limit
        // (`kernel` checked it), so the cast is exact.
        unsafe {
            cudarc::driver::result::launch_kernel(
                f.cu_function(),
                (plan.blocks, 1, 1),
                (c.threads() as u32, 1, 1),
                c.shared_bytes() as u32,
                stream,
                &mut arg,
            )
        }
        .during("launching the forward kernel")
    }
}
