"""Advantages and value targets over a rollout: GAE(lambda) and n-step returns.

Written for Gymnasium >= 1.0 vector envs with NEXT_STEP autoreset, time-major ``[T, E]``:

* ``next_values[t]`` is the value of the observation step t returned. When step t truncates an
  episode that observation is the episode's true last one (the reset comes a step later), so a
  truncated step bootstraps from it; a terminated step does not bootstrap at all.
* The step after a ``terminated | truncated`` one is the autoreset step: it returns the reset
  observation with reward 0 and carries no transition (``valid`` False). It gets advantage and
  return 0 and never leaks into its neighbours.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_unit_interval(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _check_inputs(tensors: dict[str, Tensor], flags: dict[str, Tensor]) -> None:
    shape = tensors["rewards"].shape
    if len(shape) != 2:
        raise ValueError(f"rewards must have shape [T, E], got {tuple(shape)}")
    for name, x in {**tensors, **flags}.items():
        if x.shape != shape:
            raise ValueError(
                f"{name} must have shape {tuple(shape)} like rewards, got {tuple(x.shape)}"
            )
    for name, x in tensors.items():
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    for name, x in flags.items():
        if x.dtype != torch.bool:
            raise ValueError(f"{name} must be a bool tensor, got {x.dtype}")


def compute_gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    valid: Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) with truncation and autoreset.

    Computed backwards over time, vectorized over environments::

        delta_t = r_t + gamma * next_values[t] * (1 - terminated_t) - values[t]
        A_t     = delta_t + gamma * lambda * (1 - done_t) * valid_{t+1} * A_{t+1}
        R_t     = A_t + values[t]

    with ``done_t = terminated_t | truncated_t``, ``A_T = 0``, and ``A_t = R_t = 0`` wherever
    ``valid[t]`` is False. The chain is cut at every episode end: a truncated step bootstraps
    once, from ``next_values[t]``, and nothing from the next episode flows back.

    With ``gae_lambda = 1`` the advantage telescopes to the plain n-step bootstrapped return
    ``R_t = r_t + gamma r_{t+1} + ... + gamma^k V(s_{t+k+1})`` (up to the rollout's end or the
    episode's end) minus ``values[t]``: what Stable-Baselines3's A2C trains on with its default
    ``gae_lambda=1.0``. ``gae_lambda = 0`` gives the one-step TD error.

    Args:
        rewards: ``[T, E]`` float rewards; ``rewards[t]`` is returned by step t.
        values: ``[T, E]`` V(obs_t), the value of step t's input observation.
        next_values: ``[T, E]`` V(obs_{t+1}), the value of the observation step t returned;
            ``next_values[T - 1]`` is the value of the observation after the rollout.
        terminated: ``[T, E]`` bool, the episode reached a terminal state at step t.
        truncated: ``[T, E]`` bool, the episode was cut (time limit) at step t.
        valid: ``[T, E]`` bool, False for autoreset steps, which carry no transition.
        gamma: discount factor in [0, 1].
        gae_lambda: GAE lambda in [0, 1].

    Returns:
        ``(advantages, returns)``, each ``[T, E]`` with the dtype that rewards, values and
        next_values promote to, and zero at invalid steps (mask those out of the loss, e.g.
        with :func:`masked_mean`).

    Raises:
        ValueError: on a shape other than a common ``[T, E]``, a non-float value tensor, a
            non-bool flag tensor, or ``gamma`` / ``gae_lambda`` outside [0, 1].
    """
    _check_inputs(
        {"rewards": rewards, "values": values, "next_values": next_values},
        {"terminated": terminated, "truncated": truncated, "valid": valid},
    )
    _check_unit_interval("gamma", gamma)
    _check_unit_interval("gae_lambda", gae_lambda)
    dtype = torch.promote_types(torch.promote_types(rewards.dtype, values.dtype), next_values.dtype)
    rewards, values, next_values = rewards.to(dtype), values.to(dtype), next_values.to(dtype)
    zero = rewards.new_zeros(())

    # torch.where, not multiplication by a 0/1 mask: the value of a terminal observation and
    # anything at an autoreset step may be arbitrary (even inf/nan) and 0 * nan is nan.
    bootstrap = torch.where(terminated, zero, next_values)
    deltas = torch.where(valid, rewards + gamma * bootstrap - values, zero)
    # The chain is cut after every episode end and before every invalid step (an invalid step
    # only follows a done one, but a malformed mask must not leak either): A_t is the chain
    # coefficient times A_{t+1} plus delta_t, both 0 at invalid steps, so A_t is 0 there.
    chain = torch.where(
        valid & ~(terminated | truncated), rewards.new_tensor(gamma * gae_lambda), zero
    )
    advantages: list[Tensor] = []
    next_adv = deltas.new_zeros(deltas.shape[1:])
    for t in reversed(range(rewards.shape[0])):  # two whole-row operations a step
        next_adv = deltas[t] + chain[t] * next_adv
        advantages.append(next_adv)
    # T = 0 leaves nothing to stack; the empty deltas have the right shape and dtype.
    adv = torch.stack(advantages[::-1]) if advantages else deltas.clone()
    returns = torch.where(valid, adv + values, zero)
    return adv, returns


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over the entries where ``mask`` is True; 0 when there are none.

    Masked-out entries are selected away rather than multiplied by 0, so a nan or inf there
    does not reach the result.

    Args:
        x: float tensor.
        mask: bool tensor of the same shape.

    Returns:
        A 0-dim tensor of ``x``'s dtype.

    Raises:
        ValueError: if the shapes differ or ``mask`` is not bool.
    """
    if mask.shape != x.shape:
        raise ValueError(f"mask must have the shape of x {tuple(x.shape)}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got {mask.dtype}")
    total = torch.where(mask, x, x.new_zeros(())).sum()
    # clamp: an all-False mask gives 0 / 1 = 0 instead of 0 / 0 = nan.
    count = mask.sum().clamp(min=1).to(x.dtype)
    return total / count
