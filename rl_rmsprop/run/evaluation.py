"""Greedy evaluation of a trained network on separately seeded environments (and its videos)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium.wrappers import RecordVideo
from torch import nn

from agents.networks import ActorCritic, CnnActorCritic
from agents.population import PopulationCollector
from envs import close_env, is_atari, make_vector_env
from envs.atari import atari_wrappers
from envs.normalize import frozen_observations
from envs.population import MemberEnvs, PopulationEnv
from rl_rmsprop.config import Config
from rl_rmsprop.run.builders import each_members_env, env_options, member_envs
from rl_rmsprop.run.errors import UserError

no_grad = torch.no_grad()
"""Decorator for the acting policies: acting needs no autograd graph."""


EVAL_SEED_OFFSET = 10_000
"""Evaluation envs are seeded with the run's seed plus this."""


def greedy_policy(model: nn.Module) -> Any:
    """Observations -> the model's best actions (argmax of logits or of Q-values).

    ``--eval-epsilon`` is applied on top by :func:`evaluate_members`.
    """
    if isinstance(model, (ActorCritic, CnnActorCritic)):
        return lambda obs: model.act(obs, greedy=True)
    return lambda obs: no_grad(model)(obs).argmax(-1)


def evaluate(
    model: nn.Module,
    cfg: Config,
    device: torch.device,
    video_dir: Path | None = None,
    obs_statistics: dict[str, np.ndarray] | None = None,
    video_prefix: str = "rl-video",
) -> tuple[float | None, float | None]:
    """One network's mean and std of ``--eval-episodes`` greedy episodes (seed ``--seed``).

    :func:`evaluate_members` for one member whose greedy actions are ``model``'s.
    """
    was_training = model.training
    model.eval()
    try:
        videos = None if video_dir is None else [video_dir]
        statistics = None if obs_statistics is None else [obs_statistics]
        greedy = greedy_policy(model)
        return evaluate_members(
            greedy, cfg, [cfg.run.seed], device, videos, statistics, video_prefix
        )[0]
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate_members(
    greedy: Callable[[torch.Tensor], torch.Tensor],
    cfg: Config,
    seeds: list[int],
    device: torch.device,
    video_dirs: list[Path] | None = None,
    obs_statistics: list[dict[str, np.ndarray] | None] | None = None,
    video_prefix: str = "rl-video",
) -> list[tuple[float | None, float | None]]:
    """Each member's mean and std of ``--eval-episodes`` greedy episodes.

    Member k plays its episodes side by side, one per env copy, on copies seeded with
    ``seed_k +`` :data:`EVAL_SEED_OFFSET` ``+ e``, each copy counting its first episode only
    (short episodes are not over-represented). ``greedy`` maps member-major observations to
    the members' greedy actions. With ``--eval-epsilon`` each action is uniformly random with
    that probability, drawn from the member's own generator. Evaluation draws from none of
    the training's generators: a run is the same with or without it.

    With ``video_dirs`` (one folder per member) every episode is recorded as an MP4
    (Gymnasium's RecordVideo around the emulator, so the video shows every frame, not only
    the ones the agent saw), one after another on a single copy per member, named
    ``<video_prefix>-episode-<i>.mp4``. With ``obs_statistics`` (per member, a
    ``--normalize`` run's :func:`envs.normalize.observation_statistics`) a member's
    observations are normalized by its statistics, frozen; returns are the env's own.
    """
    episodes = cfg.run.eval_episodes
    if episodes == 0:
        return [(None, None)] * len(seeds)
    eval_seeds = [s + EVAL_SEED_OFFSET for s in seeds]
    copies = 1 if video_dirs is not None else episodes
    if video_dirs is None and obs_statistics is None:
        # Never the training's --normalize: statistics, when there are any, are frozen ones.
        unnormalized = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, normalize=False))
        env = member_envs(unnormalized, eval_seeds, copies)
    else:
        env = _own_envs(cfg, eval_seeds, copies, video_dirs, obs_statistics, video_prefix)
    epsilon, n_actions = cfg.run.eval_epsilon, int(env.single_action_space.n)
    rngs = [np.random.default_rng(s) for s in eval_seeds]  # one per member

    def act(obs: torch.Tensor) -> torch.Tensor:
        best = greedy(obs).cpu()
        if epsilon == 0.0:
            return best
        explore = np.concatenate([r.random(copies) < epsilon for r in rngs])
        random = np.concatenate([r.integers(0, n_actions, copies) for r in rngs])
        return torch.from_numpy(np.where(explore, random, best.numpy()))

    per_copy = -(-episodes // copies)  # one each when there is a copy per episode
    returns: list[list[float]] = [[] for _ in range(env.num_envs)]
    try:
        collector = PopulationCollector(env, len(seeds), device)
        while any(len(r) < per_copy for r in returns):
            collector.step(act)
            for k, ep in collector.pop_member_episodes():
                returns[k * copies + ep.env].append(ep.episodic_return)
                mine = returns[k * copies : (k + 1) * copies]
                if isinstance(env.env, MemberEnvs) and all(len(r) >= per_copy for r in mine):
                    env.env.pause(k)  # done: a recording copy starts no further episode
    finally:
        close_env(env)
    out = []
    for k in range(len(seeds)):
        mine = [r for copy in returns[k * copies : (k + 1) * copies] for r in copy[:per_copy]]
        out.append((float(np.mean(mine[:episodes])), float(np.std(mine[:episodes]))))
    return out


def _own_envs(
    cfg: Config,
    seeds: list[int],
    copies: int,
    video_dirs: list[Path] | None,
    statistics: list[dict[str, np.ndarray] | None] | None,
    prefix: str,
) -> PopulationEnv:
    """Each member's own evaluation env: recorded to its folder, normalized by its statistics."""

    def own(k: int, seed: int) -> Any:
        if video_dirs is not None:
            options = _video_options(cfg, video_dirs[k], prefix)
        else:
            options = env_options(cfg)
        env = make_vector_env(cfg.env.id, copies, seed, **options)
        mine = statistics[k] if statistics is not None else None
        return env if mine is None else frozen_observations(env, mine)

    return each_members_env(cfg, seeds, copies, own)


def _video_options(cfg: Config, video_dir: Path, prefix: str) -> dict[str, Any]:
    """``make_vector_env`` keywords of an evaluation copy that records every episode."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # off screen (see check_video)
    record = partial(
        RecordVideo, video_folder=str(video_dir), episode_trigger=lambda _: True, name_prefix=prefix
    )
    record_quietly = partial(_quiet_video, record)
    wrappers = [record_quietly, *atari_wrappers()] if is_atari(cfg.env.id) else [record_quietly]
    return {
        "vectorization": "sync",
        "wrappers": wrappers,
        "env_kwargs": {"render_mode": "rgb_array"},
    }


def check_video(cfg: Config, flag: str = "--capture-video") -> None:
    """Fail early, before anything is written, if evaluation episodes cannot be recorded.

    Raises:
        UserError: moviepy is missing, or the env cannot render frames.
    """
    if importlib.util.find_spec("moviepy") is None:
        raise UserError(f'{flag} needs moviepy; install it: pip install -e ".[video]"')
    # Frames are drawn off screen (rgb_array): without this, pygame's SDL looks for a display
    # and, on a headless machine, prints "error: XDG_RUNTIME_DIR is invalid" for every env.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    kwargs = {"render_mode": "rgb_array"}
    env = make_vector_env(cfg.env.id, 1, 0, vectorization="sync", wrappers=[], env_kwargs=kwargs)
    try:
        env.reset(seed=0)
        env.unwrapped.envs[0].render()
    except gymnasium.error.DependencyNotInstalled as e:
        raise UserError(f"{flag}: {cfg.env.id} cannot render frames ({e})") from None
    finally:
        close_env(env)


def _quiet_video(record: Any, env: Any) -> Any:
    with warnings.catch_warnings():  # "overwriting existing videos" and moviepy chatter
        warnings.simplefilter("ignore")
        return record(env)
