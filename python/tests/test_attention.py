"""rustflash's FlashAttention interface on a GPU against attention computed by PyTorch in
float64, with the project's criterion: per tensor, max|ours − ref| <= k · max|plain − ref| +
slack, k = 2 for the output and 3 for gradients, where *plain* is attention in the dtype as a
straightforward implementation rounds it (S accumulated in f32 and rounded, softmax in f32 with
P rounded, O = P V accumulated in f32 and rounded; gradients through the same roundings), and
the slack a few units in the last place of max|ref|. Skipped without PyTorch or a CUDA GPU."""

import math
import os

import pytest

from conftest import gpu_or_skip, record_ratio

DTYPES = ["float16", "bfloat16"]
HEAD_DIMS = [1, 32, 59, 64, 100, 128, 256]
SEQLENS = [(1, 1), (113, 203), (256, 256), (300, 1), (1, 300)]


def _scores(q, k, scale, causal, r):
    """Softmax probabilities `(batch, heads, sq, sk)` of (batch, seqlen, heads, headdim) q and k
    (k already repeated to q's heads), S rounded by `r` before scaling; rows that see no key are
    zeros."""
    torch = gpu_or_skip()
    s = r(torch.einsum("bqhd,bkhd->bhqk", q, k)) * scale
    sq, sk = q.shape[1], k.shape[1]
    if causal:
        i = torch.arange(sq, device=q.device)[:, None]
        j = torch.arange(sk, device=q.device)[None, :]
        s = s.masked_fill(j > i + sk - sq, float("-inf"))
    return torch.softmax(s, dim=-1).nan_to_num(0.0)


def _repeat_kv(q, k, v):
    group = q.shape[2] // k.shape[2]
    return k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)


def _attention(q, k, v, scale, causal):
    """Exact attention in q's precision (float64 for the reference, through autograd)."""
    torch = gpu_or_skip()
    k, v = _repeat_kv(q, k, v)
    p = _scores(q, k, scale, causal, lambda x: x)
    return torch.einsum("bhqk,bkhd->bqhd", p, v)


def _plain(q, k, v, dout, scale, causal, dtype):
    """Plain attention and its gradients from float32 q, k, v, dout, rounded to `dtype` where a
    straightforward implementation stores: S, P, O, dP, dS and the gradients, with f32 sums
    between (as FlashAttention's backward: D = rowsum(dO ∘ O) from the rounded O, dS = P ∘ (dP −
    D)). The Rust suite's plain reference, written for PyTorch."""
    torch = gpu_or_skip()
    r = lambda x: x.to(dtype).to(torch.float32)  # noqa: E731
    group = q.shape[2] // k.shape[2]
    kr, vr = _repeat_kv(q, k, v)
    p = r(_scores(q, kr, scale, causal, r))
    o = r(torch.einsum("bhqk,bkhd->bqhd", p, vr))
    big_d = (dout * o).sum(-1).transpose(1, 2)[..., None]  # (b, h, sq, 1)
    dp = r(torch.einsum("bqhd,bkhd->bhqk", dout, vr))
    ds = r(p * (dp - big_d))
    dq = r(scale * torch.einsum("bhqk,bkhd->bqhd", ds, kr))

    def per_kv_head(x):  # (b, sk, hq, d) summed over each K/V head's query heads, then rounded
        b, sk, hq, d = x.shape
        return r(x.reshape(b, sk, hq // group, group, d).sum(3))

    dk = per_kv_head(scale * torch.einsum("bhqk,bqhd->bkhd", ds, q))
    dv = per_kv_head(torch.einsum("bhqk,bqhd->bkhd", p, dout))
    return o, (dq, dk, dv)


def _ulp(dtype_name, magnitude):
    """A few units in the last place of `magnitude` in the dtype, the exponent floored at -14 as
    the Rust suite's criterion does (a reference of exact zeros still allows rounding residue)."""
    mantissa = {"float16": 10, "bfloat16": 7, "float32": 23, "float32_accurate": 23}[dtype_name]
    e = max(math.floor(math.log2(max(magnitude, 2.0**-1022))), -126 if dtype_name.startswith("float32") else -14)
    if dtype_name == "float32_accurate":
        # 32 ulp of max(magnitude, 1), the Rust suite's rule (`Tolerance::f32_accurate`).
        return 32 * 2.0 ** (max(e, 0) - mantissa)
    return 2 * 2.0 ** (e - mantissa)


def _check(name, ours, ref, plain, factor, dtype_name):
    err = (ours.double() - ref).abs().max().item()
    bound = factor * (plain.double() - ref).abs().max().item() + _ulp(dtype_name, ref.abs().max().item())
    ratio = err / bound if bound > 0 else (0.0 if err == 0 else math.inf)
    print(f"ratio {name}={ratio:.3f}")
    record_ratio(name, ratio, os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0])
    assert err <= bound, f"{name}: max error {err:.3e} > bound {bound:.3e}"


def _case(torch, dtype_name, b, sq, sk, hq, hkv, d, causal, seed, packed=False):
    import rustflash

    torch.manual_seed(seed)
    dtype = getattr(torch, dtype_name)
    dev = "cuda"
    if packed:
        qkv = torch.randn(b, sq, 3, hq, d, device=dev, dtype=dtype, requires_grad=True)
        leaves = (qkv,)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        out = rustflash.flash_attn_qkvpacked_func(qkv, causal=causal)
    else:
        q = torch.randn(b, sq, hq, d, device=dev, dtype=dtype, requires_grad=True)
        k = torch.randn(b, sk, hkv, d, device=dev, dtype=dtype, requires_grad=True)
        v = torch.randn(b, sk, hkv, d, device=dev, dtype=dtype, requires_grad=True)
        leaves = (q, k, v)
        out = rustflash.flash_attn_func(q, k, v, causal=causal)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, leaves, dout)
    scale = 1.0 / math.sqrt(d)

    f64 = [x.detach().double().requires_grad_() for x in leaves]
    q64, k64, v64 = (f64[0][:, :, i] for i in range(3)) if packed else f64
    o_ref = _attention(q64, k64, v64, scale, causal)
    g_ref = torch.autograd.grad(o_ref, f64, dout.double())
    q32, k32, v32 = (x.detach().float() for x in (q, k, v))
    o_plain, g_plain = _plain(q32, k32, v32, dout.float(), scale, causal, dtype)
    if packed:
        g_plain = [torch.stack(g_plain, dim=2)]
    _check("O", out, o_ref, o_plain, 2, dtype_name)
    names = ["dqkv"] if packed else ["dQ", "dK", "dV"]
    for name, g, gr, gp in zip(names, grads, g_ref, g_plain):
        _check(name, g, gr, gp, 3, dtype_name)


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("d", HEAD_DIMS)
@pytest.mark.parametrize("sq,sk", SEQLENS)
@pytest.mark.parametrize("causal", [False, True])
def test_forward_and_gradients(torch_gpu, seed, dtype_name, d, sq, sk, causal):
    _case(torch_gpu, dtype_name, 2, sq, sk, 4, 4, d, causal, seed)


def _round_tf32(torch, x):
    """`x` (float32) rounded to TF32's 10 mantissa bits, to nearest with ties away from zero, as
    the tensor cores' `cvt.rna.tf32.f32` rounds."""
    bits = x.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def _plain_f32(q, k, v, dout, scale, causal, op):
    """float32 attention and gradients as the kernels' float32 modes compute them: every product's
    operands (q, k, v, dout, P, dS) passed through `op` (TF32 rounding, or the sum of the high and
    low TF32 parts), f32 sums, nothing else rounded; D = rowsum(dO ∘ O) from the unrounded dO."""
    torch = gpu_or_skip()
    group = q.shape[2] // k.shape[2]
    kr, vr = _repeat_kv(q, k, v)
    qo, ko, vo, do = op(q), op(kr), op(vr), op(dout)
    p = _scores(qo, ko, scale, causal, lambda x: x)
    o = torch.einsum("bhqk,bkhd->bqhd", op(p), vo)
    big_d = (dout * o).sum(-1).transpose(1, 2)[..., None]
    dp = torch.einsum("bqhd,bkhd->bhqk", do, vo)
    ds = p * (dp - big_d)
    dq = scale * torch.einsum("bhqk,bkhd->bqhd", op(ds), ko)

    def per_kv_head(x):
        b, sk, hq, d = x.shape
        return x.reshape(b, sk, hq // group, group, d).sum(3)

    dk = per_kv_head(scale * torch.einsum("bhqk,bqhd->bkhd", op(ds), qo))
    dv = per_kv_head(torch.einsum("bhqk,bqhd->bkhd", op(p), do))
    return o, (dq, dk, dv)


@pytest.mark.parametrize("precision", ["high", "highest"])
@pytest.mark.parametrize("d", [1, 64, 100, 128, 256])
@pytest.mark.parametrize("sq,sk", [(113, 203), (300, 1), (1, 300)])
@pytest.mark.parametrize("causal", [False, True])
def test_float32(torch_gpu, seed, precision, d, sq, sk, causal):
    """float32 in both modes: TF32 when PyTorch's float32 matmul precision is "high" (or
    "medium"), the accurate 3xTF32 mode at "highest", each against plain attention that rounds
    the products' operands as the mode does. The accurate mode's slack is 32 ulp of float32 of
    max(|ref|, 1), as in the Rust suite."""
    import rustflash

    torch = torch_gpu
    torch.manual_seed(seed)
    q, k, v = (torch.randn(2, n, 4, d, device="cuda", requires_grad=True) for n in (sq, sk, sk))
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        out = rustflash.flash_attn_func(q, k, v, causal=causal)
    finally:
        torch.set_float32_matmul_precision(previous)
    torch.backends.cuda.matmul.allow_tf32 = False
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    scale = 1.0 / math.sqrt(d)
    f64 = [x.detach().double().requires_grad_() for x in (q, k, v)]
    o_ref = _attention(*f64, scale, causal)
    g_ref = torch.autograd.grad(o_ref, f64, dout.double())
    if precision == "high":
        op = lambda x: _round_tf32(torch, x)  # noqa: E731
    else:

        def op(x):
            hi = _round_tf32(torch, x)
            return hi + _round_tf32(torch, x - hi)

    o_plain, g_plain = _plain_f32(q.detach(), k.detach(), v.detach(), dout, scale, causal, op)
    name = "float32" if precision == "high" else "float32_accurate"
    _check("O", out, o_ref, o_plain, 2, name)
    for label, g, gr, gp in zip(["dQ", "dK", "dV"], grads, g_ref, g_plain):
        _check(label, g, gr, gp, 3, name)


@pytest.mark.parametrize("hkv", [1, 2])
@pytest.mark.parametrize("causal", [False, True])
def test_gqa(torch_gpu, seed, hkv, causal):
    _case(torch_gpu, "float16", 2, 130, 70, 8, hkv, 64, causal, seed)


@pytest.mark.parametrize("causal", [False, True])
def test_qkvpacked(torch_gpu, seed, causal):
    _case(torch_gpu, "bfloat16", 2, 200, 200, 4, 4, 96, causal, seed, packed=True)


def test_kvpacked_matches_unpacked(torch_gpu, seed):
    import rustflash

    torch = torch_gpu
    torch.manual_seed(seed)
    q = torch.randn(2, 100, 4, 64, device="cuda", dtype=torch.float16)
    kv = torch.randn(2, 150, 2, 2, 64, device="cuda", dtype=torch.float16)
    a = rustflash.flash_attn_kvpacked_func(q, kv, causal=True)
    b = rustflash.flash_attn_func(q, kv[:, :, 0].contiguous(), kv[:, :, 1].contiguous(), causal=True)
    assert torch.equal(a, b)


@pytest.mark.parametrize("d", [64, 128, 256])
def test_deterministic_is_bitwise(torch_gpu, seed, d):
    import rustflash

    torch = torch_gpu
    torch.manual_seed(seed)
    q, k, v = (torch.randn(2, 300, 4, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    dout = torch.randn(2, 300, 4, d, device="cuda", dtype=torch.bfloat16)
    runs = []
    for _ in range(2):
        out = rustflash.flash_attn_func(q, k, v, causal=True, deterministic=True)
        runs.append(torch.autograd.grad(out, (q, k, v), dout))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_cuda_graph_capture_and_replay(torch_gpu):
    import rustflash

    torch = torch_gpu
    q, k, v = (torch.randn(2, 256, 4, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    rustflash.flash_attn_func(q, k, v)  # loads the kernels outside the capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = rustflash.flash_attn_func(q, k, v)
    q.copy_(torch.randn_like(q))
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, rustflash.flash_attn_func(q, k, v))


def test_torch_compile_fullgraph(torch_gpu):
    from rustflash.flash_attn_interface import flash_attn_func

    torch = torch_gpu

    @torch.compile(fullgraph=True)
    def f(q, k, v):
        return flash_attn_func(q, k, v, causal=True).sum()

    q, k, v = (torch.randn(1, 128, 2, 64, device="cuda", dtype=torch.float16, requires_grad=True) for _ in range(3))
    f(q, k, v).backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_errors_name_the_argument(torch_gpu):
    import rustflash

    torch = torch_gpu
    q = torch.randn(1, 8, 2, 16, device="cuda", dtype=torch.float16)
    with pytest.raises(ValueError, match="q is on cpu"):
        rustflash.flash_attn_func(q.cpu(), q, q)
    with pytest.raises(ValueError, match="k has dtype torch.bfloat16"):
        rustflash.flash_attn_func(q, q.bfloat16(), q)
    with pytest.raises(ValueError, match="float64"):
        rustflash.flash_attn_func(q.double(), q.double(), q.double())
    with pytest.raises(ValueError, match="3 dimensions"):
        rustflash.flash_attn_func(q[0], q, q)
    with pytest.raises(ValueError, match="dropout_p"):
        rustflash.flash_attn_func(q, q, q, dropout_p=0.1)
    with pytest.raises(ValueError, match="window_size"):
        rustflash.flash_attn_func(q, q, q, window_size=(4, 0))
    with pytest.raises(ValueError, match="return_attn_probs"):
        rustflash.flash_attn_func(q, q, q, return_attn_probs=True)
    # A shape error from the library itself: heads_q not a multiple of heads_kv.
    k = torch.randn(1, 8, 3, 16, device="cuda", dtype=torch.float16)
    with pytest.raises(ValueError, match="heads_kv"):
        rustflash.flash_attn_func(q, k, k)
