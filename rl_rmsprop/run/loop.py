"""The run loop every run trains in: K >= 1 members of one configuration, in lockstep.

A single run is one member (``rl_rmsprop.run.single``), a ``--population`` or a study's
batch more (``rl_rmsprop.run.population``). The algorithm (``rl_rmsprop.run.members``)
plays rounds and calls :meth:`Loop.update` after each gradient of every member; the loop
does the rest, once for every algorithm: clipping and the optimizer step over the members'
``[K, N]`` rows, stopping members that diverged, telemetry, evaluation, progress and
checkpoints. Each member writes what a single run writes to its own folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from agents.population import PopulationCollector
from envs import is_atari
from envs.atari import FRAME_SKIP
from envs.normalize import observation_statistics
from envs.population import member_env
from rl_rmsprop.checkpoint import (
    CHECKPOINT_DIR,
    FINAL_CHECKPOINT,
    FORMAT,
    MODEL_FILE,
    NORMALIZATION_FILE,
    checkpoint_path,
    pack_env,
    prune_checkpoints,
    save_checkpoint,
    save_weights,
    unpack_env,
    write_json_atomic,
)
from rl_rmsprop.config import Config
from rl_rmsprop.logger import Logger, ProgressLine
from rl_rmsprop.optim.population import PopulationOptimizer
from rl_rmsprop.optim.schedules import lr_factor
from rl_rmsprop.run.errors import UserError
from rl_rmsprop.run.evaluation import evaluate_members
from rl_rmsprop.run.identity import identity
from rl_rmsprop.run.signals import Interrupted
from rl_rmsprop.run.tracker import SOLVE_WINDOW, EpisodeStats
from rl_rmsprop.tags import EVAL_MEAN, EVAL_STD, FRAMES, RETURN_MEAN100, SPS

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
        in_study: bool = False,
    ) -> None:
        self.algo, self.opt, self.members, self.seeds = algo, opt, members, seeds
        self.device, self.checkpoint, self.stop = device, checkpoint, stop
        self.population = population
        """A ``--population`` or study (one progress line for all, summaries say so); False
        for a single run (its member's own progress line and summary)."""
        self.in_study = in_study
        """A single run of a study: the study writes the HParams experiment."""
        self.base = members[0].cfg
        self.atari = is_atari(self.base.env.id)
        self.collector = PopulationCollector(env, len(members), device)
        self.updates = self.evaluations = 0
        run = self.base.run
        self.line = (
            ProgressLine(out, run.total_steps, run.quiet) if population else members[0].logger.line
        )
        """The console progress: a population's own, or the single run's logger's."""
        self.last_checkpoint = 0
        self.start = self.last_report = time.perf_counter()
        self.progress: Callable[[int, int], None] | None = None
        """Told (member steps, members) now and then; see :func:`run_population`."""

    def state_dict(self) -> dict[str, Any]:
        """The whole population's state (the environments pickled)."""
        return {
            "format": FORMAT,
            "identity": identity(self.base, self.collector.env),
            "members": [plain_config(m.cfg) for m in self.members],
            "member_step": self.collector.member_step,
            **self.algo.state_dict(),
            "optimizer": self.opt.state_dict(),
            "collector": self.collector.state_dict(),
            "env": pack_env(self.collector.env),
            "bookkeeping": [m.state_dict() for m in self.members],
            "loop": {
                "updates": self.updates,
                "evaluations": self.evaluations,
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
        try:
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
                    _log_eval(members, self._evaluate(self.observation_statistics()), step)
                if not self.population:  # a single run's own line (live on a terminal)
                    log = members[0].logger
                    if log.progress_due(step):
                        mean = members[0].episodes.mean_recent(SOLVE_WINDOW)
                        log.progress(step, step / max(elapsed, 1e-9), mean)
                elif self.line.due(step):
                    self.line.show(step, _progress(members, step, self.line.percent(step), elapsed))
                now = time.perf_counter()
                if self.progress is not None and (
                    now - self.last_report >= PROGRESS_EVERY_S or step >= run.total_steps
                ):
                    self.last_report = now
                    self.progress(step, len(members))
                self.boundary(step)
        finally:
            self.line.end()  # what is printed next starts on a line of its own
        return self._finish()

    def _evaluate(
        self, statistics: list[dict[str, np.ndarray] | None], videos: bool = False
    ) -> list[tuple[float | None, float | None]]:
        """Every member's greedy evaluation.

        With ``--normalize`` a member's observations are normalized by its own
        ``statistics``, frozen; with ``videos`` its episodes are recorded to its folder's
        ``videos/``.
        """
        folders = [m.run_dir / "videos" for m in self.members] if videos else None
        return evaluate_members(
            self.algo.greedy,
            self.base,
            self.seeds,
            self.device,
            folders,
            statistics if any(s is not None for s in statistics) else None,
        )

    def observation_statistics(self) -> list[dict[str, np.ndarray] | None]:
        """Each member's running observation statistics (``--normalize``), else None each."""
        env = self.collector.env
        return [observation_statistics(member_env(env, k)) for k in range(len(self.members))]

    def _log(self, metrics: dict[str, Any], norms: Any, step: int, elapsed: float) -> None:
        figures = self.opt.statistics(norms, self.base.learn.max_grad_norm or None)
        per_member = {
            tag: value.tolist() if isinstance(value, torch.Tensor) else [value] * len(self.members)
            for tag, value in metrics.items()
        }
        sps = step / max(elapsed, 1e-9)
        extra = {FRAMES: step * FRAME_SKIP} if self.atari else {}
        for k, m in enumerate(self.members):
            if m.stopped_at is not None and m.stopped_at < step:
                continue  # a stopped member logs nothing after its last update
            values = {tag: v[k] for tag, v in per_member.items()}
            m.logger.scalars({**values, **figures[k], SPS: sps, **extra}, step)
            mean100 = m.episodes.mean_recent()
            if mean100 is not None:
                m.logger.scalars({RETURN_MEAN100: mean100}, step)

    def _finish(self) -> list[dict[str, Any]]:
        """The end of training: final checkpoint, evaluation, then each member's files."""
        members, collector, run = self.members, self.collector, self.base.run
        wall = time.perf_counter() - self.start
        step = collector.member_step
        trained = [m.error is None for m in members]
        if self.checkpoint is not None and all(trained):
            # Taken before the evaluation: a resume continues the training, not after it.
            self.checkpoint.final(self.state_dict)
        statistics = self.observation_statistics()
        results: list[tuple[float | None, float | None]] = [(None, None)] * len(members)
        if any(trained):
            results = self._evaluate(statistics, videos=run.capture_video)
            _log_eval(members, results, step)
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
            if statistics[k] is not None:
                tensors = {n: torch.from_numpy(np.asarray(v)) for n, v in statistics[k].items()}
                save_weights(tensors, m.run_dir / NORMALIZATION_FILE)
            write_json_atomic(summary, m.run_dir / "summary.json")
            # A population's runs are a study's: its experiment is written for all of them.
            m.logger.final(summary, experiment=not self.population and not self.in_study)
            summaries.append(summary)
        return summaries


def plain_config(cfg: Config) -> dict[str, Any]:
    """A config as JSON data (lists, not tuples) without what a resume may change (quiet)."""
    data = json.loads(json.dumps(cfg.to_dict()))
    data["run"].pop("quiet", None)
    data["run"].pop("trust_checkpoint", None)
    return data


def _stop_diverged(
    opt: PopulationOptimizer, members: list[Member], step: int, max_nonfinite: int
) -> None:
    """Freeze the members whose last ``max_nonfinite`` updates were all non-finite."""
    if not opt.streaking:  # no member skipped its last update: every streak is 0
        return
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
            m.logger.scalars({EVAL_MEAN: mean, EVAL_STD: std}, step)


def _progress(members: list[Member], step: int, percent: float, elapsed: float) -> str:
    """A population's progress line: steps, aggregate speed, median return, members solved."""
    recent = [r for r in (m.episodes.mean_recent(SOLVE_WINDOW) for m in members) if r is not None]
    ret = f"{np.median(recent):.1f}" if recent else "n/a"
    solved = sum(m.episodes.solved.step is not None for m in members)
    aggregate = step * len(members) / max(elapsed, 1e-9)
    total = members[0].cfg.run.total_steps
    return (
        f"{step:>10,}/{total:,} steps per member ({percent:5.1f}%)  "
        f"{aggregate:10,.0f} aggregate SPS  median return {ret}  solved {solved}/{len(members)}"
    )
