"""Observation and reward normalization, as Stable-Baselines3's ``VecNormalize`` does it.

Built from Gymnasium's vector wrappers, outside the episode statistics, so logged returns stay
the environment's own:

* observations: running mean and variance over every observation seen, ``(o - mean) /
  sqrt(var + 1e-8)``, clipped to [-10, 10];
* rewards: divided by the running standard deviation of the discounted return (no mean
  subtracted), clipped to [-10, 10]. The return restarts at every episode end, truncations
  included, as in ``VecNormalize`` (:class:`NormalizeReturn`; Gymnasium 1.4's
  ``NormalizeReward`` carries it across a truncation and a terminal reward into the next
  episode, which on MountainCar, where every early episode is truncated, shrinks the
  statistics' std ever further: docs/benchmarks.md).

The running statistics are plain arrays inside the wrappers, so a checkpoint's env state
(:mod:`envs.state`) holds them. Evaluation normalizes its observations with a frozen copy of
the training statistics and leaves rewards alone (:func:`frozen_observations`); a finished
run keeps them in ``normalization.pt`` for ``python -m rl_rmsprop.evaluate``.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from gymnasium.vector import VectorEnv, VectorWrapper
from gymnasium.wrappers.utils import RunningMeanStd
from gymnasium.wrappers.vector import NormalizeObservation, TransformObservation

CLIP = 10.0
"""Bound of the normalized observations and rewards (VecNormalize's clip_obs, clip_reward)."""

EPSILON = 1e-8
"""Added to the variances before the square root (VecNormalize's epsilon)."""


def _clip_observations(obs: np.ndarray) -> np.ndarray:
    return np.clip(obs, -CLIP, CLIP)


class NormalizeReturn(VectorWrapper):
    """Rewards divided by the running std of the discounted return, then clipped.

    ``VecNormalize``'s rule: per env, ``G = gamma * G + r``; the running statistics take every
    ``G``; the reward becomes ``clip(r / sqrt(var + eps), -10, 10)``; ``G`` restarts at 0
    after a terminal or a truncated step. The step that follows an episode's end under
    next-step autoreset (the new episode's first observation, reward 0) is not a transition
    and changes nothing.
    """

    def __init__(self, env: VectorEnv, gamma: float, epsilon: float = EPSILON) -> None:
        """Wrap ``env``; ``gamma`` is the discount of the return whose std scales rewards."""
        super().__init__(env)
        self.gamma = float(gamma)
        self.epsilon = float(epsilon)
        self.return_rms = RunningMeanStd(shape=())
        self.returns = np.zeros(self.num_envs)
        self.ended = np.zeros(self.num_envs, dtype=bool)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Reset the envs and their returns; the statistics carry on."""
        self.returns[:] = 0.0
        self.ended[:] = False
        return self.env.reset(**kwargs)

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Step the envs; their rewards scaled by the return's running std and clipped."""
        obs, reward, terminated, truncated, info = self.env.step(actions)
        live = ~self.ended
        self.returns[live] = self.returns[live] * self.gamma + reward[live]
        if live.any():
            self.return_rms.update(self.returns[live])
        scaled = np.clip(reward / np.sqrt(self.return_rms.var + self.epsilon), -CLIP, CLIP)
        self.ended = np.logical_or(terminated, truncated)
        self.returns[self.ended] = 0.0
        return obs, scaled, terminated, truncated, info


def normalize(env: VectorEnv, gamma: float) -> VectorEnv:
    """``env`` with normalized, clipped observations and rewards (``gamma``: the discount)."""
    env = NormalizeObservation(env, epsilon=EPSILON)
    env = TransformObservation(env, _clip_observations)
    return NormalizeReturn(env, gamma)


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
