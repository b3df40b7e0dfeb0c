"""One run from its configuration to its summary: build, restore, train, evaluate, save.

Bad input ends it before anything is written; a failure during training ends it with a
folder that ``--resume`` continues (or none).
"""

from __future__ import annotations

import contextlib
import copy
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.population import MemberNoise
from agents.rollout import WORKER_DIED, Collector, EnvStepFailed
from envs import close_env, is_atari, make_vector_env
from envs.normalize import normalize, observation_statistics
from rl_rmsprop.checkpoint import (
    FINAL_CHECKPOINT,
    MODEL_FILE,
    NORMALIZATION_FILE,
    CheckpointError,
    UnsafeCheckpoint,
    load_checkpoint,
    resume_candidates,
    save_checkpoint,
    save_weights,
    unpack_env,
    write_json_atomic,
)
from rl_rmsprop.config import Config
from rl_rmsprop.logger import Logger, flatten, markdown_table
from rl_rmsprop.optim import make_optimizer
from rl_rmsprop.run.builders import (
    build_model,
    build_replay,
    device_note,
    env_note,
    env_options,
    gradient_engine,
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
from rl_rmsprop.run.evaluation import check_video, evaluate
from rl_rmsprop.run.folders import (
    FolderLock,
    make_run_dir,
    remove_stale_temp_files,
)
from rl_rmsprop.run.loops import train_a2c, train_dqn
from rl_rmsprop.run.session import DQNParts, Session, hparams, identity
from rl_rmsprop.run.signals import StopSignals
from rl_rmsprop.run.tracker import Tracker
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


def restore(sess: Session, state: dict[str, Any], path: Path) -> None:
    """Load a checkpoint's state into a freshly built session, checking it belongs to it.

    Raises:
        UserError: the checkpoint is from another algorithm, env or network shape, or the
            run's config.json was changed since the checkpoint was written.
    """
    mine, theirs = identity(sess.cfg, sess.env), state.get("identity", {})
    if mine != theirs:
        diff = ", ".join(
            f"{k} {theirs.get(k)!r} in the checkpoint vs {v!r} here"
            for k, v in mine.items()
            if theirs.get(k) != v
        )
        raise UserError(f"checkpoint {path} belongs to another run ({diff}); resume its own folder")
    if "config" in state:
        changed = config_changes(state["config"], sess.cfg)
        if changed:
            raise UserError(
                f"{sess.run_dir / 'config.json'} was changed since checkpoint {path.name} was "
                f"written ({', '.join(changed[:3])}); restore it, or start a new run with the "
                "new settings"
            )
    try:
        sess.model.load_state_dict(state["model"])
        sess.opt.load_state_dict(state["optimizer"])
        if sess.dqn is not None:
            sess.dqn.target.load_state_dict(state["dqn"]["target"])
            sess.dqn.target_updates = state["dqn"]["target_updates"]
            if state["dqn"]["buffer"] is not None:
                sess.dqn.buffer.load_state_dict(state["dqn"]["buffer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"checkpoint {path} does not fit this run ({first})") from None
    sess.evaluations = state.get("evaluations", 0)
    if sess.noise is not None and state.get("noise") is not None:
        sess.noise.load_state_dict(state["noise"])
    elif sess.noise is not None:  # written before A2C drew its own noise: new draws from here
        sess.env_restored = "the checkpoint predates the run's own action noise"
    sess.collector.load_state_dict(state["collector"])
    # Checkpoints of format 1 kept the last returns with the collector, not the tracker.
    sess.tracker.load_state_dict(
        {"recent": state["collector"].get("recent", []), **state["tracker"]}
    )
    env, why = unpack_env(sess.env, state["env"], sess.cfg.run.trust_checkpoint)
    sess.env = sess.collector.env = env
    if why is not None:
        sess.env_restored = why
        obs, _ = sess.env.reset(seed=sess.cfg.run.seed + sess.collector.global_step)
        sess.collector.obs = obs
        sess.collector.prev_done = np.zeros(sess.collector.num_envs, dtype=bool)
    rng = state["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    sess.last_checkpoint = sess.collector.global_step


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


def _run_locked(
    cfg: Config, device: torch.device, resume: Path | None, in_study: bool = False
) -> dict:
    state, ckpt_path, new_lock = None, None, None
    if resume is not None:
        remove_stale_temp_files(resume)
        ckpt_path, state = find_checkpoint(resume, cfg.run.trust_checkpoint)
    env = make_vector_env(cfg.env.id, cfg.env.num_envs, cfg.run.seed, **env_options(cfg))
    if cfg.env.normalize:
        env = normalize(env, cfg.learn.gamma)
    sess, run_dir, created = None, resume, False
    try:
        model = build_model(cfg, env).to(device)
        try:
            opt = make_optimizer(
                cfg.optim.name,
                model.named_parameters(),
                **cfg.optim.overrides(),
                # Non-finite gradients skip the update: decided on the host on the CPU (exact,
                # no cost), on the device on CUDA (no sync per step).
                skip_nonfinite="device" if device.type == "cuda" else True,
            )
        except ValueError as e:
            raise UserError(f"{e} (see --optimizer and its options in --help)") from e
        dqn, replay_note = None, ""
        engine = gradient_engine(cfg, model)
        if cfg.run.algo == "dqn":
            buffer, replay_note = build_replay(cfg, env, device)
            dqn = DQNParts(copy.deepcopy(model).requires_grad_(False), buffer)
        collector = Collector(env, cfg.run.seed, device)
        if resume is None:
            run_dir, created = make_run_dir(cfg), True
            new_lock = FolderLock(run_dir).acquire()
            write_json_atomic(cfg.to_dict(), run_dir / "config.json")
            logger = Logger(run_dir, cfg.run.total_steps, cfg.run.quiet)
        else:
            logger = None  # opened after the checks below, with the resume step
        sess = Session(cfg, run_dir, env, model, opt, logger, collector, None, StopSignals(), dqn)
        sess.device, sess.engine = device, engine
        if cfg.run.algo == "a2c":  # a population member's noise, of this run's seed
            n_actions = int(env.single_action_space.n)
            sess.noise = MemberNoise([cfg.run.seed], cfg.env.num_envs, n_actions, device)
        sess.tracker = Tracker(cfg, collector, opt, logger)
        open_logs(sess, state, ckpt_path, replay_note)
        summary, final_state = train_session(sess)
        return finish(sess, summary, final_state, experiment=not in_study)
    except (TrainingFailed, OSError, EnvStepFailed) as e:
        raise training_failure(e, sess, run_dir, created) from None
    finally:
        if new_lock is not None:
            new_lock.release()
        close_env(sess.env if sess is not None else env)


def open_logs(
    sess: Session, state: dict[str, Any] | None, ckpt_path: Path | None, replay_note: str
) -> None:
    """Restore a resumed session from its checkpoint, then write the run's opening lines."""
    cfg, run_dir = sess.cfg, sess.run_dir
    flat = hparams(cfg)
    if state is not None:
        restore(sess, state, ckpt_path)
        step = sess.collector.global_step
        # purge_step: TensorBoard drops what the interrupted run logged after the
        # checkpoint, so the resumed run's events replace them instead of doubling them.
        # What was logged at the checkpoint's own step (before it was written) is kept.
        sess.logger = sess.tracker.logger = Logger(
            run_dir, cfg.run.total_steps, cfg.run.quiet, purge_step=step + 1
        )
        sess.logger.config(flat, None)
        exact = sess.env_restored is True
        sess.logger.message(
            f"resumed {run_dir} from {ckpt_path.name} at step {step:,}"
            + (
                ""
                if exact
                else f" (not an exact continuation: {sess.env_restored}; new episodes start here)"
            )
        )
    else:
        sess.logger.config(flat, markdown_table(flatten(cfg.to_dict())))
    if replay_note:
        sess.logger.message(replay_note)
    images = is_atari(cfg.env.id)
    sess.logger.message(
        f"run {run_dir}: {cfg.run.algo} on {cfg.env.id} x{cfg.env.num_envs}{env_note(sess.env)}, "
        f"optimizer {cfg.optim.name} ({sess.opt.impl}), {sess.engine} gradients, device "
        f"{sess.device}" + device_note(cfg.run.device, sess.device, images=images)
    )


def train_session(sess: Session) -> tuple[dict, dict]:
    """Run the algorithm's loop under the stop signals; the summary and the final state.

    Raises:
        Interrupted, TrainingFailed: the loop stopped (the events are flushed first).
    """
    loop = train_a2c if sess.cfg.run.algo == "a2c" else train_dqn
    try:
        # NumPy's overflow warnings would only repeat what the non-finite check counts and
        # reports (a diverging loss): silenced for the loop, not the process.
        with sess.stop, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            summary = loop(sess)
        # The final state is taken here: the environments are still open, and the
        # evaluation after it (its RNG draws) is not part of the training a resume continues.
        return summary, sess.state()
    except WORKER_DIED as e:
        sess.logger.close()
        raise EnvCrashed(
            f"an environment worker of {sess.cfg.env.id} died ({type(e).__name__}) at step "
            f"{sess.collector.global_step:,}"
        ) from None
    except BaseException:  # anything else: what was logged still reaches the disk
        sess.logger.close()
        raise


def finish(sess: Session, summary: dict, final_state: dict, experiment: bool = True) -> dict:
    """After training: the final evaluation, checkpoint, ``summary.json`` and hparams."""
    cfg, run_dir, logger = sess.cfg, sess.run_dir, sess.logger
    video_dir = run_dir / "videos" if cfg.run.capture_video else None
    device = sess.device or torch.device("cpu")
    mean, std = evaluate(sess.model, cfg, device, video_dir, observation_statistics(sess.env))
    summary["eval_return_mean"], summary["eval_return_std"] = mean, std
    episodes = sess.tracker.episodes
    episodes.evaluated(mean, summary["total_steps"])
    summary["eval_solved_at_step"] = episodes.eval_solved_at_step
    if mean is not None:
        logger.scalars(
            {"eval/episodic_return_mean": mean, "eval/episodic_return_std": std},
            summary["total_steps"],
        )
    save_checkpoint(final_state, run_dir / FINAL_CHECKPOINT)
    save_weights(sess.model.state_dict(), run_dir / MODEL_FILE)
    statistics = observation_statistics(sess.env)
    if statistics is not None:
        save_weights(
            {k: torch.from_numpy(np.asarray(v)) for k, v in statistics.items()},
            run_dir / NORMALIZATION_FILE,
        )
    summary["run_dir"] = str(run_dir)
    write_json_atomic(summary, run_dir / "summary.json")
    logger.final(summary, experiment)
    logger.close()
    return summary


def training_failure(
    error: BaseException, sess: Session | None, run_dir: Path | None, created: bool
) -> TrainingFailed:
    """The one-line failure for an error during training, saying what is left on disk.

    A write that failed (disk full, a read-only folder) is named as such. Where a checkpoint
    exists the line says how to continue; a folder this call created that holds none is
    removed (nothing half-written stays behind), except for a diverged run, whose events
    show how it diverged.
    """
    at = f" at step {sess.collector.global_step:,}" if sess is not None else ""
    error = as_training_failure(error, run_dir, at)
    if sess is not None and sess.logger is not None:
        with contextlib.suppress(OSError):  # the disk that failed may fail again
            sess.logger.close()
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
