# PyTorch's scaled_dot_product_attention as a benchmark peer, driven line by line by
# rustflash-bench over stdin/stdout, so that its runs interleave with the other implementations.
#   setup DTYPE B H S D CAUSAL  -> "ok" | "missing MSG"  (q, k, v, dout of shape (B, H, S, D))
#   run PASS BACKEND N          -> "times PEAK_BYTES MS..." | "missing MSG"
#       PASS forward: the forward call; backward: autograd's backward of one forward graph
#       (torch.autograd.grad(out, (q, k, v), dout, retain_graph=True), the work of
#       out.backward(dout) without accumulating into .grad); both: forward and backward together.
#   check forward BACKEND       -> "error MAX_ABS_ERR"  (batch 0, 2 heads, <= 1024 rows, vs fp32)
#   check backward BACKEND      -> "error MAX_REL_ERR"  (dq, dk, dv of batch 0, 2 heads, every row,
#                                  vs fp32; the largest of max|err| / max|ref| over the three)
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

q = k = v = dout = None
causal = False
ref_grads = None  # fp32 dq, dk, dv of batch 0, heads 0-1, made once per setup

def attend(backend, q, k, v):
    with sdpa_kernel(BACKENDS[backend]):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)

def leaves():
    return tuple(t.detach().requires_grad_() for t in (q, k, v))

def grads(out, inputs, retain=False):
    return torch.autograd.grad(out, inputs, dout, retain_graph=retain)

def reference_grads():
    """fp32 gradients of batch 0, heads 0 and 1, one head at a time (S-sized fp32 matrices)."""
    out = []
    for h in range(2):
        qs, ks, vs, dos = (t[0, h].float() for t in (q, k, v, dout))
        scale = qs.shape[-1] ** -0.5
        s = (qs @ ks.T) * scale
        if causal:  # aligned to the bottom right; here seqlen_q == seqlen_k
            n = s.shape[-1]
            s.masked_fill_(torch.ones(n, n, device="cuda", dtype=torch.bool).triu(1), float("-inf"))
        p = torch.softmax(s, -1)
        del s
        o = p @ vs
        dv = p.T @ dos
        ds = dos @ vs.T
        ds.sub_((dos * o).sum(-1, keepdim=True)).mul_(p)
        del p
        out.append((ds @ ks * scale, ds.T @ qs * scale, dv))
        del ds
    return [torch.stack([g[i] for g in out]) for i in range(3)]

for line in sys.stdin:
    cmd = line.split()
    try:
        if cmd[0] == "setup":
            dtype = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}[cmd[1]]
            b, h, s, d = map(int, cmd[2:6])
            causal = cmd[6] == "1"
            q = k = v = dout = ref_grads = None
            torch.cuda.empty_cache()
            q, k, v, dout = (torch.randn(b, h, s, d, device="cuda", dtype=dtype) for _ in range(4))
            reply("ok")
        elif cmd[0] == "run":
            pass_, backend, n = cmd[1], cmd[2], int(cmd[3])
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            inputs = leaves() if pass_ != "forward" else (q, k, v)
            graph = attend(backend, *inputs) if pass_ == "backward" else None
            times = []
            for _ in range(n):
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                if pass_ == "forward":
                    attend(backend, *inputs)
                elif pass_ == "backward":
                    grads(graph, inputs, retain=True)
                else:
                    grads(attend(backend, *inputs), inputs)
                e1.record()
                times.append((e0, e1))
            torch.cuda.synchronize()
            # Counted like rustflash's: the inputs (q, k, v; and dout with a backward) and all
            # the pass allocates, at its peak.
            held = (3 if pass_ == "forward" else 4) * q.numel() * q.element_size()
            peak = torch.cuda.max_memory_allocated() - base + held
            del graph, inputs
            reply("times", peak, *(f"{a.elapsed_time(b):.5f}" for a, b in times))
        elif cmd[0] == "check" and cmd[1] == "forward":
            out = attend(cmd[2], q, k, v)[0, :2, :1024].float()
            qs, ks, vs = (t[0, :2].float() for t in (q, k, v))
            scores = (qs[:, :1024] @ ks.transpose(-1, -2)) / qs.shape[-1] ** 0.5
            if causal:  # aligned to the bottom right; here seqlen_q == seqlen_k
                n = scores.shape[-1]
                hidden = torch.ones(scores.shape[-2], n, device="cuda", dtype=torch.bool).triu(1)
                scores = scores.masked_fill(hidden, float("-inf"))
            ref = torch.softmax(scores, -1) @ vs
            reply("error", float((out - ref).abs().max()))
        elif cmd[0] == "check" and cmd[1] == "backward":
            inputs = leaves()
            got = [g[0, :2].float() for g in grads(attend(cmd[2], *inputs), inputs)]
            del inputs
            if ref_grads is None:
                ref_grads = reference_grads()
            err = max(float((a - r).abs().max() / r.abs().max().clamp_min(1e-30)) for a, r in zip(got, ref_grads))
            reply("error", err)
        elif cmd[0] == "quit":
            break
        else:
            reply("missing", "unknown command " + line.strip())
    except Exception as e:  # noqa: BLE001 - out of memory, unsupported shape: the peer says why
        graph = inputs = None
        torch.cuda.empty_cache()
        reply("missing", str(e).replace("\n", " ")[:300])
