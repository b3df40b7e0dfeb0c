"""A2C's loss gradient for MLP actor-critics on the CPU, in NumPy: the batched CPU engine.

A CartPole member's networks are two 64-wide MLPs fed 8 observations per env step and 48 per
update. At these sizes every torch operation costs its dispatch (several microseconds), not
its arithmetic, and an update through autograd is ~60 operations plus the graph walk. NumPy's
per-operation cost is a fraction of that, so :func:`a2c_gradients` computes the loss of
:func:`agents.a2c.a2c_loss` and its gradient for K stacked members at once (a single run is
K = 1), writing into views of the members' gradient buffer
(:func:`agents.population.numpy_a2c_gradients`). Only the loss's derivative with respect to
the network outputs is written here; :mod:`agents.numpy_mlp` takes it through the layers.
The arithmetic is autograd's up to float rounding (tests compare them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .a2c import ENTROPY, POLICY_LOSS, VALUE_LOSS, rollout_gae
from .numpy_mlp import Layers, backward, forward
from .rollout import Rollout


def to_member_major(a: np.ndarray, members: int) -> np.ndarray:
    """``[T, K * E, ...]`` (env-major rows of a rollout) -> ``[K, T * E, ...]`` (a copy)."""
    t, n = a.shape[:2]
    rest = a.shape[2:]
    per_member = n // members
    return a.reshape(t, members, per_member, *rest).swapaxes(0, 1).reshape(members, -1, *rest)


def a2c_gradients(
    x: np.ndarray,
    nets: dict[str, tuple[Layers, Layers]],
    rollout: Rollout,
    hp: Any,
    gamma: float,
    members: int,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The batched CPU engine: :func:`agents.a2c.a2c_loss` and its gradient, in NumPy.

    K members stacked (``[K, rows, ...]``, weights ``[K, out, in]``): every product, sum and
    mean is per member, so members stay independent. Only the loss's derivative with respect
    to the network outputs is written here; :func:`~agents.numpy_mlp.backward` takes it
    through the layers. With p = softmax(z), H a step's entropy and w = 1 / (the member's valid
    steps) at valid steps, 0 elsewhere (selected away, so a nan there does not leak):

    * dL/dz = -w A (onehot(a) - p) + ent_coef w p (log p + H) for the policy logits z;
    * dL/dv = -2 vf_coef w (R - v) for the values of the steps' inputs (the observation
      after the rollout is only bootstrapped from).

    GAE is :func:`agents.returns.compute_gae` (torch, on views of the values), env-major
    (``[T, K * E]``, as the rollout); the loss runs member-major. Overflow in a
    member whose parameters diverged gives inf or nan silently, as torch does (the trainer
    stops such a member). Tests check the gradient against autograd's.

    Args:
        x: the rollout's ``T + 1`` observations, member-major: ``[K, (T + 1) E, d]`` in
            the weights' dtype.
        nets: ``{"policy": (layers, grads), "value": (layers, grads)}``: each network's
            ``(weight, bias)`` views and the gradient views to overwrite.
        rollout: ``T`` steps of ``K * E`` envs.
        hp: ent_coef, vf_coef, gae_lambda.
        gamma: discount factor.
        members: K.

    Returns:
        The losses and the ``losses/*`` metrics, ``[K]`` arrays.
    """
    with np.errstate(all="ignore"):
        return _a2c_gradients(x, nets, rollout, hp, gamma, members)


def _a2c_gradients(
    x: np.ndarray,
    nets: dict[str, tuple[Layers, Layers]],
    rollout: Rollout,
    hp: Any,
    gamma: float,
    members: int,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    steps = rollout.actions.shape[0]
    k = members
    rows = steps * rollout.actions.shape[1] // k  # each member's differentiated rows
    (pw, p_grads), (vw, v_grads) = nets["policy"], nets["value"]
    dtype = x.dtype
    p_outs = forward(x[..., :rows, :], pw, "tanh")
    v_outs = forward(x, vw, "tanh")
    member_values = v_outs[-1][..., 0]  # [(K,) (T + 1) E]
    values = member_values.reshape(k, steps + 1, -1).swapaxes(0, 1).reshape(steps + 1, -1)
    both = torch.from_numpy(values)  # the one GAE, on views of the values
    adv, ret = (a.numpy() for a in rollout_gae(rollout, both[:-1], both[1:], gamma, hp.gae_lambda))
    mask, adv, ret = (to_member_major(a, members) for a in (rollout.valid.numpy(), adv, ret))
    v = member_values[..., :rows]
    actions = to_member_major(rollout.actions.numpy(), members)[..., None]
    logits = p_outs[-1]  # [(K,) T * E, A]
    onehot = actions == np.arange(logits.shape[-1])  # selects exactly (0 elsewhere, no 0 * inf)
    shifted = logits - logits.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    p = np.exp(log_p)
    plogp = p * log_p
    step_entropy = -plogp.sum(-1)
    zero = dtype.type(0)
    count = np.maximum(mask.sum(-1), 1).astype(dtype)
    taken = np.where(onehot, log_p, zero).sum(-1)
    policy_loss = -np.where(mask, adv * taken, zero).sum(-1) / count
    err = ret - v
    value_loss = np.where(mask, err * err, zero).sum(-1) / count
    entropy = np.where(mask, step_entropy, zero).sum(-1) / count
    losses = policy_loss + hp.vf_coef * value_loss - hp.ent_coef * entropy

    weight = (1.0 / count)[..., None]  # [(K,) 1]
    scaled_adv = (weight * adv)[..., None]
    d_logits = p * scaled_adv - np.where(onehot, scaled_adv, zero)  # -w A (onehot(a) - p) ...
    if hp.ent_coef:  # ... + ent_coef w p (log p + H)
        d_logits += (hp.ent_coef * weight)[..., None] * (plogp + p * step_entropy[..., None])
    d_logits = np.where(mask[..., None], d_logits, zero).astype(dtype, copy=False)
    d_values = np.where(mask, (-2.0 * hp.vf_coef) * weight * err, zero)[..., None]
    backward(x, p_outs, pw, d_logits, p_grads, "tanh")
    backward(x, v_outs, vw, d_values.astype(dtype, copy=False), v_grads, "tanh")
    metrics = {
        POLICY_LOSS: policy_loss,
        VALUE_LOSS: value_loss,
        ENTROPY: entropy,
    }
    return losses, metrics
