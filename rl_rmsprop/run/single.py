"""One run: a population of one member, in the run's own folder.

The member trains in the loop every run uses (:class:`rl_rmsprop.run.population.Loop`).
What is a single run's own is its folder and its failure handling: ``config.json`` and
the events at the top, periodic checkpoints in ``checkpoints/`` and the final one as
``checkpoint.pt`` (which ``--resume`` continues, also with more ``--total-steps``), a
one-line error for anything that stops it. Bad input ends it before anything is written;
a failure during training ends it with a folder that ``--resume`` continues (or none).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.rollout import WORKER_DIED, EnvStepFailed
from envs import close_env, env_reward_threshold, is_atari
from rl_rmsprop.checkpoint import (
    CheckpointError,
    UnsafeCheckpoint,
    load_checkpoint,
    resume_candidates,
    write_json_atomic,
)
from rl_rmsprop.config import Config
from rl_rmsprop.logger import Logger, flatten, markdown_table
from rl_rmsprop.run.builders import (
    device_note,
    env_note,
    member_envs,
    resolve_device,
    seed_everything,
)
from rl_rmsprop.run.errors import (
    Diverged,
    EnvCrashed,
    TrainingFailed,
    UserError,
    as_training_failure,
)
from rl_rmsprop.run.evaluation import check_video
from rl_rmsprop.run.folders import FolderLock, make_run_dir, remove_stale_temp_files
from rl_rmsprop.run.identity import hparams, identity
from rl_rmsprop.run.loop import Loop, Member, RunCheckpoints, member_optimizer
from rl_rmsprop.run.members import ALGORITHMS
from rl_rmsprop.run.signals import StopSignals
from rl_rmsprop.run.tracker import EpisodeStats
from rl_rmsprop.threads import set_threads


def find_checkpoint(run_dir: Path, trust: bool = False) -> tuple[Path, dict[str, Any]]:
    """The newest readable checkpoint of a run folder (final first, then periodic, newest first).

    Damaged ones are reported on stderr and skipped; the previous one is used. One that would
    need the full unpickler stops the search (unless ``trust``): it is not damage but a file
    that could run code, and the user decides.

    Raises:
        UserError: the folder is not a run folder, holds no readable checkpoint, or its newest
            intact checkpoint is not plain data.
    """
    if not (run_dir / "config.json").is_file():
        raise UserError(f"{run_dir} is not a run folder (no config.json); check the --resume path")
    candidates = resume_candidates(run_dir)
    if not candidates:
        raise UserError(f"{run_dir} has no checkpoint to resume from; start a new run instead")
    problems = []
    for path in candidates:
        try:
            return path, load_checkpoint(path, trust)
        except UnsafeCheckpoint as e:
            raise UserError(str(e)) from None
        except CheckpointError as e:
            problems.append(str(e))
            print(f"warning: {e}; trying an older one", file=sys.stderr)
    raise UserError(f"no readable checkpoint in {run_dir} ({problems[-1]}); start a new run")


RESUMABLE = ("run.resume", "run.total_steps", "run.quiet", "run.threads", "run.trust_checkpoint")
"""Config entries a resume may change (the rest must be what the checkpoint was written with)."""


def config_changes(saved: dict[str, Any], current: Config) -> list[str]:
    """The entries (but :data:`RESUMABLE`) in which ``current`` differs from a saved config."""
    theirs = flatten(Config.from_dict(saved).to_dict())
    mine = flatten(current.to_dict())
    return [
        f"{k.split('.')[-1]} {theirs.get(k)!r} in the checkpoint vs {v!r} in config.json"
        for k, v in mine.items()
        if k not in RESUMABLE and theirs.get(k) != v
    ]


def check_belongs(state: dict[str, Any], cfg: Config, env: Any, path: Path, run_dir: Path) -> None:
    """A checkpoint may continue this run only if it is this run's, in today's layout.

    Raises:
        UserError: the checkpoint was written by an earlier version (a single run's own
            layout, before single runs were populations of one), is from another algorithm,
            env or network shape, or the run's config.json was changed since it was written.
    """
    if "members" not in state:
        raise UserError(
            f"checkpoint {path} was written by an earlier rl_rmsprop (before 2026-12-02, when "
            "single runs became populations of one); finish it with that version, or start a "
            "new run"
        )
    mine, theirs = identity(cfg, env), state.get("identity", {})
    if mine != theirs:
        diff = ", ".join(
            f"{k} {theirs.get(k)!r} in the checkpoint vs {v!r} here"
            for k, v in mine.items()
            if theirs.get(k) != v
        )
        raise UserError(f"checkpoint {path} belongs to another run ({diff}); resume its own folder")
    changed = config_changes(state["members"][0], cfg)
    if changed:
        raise UserError(
            f"{run_dir / 'config.json'} was changed since checkpoint {path.name} was written "
            f"({', '.join(changed[:3])}); restore it, or start a new run with the new settings"
        )


def run(cfg: Config, resume: Path | None = None, in_study: bool = False) -> dict:
    """Train one configuration (or continue the run in ``resume``); returns the summary.

    The run folder is locked for as long as this runs (:class:`FolderLock`). A run
    ``in_study`` leaves the HParams experiment to its study (:meth:`Logger.final`).

    Raises:
        UserError: bad input, found before anything is written.
        TrainingFailed: training started and could not go on (diverged, the environment
            raised or died, a write failed); the folder keeps its checkpoints, or is removed
            if this call created it and no checkpoint was written yet.
        Interrupted: SIGINT or SIGTERM; a checkpoint was written.
    """
    if cfg.run.threads:
        set_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device, images=is_atari(cfg.env.id))
    if cfg.run.capture_video:
        check_video(cfg)
    seed_everything(cfg.run.seed)
    if resume is None:
        return _run_locked(cfg, device, None, in_study)  # it locks the folder once made
    with FolderLock(resume):
        return _run_locked(cfg, device, resume, in_study)


def _run_locked(cfg: Config, device: torch.device, resume: Path | None, in_study: bool) -> dict:
    state, ckpt_path, new_lock = None, None, None
    if resume is not None:
        remove_stale_temp_files(resume)
        ckpt_path, state = find_checkpoint(resume, cfg.run.trust_checkpoint)
    seed = cfg.run.seed
    env = member_envs(cfg, [seed])
    loop, run_dir, created = None, resume, False
    try:
        algo = ALGORITHMS[cfg.run.algo](cfg, [seed], env, device, cfg.learn.engine)
        opt = member_optimizer(algo, [cfg])
        if state is not None:
            check_belongs(state, cfg, env, ckpt_path, resume)
        if resume is None:
            run_dir, created = make_run_dir(cfg), True
            new_lock = FolderLock(run_dir).acquire()
            write_json_atomic(cfg.to_dict(), run_dir / "config.json")
        # purge_step: TensorBoard drops what the interrupted run logged after the checkpoint,
        # so the resumed run's events replace them instead of doubling them. What was logged
        # at the checkpoint's own step (before it was written) is kept.
        purge = None if state is None else state["member_step"] + 1
        logger = Logger(run_dir, cfg.run.total_steps, cfg.run.quiet, purge_step=purge)
        member = Member(cfg, run_dir, logger, EpisodeStats(env_reward_threshold(cfg.env.id)))
        checkpoints = RunCheckpoints(run_dir, cfg.run.keep_checkpoints)
        loop = Loop(
            algo,
            opt,
            env,
            [member],
            [seed],
            device,
            sys.stderr,
            checkpoints,
            StopSignals(),
            population=False,
            in_study=in_study,
        )
        _open_logs(loop, algo, state, ckpt_path)
        try:
            # NumPy's overflow warnings would only repeat what the non-finite check counts
            # and reports (a diverging loss): silenced for the loop, not the process.
            with loop.stop, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                summary = loop.train()[0]
        except WORKER_DIED as e:
            raise EnvCrashed(
                f"an environment worker of {cfg.env.id} died ({type(e).__name__}) at step "
                f"{loop.collector.member_step:,}"
            ) from None
        if "error" in summary:
            raise Diverged(summary["error"])
        return summary
    except (TrainingFailed, OSError, EnvStepFailed) as e:
        raise training_failure(e, loop, run_dir, created) from None
    finally:
        if loop is not None:
            with contextlib.suppress(OSError):  # the disk that failed may fail again
                loop.members[0].logger.close()
        if new_lock is not None:
            new_lock.release()
        close_env(loop.collector.env if loop is not None else env)


def _open_logs(loop: Loop, algo: Any, state: dict[str, Any] | None, ckpt_path: Path | None) -> None:
    """Restore a resumed run from its checkpoint, then write the run's opening lines."""
    member = loop.members[0]
    cfg, run_dir, logger = member.cfg, member.run_dir, member.logger
    if state is not None:
        why = loop.load_state_dict(state)
        logger.config(hparams(cfg), None)
        where = f"resumed {run_dir} from {ckpt_path.name} at step {state['member_step']:,}"
        if why is None:
            logger.message(where)
        else:  # shown even with --quiet
            logger.warning(f"{where} (not an exact continuation: {why}; new episodes start here)")
    else:
        logger.config(hparams(cfg), markdown_table(flatten(cfg.to_dict())))
    if algo.note:
        logger.message(algo.note)
    images = is_atari(cfg.env.id)
    logger.message(
        f"run {run_dir}: {cfg.run.algo} on {cfg.env.id} x{cfg.env.num_envs}"
        f"{env_note(loop.collector.env)}, optimizer {cfg.optim.name}, {algo.engine} gradients, "
        f"device {loop.device}" + device_note(cfg.run.device, loop.device, images=images)
    )


def training_failure(
    error: BaseException, loop: Loop | None, run_dir: Path | None, created: bool
) -> TrainingFailed:
    """The one-line failure for an error during training, saying what is left on disk.

    A write that failed (disk full, a read-only folder) is named as such. Where a checkpoint
    exists the line says how to continue; a folder this call created that holds none is
    removed (nothing half-written stays behind), except for a diverged run, whose events
    show how it diverged.
    """
    at = f" at step {loop.collector.member_step:,}" if loop is not None else ""
    error = as_training_failure(error, run_dir, at)
    if loop is not None:
        with contextlib.suppress(OSError):  # the disk that failed may fail again
            loop.members[0].logger.close()
    if run_dir is None:
        return error
    saved = resume_candidates(run_dir)
    if saved:
        last = saved[0].relative_to(run_dir)
        return type(error)(f"{error}; continue from {last} with --resume {run_dir}")
    if created and not isinstance(error, Diverged):
        shutil.rmtree(run_dir, ignore_errors=True)
        return type(error)(f"{error}; nothing was kept (no checkpoint had been written yet)")
    return type(error)(f"{error}; no checkpoint was written, the logs are in {run_dir}")
