//! Attention forward: `O = softmax(scale · Q Kᵀ + mask) V`, and the log-sum-exp of each row.

use super::dispatch;
use crate::error::{DriverContext, Error, Result};
use crate::layout::Layout4;
use crate::tensor::{DeviceTensor, DeviceTensorMut, RawTensor};
use crate::{Device, Element, KernelPath};
use cudarc::driver::{CudaStream, CudaViewMut, DevicePtr, DevicePtrMut, sys};
use rustflash_abi::{ForwardParams, ForwardTile};
use std::ffi::c_void;

/// Options of [`FlashAttention::forward`]. Build with [`ForwardOptions::default`] and the setters.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ForwardOptions {
    /// Multiplies `Q Kᵀ` before the softmax; default `1 / sqrt(headdim)`.
    pub softmax_scale: Option<f32>,
    /// Causal masking aligned to the bottom right: query `i` sees key `j` when
    /// `j <= i + seqlen_k − seqlen_q`. Rows that see no key give O = 0 and LSE = +inf.
    pub causal: bool,
    /// Force a tile shape (tests, tuning); default: the largest that fits the GPU.
    pub tile: Option<ForwardTile>,
}

impl ForwardOptions {
    pub fn causal(mut self, causal: bool) -> Self {
        self.causal = causal;
        self
    }
    pub fn softmax_scale(mut self, scale: f32) -> Self {
        self.softmax_scale = Some(scale);
        self
    }
    pub fn tile(mut self, tile: ForwardTile) -> Self {
        self.tile = Some(tile);
        self
    }
}

/// Raw operands of [`FlashAttention::forward_raw`]: device addresses with layouts, and the LSE
/// buffer (contiguous f32, `batch · heads_q · seqlen_q`).
#[derive(Clone, Copy, Debug)]
pub struct RawForward {
    pub q: RawTensor,
    pub k: RawTensor,
    pub v: RawTensor,
    pub out: RawTensor,
    pub lse: u64,
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
/// | `candle_flash_attn::flash_attn(&q, &k, &v, s, c)` | the same; `out` is allocated by the caller, `lse` is returned through `lse` |
///
/// Dropout is not supported (`dropout_p` must be 0); `softmax_scale = None` is FlashAttention's
/// default `1 / sqrt(headdim)`.
#[derive(Clone)]
pub struct FlashAttention {
    device: Device,
}

impl FlashAttention {
    pub fn new(device: Device) -> Self {
        FlashAttention { device }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Forward attention.
    ///
    /// - `q`: `(batch, seqlen_q, heads_q, headdim)`; `k`, `v`: `(batch, seqlen_k, heads_kv,
    ///   headdim)` with `heads_q` a multiple of `heads_kv` (GQA/MQA); `headdim` 1..=256; every
    ///   size at least 1; any strides with the last one 1.
    /// - `out`: like `q`; `lse`: at least `batch · heads_q · seqlen_q` f32, written as
    ///   `(batch, heads_q, seqlen_q)`, natural log.
    ///
    /// Errors, before anything is launched: [`Error::InvalidArgument`] naming the argument for
    /// any shape, stride, size or buffer-length mismatch; [`Error::Unsupported`] on a kernel path
    /// without forward kernels (Volta); [`Error::SharedMemoryLimit`] if no tile fits; driver
    /// errors from the launch.
    #[allow(clippy::too_many_arguments)]
    pub fn forward<T: Element + cudarc::driver::DeviceRepr>(
        &self,
        stream: &CudaStream,
        q: &DeviceTensor<'_, T>,
        k: &DeviceTensor<'_, T>,
        v: &DeviceTensor<'_, T>,
        out: &mut DeviceTensorMut<'_, T>,
        lse: &mut CudaViewMut<'_, f32>,
        options: &ForwardOptions,
    ) -> Result<()> {
        check_buffer("q", &q.layout, q.data.len())?;
        check_buffer("k", &k.layout, k.data.len())?;
        check_buffer("v", &v.layout, v.data.len())?;
        check_buffer("out", &out.layout, out.data.len())?;
        let [b, sq, hq, _] = q.layout.shape;
        if lse.len() < b * sq * hq {
            return Err(Error::invalid(
                "lse",
                format!("at least batch·heads_q·seqlen_q = {} f32", b * sq * hq),
                lse.len(),
            ));
        }
        let (qp, _gq) = q.data.device_ptr(stream);
        let (kp, _gk) = k.data.device_ptr(stream);
        let (vp, _gv) = v.data.device_ptr(stream);
        let (op, _go) = out.data.device_ptr_mut(stream);
        let (lp, _gl) = lse.device_ptr_mut(stream);
        let raw = RawForward {
            q: RawTensor { ptr: qp, layout: q.layout },
            k: RawTensor { ptr: kp, layout: k.layout },
            v: RawTensor { ptr: vp, layout: v.layout },
            out: RawTensor { ptr: op, layout: out.layout },
            lse: lp,
        };
        // SAFETY: the pointers come from live views whose lengths were checked above.
        unsafe { self.forward_raw::<T>(stream.cu_stream(), &raw, options) }
    }

    /// [`FlashAttention::forward`] on raw device addresses and a raw stream, for frameworks
    /// that own their memory. Checks everything but the buffers' lengths.
    ///
    /// # Safety
    /// Every address is a device allocation of this GPU's context holding the elements its
    /// layout names (and `lse` its `batch · heads_q · seqlen_q` f32); `stream` belongs to the
    /// context; the buffers stay alive until the launch completes.
    pub unsafe fn forward_raw<T: Element>(
        &self,
        stream: sys::CUstream,
        args: &RawForward,
        options: &ForwardOptions,
    ) -> Result<()> {
        let plan = self.plan::<T>(args, options)?;
        let f = self.device.kernel(plan.kernel, plan.shared_bytes)?;
        self.device.context().bind_to_thread().during("making the context current")?;
        let mut params = plan.params;
        let mut arg = [&mut params as *mut ForwardParams as *mut c_void];
        // SAFETY: the kernel takes one `ForwardParams` by value, which `arg` points to; the
        // caller guarantees the addresses inside it.
        unsafe {
            cudarc::driver::result::launch_kernel(
                f.cu_function(),
                (plan.blocks, 1, 1),
                (plan.threads, 1, 1),
                plan.shared_bytes as u32,
                stream,
                &mut arg,
            )
        }
        .during("launching the forward kernel")
    }

    fn plan<T: Element>(&self, a: &RawForward, options: &ForwardOptions) -> Result<Plan> {
        let [b, sq, hq, d] = a.q.layout.shape;
        let [bk, sk, hkv, dk] = a.k.layout.shape;
        if a.q.layout.shape.contains(&0) {
            return Err(Error::invalid(
                "q",
                "every size at least 1",
                format!("shape {:?}", a.q.layout.shape),
            ));
        }
        if d > 256 {
            return Err(Error::invalid("q", "head dim 1..=256", d));
        }
        if bk != b || dk != d || sk == 0 || hkv == 0 {
            return Err(Error::invalid(
                "k",
                format!("shape ({b}, seqlen_k >= 1, heads_kv >= 1, {d})"),
                format!("{:?}", a.k.layout.shape),
            ));
        }
        if hq % hkv != 0 {
            return Err(Error::invalid("k", format!("heads_kv dividing heads_q = {hq}"), hkv));
        }
        if a.v.layout.shape != a.k.layout.shape {
            return Err(Error::invalid(
                "v",
                format!("the shape of k, {:?}", a.k.layout.shape),
                format!("{:?}", a.v.layout.shape),
            ));
        }
        if a.out.layout.shape != a.q.layout.shape {
            return Err(Error::invalid(
                "out",
                format!("the shape of q, {:?}", a.q.layout.shape),
                format!("{:?}", a.out.layout.shape),
            ));
        }
        for (name, t) in [("q", &a.q), ("k", &a.k), ("v", &a.v), ("out", &a.out)] {
            if t.layout.strides[3] != 1 {
                return Err(Error::invalid(
                    name,
                    "a contiguous last dimension (stride 1)",
                    format!("strides {:?}", t.layout.strides),
                ));
            }
            if t.ptr % 2 != 0 {
                return Err(Error::invalid(
                    name,
                    "an address aligned to its 2-byte element",
                    format!("{:#x}", t.ptr),
                ));
            }
        }
        if [sq, sk, hq, hkv, b].iter().any(|&x| x > u32::MAX as usize) {
            return Err(Error::invalid("q", "sizes below 2^32", format!("{:?}", a.q.layout.shape)));
        }
        let path = self.device.path();
        if path == KernelPath::Volta {
            return Err(Error::Unsupported { operation: "forward attention", path });
        }
        let config = dispatch::select(T::DTYPE, d, options.tile, self.device.info().shared_memory_per_block)?;
        let num_m_blocks = config.m_blocks(sq);
        let blocks = num_m_blocks as u64 * hq as u64 * b as u64;
        if blocks > i32::MAX as u64 {
            return Err(Error::invalid(
                "q",
                format!("at most {} blocks of {} query rows", i32::MAX, config.block_m),
                blocks,
            ));
        }
        let scale = options.softmax_scale.unwrap_or(1.0 / (d as f32).sqrt());
        let strides = |l: &Layout4| [l.strides[0] as u64, l.strides[1] as u64, l.strides[2] as u64];
        let params = ForwardParams {
            q: a.q.ptr,
            k: a.k.ptr,
            v: a.v.ptr,
            o: a.out.ptr,
            lse: a.lse,
            q_strides: strides(&a.q.layout),
            k_strides: strides(&a.k.layout),
            v_strides: strides(&a.v.layout),
            o_strides: strides(&a.out.layout),
            lse_strides: [(hq * sq) as u64, sq as u64, 1],
            seqlen_q: sq as u32,
            seqlen_k: sk as u32,
            heads_q: hq as u32,
            group: (hq / hkv) as u32,
            head_dim: d as u32,
            num_m_blocks: num_m_blocks as u32,
            causal: options.causal as u32,
            load_bytes: load_width(&[&a.q, &a.k, &a.v]),
            store_bytes: load_width(&[&a.out]),
            scale_log2: scale * std::f32::consts::LOG2_E,
        };
        Ok(Plan {
            kernel: config.name,
            blocks: blocks as u32,
            threads: config.threads() as u32,
            shared_bytes: config.shared_bytes(),
            params,
        })
    }
}

struct Plan {
    kernel: &'static str,
    blocks: u32,
    threads: u32,
    shared_bytes: usize,
    params: ForwardParams,
}

/// The widest global load (16, 8, 4 or 2 bytes) that every input address and stride allows.
fn load_width(inputs: &[&RawTensor]) -> u32 {
    [16u64, 8, 4]
        .into_iter()
        .find(|&w| {
            inputs
                .iter()
                .all(|t| t.ptr % w == 0 && t.layout.strides[..3].iter().all(|&s| (2 * s as u64) % w == 0))
        })
        .unwrap_or(2) as u32
}

fn check_buffer(name: &'static str, layout: &Layout4, len: usize) -> Result<()> {
    let need = layout.required_len();
    if need > len {
        return Err(Error::invalid(
            name,
            format!(
                "a buffer of at least {need} elements for shape {:?} and strides {:?}",
                layout.shape, layout.strides
            ),
            len,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(ptr: u64, strides: [usize; 4]) -> RawTensor {
        RawTensor { ptr, layout: Layout4 { shape: [1, 4, 2, 8], strides } }
    }

    #[test]
    fn load_width_follows_alignment() {
        let c = [64, 16, 8, 1];
        assert_eq!(load_width(&[&raw(0x1000, c)]), 16);
        assert_eq!(load_width(&[&raw(0x1008, c)]), 8);
        // An odd head dim packed: seq stride 3·59, head stride 59 elements.
        assert_eq!(load_width(&[&raw(0x1000, [1000, 177, 59, 1])]), 2);
        assert_eq!(load_width(&[&raw(0x1000, [1000, 178, 60, 1])]), 4);
        assert_eq!(load_width(&[&raw(0x1000, [1000, 180, 60, 1])]), 8);
    }
}
