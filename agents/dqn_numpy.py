"""DQN for the MLP Q-network on the CPU in NumPy: its Q-values and the TD loss's gradient.

The zoo's CartPole DQN takes 128 gradient steps of a 256-256 MLP on 64 transitions every 256
env steps. Through torch a step is three 64x256x256 products plus ~40 operations of autograd
and dispatch; :class:`NumpyQ` computes the same loss and its gradient by hand with NumPy and
writes the gradient into the parameters' ``.grad``, in ~25 operations with no graph. Clipping,
the optimizer step and all telemetry stay in torch.

The TD targets are :func:`agents.dqn.td_targets` itself, fed this engine's Q-values; the loss
is :func:`agents.dqn.dqn_loss`'s, of which only the derivative with respect to the Q-values is
written here, equal to autograd's up to float rounding (tests compare them). The network, its
``state_dict`` and the optimizer are untouched, so checkpoints, telemetry and evaluation do not
know which engine trained.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from .dqn import LOSSES, REDUCTIONS, DQNBatch, QNetwork
from .numpy_mlp import Layers, ParamViews, backward, cpu_float, forward, linear_params


def supports(model: nn.Module) -> bool:
    """Whether :class:`NumpyQ` can run ``model``: a :class:`QNetwork` in float on the CPU."""
    return type(model) is QNetwork and cpu_float(list(model.parameters()))


class NumpyQ:
    """A :class:`~agents.dqn.QNetwork`'s Q-values and TD-loss gradients in NumPy.

    Holds no parameters of its own, only NumPy views of the network's parameters and gradients
    (:class:`~agents.numpy_mlp.ParamViews`).

    Args:
        model: the Q-network (see :func:`supports`).
    """

    def __init__(self, model: QNetwork) -> None:
        if not supports(model):
            raise ValueError("NumpyQ needs a QNetwork (MLP) with float parameters on the CPU")
        self.model = model
        self.views = ParamViews(linear_params(list(model.layers)))

    def _input(self, obs: Tensor) -> np.ndarray:
        """Observations as ``[rows, obs_dim]`` in the weights' dtype (integers are cast)."""
        x = obs.numpy()
        return x.reshape(x.shape[0], -1).astype(self.views.dtype, copy=False)

    def _q(self, x: np.ndarray) -> np.ndarray:
        """Q-values ``[rows, n_actions]`` (td_targets hands large inputs over in chunks)."""
        return forward(x, self.views.weights(), "relu")[-1]

    def q_values(self, obs: Tensor) -> Tensor:
        """Q-values ``[B, n_actions]`` of observations ``[B, ...]`` (for acting)."""
        return torch.from_numpy(self._q(self._input(obs)))

    def gradients(
        self, batch: DQNBatch, targets: Tensor, loss: str = "huber", reduction: str = "mean"
    ) -> dict[str, float]:
        """:func:`agents.dqn.dqn_loss`; its gradient is written into the parameters' ``.grad``.

        Args:
            batch: replay sample with ``obs`` and ``actions``.
            targets: ``[B]`` TD targets.
            loss: ``"huber"`` or ``"mse"``.
            reduction: ``"mean"`` or ``"sum"`` over the batch.

        Returns:
            ``losses/td_loss`` and ``losses/q_values`` (the mean of ``Q(s, a)``) as floats.
        """
        x = self._input(batch.obs)
        layers, grads = self.views.weights(), self.views.grads()
        metrics = td_gradients(x, layers, grads, batch.actions.numpy(), targets, loss, reduction)
        return {tag: float(v) for tag, v in metrics.items()}


def td_gradients(
    x: np.ndarray,
    layers: Layers,
    grads: Layers,
    actions: np.ndarray,
    targets: Tensor,
    loss: str = "huber",
    reduction: str = "mean",
) -> dict[str, np.ndarray]:
    """:func:`agents.dqn.dqn_loss`'s gradient for a ReLU MLP, written into ``grads``.

    With ``d = Q(s, a) - y`` per sample, dL/dQ(s, a) is ``clip(d, -1, 1)`` for Huber and
    ``2 d`` for the squared error, times ``1 / B`` for ``"mean"``; the other actions' Q-values
    get 0. Then through each layer (:func:`agents.numpy_mlp.backward`). Arrays are ``[B, ...]``
    for one network or ``[K, B, ...]`` for K stacked members (the reduction is per member).

    Args:
        x: ``[(K,) B, obs_dim]`` inputs in the weights' dtype.
        layers: the MLP's ``(weight, bias)`` pairs (stacked ``[K, ...]`` for members).
        grads: ``(weight, bias)`` gradient arrays to overwrite.
        actions: ``[(K,) B]`` taken actions.
        targets: ``[(K,) B]`` TD targets.
        loss: ``"huber"`` or ``"mse"``.
        reduction: ``"mean"`` or ``"sum"`` over the batch.

    Returns:
        ``losses/td_loss`` and ``losses/q_values`` (the mean of ``Q(s, a)``), ``[K]`` arrays
        for members, 0-d for one network.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    outs = forward(x, layers, "relu")
    q = outs[-1]
    taken = actions[..., None]
    q_taken = np.take_along_axis(q, taken, -1)[..., 0]
    d = q_taken - targets.numpy().astype(q.dtype, copy=False)
    if loss == "huber":
        size = np.abs(d)
        per_sample = np.where(size < 1.0, 0.5 * d * d, size - 0.5)
        d_q = np.clip(d, -1.0, 1.0)
    else:
        per_sample = d * d
        d_q = 2.0 * d
    batch = d.shape[-1]
    value = per_sample.sum(-1)
    if reduction == "mean":
        value = value / batch
        d_q *= q.dtype.type(1.0 / batch)
    d_out = np.zeros_like(q)
    np.put_along_axis(d_out, taken, d_q[..., None], -1)
    backward(x, outs, layers, d_out, grads, "relu")
    return {"losses/td_loss": value, "losses/q_values": q_taken.mean(-1)}
