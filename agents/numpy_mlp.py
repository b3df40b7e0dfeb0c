"""Forward and backward passes of the project's MLPs in NumPy, on views of their torch tensors.

The NumPy engines (:mod:`agents.a2c_numpy`, :mod:`agents.dqn_numpy`) train small MLPs on the
CPU without autograd: at CartPole sizes a NumPy operation costs a fraction of a torch
operation's dispatch, and there is no graph to build and walk. The matrix products themselves
run at the same speed in NumPy's OpenBLAS and torch's MKL (single-threaded on the build
machine: ~100 GFLOP/s for 64 to 1,024 rows by 256x256). The engines read the parameters and
write the gradients through NumPy views of the torch tensors, so the optimizer, checkpoints and
telemetry stay in torch and do not know which engine ran.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

Layers = list[tuple[np.ndarray, np.ndarray]]
"""``[(weight, bias), ...]`` per layer, weights ``[out, in]`` as in ``nn.Linear``."""


def linear_params(layers: Sequence[nn.Linear]) -> list[Tensor]:
    """``[w0, b0, w1, b1, ...]`` of ``layers``."""
    return [t for m in layers for t in (m.weight, m.bias)]


def cpu_float(params: Sequence[Tensor]) -> bool:
    """Whether every tensor is float32 or float64 on the CPU (what the engines can view)."""
    return all(p.device.type == "cpu" and p.dtype in (torch.float32, torch.float64) for p in params)


def _pairs(views: list[np.ndarray]) -> Layers:
    """``[w0, b0, w1, b1, ...]`` -> ``[(w0, b0), (w1, b1), ...]``."""
    return list(zip(views[::2], views[1::2], strict=True))


class ParamViews:
    """NumPy views of parameters ``[w0, b0, w1, b1, ...]`` and of their ``.grad`` tensors.

    The views are cached and taken again when a tensor moved: the optimizer moves parameters
    into its flat buffer and attaches its flat gradient's views as ``.grad``; other code may
    replace or clear a ``.grad``.

    Args:
        params: weights and biases of consecutive linear layers.
    """

    def __init__(self, params: Sequence[Tensor]) -> None:
        self.params = list(params)
        self._where: tuple[int, ...] | None = None
        self._weights: Layers = []
        self._grad_tensors: list[Tensor | None] = []
        self._grads: Layers = []

    def weights(self) -> Layers:
        """The layers' weights and biases as NumPy views (read them, do not write)."""
        where = tuple(map(Tensor.data_ptr, self.params))
        if where != self._where:
            self._weights = _pairs([t.detach().numpy() for t in self.params])
            self._where = where
        return self._weights

    def grads(self) -> Layers:
        """Views of the parameters' ``.grad`` tensors, made (zeros) where a ``.grad`` is None."""
        grads = [p.grad for p in self.params]
        cached = self._grad_tensors
        if len(cached) != len(grads) or any(g is not c for g, c in zip(grads, cached, strict=True)):
            for i, p in enumerate(self.params):
                if grads[i] is None:
                    p.grad = grads[i] = torch.zeros_like(p)
            self._grad_tensors = grads
            self._grads = _pairs([g.numpy() for g in grads])
        return self._grads

    @property
    def dtype(self) -> np.dtype:
        """The parameters' NumPy dtype."""
        return self.weights()[0][0].dtype


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
            # A transposed view, not a copy: copying 16 x 256 x 256 weights took longer than
            # the product (4.1 against 1.8 ms with 64 rows); at 16 x 48 x 64 x 64 both ~120 us.
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
    anyway; the optimizer then skips the step either way. The multiply takes ~5 us where
    selecting takes ~20-35 us.

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
