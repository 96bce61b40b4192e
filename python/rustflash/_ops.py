"""The two custom operators, `rustflash::fwd` and `rustflash::bwd`, with fake (meta)
implementations for `torch.compile` and the autograd formula tying them together.

Outputs and the backward's workspace come from PyTorch's caching allocator; launches go on
`torch.cuda.current_stream()` of the inputs' device, with no host synchronisation, so calls can
be captured in CUDA graphs (warm up once before capturing: the first call on a GPU loads its
kernels).
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _native

_DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}


def check(name: str, t, device: Optional[torch.device], dtype: Optional[torch.dtype], ndim: int) -> None:
    """Raises a ValueError naming `name` unless `t` is a CUDA tensor of rank `ndim`, on `device`
    and of `dtype` (when given), of float16, bfloat16 or float32."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"rustflash: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cuda":
        raise ValueError(f"rustflash: {name} is on {t.device}; expected a CUDA tensor")
    if device is not None and t.device != device:
        raise ValueError(f"rustflash: {name} is on {t.device}, the other inputs on {device}")
    if t.dtype not in _DTYPES:
        raise ValueError(
            f"rustflash: {name} has dtype {t.dtype}; expected torch.float16, torch.bfloat16 or torch.float32"
        )
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"rustflash: {name} has dtype {t.dtype}, the other inputs {dtype}")
    if t.dim() != ndim:
        raise ValueError(f"rustflash: {name} has {t.dim()} dimensions {tuple(t.shape)}; expected {ndim}")


def _last_dim_contiguous(t: Tensor) -> Tensor:
    # Views whose last dimension is contiguous are used in place (any other strides); others
    # are copied.
    return t if t.shape[-1] <= 1 or t.stride(-1) == 1 else t.contiguous()


def _desc(t: Tensor):
    return (t.data_ptr(), tuple(t.shape), tuple(t.stride()))


def _stream(t: Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream


@torch.library.custom_op("rustflash::fwd", mutates_args=(), device_types="cuda")
def fwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    softmax_scale: Optional[float],
    causal: bool,
    deterministic: bool,
    tf32: bool,
) -> Tuple[Tensor, Tensor]:
    """Attention forward: `(out, softmax_lse)`; `deterministic` is kept for the backward;
    `tf32`: float32 inputs in TF32 mode instead of the accurate 3xTF32 one."""
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    b, sq, hq, d = q.shape
    out = torch.empty((b, sq, hq, d), dtype=q.dtype, device=q.device)
    lse = torch.empty((b, hq, sq), dtype=torch.float32, device=q.device)
    with torch.cuda.device(q.device):
        _native.forward(
            q.device.index, _stream(q), _DTYPES[q.dtype],
            _desc(q), _desc(k), _desc(v), _desc(out), _desc(lse), softmax_scale, causal, tf32,
        )
    return out, lse


@fwd.register_fake
def _(q, k, v, softmax_scale, causal, deterministic, tf32):
    b, sq, hq, d = q.shape
    return q.new_empty((b, sq, hq, d)), q.new_empty((b, hq, sq), dtype=torch.float32)


@torch.library.custom_op("rustflash::bwd", mutates_args=(), device_types="cuda")
def bwd(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    softmax_scale: Optional[float],
    causal: bool,
    deterministic: bool,
    tf32: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Attention backward: `(dq, dk, dv)`, each shaped like its input."""
    dout, q, k, v, out = (_last_dim_contiguous(t) for t in (dout, q, k, v, out))
    b, sq, hq, d = q.shape
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    n = _native.backward_workspace_len(b, hq, sq, d, deterministic)
    workspace = torch.empty((n,), dtype=torch.float32, device=q.device)
    with torch.cuda.device(q.device):
        _native.backward(
            q.device.index, _stream(q), _DTYPES[q.dtype],
            _desc(q), _desc(k), _desc(v), _desc(out), _desc(lse), _desc(dout),
            _desc(dq), _desc(dk), _desc(dv), _desc(workspace),
            softmax_scale, causal, deterministic, tf32,
        )
    return dq, dk, dv


@bwd.register_fake
def _(dout, q, k, v, out, lse, softmax_scale, causal, deterministic, tf32):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, softmax_scale, causal, deterministic, tf32 = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.softmax_scale, ctx.causal, ctx.deterministic, ctx.tf32 = softmax_scale, causal, deterministic, tf32


def _backward(ctx, dout, dlse):
    # The log-sum-exp is an output for inspection only, as in FlashAttention: its gradient is
    # not propagated.
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = bwd(dout, q, k, v, out, lse, ctx.softmax_scale, ctx.causal, ctx.deterministic, ctx.tf32)
    return dq, dk, dv, None, None, None, None


fwd.register_autograd(_backward, setup_context=_setup_context)
