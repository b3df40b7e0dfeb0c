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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
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
    meanings = env.unwrapped.get_action_meanings()
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
