"""The shared rollout collector: steps a Gymnasium vector env with a policy.

Gymnasium >= 1.0 vector envs reset a finished sub-environment on the NEXT call to ``step``: that
call ignores the action and returns the reset observation with reward 0. Such a transition is
marked ``valid = False`` and must never be learned from. Truncation is not termination: the
observation returned with ``truncated = True`` is the episode's real last observation, so value
targets can bootstrap from it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor


class Rollout(NamedTuple):
    """``n_steps`` steps of ``E`` environments, time-major."""

    obs: Tensor
    """``[T + 1, E, *obs_shape]``: obs[t] is the input of step t, obs[t + 1] what it returned."""
    actions: Tensor
    """``[T, E]``."""
    rewards: Tensor
    """``[T, E]`` (float32)."""
    terminated: Tensor
    """``[T, E]`` bool: the episode ended in a terminal state at step t."""
    truncated: Tensor
    """``[T, E]`` bool: the episode was cut by a time limit at step t (bootstrap)."""
    valid: Tensor
    """``[T, E]`` bool: False for autoreset steps, which carry no transition."""


class Step(NamedTuple):
    """One step of ``E`` environments (what :meth:`Collector.step` returns)."""

    obs: np.ndarray
    """``[E, *obs_shape]``: the observations the actions were taken in."""
    actions: Tensor
    """``[E]``: the policy's actions, on its device."""
    rewards: np.ndarray
    """``[E]``."""
    terminated: np.ndarray
    """``[E]`` bool."""
    truncated: np.ndarray
    """``[E]`` bool."""
    valid: np.ndarray
    """``[E]`` bool: False for autoreset steps."""
    next_obs: np.ndarray
    """``[E, *obs_shape]``: what ``step`` returned (the true last observation on truncation)."""


class Episode(NamedTuple):
    """A finished episode, as recorded by the env's RecordEpisodeStatistics."""

    step: int
    """Global env step at which it finished."""
    episodic_return: float
    length: int
    env: int = 0
    """Which copy of the vector env it ran in."""


class EnvStepFailed(Exception):  # noqa: N818 (a stop, reported as one line)
    """The environment raised an exception in ``reset`` or ``step`` (its own error, not ours).

    ``OSError``s that say a vector env's worker process is gone (a broken pipe) are not
    wrapped: the run loop reports those as a crashed worker.
    """

    def __init__(self, call: str, error: BaseException) -> None:
        text = " ".join(str(error).split()) or "no message"
        super().__init__(f"the environment raised {type(error).__name__} in {call} ({text})")
        self.error = error


WORKER_DIED = (BrokenPipeError, EOFError, ConnectionResetError)
"""What stepping an async vector env raises when one of its worker processes is gone."""


def env_call(call: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` (an env's ``reset`` or ``step``), its errors as EnvStepFailed."""
    try:
        return fn(*args, **kwargs)
    except WORKER_DIED:
        raise
    except Exception as e:
        raise EnvStepFailed(call, e) from e


class Collector:
    """Keeps a vector env's current observation, autoreset flags and finished episodes.

    Args:
        env: a Gymnasium vector env with RecordEpisodeStatistics (``envs.make_vector_env``).
        seed: seed of the first reset.
        device: where observation tensors go.
    """

    def __init__(self, env: Any, seed: int, device: torch.device) -> None:
        self.env = env
        self.device = device
        obs, _ = env_call("reset", env.reset, seed=seed)
        self.obs = obs
        self.num_envs = env.num_envs
        self.prev_done = np.zeros(self.num_envs, dtype=bool)
        self.global_step = 0
        self.finished: list[Episode] = []

    def _tensor(self, x: np.ndarray, dtype: torch.dtype | None = None) -> Tensor:
        return torch.as_tensor(x, dtype=dtype, device=self.device)

    def _obs_tensor(self, x: np.ndarray) -> Tensor:
        # Image frames stay uint8 (a quarter of the bytes; the network divides by 255).
        return self._tensor(x, None if x.dtype == np.uint8 else torch.float32)

    def step(self, policy: Callable[[Tensor], Tensor]) -> Step:
        """Step every environment once with ``policy`` (observations -> actions)."""
        obs = self.obs
        actions = policy(self._obs_tensor(obs))
        next_obs, reward, terminated, truncated, info = env_call(
            "step", self.env.step, actions.cpu().numpy()
        )
        valid = ~self.prev_done
        self.prev_done = terminated | truncated
        self.global_step += self.num_envs
        self._record(info)
        self.obs = next_obs
        return Step(obs, actions, reward, terminated, truncated, valid, next_obs)

    def collect(self, policy: Callable[[Tensor], Tensor], n_steps: int) -> Rollout:
        """Step every environment ``n_steps`` times; the steps stacked time-major."""
        steps = [self.step(policy) for _ in range(n_steps)]
        # np.array of equal-shaped arrays stacks them as np.stack does, at a quarter of the
        # call's cost for a handful of small arrays.
        return Rollout(
            obs=self._obs_tensor(np.array([steps[0].obs, *(s.next_obs for s in steps)])),
            actions=torch.stack([s.actions for s in steps]),
            rewards=self._tensor(np.array([s.rewards for s in steps]), torch.float32),
            terminated=self._tensor(np.array([s.terminated for s in steps])),
            truncated=self._tensor(np.array([s.truncated for s in steps])),
            valid=self._tensor(np.array([s.valid for s in steps])),
        )

    def _record(self, info: dict[str, Any]) -> None:
        if "episode" not in info:
            return
        stats = info["episode"]
        for i in np.flatnonzero(info["_episode"]):
            episode = Episode(self.global_step, float(stats["r"][i]), int(stats["l"][i]), int(i))
            self.finished.append(episode)

    def state_dict(self) -> dict[str, Any]:
        """Everything but the env: current observations, autoreset flags, counts, episodes."""
        return {
            "obs": self.obs,
            "prev_done": self.prev_done,
            "global_step": self.global_step,
            "finished": list(self.finished),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (the env is restored separately)."""
        self.obs, self.prev_done = state["obs"], state["prev_done"]
        self.global_step = state["global_step"]
        self.finished = [Episode(*e) for e in state["finished"]]

    def pop_finished(self) -> list[Episode]:
        """Episodes finished since the last call."""
        out, self.finished = self.finished, []
        return out


def mean_of_last(returns: deque[float], n: int) -> float | None:
    """Mean of the last ``n`` entries of a window of returns; None when it is empty."""
    return float(np.mean(list(returns)[-n:])) if returns else None
