"""``train --population K``: K seeds of one configuration in one folder, as one population.

The members train by :func:`rl_rmsprop.run.population.run_population`; this module makes the
folder (``seed-<k>/`` per member, ``population.json``, ``checkpoint.pt`` while it runs),
resumes it, and reports the members' summaries and the exit status.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import numpy as np

from agents.rollout import EnvStepFailed
from envs import EnvError, env_reward_threshold
from rl_rmsprop.checkpoint import FINAL_CHECKPOINT, UnsafeCheckpoint, write_json_atomic
from rl_rmsprop.config import Config
from rl_rmsprop.logger import FINAL_METRICS
from rl_rmsprop.optim.presets import preset_group
from rl_rmsprop.run.builders import env_options, resolve_device
from rl_rmsprop.run.errors import UserError, as_training_failure
from rl_rmsprop.run.evaluation import check_video
from rl_rmsprop.run.folders import FolderLock, make_run_dir, remove_stale_temp_files, run_name
from rl_rmsprop.run.identity import hparams
from rl_rmsprop.run.members import PopulationError
from rl_rmsprop.run.population import run_population
from rl_rmsprop.run.signals import StopSignals
from rl_rmsprop.run.tracker import fmt_or_na
from rl_rmsprop.study.board import columns, write_experiment
from rl_rmsprop.tags import HPARAMS


def population_configs(cfg: Config, size: int, folder: Path) -> list[Config]:
    """``--population K``: K members of one configuration, seeds seed .. seed + K - 1.

    Member i's run folder is ``folder / seed-<seed + i>``.
    """
    out = []
    for i in range(size):
        seed = cfg.run.seed + i
        run = dataclasses.replace(
            cfg.run, seed=seed, logdir=str(folder), run_name=f"seed-{seed}", population=0
        )
        out.append(dataclasses.replace(cfg, run=run))
    return out


POPULATION_FILE = "population.json"
"""In a ``train --population`` folder: the configuration, then every member's summary."""


def train_population(cfg: Config, resume: Path | None = None) -> int:
    """``--population K``: K seeds of ``cfg`` in one batched process; member i in seed-<k>.

    The population's checkpoint is ``checkpoint.pt`` in its folder (every
    ``--checkpoint-every`` member steps, and on SIGINT/SIGTERM); ``resume`` continues the
    population in that folder. ``population.json`` holds the configuration, then every
    member's summary and the aggregate speed. Returns the exit status (1 if a member
    diverged, 128 + signal when stopped).

    Raises:
        UserError: a setting a single run would refuse too, or the folder exists.
    """
    # What can be checked before anything is written: the device, the env id and options,
    # the optimizer.
    resolve_device(cfg.run.device)
    if cfg.run.capture_video:
        check_video(cfg)
    env_reward_threshold(cfg.env.id)
    env_options(cfg)  # refuses what a single run would (DQN on ALE's native env)
    try:
        preset_group(cfg.optim.name, **cfg.optim.overrides())
    except ValueError as e:
        raise UserError(f"{e} (see --optimizer and its options in --help)") from e
    size = cfg.run.population
    if resume is None:
        name = cfg.run.run_name or run_name(cfg).replace(f"__{cfg.run.seed}__", f"__pop{size}__")
        folder = make_run_dir(
            dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, run_name=name))
        )
    else:
        folder = resume
    with FolderLock(folder):
        if resume is None:
            write_json_atomic({"members": size, "config": cfg.to_dict()}, folder / POPULATION_FILE)
        else:
            remove_stale_temp_files(folder)
        summaries = _train_population_locked(cfg, folder, resume)
        members = population_configs(cfg, cfg.run.population, folder)
        write_experiment(
            folder,
            columns([hparams(c) for c in members]),
            {f"{HPARAMS}{k}": k for k in FINAL_METRICS},
        )
    return _report_population(cfg, folder, summaries)


def _train_population_locked(cfg: Config, folder: Path, resume: Path | None) -> list[dict]:

    checkpoint = folder / FINAL_CHECKPOINT
    if resume is not None and not checkpoint.exists():
        raise UserError(
            f"{folder} has no population checkpoint to resume from (finished, or stopped "
            "before its first one); start it again"
        )
    try:
        with StopSignals() as stop:
            summaries = run_population(
                population_configs(cfg, cfg.run.population, folder),
                label=f"population {folder}",
                checkpoint=checkpoint,
                stop=stop,
            )
    except UnsafeCheckpoint as e:
        raise UserError(str(e)) from None
    except PopulationError as e:
        if resume is None:
            shutil.rmtree(folder, ignore_errors=True)  # made by this call, nothing kept yet
        raise UserError(f"{e}; drop --population to train one run") from None
    except (UserError, EnvError):
        if resume is None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    except (EnvStepFailed, EOFError, OSError) as e:  # during training: as a single run's
        failure = as_training_failure(e, folder)
        kept = checkpoint.exists()
        if not kept and resume is None:
            shutil.rmtree(folder, ignore_errors=True)  # made by this call, nothing to resume
        where = f"continue with --resume {folder}" if kept else "nothing was kept"
        raise type(failure)(f"{failure}; {where}") from None
    checkpoint.unlink(missing_ok=True)  # finished: nothing to resume
    return summaries


def _report_population(cfg: Config, folder: Path, summaries: list[dict]) -> int:
    """Write the population's ``population.json`` and print its lines; the exit status."""
    size = cfg.run.population
    done = [s for s in summaries if "error" not in s]
    failed = [s["error"] for s in summaries if "error" in s]
    wall = max((s["wall_time_s"] for s in done), default=0.0)
    steps = sum(s["total_steps"] for s in done)
    write_json_atomic(
        {
            "members": size,
            "config": cfg.to_dict(),
            "wall_time_s": wall,
            "aggregate_sps": steps / max(wall, 1e-9),
            "summaries": summaries,
        },
        folder / POPULATION_FILE,
    )
    for i, error in enumerate(s.get("error") for s in summaries):
        if error:
            print(f"error: member seed {cfg.run.seed + i}: {error}", file=sys.stderr)
    finals = [
        s["episodic_return_mean100"] for s in done if s["episodic_return_mean100"] is not None
    ]
    evals = [s["eval_return_mean"] for s in done if s["eval_return_mean"] is not None]
    solved = sum(s["solved_at_step"] is not None for s in done)
    print(
        f"done: {size} members x {cfg.run.total_steps:,} steps in {wall:.1f} s "
        f"({steps / max(wall, 1e-9):,.0f} aggregate SPS), return mean100 median "
        f"{fmt_or_na(float(np.median(finals)) if finals else None)}, eval median "
        f"{fmt_or_na(float(np.median(evals)) if evals else None)}, solved {solved}/{size}; "
        f"logs in {folder}"
    )
    return 1 if failed else 0
