"""FlashAttention 2.8's Python interface (`flash_attn.flash_attn_interface`), on rustflash's
kernels: the same functions, argument names, defaults and return conventions, so code written
for `flash_attn` runs by changing the import.

Tensors: q `(batch, seqlen_q, heads_q, headdim)`, k and v `(batch, seqlen_k, heads_kv,
headdim)` with `heads_q` a multiple of `heads_kv` (GQA/MQA); float16, bfloat16 or float32 (an
addition to FlashAttention, which has no float32), on one CUDA device; head dims 1 to 256 (any,
not only multiples of 8). float32 follows PyTorch's own setting for float32 matrix products:
`torch.get_float32_matmul_precision()` "highest" (PyTorch's default) runs the accurate 3xTF32
mode, "high" or "medium" TF32 (about float16's precision; see docs/python.md). Causal masking is aligned to the
bottom right, as FlashAttention's. `softmax_lse` is `(batch, heads_q, seqlen_q)` float32.
Views whose last dimension is contiguous are used in place, whatever their other strides
(packed `qkv` slices included); others are copied to contiguous tensors first.

Not supported yet, each refused with a ValueError naming the argument (never ignored):
`dropout_p > 0`, a `window_size` other than `(-1, -1)`, `softcap != 0`, `alibi_slopes`,
`return_attn_probs=True` (the probabilities).
"""

from typing import Optional, Tuple

import torch

from . import _ops


def _unsupported(dropout_p, window_size, softcap, alibi_slopes, return_attn_probs) -> None:
    if dropout_p != 0.0:
        raise ValueError(f"rustflash: dropout_p={dropout_p} is not supported (only 0.0)")
    if tuple(window_size) != (-1, -1):
        raise ValueError(f"rustflash: window_size={tuple(window_size)} is not supported (only (-1, -1))")
    if softcap != 0.0:
        raise ValueError(f"rustflash: softcap={softcap} is not supported (only 0.0)")
    if alibi_slopes is not None:
        raise ValueError("rustflash: alibi_slopes is not supported (only None)")
    if return_attn_probs:
        raise ValueError("rustflash: return_attn_probs=True is not supported (the probabilities are never formed)")


def _attention(q, k, v, softmax_scale, causal, deterministic) -> Tuple[torch.Tensor, torch.Tensor]:
    """`(out, softmax_lse)` after checking the three operands."""
    _ops.check("q", q, None, None, 4)
    _ops.check("k", k, q.device, q.dtype, 4)
    _ops.check("v", v, q.device, q.dtype, 4)
    if softmax_scale is not None:
        softmax_scale = float(softmax_scale)
    tf32 = q.dtype == torch.float32 and _tf32_allowed()
    return _ops.fwd(q, k, v, softmax_scale, bool(causal), bool(deterministic), tf32)


@torch.compiler.assume_constant_result
def _tf32_allowed() -> bool:
    """Whether PyTorch's float32 matrix products may use TF32 (a constant to `torch.compile`,
    read when it traces)."""
    return torch.get_float32_matmul_precision() != "highest"


def flash_attn_func(
    q,
    k,
    v,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
):
    """Attention of q `(batch, seqlen_q, heads_q, headdim)` over k, v `(batch, seqlen_k,
    heads_kv, headdim)`; returns out `(batch, seqlen_q, heads_q, headdim)`. `softmax_scale`
    defaults to `1 / sqrt(headdim)`; `deterministic` makes the backward bit-identical run to
    run (see the module documentation for unsupported arguments)."""
    _unsupported(dropout_p, window_size, softcap, alibi_slopes, return_attn_probs)
    return _attention(q, k, v, softmax_scale, causal, deterministic)[0]


def flash_attn_qkvpacked_func(
    qkv,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
):
    """As `flash_attn_func` with q, k, v packed in qkv `(batch, seqlen, 3, heads, headdim)`
    (used in place: the three are strided views of it)."""
    _unsupported(dropout_p, window_size, softcap, alibi_slopes, return_attn_probs)
    _ops.check("qkv", qkv, None, None, 5)
    if qkv.shape[2] != 3:
        raise ValueError(f"rustflash: qkv has shape {tuple(qkv.shape)}; expected (batch, seqlen, 3, heads, headdim)")
    return _attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], softmax_scale, causal, deterministic)[0]


def flash_attn_kvpacked_func(
    q,
    kv,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
):
    """As `flash_attn_func` with k and v packed in kv `(batch, seqlen_k, 2, heads_kv,
    headdim)`."""
    _unsupported(dropout_p, window_size, softcap, alibi_slopes, return_attn_probs)
    _ops.check("kv", kv, None, None, 5)
    if kv.shape[2] != 2:
        raise ValueError(f"rustflash: kv has shape {tuple(kv.shape)}; expected (batch, seqlen_k, 2, heads_kv, headdim)")
    return _attention(q, kv[:, :, 0], kv[:, :, 1], softmax_scale, causal, deterministic)[0]


def flash_attn_with_lse(
    q, k, v, softmax_scale: Optional[float] = None, causal: bool = False, deterministic: bool = False
) -> Tuple[torch.Tensor, torch.Tensor]:
    """rustflash's own: `(out, softmax_lse)`, the forward's log-sum-exp `(batch, heads_q,
    seqlen_q)` float32 beside the output (differentiable in `out` only)."""
    return _attention(q, k, v, softmax_scale, causal, deterministic)
