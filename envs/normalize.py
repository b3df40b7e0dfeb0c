"""Observation and reward normalization, as Stable-Baselines3's ``VecNormalize`` does it.

Built from Gymnasium's vector wrappers, outside the episode statistics, so logged returns stay
the environment's own:

* observations: running mean and variance over every observation seen, ``(o - mean) /
  sqrt(var + 1e-8)``, clipped to [-10, 10];
* rewards: divided by the running standard deviation of the discounted return (no mean
  subtracted), clipped to [-10, 10].

The running statistics are plain arrays inside the wrappers, so a checkpoint's env state
(:mod:`envs.state`) holds them. Evaluation normalizes its observations with a frozen copy of
the training statistics and leaves rewards alone (:func:`frozen_observations`); a finished
run keeps them in ``normalization.pt`` for ``python -m rl_rmsprop.evaluate``.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from gymnasium.vector import VectorEnv
from gymnasium.wrappers.vector import (
    ClipReward,
    NormalizeObservation,
    NormalizeReward,
    TransformObservation,
)

CLIP = 10.0
"""Bound of the normalized observations and rewards (VecNormalize's clip_obs, clip_reward)."""

EPSILON = 1e-8
"""Added to the variances before the square root (VecNormalize's epsilon)."""


def _clip_observations(obs: np.ndarray) -> np.ndarray:
    return np.clip(obs, -CLIP, CLIP)


def normalize(env: VectorEnv, gamma: float) -> VectorEnv:
    """``env`` with normalized, clipped observations and rewards (``gamma``: the discount)."""
    env = NormalizeObservation(env, epsilon=EPSILON)
    env = TransformObservation(env, _clip_observations)
    env = NormalizeReward(env, gamma=gamma, epsilon=EPSILON)
    return ClipReward(env, -CLIP, CLIP)


def observation_normalizer(env: Any) -> NormalizeObservation | None:
    """The :class:`NormalizeObservation` in ``env``'s wrapper chain, or None."""
    while env is not None:
        if isinstance(env, NormalizeObservation):
            return env
        env = getattr(env, "env", None)
    return None


def observation_statistics(env: Any) -> dict[str, np.ndarray] | None:
    """Copies of ``env``'s running observation statistics (``mean``, ``var``, ``count``), or None.

    None when ``env`` does not normalize its observations.
    """
    normalizer = observation_normalizer(env)
    if normalizer is None:
        return None
    rms = normalizer.obs_rms
    return {"mean": rms.mean.copy(), "var": rms.var.copy(), "count": np.array(rms.count)}


def frozen_observations(env: VectorEnv, statistics: dict[str, np.ndarray]) -> VectorEnv:
    """``env`` normalizing observations by fixed ``statistics`` (observation_statistics's)."""
    env = NormalizeObservation(env, epsilon=EPSILON)
    rms = copy.deepcopy(env.obs_rms)
    rms.mean = np.asarray(statistics["mean"], dtype=rms.mean.dtype).copy()
    rms.var = np.asarray(statistics["var"], dtype=rms.var.dtype).copy()
    rms.count = float(np.asarray(statistics["count"]))
    env.obs_rms = rms
    env.update_running_mean = False
    return TransformObservation(env, _clip_observations)
