"""Greedy evaluation of a trained network on separately seeded environments (and its videos)."""

from __future__ import annotations

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

from agents.dqn import (
    epsilon_greedy,
)
from agents.networks import ActorCritic, CnnActorCritic
from agents.population import PopulationCollector
from agents.rollout import Collector
from envs import close_env, is_atari, make_vector_env
from envs.atari import atari_wrappers
from envs.normalize import frozen_observations
from envs.population import make_population_env
from rl_rmsprop.config import Config
from rl_rmsprop.run.builders import env_options, population_wrappers
from rl_rmsprop.run.errors import UserError

no_grad = torch.no_grad()
"""Decorator for the acting policies: acting needs no autograd graph."""


EVAL_SEED_OFFSET = 10_000
"""Evaluation envs are seeded with the run's seed plus this."""


def greedy_policy(model: nn.Module, epsilon: float = 0.0) -> Any:
    """Observations -> the model's best actions (argmax of logits or of Q-values).

    With ``epsilon`` > 0 each action is uniformly random with that probability (the Nature DQN
    evaluates at 0.05).
    """
    actor = isinstance(model, (ActorCritic, CnnActorCritic))
    scores = no_grad(lambda obs: model(obs)[0]) if actor else no_grad(model)
    if epsilon > 0.0:
        return lambda obs: epsilon_greedy(scores(obs), epsilon)
    if actor:
        return lambda obs: model.act(obs, greedy=True)
    return lambda obs: scores(obs).argmax(-1)


def evaluate(
    model: nn.Module,
    cfg: Config,
    device: torch.device,
    video_dir: Path | None = None,
    obs_statistics: dict[str, np.ndarray] | None = None,
    video_prefix: str = "rl-video",
) -> tuple[float | None, float | None]:
    """Mean and std of ``--eval-episodes`` greedy episodes on separately seeded envs.

    The episodes run side by side, one per env copy (copy i seeded with the run's seed +
    :data:`EVAL_SEED_OFFSET` + i), each copy counting its first episode only, so short
    episodes are not over-represented and the network sees one batch per step. Evaluation
    draws from none of the training's generators: a run is the same with or without it.

    With ``video_dir`` every episode is recorded there as an MP4 (Gymnasium's RecordVideo
    around the emulator, so the video shows every frame, not only the ones the agent saw),
    one after another on a single env copy, named ``<video_prefix>-episode-<i>.mp4``. With
    ``obs_statistics`` (a ``--normalize`` run's, :func:`envs.normalize.observation_statistics`)
    the observations are normalized by them, frozen; returns are the env's own.
    """
    episodes = cfg.run.eval_episodes
    if episodes == 0:
        return None, None
    copies, env_kwargs, wrappers = episodes, None, None
    if video_dir is not None:
        copies, env_kwargs = 1, {"render_mode": "rgb_array"}
        record = partial(
            RecordVideo,
            video_folder=str(video_dir),
            episode_trigger=lambda _: True,
            name_prefix=video_prefix,
        )
        record_quietly = partial(_quiet_video, record)
        wrappers = [record_quietly, *atari_wrappers()] if is_atari(cfg.env.id) else [record_quietly]
    seed = cfg.run.seed + EVAL_SEED_OFFSET
    if wrappers:
        options = {"vectorization": "sync", "wrappers": wrappers, "env_kwargs": env_kwargs}
    else:
        options = env_options(cfg)
    env = make_vector_env(cfg.env.id, copies, seed, **options)
    if obs_statistics is not None:
        env = frozen_observations(env, obs_statistics)
    was_training = model.training
    model.eval()
    rng_devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=rng_devices):
            returns = _play(env, seed, device, greedy_policy(model, cfg.run.eval_epsilon), episodes)
    finally:
        model.train(was_training)
        close_env(env)
    return float(np.mean(returns)), float(np.std(returns))


def _play(env: Any, seed: int, device: torch.device, policy: Any, episodes: int) -> list[float]:
    """``episodes`` returns: each env copy's first episodes, until there are enough."""
    collector = Collector(env, seed, device)
    per_copy = -(-episodes // env.num_envs)  # one each when there is a copy per episode
    returns: list[list[float]] = [[] for _ in range(env.num_envs)]
    while sum(min(len(r), per_copy) for r in returns) < episodes:
        collector.step(policy)
        for ep in collector.pop_finished():
            returns[ep.env].append(ep.episodic_return)
    return [r for copy in returns for r in copy[:per_copy]][:episodes]


@torch.no_grad()
def evaluate_members(
    greedy: Callable[[torch.Tensor], torch.Tensor],
    cfg: Config,
    seeds: list[int],
    device: torch.device,
) -> list[tuple[float | None, float | None]]:
    """Each member's mean and std of ``--eval-episodes`` greedy episodes.

    Member k plays its episodes at once, one per env, on envs seeded with ``seed_k + 10000``
    (as a single run plays them); ``greedy`` maps member-major observations to the members'
    greedy actions. With ``--eval-epsilon`` each
    action is uniformly random with that probability, drawn from the member's own generator.
    """
    episodes = cfg.run.eval_episodes
    if episodes == 0:
        return [(None, None)] * len(seeds)
    eval_seeds = [s + EVAL_SEED_OFFSET for s in seeds]
    env = make_population_env(cfg.env.id, eval_seeds, episodes, population_wrappers(cfg))
    epsilon, n_actions = cfg.run.eval_epsilon, int(env.single_action_space.n)
    rngs = [np.random.default_rng(s) for s in eval_seeds]  # one per member

    def act(obs: torch.Tensor) -> torch.Tensor:
        best = greedy(obs)
        if epsilon == 0.0:
            return best
        explore = np.concatenate([r.random(episodes) < epsilon for r in rngs])
        random = np.concatenate([r.integers(0, n_actions, episodes) for r in rngs])
        return torch.from_numpy(np.where(explore, random, best.numpy()))

    try:
        collector = PopulationCollector(env, len(seeds), device)
        first: dict[int, float] = {}  # env index -> return of its first episode
        while len(first) < env.num_envs:
            collector.step(act)
            ended, returns, _ = collector.last_episodes
            for i, r in zip(ended.tolist(), returns.tolist(), strict=True):
                first.setdefault(i, r)
    finally:
        env.close()
    out = []
    for k in range(len(seeds)):
        r = [first[k * episodes + e] for e in range(episodes)]
        out.append((float(np.mean(r)), float(np.std(r))))
    return out


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
