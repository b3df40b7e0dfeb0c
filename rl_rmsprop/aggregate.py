"""Statistics over runs: IQM, stratified bootstrap intervals, learning curves on a common grid.

What ``compare`` reports follows Agarwal et al., "Deep RL at the Edge of the Statistical
Precipice" (NeurIPS 2021, the ``rliable`` library): the interquartile mean (IQM) of per-run
scores, robust to a single outlier seed yet less noisy than the median, with a percentile
confidence interval from a stratified bootstrap (runs are resampled with replacement within
each task, never across tasks), and the probability of improvement between two optimizers.
The statistics are SciPy's (``trim_mean``, ``bootstrap``, ``mannwhitneyu``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy import stats
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

from rl_rmsprop.csvlog import read_progress

__all__ = [
    "RunCurves",
    "bootstrap_ci",
    "curve_on_grid",
    "iqm",
    "iqm_band",
    "normalized_auc",
    "probability_of_improvement",
    "read_scalars",
    "step_grid",
]


def iqm(scores: np.ndarray | Sequence[float], axis: int = 0) -> np.ndarray | float:
    """Interquartile mean: the mean of the middle half of the scores along ``axis``.

    ``scipy.stats.trim_mean(x, 0.25)``, as rliable computes it: ``floor(n / 4)`` scores are
    cut from each end, so for 8 scores the mean of the middle 4, for 5 the middle 3, for
    fewer than 4 the plain mean.

    Args:
        scores: the scores; NaN is not allowed.
        axis: the axis the runs lie along.

    Raises:
        ValueError: on an empty axis.
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.shape[axis] == 0:
        raise ValueError("iqm of no scores")
    out = stats.trim_mean(x, 0.25, axis=axis)
    return float(out) if np.ndim(out) == 0 else out


def bootstrap_ci(
    scores: np.ndarray | Sequence[float],
    statistic: Callable[..., np.ndarray | float] = iqm,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Percentile confidence interval of ``statistic`` by a stratified bootstrap over runs.

    Args:
        scores: ``[runs]`` or ``[runs, tasks]``, or ``[runs, tasks, points]`` for a curve per
            run; each task's runs are resampled with replacement on their own (the strata),
            and the statistic is taken over runs (axis 0) and then averaged over tasks.
        statistic: a function of ``(array, axis)``, :func:`iqm` by default.
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
    if runs < 2:  # nothing to resample: the interval is the one value
        value = np.asarray(statistic(x, axis=0)).mean(axis=0)
        return (value, value.copy()) if curve else (float(value[0]), float(value[0]))
    # Each task's runs are one sample, resampled on its own; a point axis rides along.
    samples = [x[:, t, :].T for t in range(tasks)]  # [points, runs]

    def over_tasks(*resampled: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean([statistic(sample, axis=axis) for sample in resampled], axis=0)

    result = stats.bootstrap(
        samples,
        over_tasks,
        n_resamples=reps,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        axis=-1,
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    if curve:
        return np.asarray(low), np.asarray(high)
    return float(low[0]), float(high[0])


def _beats(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """The fraction of pairs (x_i, y_j) with x_i > y_j, ties counting one half."""
    x, y = np.moveaxis(x, axis, -1)[..., :, None], np.moveaxis(y, axis, -1)[..., None, :]
    return ((x > y) + 0.5 * (x == y)).mean(axis=(-2, -1))


def probability_of_improvement(
    x: Sequence[float],
    y: Sequence[float],
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, tuple[float, float]]:
    """The probability that a run of X scores above a run of Y, with a bootstrap interval.

    Agarwal et al. (2021, rliable's ``probability_of_improvement``): P(X > Y), over all
    pairs of one X run and one Y run, ties counting one half; the Mann-Whitney U statistic
    of X divided by the number of pairs. The interval resamples each side's runs on its own
    (percentile method). Above 0.5 favours X; an interval above 0.5 is a significant one.

    Args:
        x: X's scores, one per run (two or more).
        y: Y's scores, one per run (two or more).
        reps: bootstrap resamples.
        confidence: the interval's coverage.
        seed: the resampling generator's seed.

    Returns:
        ``(probability, (low, high))``.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    probability = float(stats.mannwhitneyu(x, y).statistic) / (len(x) * len(y))
    result = stats.bootstrap(
        (x, y),
        _beats,
        n_resamples=reps,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return probability, (float(low), float(high))


def iqm_band(runs: np.ndarray, reps: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A curve's IQM over runs and its 95% bootstrap band: ``(centre, low, high)``, ``[points]``.

    ``runs`` is ``[runs, points]``; a point where any run has no value (NaN, e.g. before its
    first logged figure) is NaN in all three.
    """
    runs = np.asarray(runs, dtype=np.float64)
    whole = np.isfinite(runs).all(axis=0)
    centre, low, high = (np.full(runs.shape[1], np.nan) for _ in range(3))
    if whole.any():
        part = runs[:, whole]
        centre[whole] = iqm(part, axis=0)
        low[whole], high[whole] = bootstrap_ci(part[:, None, :], reps=reps)
    return centre, low, high


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


def read_scalars(run_dir: Path, tags: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The scalar series of ``tags`` in one run folder.

    From the run's ``progress.csv`` (:mod:`rl_rmsprop.csvlog`) when it has one, else from
    its event files by TensorBoard's own ``EventAccumulator`` (runs written before the
    table existed, or by other writers), which shows what TensorBoard shows: values a
    resumed run's ``SessionLog.START`` purged are gone. There a value counts if it is a
    ``simple_value`` or a one-element float tensor (the form newer writers use for scalars).

    Args:
        run_dir: the run folder (its subfolders are not read).
        tags: the tags wanted.

    Returns:
        ``{tag: (steps, values)}``, int64 and float64 arrays in the order logged, for each
        wanted tag the run logged.
    """
    table = read_progress(run_dir, tags)
    if table is not None:
        return table
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    logged = events.Tags()
    out = {}
    for tag in tags:
        if tag in logged["scalars"]:
            points = [(s.step, s.value) for s in events.Scalars(tag)]
        elif tag in logged["tensors"]:  # scalars as one-element float tensors (newer writers)
            arrays = [
                (t.step, tensor_util.make_ndarray(t.tensor_proto)) for t in events.Tensors(tag)
            ]
            points = [(step, a.item()) for step, a in arrays if a.size == 1 and a.dtype.kind == "f"]
        else:
            points = []
        if points:
            out[tag] = (
                np.array([step for step, _ in points], dtype=np.int64),
                np.array([value for _, value in points], dtype=np.float64),
            )
    return out


class RunCurves:
    """The scalar series of one run, read once.

    Args:
        run_dir: the run folder (read by :func:`read_scalars`).
        tags: the scalar tags to keep.
    """

    def __init__(self, run_dir: Path, tags: Sequence[str]) -> None:
        self.series: dict[str, tuple[np.ndarray, np.ndarray]] = {
            tag: (steps.astype(np.float64), values)
            for tag, (steps, values) in read_scalars(run_dir, tags).items()
        }

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
