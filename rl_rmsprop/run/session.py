"""One run's live objects and its checkpointed state; the HParams view of its config."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.replay import ReplayBuffer
from agents.rollout import Collector
from envs.normalize import observation_statistics
from rl_rmsprop.checkpoint import (
    CHECKPOINT_DIR,
    FORMAT,
    checkpoint_path,
    pack_env,
    prune_checkpoints,
    save_checkpoint,
)
from rl_rmsprop.config import Config
from rl_rmsprop.logger import Logger, flatten
from rl_rmsprop.run.evaluation import evaluate
from rl_rmsprop.run.signals import Interrupted, StopSignals
from rl_rmsprop.run.tracker import Tracker

HPARAM_SKIP = (
    "run.logdir",
    "run.run_name",
    "run.quiet",
    "run.resume",
    "run.force",
    "run.population",
)
"""Config entries that say nothing about the training (left out of the HParams tab)."""


def hparams(cfg: Config) -> dict[str, Any]:
    """The config as the HParams tab shows it: optimizer first, the other algorithm left out."""
    other = "dqn" if cfg.run.algo == "a2c" else "a2c"
    data = cfg.to_dict()
    order = ["optim", "run", "env", "learn", cfg.run.algo]
    flat = flatten({section: data[section] for section in order if section != other})
    return {k: v for k, v in flat.items() if k not in HPARAM_SKIP}


def identity(cfg: Config, env: Any) -> dict[str, Any]:
    """What a checkpoint must agree on with the run that loads it."""
    return {
        "algo": cfg.run.algo,
        "env": cfg.env.id,
        "num_envs": cfg.env.num_envs,
        "obs_shape": list(env.single_observation_space.shape),
        "n_actions": int(env.single_action_space.n),
        "hidden": list(cfg.learn.hidden),
    }


@dataclass
class DQNParts:
    """What DQN keeps besides the online network: target network, replay, target count."""

    target: nn.Module
    buffer: ReplayBuffer
    target_updates: int = 0


@dataclass
class Session:
    """One run's live objects; the loops advance it, :meth:`state` checkpoints it."""

    cfg: Config
    run_dir: Path
    env: Any
    model: nn.Module
    opt: Any
    logger: Logger
    collector: Collector
    tracker: Tracker
    stop: StopSignals
    dqn: DQNParts | None = None
    last_checkpoint: int = 0
    """Env step of the last checkpoint written (or resumed from); the next is due one
    ``--checkpoint-every`` boundary later."""
    env_restored: bool | str = True
    """True, or why the environments were rebuilt rather than restored on resume."""
    device: torch.device | None = None
    evaluations: int = 0
    engine: str | None = None
    """How gradients are computed (:func:`gradient_engine`, resolved once)."""
    noise: Any = None
    """A2C's action noise (:class:`agents.population.MemberNoise` of the run's seed: what a
    population member with that seed draws); None for DQN."""

    def state(self) -> dict[str, Any]:
        """The full training state: everything an exact continuation needs, as plain data."""
        rng = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        dqn = None
        if self.dqn is not None:
            dqn = {
                "target": self.dqn.target.state_dict(),
                "target_updates": self.dqn.target_updates,
                "buffer": self.dqn.buffer.state_dict() if self.cfg.run.save_replay else None,
            }
        return {
            "format": FORMAT,
            "identity": identity(self.cfg, self.env),
            "config": self.cfg.to_dict(),
            "global_step": self.collector.global_step,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "collector": self.collector.state_dict(),
            "tracker": self.tracker.state_dict(),
            "env": pack_env(self.env),
            "rng": rng,
            "dqn": dqn,
            "evaluations": self.evaluations,
            "noise": self.noise.state_dict() if self.noise is not None else None,
        }

    def checkpoint(self) -> None:
        """Write a periodic checkpoint now and prune old ones."""
        step = self.collector.global_step
        # Events logged up to here go to disk first: a resume keeps them (and purges later ones).
        self.logger.flush()
        (self.run_dir / CHECKPOINT_DIR).mkdir(exist_ok=True)
        save_checkpoint(self.state(), checkpoint_path(self.run_dir, step))
        prune_checkpoints(self.run_dir, self.cfg.run.keep_checkpoints)
        self.last_checkpoint = step

    def boundary(self) -> None:
        """Called where the loop can be resumed: checkpoint when due, stop when signalled."""
        step = self.collector.global_step
        if self.stop.signum is not None:
            self.checkpoint()
            raise Interrupted(self.stop.signum, step, self.run_dir)
        # Evaluate before checkpointing: the checkpoint then holds the RNG state after it.
        every = self.cfg.run.eval_every
        if every and step // every > self.evaluations and step < self.cfg.run.total_steps:
            self.evaluations = step // every
            device = self.device or torch.device("cpu")
            mean, std = evaluate(
                self.model, self.cfg, device, obs_statistics=observation_statistics(self.env)
            )
            self.tracker.episodes.evaluated(mean, step)
            if mean is not None:
                self.logger.scalars(
                    {"eval/episodic_return_mean": mean, "eval/episodic_return_std": std}, step
                )
        every = self.cfg.run.checkpoint_every
        due = every and step // every > self.last_checkpoint // every
        if due and step < self.cfg.run.total_steps:  # the final checkpoint follows anyway
            self.checkpoint()
