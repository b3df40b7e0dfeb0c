"""A2C for the MLP actor-critic on the CPU in NumPy: acting, loss and gradients, no autograd.

A single CartPole run's networks are two 64-wide MLPs fed 8 observations per env step and 48
per update. At these sizes every torch operation costs its dispatch (several microseconds),
not its arithmetic, and an update through autograd is ~60 operations plus the graph walk.
NumPy's per-operation cost is a fraction of that, so here:

* the policy acts by NumPy products on views of the model's parameters, with the Gumbel noise
  drawn from torch's global generator exactly as :func:`~agents.networks.sample_categorical`
  draws it (the same random stream, so a run's RNG state and checkpoints mean the same);
* the loss of :func:`agents.a2c.a2c_loss` is computed and differentiated by hand, and the
  gradients are written into each parameter's ``.grad`` (for the optimizer, in torch, as
  always).

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

    def act(self, obs: Tensor, greedy: bool = False) -> Tensor:
        """Sample actions ``[E]`` for observations ``[E, d]`` (most likely with ``greedy``).

        The noise is ``torch.empty(E, A).exponential_()`` from torch's global generator: the
        draws :func:`~agents.networks.sample_categorical` makes, in the same order.
        """
        weights = self._weights("policy")
        logits = forward(obs.numpy().astype(weights[0][0].dtype, copy=False), weights, "tanh")[-1]
        if not greedy:
            noise = torch.empty(logits.shape, dtype=self.policy[-1].weight.dtype).exponential_()
            logits = logits - np.log(noise.numpy())
        return torch.from_numpy(logits.argmax(-1))

    def gradients(self, rollout: Rollout, hp: Any, gamma: float) -> dict[str, float]:
        """The A2C loss of ``rollout``; its gradient is written into the parameters' ``.grad``.

        The loss is :func:`agents.a2c.a2c_loss`'s (GAE advantages and returns from the detached
        values; policy, value and entropy terms averaged over the valid steps). With p the
        softmax of the logits, H a step's entropy and w = 1 / (valid steps) at valid steps
        (0 elsewhere):

        * dL/dlogits = -w A (onehot(a) - p) + ent_coef w p (log p + H);
        * dL/dv = -2 vf_coef w (R - v) for the values of the steps' inputs (the observation
          after the rollout is only bootstrapped from);
        * then through each layer: dW = dz^T h, db = sum dz, dh = dz W (1 - h^2).

        Masked-out steps get exactly 0 (selected away, so a nan there does not leak).

        Args:
            rollout: ``T`` steps of ``E`` envs.
            hp: ent_coef, vf_coef, gae_lambda.
            gamma: discount factor.

        Returns:
            The ``losses/*`` metrics as floats.
        """
        steps, envs = rollout.actions.shape
        rows = steps * envs
        pw, vw = self._weights("policy"), self._weights("value")
        dtype = pw[0][0].dtype
        obs = rollout.obs.numpy()
        x = obs.reshape(obs.shape[0] * envs, -1).astype(dtype, copy=False)
        p_outs = forward(x[:rows], pw, "tanh")
        v_outs = forward(x, vw, "tanh")
        values = v_outs[-1].reshape(steps + 1, envs)
        v = values[:-1]
        valid = rollout.valid.numpy()
        adv, ret = rollout_gae(rollout, values, gamma, hp.gae_lambda)

        logits = p_outs[-1]  # [rows, A]
        shifted = logits - logits.max(-1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        p = np.exp(log_p)
        actions = rollout.actions.numpy().reshape(rows)
        mask = valid.reshape(rows)
        count = max(int(mask.sum()), 1)
        adv_f, ret_f, v_f = adv.reshape(rows), ret.reshape(rows), v.reshape(rows)
        taken = log_p[np.arange(rows), actions]
        plogp = p * log_p
        entropy_step = -plogp.sum(-1)
        zero = dtype.type(0)
        policy_loss = -np.where(mask, adv_f * taken, zero).sum() / count
        err = ret_f - v_f
        value_loss = np.where(mask, err * err, zero).sum() / count
        entropy = np.where(mask, entropy_step, zero).sum() / count

        weight = dtype.type(1.0 / count)
        d_logits = p * (weight * adv_f)[:, None]
        d_logits[np.arange(rows), actions] -= weight * adv_f
        if hp.ent_coef:
            d_logits += (hp.ent_coef * weight) * (plogp + p * entropy_step[:, None])
        d_logits = np.where(mask[:, None], d_logits, zero)
        d_values = np.where(mask, (-2.0 * hp.vf_coef * weight) * err, zero)[:, None]
        d_values = d_values.astype(dtype, copy=False)
        d_logits = d_logits.astype(dtype, copy=False)
        backward(x, p_outs, pw, d_logits, self._grads("policy"), "tanh")
        backward(x, v_outs, vw, d_values, self._grads("value"), "tanh")
        return {
            "losses/policy_loss": float(policy_loss),
            "losses/value_loss": float(value_loss),
            "losses/entropy": float(entropy),
        }


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
