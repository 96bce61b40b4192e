//! `rustflash._native`: the Python extension. It takes raw device addresses, shapes, strides, a
//! dtype name and the raw CUDA stream, so it needs no PyTorch at build time; the Python layer
//! (`rustflash.flash_attn_interface`) reads them off torch tensors and owns every allocation.
//!
//! Every call goes through the library's raw layer (`forward_raw`, `backward_raw`), which checks
//! shapes, strides, sizes, alignment and overlaps before any launch; a rustflash error becomes a
//! Python exception with the error's text (`ValueError` for an invalid argument, `RuntimeError`
//! otherwise). Launches go on the caller's stream, with no synchronisation.

use half::{bf16, f16};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use rustflash::cudarc::driver::sys::CUstream;
use rustflash::{
    BackwardOptions, Device, Error, F32Precision, FlashAttention, ForwardOptions, RawBackward, RawForward,
    RawTensor,
};
use std::sync::Mutex;

/// A tensor as the Python layer passes it: `(data_ptr, shape, strides)`, strides in elements.
type Tensor<const N: usize> = (u64, [usize; N], [usize; N]);

fn raw<const N: usize>((ptr, shape, strides): Tensor<N>) -> RawTensor<N> {
    RawTensor::new(ptr, shape, strides)
}

fn to_py(e: Error) -> PyErr {
    match e {
        Error::InvalidArgument { .. } => PyValueError::new_err(e.to_string()),
        _ => PyRuntimeError::new_err(e.to_string()),
    }
}

/// One `FlashAttention` per GPU ordinal, opened on first use (the primary context, which
/// PyTorch shares) and kept for the process.
static HANDLES: Mutex<Vec<Option<FlashAttention>>> = Mutex::new(Vec::new());

fn attention(ordinal: usize) -> PyResult<FlashAttention> {
    let mut handles =
        HANDLES.lock().map_err(|_| PyRuntimeError::new_err("rustflash: a handle lock was poisoned"))?;
    if handles.len() <= ordinal {
        handles.resize(ordinal + 1, None);
    }
    if let Some(fa) = &handles[ordinal] {
        return Ok(fa.clone());
    }
    let fa = FlashAttention::new(Device::new(ordinal).map_err(to_py)?);
    handles[ordinal] = Some(fa.clone());
    Ok(fa)
}

/// The element type named by `dtype` (torch's names).
fn parse_dtype(dtype: &str) -> PyResult<Dtype> {
    match dtype {
        "float16" => Ok(Dtype::F16),
        "bfloat16" => Ok(Dtype::Bf16),
        "float32" => Ok(Dtype::F32),
        other => Err(PyValueError::new_err(format!(
            "rustflash: unsupported dtype {other}: expected torch.float16, torch.bfloat16 or torch.float32"
        ))),
    }
}

#[derive(Clone, Copy)]
enum Dtype {
    F16,
    Bf16,
    F32,
}

/// `forward_raw` or `backward_raw` for one element type.
type RawCall<A, O> = unsafe fn(&FlashAttention, CUstream, &A, &O) -> rustflash::Result<()>;

/// The options of a call; `tf32` picks float32's TF32 mode over the accurate one.
fn forward_options(softmax_scale: Option<f32>, causal: bool, tf32: bool) -> ForwardOptions {
    let precision = if tf32 { F32Precision::Tf32 } else { F32Precision::Accurate };
    let o = ForwardOptions::default().causal(causal).f32_precision(precision);
    match softmax_scale {
        Some(s) => o.softmax_scale(s),
        None => o,
    }
}

/// `out = softmax(scale · q kᵀ + mask) v` and the log-sum-exp, on `stream` of GPU `device`.
/// `q`, `k`, `v`, `out`: `(batch, seqlen, heads, headdim)`; `lse`: `(batch, heads_q,
/// seqlen_q)` f32. `tf32`: float32 inputs in TF32 mode, not the accurate (3xTF32) one.
///
/// The caller (the Python layer) guarantees that every address is a live CUDA allocation of
/// that GPU holding the view, and that `stream` is a stream of that GPU (torch's current one).
#[pyfunction]
#[pyo3(signature = (device, stream, dtype, q, k, v, out, lse, softmax_scale, causal, tf32))]
#[allow(clippy::too_many_arguments)]
fn forward(
    py: Python<'_>,
    device: usize,
    stream: usize,
    dtype: &str,
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    out: Tensor<4>,
    lse: Tensor<3>,
    softmax_scale: Option<f32>,
    causal: bool,
    tf32: bool,
) -> PyResult<()> {
    let dt = parse_dtype(dtype)?;
    let fa = attention(device)?;
    let args = RawForward { q: raw(q), k: raw(k), v: raw(v), out: raw(out), lse: raw(lse) };
    let options = forward_options(softmax_scale, causal, tf32);
    let launch: RawCall<RawForward, ForwardOptions> = match dt {
        Dtype::F16 => FlashAttention::forward_raw::<f16>,
        Dtype::Bf16 => FlashAttention::forward_raw::<bf16>,
        Dtype::F32 => FlashAttention::forward_raw::<f32>,
    };
    // SAFETY: the Python layer passes live tensors of this GPU and one of its streams (see the
    // function's documentation); everything else is checked by `forward_raw`.
    py.detach(|| unsafe { launch(&fa, stream as CUstream, &args, &options) }).map_err(to_py)
}

/// The gradients `dq`, `dk`, `dv` of the forward's attention given `dout`, with the forward's
/// `out` and `lse`; `workspace`: a 1-D f32 tensor of at least `backward_workspace_len(..)`
/// elements, 16-byte aligned. As for [`forward`], the caller guarantees the addresses and the
/// stream.
#[pyfunction]
#[pyo3(signature = (device, stream, dtype, q, k, v, out, lse, dout, dq, dk, dv, workspace, softmax_scale, causal, deterministic, tf32))]
#[allow(clippy::too_many_arguments)]
fn backward(
    py: Python<'_>,
    device: usize,
    stream: usize,
    dtype: &str,
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    out: Tensor<4>,
    lse: Tensor<3>,
    dout: Tensor<4>,
    dq: Tensor<4>,
    dk: Tensor<4>,
    dv: Tensor<4>,
    workspace: Tensor<1>,
    softmax_scale: Option<f32>,
    causal: bool,
    deterministic: bool,
    tf32: bool,
) -> PyResult<()> {
    let dt = parse_dtype(dtype)?;
    let fa = attention(device)?;
    let args = RawBackward {
        q: raw(q),
        k: raw(k),
        v: raw(v),
        out: raw(out),
        lse: raw(lse),
        dout: raw(dout),
        dq: raw(dq),
        dk: raw(dk),
        dv: raw(dv),
        workspace: raw(workspace),
    };
    let options =
        BackwardOptions::from(&forward_options(softmax_scale, causal, tf32)).deterministic(deterministic);
    let launch: RawCall<RawBackward, BackwardOptions> = match dt {
        Dtype::F16 => FlashAttention::backward_raw::<f16>,
        Dtype::Bf16 => FlashAttention::backward_raw::<bf16>,
        Dtype::F32 => FlashAttention::backward_raw::<f32>,
    };
    // SAFETY: as in `forward`; everything else is checked by `backward_raw`.
    py.detach(|| unsafe { launch(&fa, stream as CUstream, &args, &options) }).map_err(to_py)
}

/// f32 elements of the workspace a backward of this problem needs (0 for empty problems).
#[pyfunction]
fn backward_workspace_len(
    batch: usize,
    heads_q: usize,
    seqlen_q: usize,
    head_dim: usize,
    deterministic: bool,
) -> PyResult<usize> {
    let options = BackwardOptions::default().deterministic(deterministic);
    FlashAttention::backward_workspace_len(batch, heads_q, seqlen_q, head_dim, &options).map_err(to_py)
}

/// Whether a CUDA driver can be loaded (no GPU is needed for the answer to be `True`).
#[pyfunction]
fn driver_available() -> bool {
    rustflash::driver_available().is_ok()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(forward, m)?)?;
    m.add_function(wrap_pyfunction!(backward, m)?)?;
    m.add_function(wrap_pyfunction!(backward_workspace_len, m)?)?;
    m.add_function(wrap_pyfunction!(driver_available, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
