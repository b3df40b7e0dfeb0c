"""One CPU thread count for torch and for NumPy's BLAS."""

from __future__ import annotations

import threadpoolctl
import torch


def set_threads(n: int) -> None:
    """Run torch's CPU operations and NumPy's matrix products on ``n`` threads.

    The NumPy engines (:mod:`agents.numpy_mlp`) do their products in NumPy's BLAS (OpenBLAS),
    which starts one thread per core unless told otherwise; ``--threads 1`` would otherwise
    mean one torch thread beside a BLAS thread pool whose spinning workers take the other
    core. ``threadpoolctl`` sets the limit in the loaded BLAS library itself, for the whole
    process.

    Args:
        n: threads, >= 1.
    """
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    threadpoolctl.threadpool_limits(n, user_api="blas")
