"""What every run loop shares: episodes, solved-at, telemetry cadence, progress, summary."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np

from agents.rollout import Collector, mean_of_last
from envs import env_reward_threshold, is_atari
from envs.atari import FRAME_SKIP
from rl_rmsprop.config import Config
from rl_rmsprop.logger import Logger
from rl_rmsprop.optim import clip_grad_norm_, histograms, statistics
from rl_rmsprop.optim.schedules import lr_factor
from rl_rmsprop.run.errors import Diverged

SOLVE_WINDOW = 20
"""solved_at_step: the mean of this many last training episodes reaches the env's threshold."""


class SolvedAt:
    """When a run first counts as solved (the rule of single runs and population members).

    Solved: the mean return of the last :data:`SOLVE_WINDOW` training episodes reaches the
    env's reward threshold; never for an env without a threshold.

    Args:
        threshold: the env's reward threshold, or None.
    """

    def __init__(self, threshold: float | None) -> None:
        self.threshold = threshold
        self.window: list[float] = []
        self.step: int | None = None
        self.time_s: float | None = None

    def add(self, episodic_return: float, step: int, elapsed_s: float) -> None:
        """Take one finished episode (its return, the env step and wall time it ended at)."""
        if self.step is not None or self.threshold is None:
            return
        window = self.window
        window.append(episodic_return)
        if len(window) > SOLVE_WINDOW:
            del window[0]
        # The mean can reach the threshold only if the largest return does: a cheap test first.
        full = len(window) == SOLVE_WINDOW
        if full and max(window) >= self.threshold and np.mean(window) >= self.threshold:
            self.step, self.time_s = step, elapsed_s

    def state_dict(self) -> dict[str, Any]:
        """The window and the solved-at figures (the keys of earlier checkpoints)."""
        return {
            "window": list(self.window),
            "solved_at_step": self.step,
            "solved_at_time_s": self.time_s,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.window = list(state["window"])
        self.step, self.time_s = state["solved_at_step"], state["solved_at_time_s"]


class EpisodeStats:
    """One member's finished episodes: its last 100 returns and when it first solved the env.

    Two rules say when: ``solved_at_step`` (the mean of the last :data:`SOLVE_WINDOW` training
    episodes reaches the env's threshold) and ``eval_solved_at_step`` (the first greedy
    evaluation, periodic or final, whose mean reaches it). A single run has one, a population
    one per member: the same rules, the same figures in ``summary.json``.

    Args:
        threshold: the env's reward threshold, or None.
    """

    def __init__(self, threshold: float | None) -> None:
        self.recent: deque[float] = deque(maxlen=100)
        self.solved = SolvedAt(threshold)
        self.eval_solved_at_step: int | None = None

    def evaluated(self, mean: float | None, step: int) -> None:
        """Take one greedy evaluation's mean return at env step ``step`` (None: not run)."""
        threshold = self.solved.threshold
        if threshold is None or mean is None or self.eval_solved_at_step is not None:
            return
        if mean >= threshold:
            self.eval_solved_at_step = step

    def add(self, episodic_return: float, step: int, elapsed_s: float) -> None:
        """Take one finished episode (its return, the env step and wall time it ended at)."""
        self.recent.append(episodic_return)
        self.solved.add(episodic_return, step, elapsed_s)

    def mean_recent(self, n: int = 100) -> float | None:
        """Mean return of the last ``n`` (at most 100) episodes; None before any."""
        return mean_of_last(self.recent, n)

    def figures(self) -> dict[str, Any]:
        """Its figures of ``summary.json``."""
        return {
            "episodic_return_mean100": self.mean_recent(),
            "solved_at_step": self.solved.step,
            "solved_at_time_s": self.solved.time_s,
            "eval_solved_at_step": self.eval_solved_at_step,
        }

    def state_dict(self) -> dict[str, Any]:
        """The window, the last returns and the solved-at figures (for checkpoints)."""
        return {
            **self.solved.state_dict(),
            "recent": list(self.recent),
            "eval_solved_at_step": self.eval_solved_at_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (checkpoints before the evaluation rule lack it)."""
        self.solved.load_state_dict(state)
        self.recent = deque(state["recent"], maxlen=100)
        self.eval_solved_at_step = state.get("eval_solved_at_step")


class Tracker:
    """What every run loop shares: episodes, solved-at, telemetry cadence, progress, summary.

    Args:
        cfg: the run's configuration.
        collector: the rollout collector (owns the env step count and finished episodes).
        opt: the optimizer (for telemetry).
        logger: where everything is written.
    """

    def __init__(self, cfg: Config, collector: Collector, opt: Any, logger: Logger) -> None:
        self.run, self.collector, self.opt, self.logger = cfg.run, collector, opt, logger
        self.max_norm = cfg.learn.max_grad_norm
        self.lr_schedule = cfg.learn.lr_schedule
        self.base_lrs = [group["lr"] for group in opt.param_groups]
        """Each group's lr before any schedule (read before a checkpoint's groups load)."""
        self.atari = is_atari(cfg.env.id)
        self.episodes = EpisodeStats(env_reward_threshold(cfg.env.id))
        self.updates = 0
        self.start = time.perf_counter()
        on_cpu = all(p.device.type == "cpu" for g in opt.param_groups for p in g["params"])
        self.nonfinite_check_every = 1 if on_cpu else 50

    def clip_and_step(self, metrics: dict[str, Any]) -> None:
        """Clip, step the optimizer and write telemetry every ``--log-every`` updates."""
        if self.lr_schedule != "constant":
            factor = lr_factor(self.lr_schedule, self.collector.global_step, self.run.total_steps)
            for group, base in zip(self.opt.param_groups, self.base_lrs, strict=True):
                group["lr"] = base * factor
        preclip = clip_grad_norm_(self.opt, self.max_norm) if self.max_norm > 0 else None
        log_now = self.run.log_every > 0 and self.updates % self.run.log_every == 0
        self.opt.record_update = log_now
        self.opt.step()
        self.updates += 1
        step = self.collector.global_step
        # Reading the streak is free on the CPU; on a GPU it syncs, so only now and then.
        if self.updates % self.nonfinite_check_every == 0:
            streak = self.opt.nonfinite_streak
            if streak >= self.run.max_nonfinite:
                raise Diverged(
                    f"stopped at step {step:,}: the last {streak} updates had non-finite "
                    "gradients and were skipped (the loss diverged); lower --lr or "
                    "--max-grad-norm"
                )
        if log_now:
            figures = statistics(self.opt, preclip, self.max_norm or None)
            extra = {"charts/frames": step * FRAME_SKIP} if self.atari else {}
            self.logger.scalars({**metrics, **figures, "charts/SPS": self.sps(), **extra}, step)
            mean100 = self.episodes.mean_recent()
            if mean100 is not None:
                self.logger.scalars({"charts/episodic_return_mean100": mean100}, step)
        if self.run.histogram_every and self.updates % self.run.histogram_every == 1:
            self.logger.histograms(histograms(self.opt), step)

    def state_dict(self) -> dict[str, Any]:
        """Counters and the episode bookkeeping (for checkpoints)."""
        return {
            **self.episodes.state_dict(),
            "updates": self.updates,
            "elapsed_s": time.perf_counter() - self.start,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; wall time continues from the saved elapsed time."""
        self.episodes.load_state_dict(state)
        self.updates = state["updates"]
        self.start = time.perf_counter() - state["elapsed_s"]

    def sps(self) -> float:
        """Env steps per second since the loop started."""
        return self.collector.global_step / max(time.perf_counter() - self.start, 1e-9)

    def record_episodes(self) -> None:
        """Log finished episodes, note when the env is first solved, update the progress."""
        for ep in self.collector.pop_finished():
            self.logger.episode(ep.episodic_return, ep.length, ep.step)
            self.episodes.add(ep.episodic_return, ep.step, time.perf_counter() - self.start)
        step = self.collector.global_step
        if self.logger.progress_due(step):
            self.logger.progress(step, self.sps(), self.episodes.mean_recent(SOLVE_WINDOW))

    def summary(self) -> dict[str, Any]:
        """The figures of ``summary.json`` that the loop knows."""
        wall = time.perf_counter() - self.start
        return {
            "total_steps": self.collector.global_step,
            "updates": self.updates,
            "wall_time_s": wall,
            "sps": self.collector.global_step / wall,
            **self.episodes.figures(),
        }


def fmt_or_na(value: float | None, spec: str = ".1f") -> str:
    """A summary figure for a closing line: ``n/a`` where there is none."""
    return "n/a" if value is None else format(value, spec)
