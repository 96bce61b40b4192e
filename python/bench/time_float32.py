"""float32 timing: `rustflash.flash_attn_func` in both float32 modes beside PyTorch's
`scaled_dot_product_attention` on its EFFICIENT_ATTENTION and MATH backends, float32 inputs, one
process: forward, and forward + backward through autograd (default batch 4, seqlen 2048, heads
16, head dim 128; causal and not).

Our TF32 mode runs under `torch.set_float32_matmul_precision("high")`, the accurate (3xTF32)
mode under "highest"; PyTorch's backends run under "highest" (full float32: what "math" means
without TF32), and MATH also under "high" (its products on TF32 tensor cores). Each case is
timed with CUDA events around `--iters` calls after `--warmup`, in `--rounds` rounds alternating
the implementations; the median round is reported. Writes time_float32.json and prints a table.

    python time_float32.py --out DIR
"""

import argparse
import json
import os
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import rustflash
from time_interface import flops, timed

# name -> (float32 matmul precision, implementation)
IMPLEMENTATIONS = {
    "ours_tf32": ("high", "ours"),
    "ours_accurate": ("highest", "ours"),
    "efficient": ("highest", SDPBackend.EFFICIENT_ATTENTION),
    "math": ("highest", SDPBackend.MATH),
    "math_tf32": ("high", SDPBackend.MATH),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--headdim", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=".")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    b, s, h, d = args.batch, args.seqlen, args.heads, args.headdim
    torch.manual_seed(0)
    rows = []
    for causal in (False, True):
        for passes in ("fwd", "fwd+bwd"):
            q, k, v = (torch.randn(b, s, h, d, device="cuda", requires_grad=True) for _ in range(3))
            dout = torch.randn(b, s, h, d, device="cuda")

            def run(precision, backend):
                torch.set_float32_matmul_precision(precision)
                if backend == "ours":
                    out = rustflash.flash_attn_func(q, k, v, causal=causal)
                    grad = dout
                else:
                    with sdpa_kernel(backend):
                        out = F.scaled_dot_product_attention(
                            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal
                        )
                    grad = dout.transpose(1, 2)
                if passes != "fwd":
                    out.backward(grad)

            times = {name: [] for name in IMPLEMENTATIONS}
            with torch.set_grad_enabled(passes != "fwd"):
                for _ in range(args.rounds):
                    for name, (precision, backend) in IMPLEMENTATIONS.items():
                        times[name].append(timed(lambda: run(precision, backend), args.warmup, args.iters))
            torch.set_float32_matmul_precision("highest")
            work = flops(b, s, h, d, causal, passes)
            row = {"causal": causal, "pass": passes}
            for name, t in times.items():
                row[f"{name}_ms"] = statistics.median(t)
                row[f"{name}_tflops"] = work / row[f"{name}_ms"] / 1e9
            rows.append(row)
            print(
                f"causal={causal!s:5} {passes:7} "
                + " | ".join(f"{n} {row[n + '_tflops']:.1f}" for n in IMPLEMENTATIONS)
                + " TFLOPS",
                flush=True,
            )
    meta = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "shape": {"batch": b, "seqlen": s, "heads": h, "headdim": d},
        "warmup": args.warmup,
        "iters": args.iters,
        "rounds": args.rounds,
        "implementations": {n: [p, str(bk)] for n, (p, bk) in IMPLEMENTATIONS.items()},
    }
    with open(os.path.join(args.out, "time_float32.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
