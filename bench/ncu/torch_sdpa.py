# PyTorch SDPA calls on a forced backend, for Nsight Compute to profile next to ours:
#   python3 torch_sdpa.py BACKEND DTYPE HEADDIM SEQLEN CAUSAL [forward|backward]
# forward (default): three forward calls. backward: three forward calls each followed by its
# backward (out.backward(dout)), so the backward kernels run three times.
# Shapes as in the benchmark: batch x seqlen = 16384, heads = 2048 / headdim.
import sys
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

backend, dtype, d, s, causal = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
backward = len(sys.argv) > 6 and sys.argv[6] == "backward"
b, h = 16384 // s, 2048 // d
dt = {"f16": torch.float16, "bf16": torch.bfloat16}[dtype]
q, k, v, dout = (torch.randn(b, h, s, d, device="cuda", dtype=dt, requires_grad=backward) for _ in range(4))
with sdpa_kernel({"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[backend]):
    for _ in range(3):
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        if backward:
            q.grad = k.grad = v.grad = None
            out.backward(dout.detach())
torch.cuda.synchronize()
