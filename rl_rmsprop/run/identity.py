"""What a run is, as data: the HParams view of its config and what its checkpoints must match."""

from __future__ import annotations

from typing import Any

from rl_rmsprop.config import Config
from rl_rmsprop.logger import flatten

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
