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

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from agents.population import PopulationCollector
from envs import env_reward_threshold, is_atari
from envs.atari import FRAME_SKIP
from envs.normalize import observation_statistics
from rl_rmsprop.checkpoint import (
    CHECKPOINT_DIR,
    FINAL_CHECKPOINT,
    FORMAT,
    MODEL_FILE,
    NORMALIZATION_FILE,
    CheckpointError,
    UnsafeCheckpoint,
    checkpoint_path,
    load_checkpoint,
    pack_env,
    prune_checkpoints,
    save_checkpoint,
    save_weights,
    unpack_env,
    write_json_atomic,
)
from rl_rmsprop.config import Config
from rl_rmsprop.logger import Logger, flatten, markdown_table
from rl_rmsprop.optim.population import PopulationOptimizer, member_settings
from rl_rmsprop.optim.schedules import lr_factor
from rl_rmsprop.run.builders import member_envs, resolve_device
from rl_rmsprop.run.errors import UserError
from rl_rmsprop.run.evaluation import evaluate_members
from rl_rmsprop.run.folders import (
    make_run_dir,
    run_folder,
)
from rl_rmsprop.run.identity import hparams, identity
from rl_rmsprop.run.members import ALGORITHMS, check_members
from rl_rmsprop.run.signals import Interrupted
from rl_rmsprop.run.tracker import SOLVE_WINDOW, EpisodeStats
from rl_rmsprop.threads import set_threads

PROGRESS_EVERY_S = 0.5
"""How often a population tells its ``progress`` callback how far it is."""


@dataclass
class Member:
    """One member's bookkeeping: its folder, logger, episodes and whether it was stopped."""

    cfg: Config
    run_dir: Path
    logger: Logger
    episodes: EpisodeStats
    error: str | None = None
    stopped_at: int | None = None
    """Env step at which the member was stopped (diverged); it takes no more updates."""

    def episode(self, ret: float, length: int, step: int, elapsed: float) -> None:
        """Log a finished episode and note when the env is first solved."""
        self.logger.episode(ret, length, step)
        self.episodes.add(ret, step, elapsed)

    def state_dict(self) -> dict[str, Any]:
        """The bookkeeping a resumed population continues from."""
        return {**self.episodes.state_dict(), "error": self.error, "stopped_at": self.stopped_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.episodes.load_state_dict(state)
        self.error, self.stopped_at = state["error"], state["stopped_at"]


class PopulationCheckpoint:
    """Where a population checkpoints: one file, replaced each time (removed once finished)."""

    def __init__(self, path: Path) -> None:
        self.path, self.folder = path, path.parent

    def save(self, state: dict[str, Any], step: int) -> None:
        """Write ``state`` (atomically) over the previous checkpoint."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(state, self.path)

    def final(self, state: Callable[[], dict[str, Any]]) -> None:
        """A finished population keeps no checkpoint (its command removes the file)."""


class RunCheckpoints:
    """Where a single run checkpoints: ``checkpoints/step-N.pt``, then ``checkpoint.pt``.

    The newest ``--keep-checkpoints`` periodic ones are kept; the final one is what
    ``--resume`` with more ``--total-steps`` goes on from.
    """

    def __init__(self, run_dir: Path, keep: int) -> None:
        self.folder, self.keep = run_dir, keep

    def save(self, state: dict[str, Any], step: int) -> None:
        """Write the checkpoint of ``step`` and prune the oldest beyond ``--keep-checkpoints``."""
        (self.folder / CHECKPOINT_DIR).mkdir(exist_ok=True)
        save_checkpoint(state, checkpoint_path(self.folder, step))
        prune_checkpoints(self.folder, self.keep)

    def final(self, state: Callable[[], dict[str, Any]]) -> None:
        """Write the final checkpoint."""
        save_checkpoint(state(), self.folder / FINAL_CHECKPOINT)


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


def member_optimizer(algo: Any, cfgs: list[Config]) -> PopulationOptimizer:
    """The one optimizer of the members' ``[K, N]`` rows, each row with its member's settings.

    Raises:
        UserError: a member's optimizer settings are out of range.
    """
    try:
        specs = [(c.optim.name, c.optim.overrides()) for c in cfgs]
        return PopulationOptimizer(algo.data, algo.grad, specs, algo.names)
    except ValueError as e:
        raise UserError(f"{e} (see --optimizer and its options in --help)") from e


def _families(cfgs: list[Config]) -> str:
    counts: dict[str, int] = {}
    for c in cfgs:
        counts[c.optim.name] = counts.get(c.optim.name, 0) + 1
    return ", ".join(f"{n} x{k}" for n, k in counts.items())


class Loop:
    """The population's training loop, for any algorithm, and everything a checkpoint holds.

    The algorithm (:mod:`rl_rmsprop.run.members`) plays rounds and calls :meth:`update`
    after each gradient; the loop does the rest: clipping, the optimizer step, stopping
    diverged members, logging, evaluation, progress and checkpoints.
    """

    def __init__(
        self,
        algo: Any,
        opt: PopulationOptimizer,
        env: Any,
        members: list[Member],
        seeds: list[int],
        device: torch.device,
        out: TextIO,
        checkpoint: PopulationCheckpoint | RunCheckpoints | None = None,
        stop: Any = None,
        population: bool = True,
    ) -> None:
        self.algo, self.opt, self.members, self.seeds = algo, opt, members, seeds
        self.device, self.out, self.checkpoint, self.stop = device, out, checkpoint, stop
        self.population = population
        self.in_study = False
        """A single run of a study: the study writes the HParams experiment."""
        """A ``--population`` or study (one progress line for all, summaries say so); False
        for a single run (its member's own progress line and summary)."""
        self.base = members[0].cfg
        self.atari = is_atari(self.base.env.id)
        self.collector = PopulationCollector(env, len(members), device)
        self.updates = self.evaluations = self.next_line = 0
        self.last_checkpoint = 0
        self.start = self.last_report = time.perf_counter()
        self.progress: Callable[[int, int], None] | None = None
        """Told (member steps, members) now and then; see :func:`run_population`."""

    def state_dict(self) -> dict[str, Any]:
        """The whole population's state (the environments pickled)."""
        return {
            "format": FORMAT,
            "identity": identity(self.base, self.collector.env),
            "members": [_plain(m.cfg) for m in self.members],
            "member_step": self.collector.member_step,
            **self.algo.state_dict(),
            "optimizer": self.opt.state_dict(),
            "collector": self.collector.state_dict(),
            "env": pack_env(self.collector.env),
            "bookkeeping": [m.state_dict() for m in self.members],
            "loop": {
                "updates": self.updates,
                "evaluations": self.evaluations,
                "next_line": self.next_line,
                "elapsed_s": time.perf_counter() - self.start,
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> str | None:
        """Continue from :meth:`state_dict` output; why it is not exact (None if it is)."""
        self.algo.load_state_dict(state)
        self.opt.load_state_dict(state["optimizer"])
        trust = self.base.run.trust_checkpoint
        self.collector.env, why = unpack_env(self.collector.env, state["env"], trust)
        self.collector.load_state_dict(state["collector"])
        if why is not None:  # rebuilt: every member starts new episodes from its own seeds
            self.collector.obs, _ = self.collector.env.reset()
            self.collector.prev_done = np.zeros(self.collector.num_envs, dtype=bool)
        for m, saved in zip(self.members, state["bookkeeping"], strict=True):
            m.load_state_dict(saved)
        loop = state["loop"]
        self.updates, self.evaluations = loop["updates"], loop["evaluations"]
        self.next_line = loop["next_line"]
        self.start = time.perf_counter() - loop["elapsed_s"]
        self.last_checkpoint = state["member_step"]
        return why

    def save(self) -> None:
        """Write a checkpoint (atomically), the members' events flushed first.

        A resume keeps what was logged up to here and replaces what comes later.
        """
        for m in self.members:
            m.logger.flush()
        self.checkpoint.save(self.state_dict(), self.collector.member_step)
        self.last_checkpoint = self.collector.member_step

    def boundary(self, step: int) -> None:
        """Between rounds: a checkpoint when due, or when a stop signal came (then stop)."""
        if self.stop is not None and self.stop.signum is not None and self.checkpoint:
            self.save()
            raise Interrupted(self.stop.signum, step, self.checkpoint.folder)
        every = self.base.run.checkpoint_every
        due = every and step // every > self.last_checkpoint // every
        if self.checkpoint and due and step < self.base.run.total_steps:
            self.save()

    def update(self, metrics: dict[str, Any]) -> None:
        """After a gradient of every member: clip, step, stop the diverged, log when due.

        ``metrics`` are ``[K]`` tensors (one value per member) or one float for all.
        """
        opt, members, run, learn = self.opt, self.members, self.base.run, self.base.learn
        step = self.collector.member_step
        opt.lr_scale = lr_factor(learn.lr_schedule, step, run.total_steps)
        max_norm = learn.max_grad_norm
        norms = opt.clip_grad_norm_(max_norm) if max_norm > 0 else None
        log_now = run.log_every > 0 and self.updates % run.log_every == 0
        opt.record_update = log_now
        opt.step(norms)
        self.updates += 1
        _stop_diverged(opt, members, step, run.max_nonfinite)
        if log_now:
            self._log(metrics, norms, step, time.perf_counter() - self.start)
        if run.histogram_every and self.updates % run.histogram_every == 1:
            for k, m in enumerate(members):
                if m.stopped_at is None:
                    m.logger.histograms(opt.histograms(k), step)

    def train(self) -> list[dict[str, Any]]:
        """Train to ``--total-steps`` per member; every member's summary (or error)."""
        members, collector, run = self.members, self.collector, self.base.run
        while collector.member_step < run.total_steps:
            self.algo.round(self)
            if all(m.stopped_at is not None for m in members):
                break  # every member diverged: nothing left to train
            step = collector.member_step
            elapsed = time.perf_counter() - self.start
            for k, ep in collector.pop_member_episodes():
                if members[k].stopped_at is None:
                    members[k].episode(ep.episodic_return, ep.length, ep.step, elapsed)
            every = run.eval_every
            if every and step // every > self.evaluations and step < run.total_steps:
                self.evaluations = step // every
                _log_eval(members, self._evaluate(), step)
            if not self.population:  # a single run's own line (live on a terminal)
                log = members[0].logger
                if log.progress_due(step):
                    mean = members[0].episodes.mean_recent(SOLVE_WINDOW)
                    log.progress(step, step / max(elapsed, 1e-9), mean)
            elif not run.quiet and (step >= self.next_line or step >= run.total_steps):
                self.next_line = step + max(1, run.total_steps // 10)
                _progress(members, step, run.total_steps, elapsed, self.out)
            now = time.perf_counter()
            if self.progress is not None and (
                now - self.last_report >= PROGRESS_EVERY_S or step >= run.total_steps
            ):
                self.last_report = now
                self.progress(step, len(members))
            self.boundary(step)
        return self._finish()

    def _evaluate(self, video_dir: Path | None = None) -> list[tuple[float | None, float | None]]:
        """Every member's greedy evaluation.

        One member's observations are normalized as in training (``--normalize``), and its
        episodes recorded to ``video_dir`` if given.
        """
        statistics = observation_statistics(self.collector.env)
        return evaluate_members(
            self.algo.greedy, self.base, self.seeds, self.device, video_dir, statistics
        )

    def _log(self, metrics: dict[str, Any], norms: Any, step: int, elapsed: float) -> None:
        figures = self.opt.statistics(norms, self.base.learn.max_grad_norm or None)
        per_member = {
            tag: value.tolist() if isinstance(value, torch.Tensor) else [value] * len(self.members)
            for tag, value in metrics.items()
        }
        sps = step / max(elapsed, 1e-9)
        extra = {"charts/frames": step * FRAME_SKIP} if self.atari else {}
        for k, m in enumerate(self.members):
            if m.stopped_at is not None and m.stopped_at < step:
                continue  # a stopped member logs nothing after its last update
            values = {tag: v[k] for tag, v in per_member.items()}
            m.logger.scalars({**values, **figures[k], "charts/SPS": sps, **extra}, step)
            mean100 = m.episodes.mean_recent()
            if mean100 is not None:
                m.logger.scalars({"charts/episodic_return_mean100": mean100}, step)

    def _finish(self) -> list[dict[str, Any]]:
        """The end of training: final checkpoint, evaluation, then each member's files."""
        members, collector, run = self.members, self.collector, self.base.run
        wall = time.perf_counter() - self.start
        step = collector.member_step
        trained = [m.error is None for m in members]
        if self.checkpoint is not None and all(trained):
            # Taken before the evaluation: a resume continues the training, not after it.
            self.checkpoint.final(self.state_dict)
        results: list[tuple[float | None, float | None]] = [(None, None)] * len(members)
        if any(trained):
            video = members[0].run_dir / "videos" if run.capture_video else None
            results = self._evaluate(video)
            _log_eval(members, results, step)
        statistics = observation_statistics(collector.env)
        summaries = []
        for k, m in enumerate(members):
            if m.error is not None:
                summaries.append({"error": m.error})
                continue
            summary = {
                "total_steps": step,
                "updates": self.updates,
                "wall_time_s": wall,
                "sps": step / wall,
                **m.episodes.figures(),
                "eval_return_mean": results[k][0],
                "eval_return_std": results[k][1],
            }
            if self.population:
                aggregate = step * len(members) / wall
                summary["population"] = {"members": len(members), "aggregate_sps": aggregate}
            summary["run_dir"] = str(m.run_dir)
            save_weights(self.algo.member_state_dict(k), m.run_dir / MODEL_FILE)
            if statistics is not None:
                tensors = {n: torch.from_numpy(np.asarray(v)) for n, v in statistics.items()}
                save_weights(tensors, m.run_dir / NORMALIZATION_FILE)
            write_json_atomic(summary, m.run_dir / "summary.json")
            # A population's runs are a study's: its experiment is written for all of them.
            m.logger.final(summary, experiment=not self.population and not self.in_study)
            summaries.append(summary)
        return summaries


def _plain(cfg: Config) -> dict[str, Any]:
    """A config as JSON data (lists, not tuples) without what a resume may change (quiet)."""
    data = json.loads(json.dumps(cfg.to_dict()))
    data["run"].pop("quiet", None)
    data["run"].pop("trust_checkpoint", None)
    return data


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
    if state.get("members") != [_plain(c) for c in cfgs]:
        raise UserError(
            f"{path} is the checkpoint of another population; remove it or resume its own"
        )
    missing = [c.run.run_name for c in cfgs if not run_folder(c).is_dir()]
    if missing:
        raise UserError(f"cannot resume {path}: member folder {missing[0]} is gone")
    return state


def _stop_diverged(
    opt: PopulationOptimizer, members: list[Member], step: int, max_nonfinite: int
) -> None:
    """Freeze the members whose last ``max_nonfinite`` updates were all non-finite."""
    over = (opt.streak >= max_nonfinite) & ~opt.frozen
    for k in torch.nonzero(over).flatten().tolist():
        opt.frozen[k] = True
        members[k].stopped_at = step
        members[k].error = (
            f"stopped at step {step:,}: the last {int(opt.streak[k])} updates had non-finite "
            "gradients and were skipped (the loss diverged); lower --lr or --max-grad-norm"
        )


def _log_eval(
    members: list[Member], results: list[tuple[float | None, float | None]], step: int
) -> None:
    for m, (mean, std) in zip(members, results, strict=True):
        m.episodes.evaluated(mean, step)
        if mean is not None:
            m.logger.scalars(
                {"eval/episodic_return_mean": mean, "eval/episodic_return_std": std}, step
            )


def _progress(members: list[Member], step: int, total: int, elapsed: float, out: TextIO) -> None:
    recent = [r for r in (m.episodes.mean_recent(SOLVE_WINDOW) for m in members) if r is not None]
    ret = f"{np.median(recent):.1f}" if recent else "n/a"
    solved = sum(m.episodes.solved.step is not None for m in members)
    aggregate = step * len(members) / max(elapsed, 1e-9)
    print(
        f"{step:>10,}/{total:,} steps per member ({min(100.0, 100 * step / total):5.1f}%)  "
        f"{aggregate:10,.0f} aggregate SPS  median return {ret}  solved {solved}/{len(members)}",
        file=out,
        flush=True,
    )
