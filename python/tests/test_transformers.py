"""A small randomly initialised Llama from `transformers` with `attn_implementation="rustflash"`
against the same model on `sdpa`: logits and one training step's gradients. Skipped without
PyTorch, a CUDA GPU or transformers."""

import pytest

from conftest import gpu_or_skip


def _model(torch, transformers, implementation):
    config = transformers.LlamaConfig(
        vocab_size=512,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).to(device="cuda", dtype=torch.bfloat16)
    model.config._attn_implementation = implementation
    return model


def test_llama_matches_sdpa(monkeypatch):
    torch = gpu_or_skip()
    transformers = pytest.importorskip(
        "transformers", minversion="4.53", reason="transformers 4.53 or newer (its mask interface) is not installed"
    )
    import rustflash

    rustflash.register_transformers()
    # Count the adapter's calls, so that a model silently left on another implementation fails.
    from rustflash import flash_attn_interface

    calls = []
    inner = flash_attn_interface.flash_attn_func
    monkeypatch.setattr(flash_attn_interface, "flash_attn_func", lambda *a, **k: calls.append(1) or inner(*a, **k))
    ids = torch.randint(0, 512, (2, 200), device="cuda")
    results = {}
    for implementation in ("sdpa", "rustflash"):
        model = _model(torch, transformers, implementation)
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        grads = {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
        results[implementation] = (out.logits.float(), out.loss.item(), grads)
    assert len(calls) == 2, f"rustflash ran {len(calls)} times, expected once per layer (2)"
    (la, loss_a, ga), (lb, loss_b, gb) = results["sdpa"], results["rustflash"]
    # bf16 end to end: agreement to bf16's precision over two layers.
    assert (la - lb).abs().max().item() <= 0.05 * la.abs().max().item()
    assert abs(loss_a - loss_b) <= 1e-2 * abs(loss_a)
    for name, g in ga.items():
        diff = (g - gb[name]).abs().max().item()
        assert diff <= 0.05 * g.abs().max().item() + 1e-6, f"{name}: {diff}"
