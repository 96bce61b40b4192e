//! rustflash's own runs: forward, backward (default and deterministic mode; float32 also in its
//! TF32 mode) and the two together, on the benchmark's raw element buffers, and the small-case
//! check of its gradients against the float64 reference when no naive backward is there to
//! compare with.

use crate::cases::{Case, Dtype, ELEMENTS};
use crate::check::rel_diff;
use cudarc::driver::{CudaSlice, CudaStream};
use half::{bf16, f16};
use rustflash::layout::{AttentionShape, HostView, Layout4};
use rustflash::{BackwardOptions, DeviceTensor, DeviceTensorMut, Element, FlashAttention, ForwardOptions};
use rustflash_reference::Attention;
use std::sync::Arc;

/// One implementation's outputs: O and the LSE of its forward, dQ, dK, dV of its backward, and
/// its backward workspace (allocated once, outside the timed runs).
pub struct Buffers {
    /// Raw element bytes, as every tensor buffer here.
    pub out: CudaSlice<u8>,
    pub lse: CudaSlice<f32>,
    pub grads: Option<Grads>,
}

pub struct Grads {
    pub dq: CudaSlice<u8>,
    pub dk: CudaSlice<u8>,
    pub dv: CudaSlice<u8>,
    pub workspace: CudaSlice<f32>,
}

impl Buffers {
    /// O and LSE for `c`; with `backward`, the gradients and a workspace for those options.
    pub fn new(
        stream: &Arc<CudaStream>,
        c: &Case,
        backward: Option<&BackwardOptions>,
    ) -> Result<Buffers, String> {
        let err = |e: cudarc::driver::DriverError| e.to_string();
        let rows = c.batch * c.heads * c.seqlen;
        let n = ELEMENTS * c.dtype.bytes();
        let grads = match backward {
            Some(o) => {
                let len = FlashAttention::backward_workspace_len(c.batch, c.heads, c.seqlen, c.headdim, o)
                    .map_err(|e| e.to_string())?;
                Some(Grads {
                    dq: stream.alloc_zeros(n).map_err(err)?,
                    dk: stream.alloc_zeros(n).map_err(err)?,
                    dv: stream.alloc_zeros(n).map_err(err)?,
                    workspace: stream.alloc_zeros(len.max(1)).map_err(err)?,
                })
            }
            None => None,
        };
        Ok(Buffers {
            out: stream.alloc_zeros(n).map_err(err)?,
            lse: stream.alloc_zeros(rows).map_err(err)?,
            grads,
        })
    }

    /// Device bytes the pass holds: q, k, v, O, LSE; with a backward dO, dQ, dK, dV and the
    /// workspace.
    pub fn bytes(&self) -> u64 {
        // The four tensors of each group, each as large as O.
        let base = 4 * self.out.len() + self.lse.len() * 4;
        let grads = self.grads.as_ref().map_or(0, |g| 4 * self.out.len() + g.workspace.len() * 4);
        (base + grads) as u64
    }
}

/// One timed step of ours: a forward pass (with `fwd`), then a backward pass (with `bwd`), on
/// `data` (q, k, v, dO, `ELEMENTS` each) in the case's layout.
pub fn step(
    fa: &FlashAttention,
    stream: &Arc<CudaStream>,
    c: &Case,
    data: &CudaSlice<u8>,
    bufs: &mut Buffers,
    fwd: Option<&ForwardOptions>,
    bwd: Option<&BackwardOptions>,
) -> Result<(), String> {
    let layout = c.layout();
    match c.dtype {
        Dtype::F16 => step_as::<f16>(fa, stream, data, bufs, layout, fwd, bwd),
        Dtype::Bf16 => step_as::<bf16>(fa, stream, data, bufs, layout, fwd, bwd),
        Dtype::F32 => step_as::<f32>(fa, stream, data, bufs, layout, fwd, bwd),
    }
}

fn step_as<T: Element>(
    fa: &FlashAttention,
    stream: &Arc<CudaStream>,
    data: &CudaSlice<u8>,
    bufs: &mut Buffers,
    layout: Layout4,
    fwd: Option<&ForwardOptions>,
    bwd: Option<&BackwardOptions>,
) -> Result<(), String> {
    let n = ELEMENTS * size_of::<T>();
    // SAFETY (every transmute below): the bytes hold `ELEMENTS` values of T, every bit pattern
    // is a value of T (f16, bf16, f32), and each view starts at a multiple of `n` bytes from an
    // allocation's start, so it is aligned for T.
    let view = |i: usize| unsafe { data.slice(i * n..(i + 1) * n).transmute::<T>(ELEMENTS) }.ok_or("view");
    let t = |data| DeviceTensor { data, layout };
    let (q, k, v) = (t(view(0)?), t(view(1)?), t(view(2)?));
    let [b, s, h, _] = layout.shape;
    if let Some(options) = fwd {
        let o = unsafe { bufs.out.transmute_mut::<T>(ELEMENTS) }.ok_or("view")?;
        let mut o = DeviceTensorMut { data: o, layout };
        let mut lse = DeviceTensorMut::contiguous(bufs.lse.slice_mut(0..b * h * s), [b, h, s]);
        fa.forward(stream, &q, &k, &v, &mut o, &mut lse, options).map_err(|e| e.to_string())?;
    }
    if let Some(options) = bwd {
        let g = bufs.grads.as_mut().ok_or("no gradient buffers")?;
        let out = t(unsafe { bufs.out.transmute::<T>(ELEMENTS) }.ok_or("view")?);
        let lse = DeviceTensor::contiguous(bufs.lse.slice(0..b * h * s), [b, h, s]);
        let dout = t(view(3)?);
        let (mut dq, mut dk, mut dv) =
            (view_mut(&mut g.dq, layout)?, view_mut(&mut g.dk, layout)?, view_mut(&mut g.dv, layout)?);
        let len = g.workspace.len();
        let mut ws = DeviceTensorMut::contiguous(g.workspace.slice_mut(0..len), [len]);
        fa.backward(stream, &q, &k, &v, &out, &dout, &lse, &mut dq, &mut dk, &mut dv, &mut ws, options)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `x`'s `ELEMENTS` values as a tensor of `T`.
fn view_mut<T: Element>(x: &mut CudaSlice<u8>, layout: Layout4) -> Result<DeviceTensorMut<'_, T>, String> {
    // SAFETY: as in `step_as`.
    Ok(DeviceTensorMut { data: unsafe { x.transmute_mut::<T>(ELEMENTS) }.ok_or("view")?, layout })
}

/// What ours is checked against by [`small_case_error`] alone.
pub const SMALL_CASE: &str = "float64 reference (batch 1, seqlen 256, 2 heads)";

/// What ours is checked against without the naive backward: [`small_case_error`], and the
/// other mode's gradients on the case itself.
pub const SMALL_CASE_AND_MODES: &str =
    "float64 reference (batch 1, seqlen 256, 2 heads) and the other mode here";

/// Ours (in the mode of `options`) on a small problem of the case's dtype, head dim and mask
/// (batch 1, seqlen 256, 2 heads, contiguous) against the float64 reference's gradients: the
/// largest relative error of dQ, dK and dV. The check when the naive backward cannot run.
pub fn small_case_error(
    fa: &FlashAttention,
    stream: &Arc<CudaStream>,
    c: &Case,
    options: &BackwardOptions,
) -> Result<f64, String> {
    match c.dtype {
        Dtype::F16 => small_case_as::<f16>(fa, stream, c, options),
        Dtype::Bf16 => small_case_as::<bf16>(fa, stream, c, options),
        Dtype::F32 => small_case_as::<f32>(fa, stream, c, options),
    }
}

fn small_case_as<T: Element>(
    fa: &FlashAttention,
    stream: &Arc<CudaStream>,
    c: &Case,
    options: &BackwardOptions,
) -> Result<f64, String> {
    let err = |e: cudarc::driver::DriverError| e.to_string();
    let shape = [1, 256, 2, c.headdim];
    let n: usize = shape.iter().product();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let host: Vec<T> = (0..4 * n)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            T::from_f32(((rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.4)
        })
        .collect();
    let dev = stream.clone_htod(&host).map_err(err)?;
    let mut out = stream.alloc_zeros::<T>(n).map_err(err)?;
    let mut lse = stream.alloc_zeros::<f32>(2 * 256).map_err(err)?;
    let mut grads = [
        stream.alloc_zeros::<T>(n).map_err(err)?,
        stream.alloc_zeros::<T>(n).map_err(err)?,
        stream.alloc_zeros::<T>(n).map_err(err)?,
    ];
    let len =
        FlashAttention::backward_workspace_len(1, 2, 256, c.headdim, options).map_err(|e| e.to_string())?;
    let mut ws = stream.alloc_zeros::<f32>(len.max(1)).map_err(err)?;
    let part = |i: usize| DeviceTensor::contiguous(dev.slice(i * n..(i + 1) * n), shape);
    let (q, k, v, dout) = (part(0), part(1), part(2), part(3));
    let fwd = ForwardOptions::default().causal(c.causal).f32_precision(options.f32_precision);
    {
        let mut o = DeviceTensorMut::contiguous(out.slice_mut(0..n), shape);
        let mut l = DeviceTensorMut::contiguous(lse.slice_mut(0..512), [1, 2, 256]);
        fa.forward(stream, &q, &k, &v, &mut o, &mut l, &fwd).map_err(|e| e.to_string())?;
    }
    {
        let o = DeviceTensor::contiguous(out.slice(0..n), shape);
        let l = DeviceTensor::contiguous(lse.slice(0..512), [1, 2, 256]);
        let [gq, gk, gv] = &mut grads;
        let mut dq = DeviceTensorMut::contiguous(gq.slice_mut(0..n), shape);
        let mut dk = DeviceTensorMut::contiguous(gk.slice_mut(0..n), shape);
        let mut dv = DeviceTensorMut::contiguous(gv.slice_mut(0..n), shape);
        let mut w = DeviceTensorMut::contiguous(ws.slice_mut(0..len.max(1)), [len.max(1)]);
        fa.backward(stream, &q, &k, &v, &o, &dout, &l, &mut dq, &mut dk, &mut dv, &mut w, options)
            .map_err(|e| e.to_string())?;
    }
    let got: Vec<Vec<T>> =
        grads.iter().map(|g| stream.clone_dtoh(g)).collect::<Result<_, _>>().map_err(err)?;
    let view = |i: usize| HostView { data: &host[i * n..(i + 1) * n], layout: Layout4::contiguous(shape) };
    let att = Attention {
        shape: AttentionShape {
            batch: 1,
            seqlen_q: 256,
            seqlen_k: 256,
            heads_q: 2,
            heads_kv: 2,
            headdim: c.headdim,
        },
        softmax_scale: 1.0 / (c.headdim as f64).sqrt(),
        causal: c.causal,
    };
    let r = att.backward(&view(0), &view(1), &view(2), &view(3)).map_err(|e| e.to_string())?;
    let e = |got: &[T], want: &[f64]| rel_diff(got.iter().map(|x| x.to_f64()), want.iter().copied());
    Ok(crate::check::worst([e(&got[0], &r.dq), e(&got[1], &r.dk), e(&got[2], &r.dv)]))
}
