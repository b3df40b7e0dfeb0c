import numpy as np
import pytest
import threadpoolctl
import torch

from rl_rmsprop.threads import set_threads


def blas_threads() -> list[int]:
    np.ones((2, 2)) @ np.ones((2, 2))  # NumPy's BLAS is loaded
    return [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]


def test_set_threads_limits_torch_and_numpys_blas():
    before_torch, before_blas = torch.get_num_threads(), blas_threads()
    assert before_blas, "NumPy's BLAS was not found by threadpoolctl"
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1 and blas_threads() == [1] * len(before_blas)
        set_threads(2)
        assert torch.get_num_threads() == 2 and blas_threads() == [2] * len(before_blas)
    finally:
        torch.set_num_threads(before_torch)
        for n in set(before_blas):
            threadpoolctl.threadpool_limits(n, user_api="blas")


def test_set_threads_refuses_zero():
    with pytest.raises(ValueError, match="threads must be >= 1"):
        set_threads(0)
