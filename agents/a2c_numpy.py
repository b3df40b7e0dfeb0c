"""A2C for the MLP actor-critic on the CPU in NumPy: acting, loss and gradients, no autograd.

A single CartPole run's networks are two 64-wide MLPs fed 8 observations per env step and 48
per update. At these sizes every torch operation costs its dispatch (several microseconds),
not its arithmetic, and an update through autograd is ~60 operations plus the graph walk.
NumPy's per-operation cost is a fraction of that, so here:

* the policy's logits come from NumPy products on views of the model's parameters
  (:meth:`NumpyA2C.numpy_logits`; actions are sampled from them with the run's own noise by
  :func:`agents.population.sample_actions`, as under the torch engine);
* the loss of :func:`agents.a2c.a2c_loss` and its gradient come from :func:`a2c_gradients`,
  the one batched CPU engine that populations use too, and the gradients are written into
  each parameter's ``.grad`` (for the optimizer, in torch, as always).

The arithmetic is the same as autograd's up to float rounding (tests compare them); the model,
its ``state_dict`` and the optimizer are untouched, so checkpoints, telemetry and evaluation
do not know which engine trained.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .networks import ActorCritic
from .numpy_mlp import Layers, ParamViews, backward, cpu_float, forward, linear_params
from .rollout import Rollout


def supports(model: nn.Module) -> bool:
    """Whether :class:`NumpyA2C` can train ``model``: an MLP actor-critic in float on the CPU."""
    return type(model) is ActorCritic and cpu_float(list(model.parameters()))


def _layers(net: nn.Sequential) -> list[nn.Linear]:
    return [m for m in net if isinstance(m, nn.Linear)]


class NumpyA2C:
    """Acts with and computes A2C gradients for an :class:`~agents.networks.ActorCritic`.

    Holds no parameters of its own, only NumPy views of the model's parameters and gradients
    (:class:`~agents.numpy_mlp.ParamViews`).

    Args:
        model: the actor-critic (see :func:`supports`).
    """

    def __init__(self, model: ActorCritic) -> None:
        if not supports(model):
            raise ValueError("NumpyA2C needs an ActorCritic (MLP) with float parameters on the CPU")
        self.model = model
        self.policy = _layers(model.policy)
        self.value = _layers(model.value)
        self._views = {
            "policy": ParamViews(linear_params(self.policy)),
            "value": ParamViews(linear_params(self.value)),
        }

    def _weights(self, net: str) -> Layers:
        return self._views[net].weights()

    def _grads(self, net: str) -> Layers:
        return self._views[net].grads()

    def numpy_logits(self, obs: np.ndarray) -> np.ndarray:
        """Action logits ``[E, A]`` of CPU observations ``[E, d]``, in NumPy."""
        weights = self._weights("policy")
        return forward(obs.astype(weights[0][0].dtype, copy=False), weights, "tanh")[-1]

    def logits(self, obs: Tensor) -> Tensor:
        """:meth:`numpy_logits` as a tensor."""
        return torch.from_numpy(self.numpy_logits(obs.numpy()))

    def gradients(self, rollout: Rollout, hp: Any, gamma: float) -> dict[str, float]:
        """The A2C loss of ``rollout``; its gradient is written into the parameters' ``.grad``.

        Args:
            rollout: ``T`` steps of ``E`` envs.
            hp: ent_coef, vf_coef, gae_lambda.
            gamma: discount factor.

        Returns:
            The ``losses/*`` metrics as floats.
        """
        pw, vw = self._weights("policy"), self._weights("value")
        obs = rollout.obs.numpy()
        x = obs.reshape(-1, obs.shape[-1]).astype(pw[0][0].dtype, copy=False)
        nets = {"policy": (pw, self._grads("policy")), "value": (vw, self._grads("value"))}
        _, metrics = a2c_gradients(x, nets, rollout, hp, gamma)
        return {tag: float(value) for tag, value in metrics.items()}


def to_member_major(a: np.ndarray, members: int | None) -> np.ndarray:
    """``[T, K * E, ...]`` (env-major rows of a rollout) -> ``[K, T * E, ...]`` (a copy).

    ``members`` None: one unstacked run, ``[T, E, ...]`` -> ``[T * E, ...]``.
    """
    t, n = a.shape[:2]
    rest = a.shape[2:]
    if members is None:
        return a.reshape(t * n, *rest)
    per_member = n // members
    return a.reshape(t, members, per_member, *rest).swapaxes(0, 1).reshape(members, -1, *rest)


def a2c_gradients(
    x: np.ndarray,
    nets: dict[str, tuple[Layers, Layers]],
    rollout: Rollout,
    hp: Any,
    gamma: float,
    members: int | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The batched CPU engine: :func:`agents.a2c.a2c_loss` and its gradient, in NumPy.

    One run (``members`` None: arrays ``[rows, ...]``) or K members stacked (``[K, rows,
    ...]``, weights ``[K, out, in]``), with the same code: every product, sum and mean is
    per member, so members stay independent. Only the loss's derivative with respect to the
    network outputs is written here; :func:`~agents.numpy_mlp.backward` takes it through
    the layers. With p = softmax(z), H a step's entropy and w = 1 / (the member's valid
    steps) at valid steps, 0 elsewhere (selected away, so a nan there does not leak):

    * dL/dz = -w A (onehot(a) - p) + ent_coef w p (log p + H) for the policy logits z;
    * dL/dv = -2 vf_coef w (R - v) for the values of the steps' inputs (the observation
      after the rollout is only bootstrapped from).

    GAE runs env-major (``[T, K * E]``, as the rollout), the loss member-major. Overflow in a
    member whose parameters diverged gives inf or nan silently, as torch does (the trainer
    stops such a member). Tests check the gradient against autograd's.

    Args:
        x: the rollout's ``T + 1`` observations, member-major: ``[(K,) (T + 1) E, d]`` in
            the weights' dtype.
        nets: ``{"policy": (layers, grads), "value": (layers, grads)}``: each network's
            ``(weight, bias)`` views and the gradient views to overwrite.
        rollout: ``T`` steps of ``K * E`` envs.
        hp: ent_coef, vf_coef, gae_lambda.
        gamma: discount factor.
        members: K, or None for one run.

    Returns:
        The losses and the ``losses/*`` metrics, ``[K]`` arrays (0-d for one run).
    """
    with np.errstate(all="ignore"):
        return _a2c_gradients(x, nets, rollout, hp, gamma, members)


def _a2c_gradients(
    x: np.ndarray,
    nets: dict[str, tuple[Layers, Layers]],
    rollout: Rollout,
    hp: Any,
    gamma: float,
    members: int | None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    steps = rollout.actions.shape[0]
    k = 1 if members is None else members
    rows = steps * rollout.actions.shape[1] // k  # each member's differentiated rows
    (pw, p_grads), (vw, v_grads) = nets["policy"], nets["value"]
    dtype = x.dtype
    p_outs = forward(x[..., :rows, :], pw, "tanh")
    v_outs = forward(x, vw, "tanh")
    member_values = v_outs[-1][..., 0]  # [(K,) (T + 1) E]
    if members is None:
        values = member_values.reshape(steps + 1, -1)
    else:
        values = member_values.reshape(k, steps + 1, -1).swapaxes(0, 1).reshape(steps + 1, -1)
    adv, ret = rollout_gae(rollout, values, gamma, hp.gae_lambda)
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
        "losses/policy_loss": policy_loss,
        "losses/value_loss": value_loss,
        "losses/entropy": entropy,
    }
    return losses, metrics


def rollout_gae(
    rollout: Rollout, values: np.ndarray, gamma: float, gae_lambda: float
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`gae` of a rollout, given the values ``[T + 1, E]`` of its observations.

    Returns:
        ``(advantages, returns)``, ``[T, E]``, in the values' dtype.
    """
    return gae(
        rollout.rewards.numpy().astype(values.dtype, copy=False),
        values[:-1],
        values[1:],
        rollout.terminated.numpy(),
        rollout.truncated.numpy(),
        rollout.valid.numpy(),
        gamma,
        gae_lambda,
    )


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    valid: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`agents.returns.compute_gae` in NumPy (same rule; inputs already checked).

    Returns:
        ``(advantages, returns)``, ``[T, E]``, zero at invalid steps.
    """
    zero = rewards.dtype.type(0)
    deltas = rewards + gamma * np.where(terminated, zero, next_values) - values
    carry = ~(terminated | truncated)
    adv = np.empty_like(deltas)
    next_adv = np.zeros_like(deltas[0])
    chain = gamma * gae_lambda
    for t in range(rewards.shape[0] - 1, -1, -1):
        chained = deltas[t] + chain * np.where(carry[t], next_adv, zero)
        next_adv = np.where(valid[t], chained, zero)
        adv[t] = next_adv
    return adv, np.where(valid, adv + values, zero)
