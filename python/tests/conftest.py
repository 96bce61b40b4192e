"""GPU tests are skipped, with the reason, where there is no PyTorch or no CUDA GPU; with
REQUIRE_GPU=1 a missing GPU fails them instead. Seeds: each test prints its seed;
RUSTFLASH_SEED=N replays one."""

import os

import pytest

# The worst error ratio (error / bound) seen per tensor name in this session, for the summary.
WORST_RATIOS = {}


def record_ratio(name, ratio, test):
    if ratio > WORST_RATIOS.get(name, (-1.0, None))[0]:
        WORST_RATIOS[name] = (ratio, test)


def pytest_terminal_summary(terminalreporter):
    if WORST_RATIOS:
        terminalreporter.section("worst error ratios (error / bound; at most 1 passes)")
        for name, (ratio, test) in sorted(WORST_RATIOS.items()):
            terminalreporter.write_line(f"{name}: {ratio:.3f} ({test})")


def gpu_or_skip():
    """torch, when a CUDA GPU can run the tests; otherwise skip (or fail under REQUIRE_GPU=1)."""
    why = None
    try:
        import torch
    except ImportError:
        torch, why = None, "no PyTorch installed"
    if torch is not None and not torch.cuda.is_available():
        why = "no CUDA GPU (torch.cuda.is_available() is False)"
    if why is not None:
        if os.environ.get("REQUIRE_GPU") == "1":
            pytest.fail(f"REQUIRE_GPU=1 but {why}")
        pytest.skip(why)
    # The references' float32 products must not run on TF32 tensor cores.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch


@pytest.fixture
def torch_gpu():
    return gpu_or_skip()


@pytest.fixture
def seed(request):
    s = int(os.environ.get("RUSTFLASH_SEED", abs(hash(request.node.name)) % (2**31)))
    print(f"seed {s} (replay with RUSTFLASH_SEED={s})")
    return s
