"""What needs no GPU and no PyTorch: the extension imports, sizes the workspace, and turns the
library's errors into Python exceptions."""

import pytest

import rustflash


def test_version_and_driver_probe():
    assert rustflash.__version__ == rustflash._native.__version__
    assert isinstance(rustflash._native.driver_available(), bool)


def test_workspace_len_follows_the_schedules():
    rows = 2 * 8 * 128  # seqlen 113 rounded up to 128 per (batch, head)
    # Head dim 59 (bucket 64): the default mode's atomic schedule keeps an f32 dQ accumulator.
    assert rustflash.backward_workspace_len(2, 8, 113, 59) == rows * (2 + 64)
    assert rustflash.backward_workspace_len(2, 8, 113, 59, deterministic=True) == rows * 2
    # Above 64 both modes compute dQ in its own kernel: no accumulator.
    assert rustflash.backward_workspace_len(2, 8, 113, 128) == rows * 2
    assert rustflash.backward_workspace_len(0, 8, 113, 128) == 0


@pytest.mark.parametrize("head_dim", [0, 257])
def test_bad_head_dim_is_a_value_error(head_dim):
    with pytest.raises(ValueError, match="head_dim"):
        rustflash.backward_workspace_len(1, 1, 1, head_dim)


def test_unknown_dtype_is_a_value_error():
    t4 = (0, (1, 1, 1, 8), (8, 8, 8, 1))
    t3 = (0, (1, 1, 1), (1, 1, 1))
    with pytest.raises(ValueError, match="unsupported dtype float64"):
        rustflash._native.forward(0, 0, "float64", t4, t4, t4, t4, t3, None, False, False)
