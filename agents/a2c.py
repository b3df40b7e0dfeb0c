"""A2C: the synchronous advantage actor-critic loss over one rollout.

Matches Stable-Baselines3's A2C: n-step returns (GAE with lambda = 1 by default), no advantage
normalisation, loss = policy_loss + vf_coef * value_loss - ent_coef * entropy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from torch import Tensor

from .returns import compute_gae, masked_mean
from .rollout import Rollout

POLICY_LOSS, VALUE_LOSS, ENTROPY = "losses/policy_loss", "losses/value_loss", "losses/entropy"
TAGS: dict[str, tuple[str, str]] = {
    POLICY_LOSS: ("scalar", "-mean of advantage x log-probability of the action taken"),
    VALUE_LOSS: ("scalar", "mean squared error of the value against its n-step / GAE target"),
    ENTROPY: ("scalar", "mean entropy of the policy"),
}
"""A2C's metrics: (kind, meaning) per tag."""


class A2CHyper(Protocol):
    """The A2C settings the loss reads (``rl_rmsprop.config.A2CConfig`` has them)."""

    gae_lambda: float
    ent_coef: float
    vf_coef: float


def rollout_gae(
    rollout: Rollout, values: Tensor, next_values: Tensor, gamma: float, gae_lambda: float
) -> tuple[Tensor, Tensor]:
    """:func:`~agents.returns.compute_gae` of a rollout: ``(advantages, returns)``, ``[T, E]``."""
    return compute_gae(
        rollout.rewards,
        values,
        next_values,
        rollout.terminated,
        rollout.truncated,
        rollout.valid,
        gamma,
        gae_lambda,
    )


def a2c_loss(
    model: Callable[[Tensor], tuple[Tensor, Tensor]],
    rollout: Rollout,
    hp: A2CHyper,
    gamma: float,
    mean: Callable[[Tensor, Tensor], Tensor] = masked_mean,
) -> tuple[Tensor, dict[str, Any]]:
    """The A2C loss of one rollout and its metrics (``losses/*`` tags).

    One forward pass over all ``T + 1`` observations gives the values of the inputs and,
    detached, of the successors (for bootstrapping, including at truncation). Autoreset steps
    (``rollout.valid`` False) are left out of every mean.

    Args:
        model: observations ``[T + 1, E, ...]`` -> logits ``[T + 1, E, A]``, values
            ``[T + 1, E]`` (an actor-critic, or a population over member-major envs).
        rollout: the rollout.
        hp: ent_coef, vf_coef, gae_lambda.
        gamma: discount factor.
        mean: masked mean over ``[T, E]``; a population's per-member mean makes the loss and
            every metric a ``[K]`` tensor.
    """
    logits, values = model(rollout.obs)
    v, next_v = values[:-1], values[1:].detach()
    advantages, returns = rollout_gae(rollout, v.detach(), next_v, gamma, hp.gae_lambda)
    log_probs = logits[:-1].log_softmax(-1)
    taken = log_probs.gather(-1, rollout.actions.unsqueeze(-1)).squeeze(-1)
    valid = rollout.valid
    policy_loss = -mean(advantages * taken, valid)
    value_loss = mean((returns - v).square(), valid)
    entropy = mean(-(log_probs.exp() * log_probs).sum(-1), valid)
    loss = policy_loss + hp.vf_coef * value_loss - hp.ent_coef * entropy
    metrics = {
        POLICY_LOSS: policy_loss.detach(),
        VALUE_LOSS: value_loss.detach(),
        ENTROPY: entropy.detach(),
    }
    return loss, metrics
