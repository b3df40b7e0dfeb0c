"""DQN's TD-loss gradient for MLP Q-networks on the CPU, in NumPy: the batched CPU engine.

The zoo's CartPole DQN takes 128 gradient steps of a 256-256 MLP on 64 transitions every 256
env steps. Through torch a step is three 64x256x256 products plus ~40 operations of autograd
and dispatch; :func:`td_gradients` computes the loss of :func:`agents.dqn.dqn_loss` and its
gradient for K stacked members (a single run is K = 1) in ~25 NumPy operations with no graph,
writing into views of the members' gradient buffer (:class:`agents.members.MemberQ`). Only
the loss's derivative with respect to the Q-values is written here, equal to autograd's up
to float rounding (tests compare them); clipping, the optimizer step and all telemetry stay
in torch. The TD targets are :func:`agents.dqn.td_targets` itself, fed this engine's
Q-values.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor, nn

from .dqn import LOSSES, Q_VALUES, REDUCTIONS, TD_LOSS, QNetwork
from .numpy_mlp import Layers, backward, cpu_float, forward


def supports(model: nn.Module) -> bool:
    """Whether the engine can train ``model``: a :class:`QNetwork` in float on the CPU."""
    return type(model) is QNetwork and cpu_float(list(model.parameters()))


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
    return {TD_LOSS: value, Q_VALUES: q_taken.mean(-1)}
