"""Hugging Face `transformers` integration: `register_transformers()` makes
`attn_implementation="rustflash"` available to every model that uses the attention interface:

    import rustflash
    rustflash.register_transformers()
    model = AutoModelForCausalLM.from_config(config, attn_implementation="rustflash")

Batches with padding (a 2-D attention mask with zeros) are refused: rustflash has no
variable-length attention yet.
"""


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    from .flash_attn_interface import flash_attn_func

    if attention_mask is not None:
        raise ValueError(
            "rustflash: attention_mask with padding is not supported (no variable-length attention yet); "
            "use unpadded batches"
        )
    # What transformers may ask for that rustflash cannot do yet: refused, never ignored.
    if kwargs.get("sliding_window") is not None:
        raise ValueError("rustflash: sliding_window is not supported")
    if kwargs.get("softcap") not in (None, 0, 0.0):
        raise ValueError("rustflash: softcap is not supported")
    if kwargs.get("s_aux") is not None:
        raise ValueError("rustflash: attention sinks (s_aux) are not supported")
    if kwargs.get("cu_seq_lens_q") is not None or kwargs.get("cu_seq_lens_k") is not None:
        raise ValueError("rustflash: packed sequences (cu_seq_lens) are not supported")
    causal = kwargs.get("is_causal")
    if causal is None:
        causal = getattr(module, "is_causal", True)
    # transformers hands (batch, heads, seqlen, headdim) views; FlashAttention's layout is
    # (batch, seqlen, heads, headdim): the transposed views are used in place.
    out = flash_attn_func(
        query.transpose(1, 2),
        key.transpose(1, 2),
        value.transpose(1, 2),
        dropout_p=dropout,
        softmax_scale=scaling,
        causal=bool(causal),
    )
    return out, None


def register_transformers(name: str = "rustflash") -> None:
    """Registers rustflash with transformers' `AttentionInterface` (and its mask interface, so
    that unpadded batches get no mask) under `name`. (transformers 5 treats names containing
    "flash" as its own FlashAttention in `from_pretrained(attn_implementation=...)`; pass another
    `name` there if it does.)"""
    from transformers import AttentionInterface

    AttentionInterface.register(name, _attention)
    try:
        from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask
    except ImportError:  # older transformers: the attention function refuses any mask
        return
    AttentionMaskInterface.register(name, flash_attention_mask)
