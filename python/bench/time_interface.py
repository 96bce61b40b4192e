"""A short timing of `rustflash.flash_attn_func` beside PyTorch's `flash` backend, from one
process: forward, and forward + backward through autograd, at the shapes given (default batch 8,
seqlen 2048, heads 16, head dim 128; float16 and bfloat16; causal and not).

Not the benchmark (that is `cargo xtask bench`, which also checks results): this measures what
a PyTorch user sees through the Python layer, custom op and autograd included. Each case is
timed with CUDA events around `--iters` calls after `--warmup` calls, in `--rounds` rounds
alternating the two implementations; the median round is reported. Writes a JSON and a
Markdown table to --out.

    python time_interface.py --out DIR
"""

import argparse
import json
import os
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import rustflash


def flops(batch, seqlen, heads, headdim, causal, passes):
    """FlashAttention's count: 4·b·s²·h·d for the forward, 2.5x that for the backward, halved
    when causal."""
    fwd = 4 * batch * seqlen * seqlen * heads * headdim / (2 if causal else 1)
    return fwd * (1 if passes == "fwd" else 3.5)


def timed(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters  # ms


def cases():
    for dtype in (torch.float16, torch.bfloat16):
        for causal in (False, True):
            for passes in ("fwd", "fwd+bwd"):
                yield dtype, causal, passes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--headdim", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=".")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    b, s, h, d = args.batch, args.seqlen, args.heads, args.headdim
    gpu = torch.cuda.get_device_name()
    torch.manual_seed(0)
    rows = []
    for dtype, causal, passes in cases():
        # rustflash's layout (b, s, h, d); sdpa's (b, h, s, d) as transposed views of the same
        # storage, as a model calling either would hold them.
        q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
        dout = torch.randn(b, s, h, d, device="cuda", dtype=dtype)

        def ours():
            out = rustflash.flash_attn_func(q, k, v, causal=causal)
            if passes != "fwd":
                out.backward(dout)

        def flash():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                out = F.scaled_dot_product_attention(
                    q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal
                )
            if passes != "fwd":
                out.backward(dout.transpose(1, 2))

        times = {"ours": [], "flash": []}
        with torch.set_grad_enabled(passes != "fwd"):
            for _ in range(args.rounds):
                for name, fn in (("ours", ours), ("flash", flash)):
                    times[name].append(timed(fn, args.warmup, args.iters))
        work = flops(b, s, h, d, causal, passes)
        row = {
            "dtype": str(dtype).removeprefix("torch."),
            "causal": causal,
            "pass": passes,
            "ours_ms": statistics.median(times["ours"]),
            "flash_ms": statistics.median(times["flash"]),
        }
        row["ours_tflops"] = work / row["ours_ms"] / 1e9
        row["flash_tflops"] = work / row["flash_ms"] / 1e9
        row["ours_over_flash"] = row["ours_tflops"] / row["flash_tflops"]
        rows.append(row)
        print(
            f"{row['dtype']:8} causal={causal!s:5} {passes:7} ours {row['ours_ms']:.3f} ms "
            f"{row['ours_tflops']:.1f} TFLOPS | flash {row['flash_ms']:.3f} ms {row['flash_tflops']:.1f} TFLOPS "
            f"| ratio {row['ours_over_flash']:.3f}",
            flush=True,
        )
    meta = {
        "gpu": gpu,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "shape": {"batch": b, "seqlen": s, "heads": h, "headdim": d},
        "warmup": args.warmup,
        "iters": args.iters,
        "rounds": args.rounds,
    }
    with open(os.path.join(args.out, "time_interface.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    with open(os.path.join(args.out, "time_interface.md"), "w") as f:
        f.write(f"`flash_attn_func` vs torch flash, {gpu}, torch {torch.__version__}, (b{b}, s{s}, h{h}, d{d})\n\n")
        f.write("| dtype | causal | pass | ours ms | flash ms | ours TFLOPS | flash TFLOPS | ours/flash |\n")
        f.write("| --- | --- | --- | --- | --- | --- | --- | --- |\n")
        for r in rows:
            f.write(
                f"| {r['dtype']} | {r['causal']} | {r['pass']} | {r['ours_ms']:.3f} | {r['flash_ms']:.3f} | "
                f"{r['ours_tflops']:.1f} | {r['flash_tflops']:.1f} | {r['ours_over_flash']:.3f} |\n"
            )


if __name__ == "__main__":
    main()
