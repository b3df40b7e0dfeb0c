"""Atari preprocessing as in DeepMind's Nature DQN and Stable-Baselines3's ``AtariWrapper``.

Gymnasium's own wrappers do the image work: ``AtariPreprocessing`` (up to 30 random no-ops on
reset, frame skip 4 with max-pooling of the last two frames, 84x84 grayscale, uint8) and
``FrameStackObservation`` (the last 4 frames, padded with the reset frame). Three small
wrappers add what Gymnasium does not have:

* :class:`EpisodicLife`: a lost life ends the episode *for learning* (``terminated``), the game
  goes on (the next ``reset`` is a no-op step, not a new game);
* :class:`FireReset`: presses FIRE after every reset in games that wait for it (Breakout);
* :class:`ClipReward`: the learner sees the sign of the reward.

Episode statistics are recorded *below* those three, per copy, so ``info["episode"]`` carries
the real game score and length of a whole game (all lives), while the agent learns from
clipped rewards and per-life episodes. Observations stay ``uint8`` ``[4, 84, 84]``; the network
divides by 255.

:class:`NativeAtari` is the fast path: ale-py's own vector env (``AtariVectorEnv``), which does
the same preprocessing in C++ and steps the copies on a thread pool, with the episode statistics,
reward clipping, life-loss ends and FIRE after a lost life added here in the same form. It
differs from the wrapper chain in two small ways, as Stable-Baselines3's ``VecFrameStack`` and
EnvPool also do: a new game's first stack is padded with zero frames (not the first frame),
and the stack runs on across a lost life.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector import VectorWrapper
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation, RecordEpisodeStatistics

FRAME_SKIP = 4
"""Emulator frames per agent step."""
FRAME_STACK = 4
"""Frames per observation."""


class EpisodicLife(gymnasium.Wrapper):
    """End the episode on a lost life for learning; reset the game only when it is over."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        """Step; ``terminated`` also when a life was lost (the game itself continues)."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        """A real reset after a game over; after a lost life, a no-op step instead."""
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:  # the no-op itself ended the game
                obs, info = self.env.reset(**kwargs)
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


class FireReset(gymnasium.Wrapper):
    """Press FIRE after each reset, for games that do nothing until it is pressed."""

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        """Reset, then FIRE (resetting again in the rare case that FIRE ends the game)."""
        obs, info = self.env.reset(**kwargs)
        obs, _, terminated, truncated, _ = self.env.step(1)
        if terminated or truncated:
            obs, info = self.env.reset(**kwargs)
        return obs, info


class ClipReward(gymnasium.RewardWrapper):
    """The sign of the reward (-1, 0 or +1), as DeepMind trained on all games alike."""

    def reward(self, reward: float) -> float:
        """``sign(reward)``."""
        return float(np.sign(reward))


def needs_fire(env: gymnasium.Env) -> bool:
    """Whether the game's action 1 is FIRE (the games that wait for it to start)."""
    return fire_is_action_1(env.unwrapped.get_action_meanings())


def fire_is_action_1(meanings: list[str]) -> bool:
    """Whether action 1 of a game's minimal action set, given by name, is FIRE."""
    return len(meanings) > 1 and meanings[1] == "FIRE"


def atari_wrappers(
    terminal_on_life_loss: bool = True, clip_rewards: bool = True
) -> list[Callable[[gymnasium.Env], gymnasium.Env]]:
    """The per-copy wrapper chain, innermost first, for ``envs.make_vector_env``.

    Args:
        terminal_on_life_loss: end learning episodes on a lost life (training; off for
            evaluation, where a game is one episode either way).
        clip_rewards: give the learner the reward's sign.
    """

    def preprocess(env: gymnasium.Env) -> gymnasium.Env:
        return AtariPreprocessing(env, noop_max=30, frame_skip=FRAME_SKIP, screen_size=84)

    chain: list[Callable[[gymnasium.Env], gymnasium.Env]] = [preprocess, RecordEpisodeStatistics]
    if terminal_on_life_loss:
        chain.append(EpisodicLife)
    chain.append(lambda env: FireReset(env) if needs_fire(env) else env)
    if clip_rewards:
        chain.append(ClipReward)
    chain.append(lambda env: FrameStackObservation(env, FRAME_STACK))
    return chain


def atari_env_kwargs(env_id: str) -> dict[str, Any]:
    """``gymnasium.make`` keywords: every Atari id steps one emulator frame at a time here.

    ``AtariPreprocessing`` does the frame skip (with max-pooling), so the base env must not:
    ``NoFrameskip-v4`` ids already have ``frameskip=1``; ``ALE/<Game>-v5`` ids skip 4 by default
    and get ``frameskip=1`` (they keep their sticky actions, p = 0.25, the v5 protocol).
    """
    return {} if "NoFrameskip" in env_id else {"frameskip": 1}


class NativeAtari(VectorWrapper):
    """ale-py's C++ vector env with this project's Atari conventions on top.

    The copies are stepped by ALE's thread pool (one thread per core, at most one per copy)
    with the preprocessing of :func:`atari_wrappers` done in C++: up to 30 no-ops on reset,
    FIRE on reset where the game needs it, frame skip 4 with max-pooling, 84x84 grayscale,
    4 stacked frames, uint8. Here, as in the wrapper chain:

    * a lost life ends the learning episode (``terminated``) and the game goes on
      (``terminal_on_life_loss``);
    * the learner gets the sign of the reward (``clip_rewards``);
    * ``info["episode"]`` / ``info["_episode"]`` carry the real score and length (agent steps)
      of each whole game, on the step where the game ends, in the layout of Gymnasium's
      ``RecordEpisodeStatistics`` under a ``SyncVectorEnv``.

    Autoreset is Gymnasium's ``NEXT_STEP``: the step after a game over is the reset (reward 0,
    not counted in the next game). After a lost life the next step is a real game step, which
    the agents drop like any step that follows an episode end; in games that wait for FIRE it
    presses FIRE whatever the action, as the wrapper chain's reset after a lost life does.

    The env cannot be pickled (the emulators live in C++), so checkpoints of a run on it hold
    no environment state and a resume starts new games.

    Args:
        env_id: an Atari id (``PongNoFrameskip-v4``, ``ALE/Pong-v5``); its spec gives the game,
            sticky-action probability and frame limit.
        num_envs: copies.
        terminal_on_life_loss: end learning episodes on a lost life.
        clip_rewards: give the learner the reward's sign.
        threads: ALE threads (None: ``min(num_envs, os.cpu_count())``).
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        *,
        terminal_on_life_loss: bool = True,
        clip_rewards: bool = True,
        threads: int | None = None,
    ) -> None:
        # ale-py is the Atari extra's Gymnasium plugin, loaded by name as make.py registers it.
        atari_vector_env = importlib.import_module("ale_py.vector_env").AtariVectorEnv
        kwargs = gymnasium.spec(env_id).kwargs
        if threads is None:
            threads = min(num_envs, os.cpu_count() or 1)
        env = atari_vector_env(
            kwargs["game"],
            num_envs,
            num_threads=threads,
            repeat_action_probability=kwargs.get("repeat_action_probability", 0.25),
            full_action_space=kwargs.get("full_action_space", False),
            max_num_frames_per_episode=kwargs.get("max_num_frames_per_episode", 108_000),
            frameskip=FRAME_SKIP,
            stack_num=FRAME_STACK,
            noop_max=30,
            use_fire_reset=True,
            episodic_life=False,
            life_loss_info=terminal_on_life_loss,
            reward_clipping=False,  # done here, after the real score is counted
        )
        super().__init__(env)
        self.threads = threads
        """ALE threads stepping the copies."""
        self.fire = fire_is_action_1([action.name for action in env.ale.get_action_set()])
        """Whether the game waits for FIRE (action 1), as :func:`needs_fire` decides."""
        self.clip_rewards = clip_rewards
        self._return = np.zeros(num_envs, dtype=np.float64)
        self._length = np.zeros(num_envs, dtype=np.int64)
        self._start = np.zeros(num_envs, dtype=np.float64)
        self._lives = np.zeros(num_envs, dtype=np.int64)
        self._over = np.zeros(num_envs, dtype=bool)
        self._life_lost = np.zeros(num_envs, dtype=bool)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every copy (copy ``i`` seeded with ``seed + i``); the statistics start over."""
        obs, info = self.env.reset(seed=seed, options=options)
        self._return[:] = 0.0
        self._length[:] = 0
        self._start[:] = time.perf_counter()
        self._lives[:] = info["lives"]
        self._over[:] = False
        self._life_lost[:] = False
        return obs, info

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every copy; rewards clipped, game statistics in ``info`` when a game ends."""
        actions = np.asarray(actions)
        if self.fire and self._life_lost.any():  # a new life starts with FIRE
            actions = np.where(self._life_lost, 1, actions).astype(actions.dtype)
        obs, raw, terminated, truncated, info = self.env.step(actions)
        playing = ~self._over  # the others were reset by this step (NEXT_STEP autoreset)
        now = time.perf_counter()
        self._start[self._over] = now
        self._return += np.where(playing, raw, 0)
        self._length += playing
        lives = info["lives"]
        life_lost = terminated & (lives > 0) & (lives < self._lives)
        self._lives = lives.astype(np.int64)
        self._life_lost = life_lost
        over = truncated | (terminated & ~life_lost)
        self._over = over
        if over.any():
            r = np.where(over, self._return, 0.0)
            length = np.where(over, self._length, 0)
            t = np.where(over, np.round(now - self._start, 6), 0.0)
            info["episode"] = {"r": r, "_r": over, "l": length, "_l": over, "t": t, "_t": over}
            info["_episode"] = over.copy()
            self._return[over] = 0.0
            self._length[over] = 0
        reward = np.sign(raw).astype(np.float64) if self.clip_rewards else raw.astype(np.float64)
        return obs, reward, terminated, truncated, info

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("ALE's native vector env cannot be pickled (its emulators live in C++)")
