"""rustflash: exact attention (FlashAttention) for PyTorch, forward and backward, with GPU
kernels written in Rust (no CUDA toolkit at build time).

    from rustflash import flash_attn_func
    out = flash_attn_func(q, k, v, causal=True)   # q, k, v: (batch, seqlen, heads, headdim)

`rustflash.flash_attn_interface` has FlashAttention 2.8's functions and signatures;
`rustflash.register_transformers()` adds `attn_implementation="rustflash"` to Hugging Face
transformers. The package imports without PyTorch (the extension takes raw pointers); the
functions that take tensors need it.
"""

from . import _native

__version__ = _native.__version__

_INTERFACE = ("flash_attn_func", "flash_attn_qkvpacked_func", "flash_attn_kvpacked_func")

__all__ = [*_INTERFACE, "register_transformers", "backward_workspace_len", "__version__"]


def backward_workspace_len(batch, heads_q, seqlen_q, head_dim, deterministic=False):
    """f32 elements of the workspace one backward call needs (the interface allocates it)."""
    return _native.backward_workspace_len(batch, heads_q, seqlen_q, head_dim, deterministic)


def __getattr__(name):
    # The tensor functions import torch on first use, so `import rustflash` works without it.
    if name in _INTERFACE:
        from . import flash_attn_interface

        return getattr(flash_attn_interface, name)
    if name == "register_transformers":
        from .transformers import register_transformers

        return register_transformers
    raise AttributeError(f"module 'rustflash' has no attribute {name!r}")
