"""One vector environment for a whole population: K members x E environments each.

Sub-environment ``k * E + e`` is environment ``e`` of member ``k``. Every member has its own
random streams, so what member k sees never depends on the other members (their seeds, their
actions, when their episodes end):

* CartPole-v1 runs on Gymnasium's native vectorized implementation, but with one reset
  generator per member instead of one for the whole vector. Member k's generator is seeded as
  a single run's native env with that seed is, and draws for that member's resetting
  environments only, so member k's environments follow the same stream as a single run's.
* Every other environment is a synchronous vector env whose sub-environment ``(k, e)`` is
  seeded with ``seed_k + e``, as a single run in sync mode seeds its sub-environment ``e``.
  An Atari game gets the single run's wrapper chain per sub-environment (``wrappers``), and
  its episodes are the games its own episode statistics report (a lost life ends a learning
  episode, not a game).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.utils import seeding
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from envs.make import EnvError, VectorActions, close_env, make_vector_env

__all__ = [
    "MemberEnvs",
    "MemberSeededCartPole",
    "PopulationEnv",
    "make_population_env",
    "member_env",
]


_Actions = VectorActions  # the name population checkpoints written before 2026-11-24 pickled


class MemberSeededCartPole(CartPoleVectorEnv):
    """Gymnasium's vectorized CartPole with one reset generator per member.

    Args:
        members: number of members K.
        envs_per_member: environments per member E.
        **kwargs: passed to ``CartPoleVectorEnv`` (``max_episode_steps``, ...).
    """

    def __init__(self, members: int, envs_per_member: int, **kwargs: Any) -> None:
        super().__init__(num_envs=members * envs_per_member, **kwargs)
        self.members, self.envs_per_member = members, envs_per_member
        self.member_rngs: list[np.random.Generator] = []
        self.action_space = VectorActions(self.action_space.nvec)

    def reset(
        self, *, seed: Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every environment; ``seed`` is one seed per member (required the first time)."""
        super().reset(seed=None if seed is None else int(seed[0]), options=options)
        if seed is not None:
            if len(seed) != self.members:
                raise ValueError(f"need {self.members} member seeds, got {len(seed)}")
            self.member_rngs = [seeding.np_random(int(s))[0] for s in seed]
        if not self.member_rngs:
            raise ValueError("the first reset needs one seed per member")
        self.state = np.concatenate(
            [self._draw(rng, self.envs_per_member) for rng in self.member_rngs], axis=1
        )
        return self.state.T.astype(np.float32), {}

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(low=self.low, high=self.high, size=(4, n))

    def step(self, action: np.ndarray) -> tuple[np.ndarray, ...]:
        """Gymnasium's step; the environments it resets then start from their member's stream.

        The dynamics, termination, truncation, rewards and the autoreset bookkeeping are
        Gymnasium's own. It draws the reset states of the environments that ended last step
        from the vector's one generator; those states are replaced by draws from each member's
        generator, exactly as the parent draws them for the whole vector.
        """
        resetting = np.flatnonzero(self.prev_done)  # member-major, so grouped by member
        obs, reward, terminated, truncated, info = super().step(action)
        if resetting.size:
            # A handful of columns a step: grouping them in Python is cheaper than np.unique.
            per_member = self.envs_per_member
            groups = itertools.groupby(resetting.tolist(), key=lambda col: col // per_member)
            draws = [self._draw(self.member_rngs[k], len(list(g))) for k, g in groups]
            self.state[:, resetting] = np.concatenate(draws, axis=1)
            obs[resetting] = self.state[:, resetting].T.astype(np.float32)
        return obs, reward, terminated, truncated, info


class PopulationEnv:
    """A vector env of ``members * envs_per_member`` sub-environments, member-major.

    One member may wrap any of a single run's vector envs (native, sync, async, ALE's, with
    normalization): copy e is then seeded with ``seed + e``, as the single run seeds it.

    It also keeps the episode statistics (as Gymnasium's ``RecordEpisodeStatistics`` does
    under next-step autoreset): ``step``'s info holds ``"episodes"``, the env indices, returns
    and lengths of the episodes that ended at this step.

    Args:
        env: the Gymnasium vector env (next-step autoreset).
        seeds: one seed per member.
        envs_per_member: E.
        reports_episodes: whether ``env`` reports every finished episode in its info
            (``info["episode"]``): every env ``make_vector_env`` builds does, and so do
            Atari copies, which report games while a lost life also ends a learning episode
            (``terminated``); False where this class counts them from the rewards.
    """

    def __init__(
        self,
        env: Any,
        seeds: Sequence[int],
        envs_per_member: int,
        reports_episodes: bool,
    ) -> None:
        self.env = env
        self.seeds = [int(s) for s in seeds]
        self.members = len(self.seeds)
        self.envs_per_member = envs_per_member
        self.num_envs = env.num_envs
        self.single_observation_space = env.single_observation_space
        self.single_action_space = env.single_action_space
        self.member_seeded = isinstance(env.unwrapped, MemberSeededCartPole)
        self.reports_episodes = reports_episodes
        """Episodes come from the env's info (a step without a report ends none)."""
        self.returns = np.zeros(self.num_envs)
        self.lengths = np.zeros(self.num_envs, dtype=np.int64)
        self.prev_done = np.zeros(self.num_envs, dtype=bool)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset with every member's own seeds (``seed`` is not used: each member has its own)."""
        self.returns[:], self.lengths[:], self.prev_done[:] = 0.0, 0, False
        if self.member_seeded:
            return self.env.reset(seed=self.seeds)
        if self.members == 1:  # a single run's env (any vectorization): seeded as it seeds
            return self.env.reset(seed=self.seeds[0])
        subs = [s + e for s in self.seeds for e in range(self.envs_per_member)]
        return self.env.reset(seed=subs)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        """Step all ``K * E`` environments (actions member-major, like the observations)."""
        obs, reward, terminated, truncated, info = self.env.step(actions)
        if self.reports_episodes:  # info is the step's own dict: "episodes" added to it
            stats = info.get("episode")
            if stats is None:
                info["episodes"] = _NONE
            else:
                ended = np.flatnonzero(info["_episode"])
                info["episodes"] = (
                    ended,
                    np.asarray(stats["r"])[ended],
                    np.asarray(stats["l"])[ended],
                )
            return obs, reward, terminated, truncated, info
        # The step after an episode's end is the autoreset step: it starts the next episode.
        self.returns += reward
        self.lengths += 1
        if self.prev_done.any():
            self.returns[self.prev_done] = 0.0
            self.lengths[self.prev_done] = 0
        self.prev_done = done = terminated | truncated
        ended = np.flatnonzero(done)
        info = {**info, "episodes": (ended, self.returns[ended], self.lengths[ended])}
        return obs, reward, terminated, truncated, info

    @property
    def unwrapped(self) -> Any:
        """The innermost vector env."""
        return self.env.unwrapped

    def close(self, **kwargs: Any) -> None:
        """Close the underlying vector env (``kwargs``: its ``close``'s, an async timeout)."""
        self.env.close(**kwargs)


class MemberEnvs:
    """K members' own vector envs side by side, as one member-major vector env.

    Each member's env is the one a single run with its seed builds (its wrappers, its
    ``--normalize`` statistics, its vectorization), so member k sees exactly what that run
    sees; they are stepped one after another. For what the member-seeded population env
    cannot hold per member (normalization statistics, recorded videos).

    Args:
        envs: one vector env per member, each with ``E`` copies and episode statistics.
    """

    def __init__(self, envs: Sequence[Any]) -> None:
        self.envs = list(envs)
        self.per = self.envs[0].num_envs
        self.num_envs = self.per * len(self.envs)
        self.single_observation_space = self.envs[0].single_observation_space
        self.single_action_space = self.envs[0].single_action_space
        self.paused: set[int] = set()
        """Members whose env is not stepped any more (see :meth:`pause`)."""
        self._last: list[tuple[np.ndarray, ...]] = []

    def pause(self, k: int) -> None:
        """Stop stepping member k's env.

        Its copies repeat their last observation with no reward and no episode end: an
        evaluation whose member has played its episodes, so that a recording env starts no
        further episode.
        """
        self.paused.add(k)

    @property
    def unwrapped(self) -> MemberEnvs:
        """Itself: the members' envs are closed one by one."""
        return self

    def reset(
        self, *, seed: Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset member k's env with ``seed[k * E]`` (``seed``: one seed per copy, member-major)."""
        starts = [None] * len(self.envs) if seed is None else list(seed)[:: self.per]
        obs = [e.reset(seed=s, options=options)[0] for e, s in zip(self.envs, starts, strict=True)]
        self.paused = set()
        self._last = [self._idle(o) for o in obs]
        return np.concatenate(obs), {}

    def _idle(self, obs: np.ndarray) -> tuple[np.ndarray, ...]:
        no = np.zeros(self.per, dtype=bool)
        return obs, np.zeros(self.per), no, no, {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        """Step every member's env with its slice of the member-major actions."""
        per, out = self.per, []
        for k, env in enumerate(self.envs):
            if k in self.paused:
                out.append(self._last[k])
                continue
            out.append(env.step(actions[k * per : (k + 1) * per]))
            self._last[k] = self._idle(out[-1][0])
        obs, reward, terminated, truncated = (np.concatenate([o[i] for o in out]) for i in range(4))
        infos = [o[4] for o in out]
        info: dict[str, Any] = {}
        if any("_episode" in i for i in infos):
            zeros = np.zeros(per)
            info["_episode"] = np.concatenate(
                [i.get("_episode", np.zeros(per, dtype=bool)) for i in infos]
            )
            info["episode"] = {
                key: np.concatenate([i["episode"][key] if "episode" in i else zeros for i in infos])
                for key in ("r", "l")
            }
        return obs, reward, terminated, truncated, info

    def close(self, **kwargs: Any) -> None:
        """Close every member's env."""
        for env in self.envs:
            close_env(env)


def member_env(env: Any, k: int) -> Any:
    """Member k's own vector env inside a population's env, or None where there is none.

    One member's env is its own; members of :class:`MemberEnvs` each have theirs; the
    member-seeded population env shares one among all.
    """
    inner = env.env if isinstance(env, PopulationEnv) else env
    if isinstance(inner, MemberEnvs):
        return inner.envs[k]
    return inner if getattr(env, "members", 1) == 1 else None


_NONE = (np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=np.int64))
"""No episode ended at this step."""


def make_population_env(
    env_id: str,
    seeds: Sequence[int],
    envs_per_member: int,
    wrappers: Sequence[Any] | None = None,
) -> PopulationEnv:
    """The population's environments: member-seeded native CartPole, or sync sub-environments.

    Args:
        env_id: a registered Gymnasium id with a discrete action space.
        seeds: one seed per member.
        envs_per_member: environments per member.
        wrappers: the per-copy wrapper chain (``make_vector_env``'s; Atari's).

    Raises:
        EnvError: as :func:`envs.make_vector_env` (unknown id, continuous actions, ...).
    """
    if not seeds or envs_per_member < 1:
        raise EnvError("a population needs at least one member and one env per member")
    # Two copies tell which kind it is (and check the id and the action space); "auto" steps a
    # single copy as a scalar env even where a native vector env exists.
    probe = make_vector_env(env_id, 2, int(seeds[0]), wrappers=wrappers)
    base = probe.unwrapped
    probe.close()
    if type(base) is CartPoleVectorEnv:
        # The id's registered options (CartPole-v1's reward rule, say), as the probe got them.
        kwargs = {k: v for k, v in gym.spec(env_id).kwargs.items() if k != "render_mode"}
        kwargs["max_episode_steps"] = base.max_episode_steps
        env: Any = MemberSeededCartPole(len(seeds), envs_per_member, **kwargs)
    else:
        total = len(seeds) * envs_per_member
        vec = make_vector_env(env_id, total, int(seeds[0]), vectorization="sync", wrappers=wrappers)
        env = vec.env if isinstance(vec, RecordEpisodeStatistics) else vec
    # Atari's copies (the wrapper chain) report their games; the others are counted here.
    return PopulationEnv(env, seeds, envs_per_member, reports_episodes=bool(wrappers))
