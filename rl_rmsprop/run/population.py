"""Population training: many (optimizer, seed) members of one A2C or DQN configuration at once.

The members share everything but their optimizer settings and seed. They train in lockstep:
one vector env holds every member's environments (``envs.population``), one batched network
holds every member's parameters (``rl_rmsprop.run.members``: the algorithm's part), and one
optimizer over ``[K, N]`` updates them all, each optimizer family in one call
(``rl_rmsprop.optim.population``).

Each member writes exactly what a single run writes to its own run folder: ``config.json``,
TensorBoard events with the same tags (episodes, losses, gradient and optimizer telemetry,
evaluation, hparams) and ``summary.json``, plus ``model.pt`` (the member's final network
state dict, as a single run's). ``compare`` reads them unchanged. The population checkpoints
as a whole (:class:`Loop`), and a resumed population ends as the uninterrupted one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from envs import env_reward_threshold, is_atari
from rl_rmsprop.checkpoint import (
    CheckpointError,
    UnsafeCheckpoint,
    load_checkpoint,
    write_json_atomic,
)
from rl_rmsprop.config import Config
from rl_rmsprop.logger import Logger, flatten, markdown_table
from rl_rmsprop.optim.population import member_settings
from rl_rmsprop.run.builders import member_envs, resolve_device
from rl_rmsprop.run.errors import UserError
from rl_rmsprop.run.folders import (
    make_run_dir,
    run_folder,
)
from rl_rmsprop.run.identity import hparams
from rl_rmsprop.run.loop import Loop, Member, PopulationCheckpoint, member_optimizer, plain_config
from rl_rmsprop.run.members import ALGORITHMS, check_members
from rl_rmsprop.run.tracker import EpisodeStats
from rl_rmsprop.threads import set_threads


def family_order(cfgs: list[Config]) -> list[int]:
    """Member indices ordered so that each optimizer family's members are adjacent rows."""
    rules: list[Any] = []
    keys = []
    for cfg in cfgs:
        rule = member_settings(cfg.optim.name, cfg.optim.overrides())[0]
        if rule not in rules:
            rules.append(rule)
        keys.append(rules.index(rule))
    return sorted(range(len(cfgs)), key=lambda i: keys[i])


def run_population(
    cfgs: list[Config],
    out: TextIO | None = None,
    label: str = "population",
    checkpoint: Path | None = None,
    stop: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Train every member; returns their summaries in the order given.

    A member whose gradients stay non-finite for ``--max-nonfinite`` updates in a row is
    stopped (its parameters frozen, no ``summary.json``) and its result is
    ``{"error": message}``; the others go on.

    Args:
        cfgs: the members' configurations (they differ only in optimizer and seed).
        out: where progress goes (stderr by default).
        label: how the progress lines name the population.
        checkpoint: the population's checkpoint file. Every ``--checkpoint-every`` member
            steps the whole state is written there; if it exists when the population
            starts, the population resumes from it (its member folders must be there).
        stop: a ``StopSignals`` whose signal makes the loop write the checkpoint and
            raise ``Interrupted`` at the end of the current update.
        progress: called with (env steps per member so far, members) about every
            :data:`PROGRESS_EVERY_S` seconds and at the end (a study's live progress).

    Raises:
        PopulationError: the members cannot train together.
        UserError, EnvError: as a single run (bad device, unknown env, unwritable folder, a
            checkpoint of another population).
    """
    out = out or sys.stderr
    check_members(cfgs)
    try:
        order = family_order(cfgs)
    except ValueError as e:
        raise UserError(f"{e} (see --optimizer and its options in --help)") from e
    members_cfg = [cfgs[i] for i in order]
    base = members_cfg[0]
    run, learn = base.run, base.learn
    if run.threads:
        set_threads(run.threads)
    device = resolve_device(run.device, images=is_atari(base.env.id))
    seeds = [c.run.seed for c in members_cfg]
    envs_per_member = base.env.num_envs
    env = member_envs(base, seeds)
    members: list[Member] = []
    try:
        algo = ALGORITHMS[run.algo](base, seeds, env, device, learn.engine)
        engine = algo.engine
        opt = member_optimizer(algo, members_cfg)
        threshold = env_reward_threshold(base.env.id)
        state = _load_checkpoint(checkpoint, members_cfg) if checkpoint else None
        resume_step = state["member_step"] if state is not None else None
        for cfg in members_cfg:
            if state is None:
                run_dir = make_run_dir(cfg)
                write_json_atomic(cfg.to_dict(), run_dir / "config.json")
            else:
                run_dir = run_folder(cfg)
            # Events after the checkpoint's step are replaced (those at it were logged first).
            purge = None if resume_step is None else resume_step + 1
            logger = Logger(run_dir, run.total_steps, quiet=True, purge_step=purge)
            logger.config(hparams(cfg), None if state else markdown_table(flatten(cfg.to_dict())))
            members.append(Member(cfg, run_dir, logger, EpisodeStats(threshold)))
        print(
            f"{label}: {len(members)} members ({_families(members_cfg)}) of {run.algo} on "
            f"{base.env.id} x{envs_per_member} envs each, {run.total_steps:,} steps per member, "
            f"{engine} gradients, device {device}; one process, batched"
            + (f"; resumed at step {resume_step:,}" if state else ""),
            file=out,
            flush=True,
        )
        if algo.note:
            print(f"{label}: {algo.note}", file=out, flush=True)
        place = PopulationCheckpoint(checkpoint) if checkpoint is not None else None
        loop = Loop(algo, opt, env, members, seeds, device, out, place, stop)
        loop.progress = progress
        if state is not None:
            why = loop.load_state_dict(state)
            if why is not None:
                print(f"{label}: not an exact continuation: {why}", file=out, flush=True)
        env = loop.collector.env
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # as train's loop
            summaries = loop.train()
    finally:
        env.close()
        for m in members:
            m.logger.close()
    by_original = [{}] * len(cfgs)
    for position, index in enumerate(order):
        by_original[index] = summaries[position]
    return by_original


def _families(cfgs: list[Config]) -> str:
    counts: dict[str, int] = {}
    for c in cfgs:
        counts[c.optim.name] = counts.get(c.optim.name, 0) + 1
    return ", ".join(f"{n} x{k}" for n, k in counts.items())


def _load_checkpoint(path: Path, cfgs: list[Config]) -> dict[str, Any] | None:
    """The population checkpoint at ``path`` if there is one; it must be these members'.

    Raises:
        UnsafeCheckpoint: the file needs the full unpickler and the members do not trust it.
        UserError: unreadable, or the checkpoint of other members or settings.
    """
    if not path.exists():
        return None
    try:
        state = load_checkpoint(path, cfgs[0].run.trust_checkpoint)
    except UnsafeCheckpoint:
        raise  # not damage: the user decides (--trust-checkpoint), nothing is removed
    except CheckpointError as e:
        raise UserError(f"{e}; remove it to start the population again") from None
    if state.get("members") != [plain_config(c) for c in cfgs]:
        raise UserError(
            f"{path} is the checkpoint of another population; remove it or resume its own"
        )
    missing = [c.run.run_name for c in cfgs if not run_folder(c).is_dir()]
    if missing:
        raise UserError(f"cannot resume {path}: member folder {missing[0]} is gone")
    return state
