"""A member's episodes: the last returns, when it was solved (training and greedy rules)."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from agents.rollout import mean_of_last

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


def fmt_or_na(value: float | None, spec: str = ".1f") -> str:
    """A summary figure for a closing line: ``n/a`` where there is none."""
    return "n/a" if value is None else format(value, spec)
