# PyTorch SDPA forward at one shape, per backend, timed like rustflash's speed test.
import sys, torch
from torch.nn.attention import sdpa_kernel, SDPBackend
b, s, h, d = 8, 2048, 16, 128
q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=torch.float16) for _ in range(3))
print("torch", torch.__version__, torch.cuda.get_device_name())
for name in sys.argv[1:] or ["flash"]:
    backend = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
               "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[name]
    for causal in (False, True):
        with sdpa_kernel(backend):
            times = []
            for i in range(35):
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record(); torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal); e1.record()
                torch.cuda.synchronize()
                if i >= 5: times.append(e0.elapsed_time(e1))
        ms = sorted(times)[len(times) // 2]
        flops = 4 * b * s * s * h * d / (2 if causal else 1)
        print(f"    torch {name} forward f16 (8, 2048, 16, 128) causal={causal}: {ms:.3f} ms, {flops / ms / 1e9:.1f} TFLOPS")
