"""What a run is built from: device, network, replay memory, the members' environments."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.dqn import (
    CnnQNetwork,
    QNetwork,
)
from agents.members import MemberFrames, MemberReplay
from agents.networks import ActorCritic, CnnActorCritic
from agents.replay import FrameReplayBuffer, ReplayBuffer
from envs import close_env, is_atari, make_vector_env
from envs.atari import NativeAtari, atari_wrappers
from envs.normalize import normalize
from envs.population import MemberEnvs, PopulationEnv, make_population_env
from rl_rmsprop.config import Config
from rl_rmsprop.run.errors import UserError


def build_model(cfg: Config, env: Any) -> nn.Module:
    """The algorithm's network for the env: a CNN on images, MLPs otherwise.

    Images ``[C, H, W]`` get the Nature CNN (Atari's stacked frames) or, below 36 x 36, the
    MinAtar paper's (:func:`agents.networks.image_torso`).

    Raises:
        UserError: images smaller than the MinAtar CNN's convolution.
    """
    space = env.single_observation_space
    shape = space.shape
    n_actions = int(env.single_action_space.n)
    if len(shape) == 3:  # uint8 images [C, H, W]
        cnn = CnnActorCritic if cfg.run.algo == "a2c" else CnnQNetwork
        try:
            return cnn(
                shape[0], n_actions, image_size=shape[1:], input_high=float(space.high.max())
            )
        except ValueError as e:
            raise UserError(f"{cfg.env.id}: {e}; choose an env with larger images") from None
    mlp = ActorCritic if cfg.run.algo == "a2c" else QNetwork
    return mlp(math.prod(shape), n_actions, cfg.learn.hidden)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a new allocation on ``device`` (None if it cannot be told)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def build_replay(cfg: Config, env: Any, device: torch.device, members: int) -> tuple[Any, str]:
    """The members' DQN replay memory (frames stored once for stacked uint8 frames) and a note.

    One store for K members of ``--num-envs`` envs each (:class:`~agents.members.MemberFrames`
    or :class:`~agents.members.MemberReplay`), each member holding ``--buffer-size``
    transitions.

    Raises:
        UserError: if it would not fit in the memory available on ``device``.
    """
    space, capacity, per = env.single_observation_space, cfg.dqn.buffer_size, cfg.env.num_envs
    # Frames stored once: only Atari's stacks, whose next observation shares all but one frame.
    frames = is_atari(cfg.env.id) and len(space.shape) == 3 and space.dtype == np.uint8
    obs_dtype = torch.uint8 if space.dtype == np.uint8 else torch.float32  # images stay bytes
    if frames:
        need = FrameReplayBuffer.bytes_needed(capacity, space.shape, per)
    else:
        need = ReplayBuffer.bytes_needed(capacity, space.shape, obs_dtype)
    need *= members
    free = available_memory(device)
    what = f"the {members} replay buffers" if members > 1 else "the replay buffer"
    if free is not None and need > 0.9 * free:
        raise UserError(
            f"{what} of {capacity:,} transitions need{'' if members > 1 else 's'} "
            f"{need / 1e9:.1f} GB but only {free / 1e9:.1f} GB are available on {device}; "
            "lower --buffer-size"
        )
    if frames:
        buffer: Any = MemberFrames(members, capacity, space.shape, per, device)
    else:
        buffer = MemberReplay(members, capacity, space.shape, per, device, obs_dtype)
    kind = "frames stored once" if frames else "obs and next obs"
    size = f"{members} x {capacity:,}" if members > 1 else f"{capacity:,}"
    note = f"replay buffer: {size} transitions, {need / 1e9:.2f} GB on {device} ({kind})"
    return buffer, note


def resolve_device(requested: str, images: bool = False) -> torch.device:
    """``auto``: CUDA for a CNN on frames when a GPU is there, else the CPU (faster for MLPs).

    Raises:
        UserError: ``cuda`` was asked for and there is no GPU.
    """
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "--device cuda was asked for but no CUDA device is available; use --device cpu"
        )
    if requested == "auto":
        return torch.device("cuda" if images and torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def device_note(requested: str, device: torch.device, images: bool) -> str:
    """Why ``--device auto`` chose ``device`` (empty for an explicit choice)."""
    if requested != "auto":
        return ""
    if device.type == "cuda":
        return " (auto: CUDA for a CNN)"
    if images:
        return " (auto: no GPU found; a CNN trains slowly on the CPU)"
    return " (auto: an MLP is faster on the CPU)"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the envs are seeded at their first reset)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def env_options(cfg: Config) -> dict[str, Any]:
    """``make_vector_env`` keywords for this run's environments (training and evaluation).

    A2C on an Atari game gets ALE's C++ vector env under ``--vectorization auto``. DQN keeps
    Gymnasium's Python wrapper chain: its frame replay rebuilds each stack the way
    ``FrameStackObservation`` pads it, which ALE's env does not.

    Raises:
        UserError: DQN on Atari with ``--vectorization native``.
    """
    if cfg.run.algo == "dqn" and is_atari(cfg.env.id):
        if cfg.env.vectorization == "native":
            raise UserError(
                "DQN's frame replay rebuilds stacks as Gymnasium's wrappers pad them, not as "
                "ALE's native vector env does; use --vectorization auto, sync or async"
            )
        return {"vectorization": cfg.env.vectorization, "wrappers": atari_wrappers()}
    return {"vectorization": cfg.env.vectorization}


def population_wrappers(cfg: Config) -> Any:
    """The per-copy wrapper chain of a population's envs: Atari's, else none.

    A single A2C run on Atari steps ALE's C++ vector env, which applies the same
    preprocessing; a population seeds each member's copies itself, so it takes the chain.
    """
    return atari_wrappers() if is_atari(cfg.env.id) else None


def member_envs(cfg: Config, seeds: list[int], copies: int | None = None) -> PopulationEnv:
    """The members' vector env, member-major: ``copies`` (``--num-envs``) per member.

    One member (a single run) gets the run's own vector env (``--vectorization``, ALE's C++
    env for A2C on Atari, ``--normalize``). More get the member-seeded population env, whose
    member k sees what a single run with seed k sees (:mod:`envs.population`); with
    ``--normalize`` each member has its own run's env instead (its own statistics).

    Raises:
        EnvError: as :func:`envs.make_vector_env`.
    """
    copies = cfg.env.num_envs if copies is None else copies
    if len(seeds) > 1 and not cfg.env.normalize:
        return make_population_env(cfg.env.id, seeds, copies, population_wrappers(cfg))

    def own(k: int, seed: int) -> Any:
        env = make_vector_env(cfg.env.id, copies, seed, **env_options(cfg))
        return normalize(env, cfg.learn.gamma) if cfg.env.normalize else env

    return each_members_env(cfg, seeds, copies, own)


def each_members_env(
    cfg: Config, seeds: list[int], copies: int, make: Callable[[int, int], Any]
) -> PopulationEnv:
    """The members' vector env made of one env per member, ``make(k, seed_k)``.

    One member's env is used as it is; more are put side by side (:class:`MemberEnvs`).
    What was built is closed if a later member's env cannot be.
    """
    envs: list[Any] = []
    try:
        for k, seed in enumerate(seeds):
            envs.append(make(k, seed))
    except BaseException:
        for env in envs:
            close_env(env)
        raise
    inner = envs[0] if len(envs) == 1 else MemberEnvs(envs)
    return PopulationEnv(inner, seeds, copies, reports_episodes=True)  # make_vector_env's


def env_note(env: Any) -> str:
    """`` (ALE vector env, N threads)`` for ALE's C++ env on the run line; empty otherwise."""
    env = env.env if isinstance(env, PopulationEnv) else env
    if isinstance(env, NativeAtari):
        return f" (ALE vector env, {env.threads} threads)"
    return ""
