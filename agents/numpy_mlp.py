"""Forward and backward passes of the project's MLPs in NumPy, on views of their torch tensors.

The NumPy engines (:mod:`agents.a2c_numpy`, :mod:`agents.dqn_numpy`) train small MLPs on the
CPU without autograd: at CartPole sizes a NumPy operation costs a fraction of a torch
operation's dispatch, and there is no graph to build and walk. The matrix products themselves
run at the same speed in NumPy's OpenBLAS and torch's MKL (single-threaded on the build
machine: ~100 GFLOP/s for 64 to 1,024 rows by 256x256). The engines read the members'
parameters and write their gradients through NumPy views of the ``[K, N]`` torch buffers, so
the optimizer, checkpoints and telemetry stay in torch and do not know which engine ran.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

Layers = list[tuple[np.ndarray, np.ndarray]]
"""``[(weight, bias), ...]`` per layer, weights ``[out, in]`` as in ``nn.Linear``."""


def cpu_float(params: Sequence[Tensor]) -> bool:
    """Whether every tensor is float32 or float64 on the CPU (what the engines can view)."""
    return all(p.device.type == "cpu" and p.dtype in (torch.float32, torch.float64) for p in params)


def forward(
    x: np.ndarray, layers: Layers, activation: str, transposed: bool = False
) -> list[np.ndarray]:
    """Every layer's output for rows ``x`` (the last layer without the activation).

    Args:
        x: ``[rows, in]`` inputs in the weights' dtype, or ``[K, rows, in]`` for stacked
            weights ``[K, out, in]`` and biases ``[K, out]`` (a population's members).
        layers: the MLP's ``(weight, bias)`` pairs.
        activation: ``"tanh"`` or ``"relu"``, after every layer but the last.
        transposed: the weights are given as ``[(K,) in, out]`` (transposed views a caller
            that runs many forward passes between updates keeps, as population acting does).
    """
    outs = []
    last = len(layers) - 1
    for i, (w, b) in enumerate(layers):
        if transposed:
            x = np.matmul(x, w)
            x += b if w.ndim == 2 else b[:, None, :]
        else:
            # A transposed view, not a copy: copying large stacked weights takes longer than
            # the product itself.
            x = np.matmul(x, w.swapaxes(-1, -2))
            x += b if w.ndim == 2 else b[:, None, :]
        if i < last:
            if activation == "tanh":
                np.tanh(x, out=x)
            else:
                np.maximum(x, 0, out=x)
        outs.append(x)
    return outs


def backward(
    x: np.ndarray,
    outs: list[np.ndarray],
    layers: Layers,
    d_out: np.ndarray,
    grads: Layers,
    activation: str,
) -> None:
    """Write dL/dW and dL/db of every layer into ``grads`` given dL/d(output) ``d_out``.

    Arrays are ``[rows, ...]``, or stacked ``[K, rows, ...]`` with weights ``[K, out, in]``
    (a population's members: every product and sum is per member). Only the first ``rows`` of
    ``d_out`` of ``x`` and ``outs`` take part (A2C's last observation is only bootstrapped
    from, never differentiated). Through a hidden layer the gradient is
    ``dz W (1 - h^2)`` for tanh, and ``dz W`` times ``h > 0`` for ReLU. Where the ReLU's output
    is <= 0 that gives 0 as torch's ``threshold_backward`` does, except for a non-finite
    ``dz W`` there (NaN here, 0 in torch), which only arises when the loss is non-finite
    anyway; the optimizer then skips the step either way. The multiply is several times
    cheaper than selecting.

    Args:
        x: the inputs given to :func:`forward`.
        outs: :func:`forward`'s outputs.
        layers: the MLP's ``(weight, bias)`` pairs.
        d_out: ``[(K,) rows, out]`` gradient of the loss with respect to the last output.
        grads: ``(weight, bias)`` gradient arrays to overwrite.
        activation: the activation :func:`forward` used.
    """
    rows = d_out.shape[-2]
    dz = d_out
    for i in range(len(layers) - 1, -1, -1):
        below = outs[i - 1][..., :rows, :] if i else x[..., :rows, :]
        g_w, g_b = grads[i]
        np.matmul(dz.swapaxes(-1, -2), below, out=g_w)
        dz.sum(-2, out=g_b)
        if i:
            dz = np.matmul(dz, layers[i][0])
            if activation == "tanh":
                dz *= 1.0 - below * below
            else:
                dz *= below > 0
