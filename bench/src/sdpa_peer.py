# PyTorch's scaled_dot_product_attention as a benchmark peer, driven line by line by
# rustflash-bench over stdin/stdout, so that its runs interleave with the other implementations.
#   setup DTYPE B H S D CAUSAL  -> "ok" | "error MSG"     (allocates q, k, v of shape (B, H, S, D))
#   run BACKEND N               -> "times PEAK_BYTES MS..." | "missing MSG"
#   check BACKEND               -> "error MAX_ABS_ERR"  (batch 0, 2 heads, <= 1024 rows, vs fp32)
#   quit
import sys

def reply(*words):
    print(*words, flush=True)

try:
    import torch
    from torch.nn.attention import sdpa_kernel, SDPBackend
    BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
    if not torch.cuda.is_available():
        raise RuntimeError("torch sees no CUDA device")
    reply("ready", torch.__version__, torch.cuda.get_device_name().replace(" ", "_"))
except Exception as e:  # noqa: BLE001 - any failure makes the peer missing, with the reason
    reply("unavailable", str(e).replace("\n", " "))
    sys.exit(0)

q = k = v = None
causal = False

def attend(backend):
    with sdpa_kernel(BACKENDS[backend]):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)

for line in sys.stdin:
    cmd = line.split()
    try:
        if cmd[0] == "setup":
            dtype = {"f16": torch.float16, "bf16": torch.bfloat16}[cmd[1]]
            b, h, s, d = map(int, cmd[2:6])
            causal = cmd[6] == "1"
            q = k = v = None
            torch.cuda.empty_cache()
            q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=dtype) for _ in range(3))
            reply("ok")
        elif cmd[0] == "run":
            backend, n = cmd[1], int(cmd[2])
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(n):
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                attend(backend)
                e1.record()
                times.append((e0, e1))
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base + 3 * q.numel() * q.element_size()
            reply("times", peak, *(f"{a.elapsed_time(b):.5f}" for a, b in times))
        elif cmd[0] == "check":
            out = attend(cmd[1])[0, :2, :1024].float()
            qs, ks, vs = (t[0, :2].float() for t in (q, k, v))
            scores = (qs[:, :1024] @ ks.transpose(-1, -2)) / qs.shape[-1] ** 0.5
            if causal:  # aligned to the bottom right; here seqlen_q == seqlen_k
                n = scores.shape[-1]
                hidden = torch.ones(scores.shape[-2], n, device="cuda", dtype=torch.bool).triu(1)
                scores = scores.masked_fill(hidden, float("-inf"))
            ref = torch.softmax(scores, -1) @ vs
            reply("error", float((out - ref).abs().max()))
        elif cmd[0] == "quit":
            break
    except Exception as e:  # noqa: BLE001 - out of memory, unsupported shape: the peer says why
        torch.cuda.empty_cache()
        reply("missing", str(e).replace("\n", " ")[:300])
