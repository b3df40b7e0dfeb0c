"""Statistics over runs: IQM, stratified bootstrap intervals, learning curves on a common grid.

What ``compare`` reports follows Agarwal et al., "Deep RL at the Edge of the Statistical
Precipice" (NeurIPS 2021, the ``rliable`` library): the interquartile mean (IQM) of per-run
scores, robust to a single outlier seed yet less noisy than the median, with a percentile
confidence interval from a stratified bootstrap (runs are resampled with replacement within
each task, never across tasks).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "RunCurves",
    "bootstrap_ci",
    "curve_on_grid",
    "iqm",
    "normalized_auc",
    "step_grid",
]


def iqm(scores: np.ndarray | Sequence[float], axis: int = 0) -> np.ndarray | float:
    """Interquartile mean: the mean of the middle half of the scores along ``axis``.

    ``floor(n / 4)`` scores are cut from each end, as ``scipy.stats.trim_mean(x, 0.25)`` and
    rliable do: for 8 scores the mean of the middle 4, for 5 the middle 3, for fewer than 4
    the plain mean.

    Args:
        scores: the scores; NaN is not allowed.
        axis: the axis the runs lie along.

    Raises:
        ValueError: on an empty axis.
    """
    x = np.sort(np.asarray(scores, dtype=np.float64), axis=axis)
    n = x.shape[axis]
    if n == 0:
        raise ValueError("iqm of no scores")
    cut = n // 4
    middle = np.take(x, np.arange(cut, n - cut), axis=axis)
    out = middle.mean(axis=axis)
    return float(out) if np.ndim(out) == 0 else out


def bootstrap_ci(
    scores: np.ndarray | Sequence[float],
    statistic=iqm,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Percentile confidence interval of ``statistic`` by a stratified bootstrap over runs.

    Args:
        scores: ``[runs]`` or ``[runs, tasks]``, or ``[runs, tasks, points]`` for a curve per
            run; each task's runs are resampled with replacement on their own (the strata),
            and the statistic is taken over runs (axis 0) and then averaged over tasks.
        statistic: a function of ``(array, axis=0)``, :func:`iqm` by default.
        reps: bootstrap resamples.
        confidence: the interval's coverage.
        seed: the resampling generator's seed (reports are reproducible).

    Returns:
        ``(low, high)``, floats for ``[runs]`` and ``[runs, tasks]`` input, ``[points]``
        arrays for curves.
    """
    x = np.asarray(scores, dtype=np.float64)
    curve = x.ndim == 3
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim == 2:
        x = x[:, :, None]
    runs, tasks, _ = x.shape
    rng = np.random.default_rng(seed)
    # idx[r, i, t]: which run stands in for run i of task t in resample r.
    idx = rng.integers(0, runs, size=(reps, runs, tasks))
    resampled = np.take_along_axis(x[None], idx[..., None], axis=1)  # [reps, runs, tasks, pts]
    stats = np.asarray(statistic(np.moveaxis(resampled, 1, 0), axis=0))  # [reps, tasks, pts]
    stats = stats.mean(axis=1)  # over tasks
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail], axis=0)
    if curve:
        return low, high
    return float(low[0]), float(high[0])


def step_grid(total_steps: int, points: int = 100) -> np.ndarray:
    """``points`` env-step positions evenly spaced up to ``total_steps`` (the first > 0)."""
    return np.linspace(total_steps / points, total_steps, points)


def curve_on_grid(
    steps: np.ndarray, values: np.ndarray, grid: np.ndarray, window: int = 20
) -> np.ndarray:
    """At each grid step, the mean of the last ``window`` values logged at or before it.

    Args:
        steps: ``[n]`` env steps at which the values were logged (e.g. episode ends), sorted.
        values: ``[n]`` the values (e.g. episodic returns).
        grid: the steps to evaluate at.
        window: how many of the latest values are averaged (1: the latest value).

    Returns:
        ``[len(grid)]``, NaN before the first value.
    """
    steps, values = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    count = np.searchsorted(steps, grid, side="right")  # values logged up to each grid step
    csum = np.concatenate([[0.0], np.cumsum(values)])
    first = np.maximum(count - window, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (csum[count] - csum[first]) / (count - first)
    return np.where(count > 0, out, np.nan)


def normalized_auc(curve: np.ndarray, scale: float) -> float:
    """Area under a learning curve on an even grid, as a fraction of ``scale`` over the run.

    The mean of the curve's grid values divided by ``scale`` (the env's reward threshold):
    1.0 means the run was at the threshold from its first step, 0.5 that it averaged half of
    it. Grid points before the first finished episode count as 0.
    """
    return float(np.nan_to_num(np.asarray(curve, dtype=np.float64), nan=0.0).mean() / scale)


class RunCurves:
    """The scalar series of one run's TensorBoard events, read once.

    Args:
        run_dir: the run folder (its ``events.out.tfevents.*`` file).
        tags: the scalar tags to keep.
    """

    def __init__(self, run_dir: Path, tags: Sequence[str]) -> None:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 1})
        acc.Reload()
        have = set(acc.Tags().get("scalars", []))
        self.series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for tag in tags:
            if tag in have:
                events = acc.Scalars(tag)
                self.series[tag] = (
                    np.array([e.step for e in events], dtype=np.float64),
                    np.array([e.value for e in events], dtype=np.float64),
                )

    def on_grid(self, tag: str, grid: np.ndarray, window: int = 1) -> np.ndarray:
        """The tag's series on ``grid`` (mean of the last ``window`` values); NaN if absent."""
        if tag not in self.series:
            return np.full(len(grid), np.nan)
        steps, values = self.series[tag]
        order = np.argsort(steps, kind="stable")
        return curve_on_grid(steps[order], values[order], grid, window)

    def interpolated(self, tag: str, grid: np.ndarray) -> np.ndarray:
        """The tag's series linearly interpolated on ``grid``; NaN before its first value."""
        if tag not in self.series:
            return np.full(len(grid), np.nan)
        steps, values = self.series[tag]
        order = np.argsort(steps, kind="stable")
        return np.interp(grid, steps[order], values[order], left=np.nan)
