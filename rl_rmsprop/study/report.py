"""What a study says: per-optimizer figures, the table, significance, plots, summaries."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import multiprocessing
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rl_rmsprop.aggregate import (
    RunCurves,
    bootstrap_ci,
    iqm,
    iqm_band,
    normalized_auc,
    probability_of_improvement,
)
from rl_rmsprop.checkpoint import write_json_atomic
from rl_rmsprop.logger import FINAL_METRICS
from rl_rmsprop.optim.figures import EFF_P50, NORM_PRECLIP, UPDATE_RATIO
from rl_rmsprop.run.identity import hparams
from rl_rmsprop.study.board import Band, columns, write_board
from rl_rmsprop.study.specs import (
    OptimizerSpec,
    Pair,
)
from rl_rmsprop.tags import EPISODIC_RETURN, HPARAMS

GRID_POINTS = 100
"""Points of the env-step grid the learning curves are put on."""
CURVE_WINDOW = 20
"""A curve's value at a grid step: the mean return of the last this many finished episodes."""
OPTIM_TAGS = {
    NORM_PRECLIP: "gradient norm (before clipping)",
    EFF_P50: "effective learning rate (median lr / denominator)",
    UPDATE_RATIO: "update-to-parameter ratio",
}
"""The telemetry optim.png shows, with its panel titles."""
OPTIM_UNITS = {
    NORM_PRECLIP: "L2 norm of the gradient",
    EFF_P50: "lr / denominator (step per unit gradient)",
    UPDATE_RATIO: "||update|| / ||parameters||",
}
"""Their y-axis labels."""


@dataclass
class OptimizerResult:
    """The aggregated figures of one optimizer over its seeds."""

    label: str
    runs: int
    failed: int
    final_iqm: float | None
    final_ci: tuple[float, float] | None
    final_mean: float | None
    final_std: float | None
    solved: int
    steps_to_solve: float | None
    time_to_solve_s: float | None
    eval_solved: int
    eval_steps_to_solve: float | None
    auc: float | None
    sps: float | None
    finals: list[float] = dataclasses.field(default_factory=list)
    """Each finished run's final return (the curve's last point)."""


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def aggregate(
    specs: list[OptimizerSpec], pairs: list[Pair], results: dict[Pair, dict], curves: dict
) -> list[OptimizerResult]:
    """One :class:`OptimizerResult` per spec from the runs' summaries and return curves."""
    rows = []
    for spec in specs:
        mine = [p for p in pairs if p.spec == spec]
        ok = [results[p] for p in mine if "error" not in results[p]]
        # the curve's last point: the same return window as curves.png (CURVE_WINDOW)
        finals = [
            float(curves[p]["return"][-1])
            for p in mine
            if p in curves and np.isfinite(curves[p]["return"][-1])
        ]
        solved = [s for s in ok if s["solved_at_step"] is not None]
        evals = [s.get("eval_solved_at_step") for s in ok]
        eval_solved = [step for step in evals if step is not None]
        aucs = [curves[p]["auc"] for p in mine if p in curves]
        rows.append(
            OptimizerResult(
                label=spec.label,
                runs=len(mine),
                failed=len(mine) - len(ok),
                final_iqm=iqm(finals) if finals else None,
                final_ci=bootstrap_ci(finals) if finals else None,
                final_mean=float(np.mean(finals)) if finals else None,
                final_std=float(np.std(finals)) if finals else None,
                solved=len(solved),
                steps_to_solve=_median([s["solved_at_step"] for s in solved]),
                time_to_solve_s=_median([s["solved_at_time_s"] for s in solved]),
                eval_solved=len(eval_solved),
                eval_steps_to_solve=_median(eval_solved),
                auc=float(np.mean(aucs)) if aucs else None,
                sps=_median([s["sps"] for s in ok]),
                finals=finals,
            )
        )
    return rows


def shown(value: float | None, spec: str) -> str:
    """A figure of the table: ``format(value, spec)``, or ``n/a`` for none (or NaN)."""
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def format_table(rows: list[OptimizerResult]) -> str:
    """The console table: one line per optimizer."""
    width = max(9, *(len(r.label) for r in rows))
    head = (
        f"{'optimizer':<{width}} | last-20 return IQM [95% CI] | mean +- std     | solved | "
        f"steps to solve | time to solve | eval solved at (median) |   AUC |    SPS"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        ci = "" if r.final_ci is None else f"[{r.final_ci[0]:6.1f}, {r.final_ci[1]:6.1f}]"
        mean_std = "n/a" if r.final_mean is None else f"{r.final_mean:6.1f} +- {r.final_std:5.1f}"
        solve_time = "n/a" if r.time_to_solve_s is None else f"{r.time_to_solve_s:.1f} s"
        lines.append(
            f"{r.label:<{width}} | {shown(r.final_iqm, '6.1f'):>6} {ci:<20} | {mean_std:<15} | "
            f"{r.solved:>2}/{r.runs - r.failed:<3} | {shown(r.steps_to_solve, ',.0f'):>14} | "
            f"{solve_time:>13} | {r.eval_solved:>2}/{r.runs - r.failed:<3} "
            f"{shown(r.eval_steps_to_solve, ',.0f'):>15} | {shown(r.auc, '.3f'):>5} | "
            f"{shown(r.sps, ',.0f'):>6}"
        )
    return "\n".join(lines)


MIN_RUNS_FOR_SIGNIFICANCE = 3
"""Below this many finished runs a bootstrap interval is only the range of the runs."""


@dataclass
class Improvement:
    """The probability that a run of ``better`` ends above a run of ``worse`` (>= 0.5)."""

    better: str
    worse: str
    probability: float
    ci: tuple[float, float]

    @property
    def significant(self) -> bool:
        """Whether the interval lies above one half."""
        return self.ci[0] > 0.5


def improvements(rows: list[OptimizerResult]) -> list[Improvement]:
    """The probability of improvement of the final return, for each pair of optimizers.

    Each pair once, ordered so that the probability is at least one half; optimizers with
    fewer than :data:`MIN_RUNS_FOR_SIGNIFICANCE` finished runs are left out.
    """
    enough = [r for r in rows if len(r.finals) >= MIN_RUNS_FOR_SIGNIFICANCE]
    out = []
    for i, a in enumerate(enough):
        for b in enough[i + 1 :]:
            p, (low, high) = probability_of_improvement(a.finals, b.finals)
            if p >= 0.5:
                out.append(Improvement(a.label, b.label, p, (low, high)))
            else:
                out.append(Improvement(b.label, a.label, 1.0 - p, (1.0 - high, 1.0 - low)))
    return out


def significance(rows: list[OptimizerResult]) -> str:
    """Which optimizers beat which: the probability of improvement of the final return.

    P(X > Y), the chance that a run of X ends above a run of Y (Agarwal et al. 2021), with
    its 95% bootstrap interval; a pair is significant where the interval lies above one
    half. Optimizers with fewer than :data:`MIN_RUNS_FOR_SIGNIFICANCE` finished runs are not
    compared (one run gives no interval, two only a coarse one).
    """
    few = [r.label for r in rows if len(r.finals) < MIN_RUNS_FOR_SIGNIFICANCE]
    if len(rows) - len(few) < 2:
        return (
            f"significance: too few seeds to tell ({', '.join(few)}: fewer than "
            f"{MIN_RUNS_FOR_SIGNIFICANCE} finished runs); use more --seeds"
        )
    pairs = improvements(rows)
    width = max(len(f"{i.better} > {i.worse}") for i in pairs)
    lines = [
        "probability of improvement, final return: P(a run of X ends above one of Y) "
        "[95% CI], significant where the interval is above 0.5"
    ]
    for i in pairs:
        sign = ">" if i.significant else "~"
        name = f"{i.better} {sign} {i.worse}"
        verdict = "significant" if i.significant else "not significant"
        lines.append(
            f"  {name:<{width}}  {i.probability:.2f} [{i.ci[0]:.2f}, {i.ci[1]:.2f}]  {verdict}"
        )
    if few:
        lines.append(
            f"  not compared (fewer than {MIN_RUNS_FOR_SIGNIFICANCE} finished runs): "
            + ", ".join(few)
        )
    return "\n".join(lines)


def read_run_curves(
    pairs: list[Pair], results: dict[Pair, dict], grid: np.ndarray, scale: float
) -> dict[Pair, dict[str, Any]]:
    """Each finished run's return curve and telemetry on ``grid``, and its normalized AUC."""
    out: dict[Pair, dict[str, Any]] = {}
    for pair in pairs:
        if "error" in results[pair]:
            continue
        series = RunCurves(pair.run_dir, [EPISODIC_RETURN, *OPTIM_TAGS])
        ret = series.on_grid(EPISODIC_RETURN, grid, CURVE_WINDOW)
        out[pair] = {
            "return": ret,
            "auc": normalized_auc(ret, scale),
            **{tag: series.interpolated(tag, grid) for tag in OPTIM_TAGS},
        }
    return out


def _margins(
    fig: Any, left: float, right: float, bottom: float, top: float, between: float = 0.0
) -> None:
    """Fixed figure margins and gaps between panels, in inches.

    ``tight_layout`` measures every text first, which costs a whole extra draw (~0.3 s a
    figure); these figures' labels have known sizes, so fixed margins fit them.
    """
    width, height = fig.get_size_inches()
    panels = len(fig.axes)
    axis_width = (width - left - right - between * (panels - 1)) / panels
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=between / axis_width if panels > 1 else None,
    )


def _load_matplotlib() -> None:
    """Import matplotlib with its file-only backend (a report worker's start-up)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot


class _Serial:
    """Runs a submitted call at once: the report pool where worker processes are not forked."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Any, *args: Any) -> Future:
        """Call ``fn(*args)`` now (its exceptions propagate); its result in a done future."""
        future: Future = Future()
        future.set_result(fn(*args))
        return future


def report_pool() -> ProcessPoolExecutor | _Serial:
    """Where the study report draws its two figures: two forked processes, or this one.

    The processes start at once and import matplotlib while this process reads the runs'
    event files; each then draws one figure. The report took ~1.3 s serially (reading
    ~0.45 s, the matplotlib import ~0.35 s, the figures ~0.2 and ~0.3 s) on the build
    machine's 2 cores, which sit idle once training is over. Forked only where that is
    safe (a platform with fork, no other thread in this process); elsewhere the figures
    are drawn here, one after the other.
    """
    if "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        return _Serial()
    pool = ProcessPoolExecutor(
        2, mp_context=multiprocessing.get_context("fork"), initializer=_load_matplotlib
    )
    pool.submit(_load_matplotlib)  # starts both workers (fork starts all at the first task)
    return pool


def study_bands(
    specs: list[OptimizerSpec], curves: dict[Pair, dict]
) -> dict[OptimizerSpec, dict[str, Band]]:
    """Each optimizer's IQM over seeds with its 95% band, for the return and OPTIM_TAGS.

    A run's return is 0 on the grid before its first episode ends; telemetry is missing
    before its first log (those points are left out).
    """
    out: dict[OptimizerSpec, dict[str, Band]] = {}
    for spec in specs:
        mine = [c for p, c in curves.items() if p.spec == spec]
        if not mine:
            continue
        out[spec] = {"return": iqm_band(np.nan_to_num([c["return"] for c in mine], nan=0.0))}
        for tag in OPTIM_TAGS:
            out[spec][tag] = iqm_band(np.array([c[tag] for c in mine]))
    return out


def plot_curves(
    bands: dict[OptimizerSpec, dict[str, Band]],
    seeds: dict[OptimizerSpec, int],
    grid: np.ndarray,
    path: Path,
    title: str,
    threshold: float | None,
) -> None:
    """``curves.png``: return vs env steps, IQM over seeds with its 95% bootstrap band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for spec, band in bands.items():
        centre, low, high = band["return"]
        (line,) = ax.plot(grid, centre, label=f"{spec.label} ({seeds[spec]} seeds)")
        ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    if threshold is not None:
        ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label="solved threshold")
    ax.set_xlabel("environment steps")
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 40k, not 40000
    ax.set_ylabel(f"episodic return (mean of last {CURVE_WINDOW} episodes)")
    ax.set_title(
        f"{title}\nreturn: mean of the last {CURVE_WINDOW} episodes (the table's final return)"
        "\nIQM over seeds, shaded: 95% stratified bootstrap CI",
        y=1.0,
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    _margins(fig, left=1.0, right=0.2, bottom=0.6, top=0.8)
    fig.savefig(path)
    plt.close(fig)


def plot_optim(
    bands: dict[OptimizerSpec, dict[str, Band]], grid: np.ndarray, path: Path, title: str
) -> None:
    """``optim.png``: gradient norm, effective learning rate and update ratio vs env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    fig, axes = plt.subplots(1, len(OPTIM_TAGS), figsize=(15, 4.5), dpi=110)
    for ax, (tag, label) in zip(axes, OPTIM_TAGS.items(), strict=True):
        for spec, band in bands.items():
            centre, low, high = band[tag]
            if np.isnan(centre).all():
                continue
            (line,) = ax.plot(grid, centre, label=spec.label)
            ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_yscale("log")
        ax.set_xlabel("environment steps")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.set_ylabel(OPTIM_UNITS[tag])
        ax.set_title(label, fontsize=10, y=1.0)
        ax.grid(alpha=0.3, which="both")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(title + ": IQM over seeds, shaded: 95% stratified bootstrap CI")
    _margins(fig, left=0.8, right=0.2, bottom=0.6, top=0.75, between=0.9)
    fig.savefig(path)
    plt.close(fig)


def study_sps(
    study: Path, finished: dict[Pair, dict], before: set[Pair], wall: float
) -> float | None:
    """Env steps per second of the runs this call trained.

    If it trained none (every run had finished), the figure the study's summary kept from
    when they trained.
    """
    now = [s["total_steps"] for p, s in finished.items() if p not in before]
    if now:
        return sum(now) / max(wall, 1e-9)
    try:
        return json.loads((study / "summary.json").read_text()).get("aggregate_sps")
    except (OSError, ValueError):
        return None


def write_study_board(
    study: Path,
    bands: dict[OptimizerSpec, dict[str, Band]],
    grid: np.ndarray,
    pairs: list[Pair],
) -> None:
    """The study's TensorBoard (:mod:`~rl_rmsprop.study.board`): aggregates, margins, HParams."""
    folders = {}
    for pair in pairs:
        folders.setdefault(pair.spec, pair.run_dir.parent.name)
    write_board(
        study,
        {folders[spec]: band for spec, band in bands.items()},
        grid,
        [spec.label for spec in bands],
        {"return": f"episodic return (mean of last {CURVE_WINDOW})", **OPTIM_TAGS},
        columns([hparams(p.cfg) for p in pairs]),
        {f"{HPARAMS}{k}": k for k in FINAL_METRICS},
    )


def write_summary(study: Path, rows: list[OptimizerResult], meta: dict[str, Any]) -> None:
    """``summary.csv`` and ``summary.json`` (atomically) in the study folder."""
    records = []
    for r in rows:
        rec = dataclasses.asdict(r)
        ci = rec.pop("final_ci")
        rec["final_ci_low"], rec["final_ci_high"] = (None, None) if ci is None else ci
        records.append(rec)
    pairs = [
        {**dataclasses.asdict(i), "ci": list(i.ci), "significant": i.significant}
        for i in improvements(rows)
    ]
    summary = {**meta, "optimizers": records, "probability_of_improvement": pairs}
    write_json_atomic(summary, study / "summary.json")
    for rec in records:
        rec.pop("finals")  # summary.json keeps them; a CSV cell is no place for a list
    tmp = study / "summary.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    tmp.replace(study / "summary.csv")


def auc_scale(threshold: float | None, finals: list[float | None]) -> float:
    """What the AUC is divided by: the reward threshold, else the best run's final return.

    Only a positive scale is a fraction of a goal (CartPole: 475). Where the threshold is not
    positive (Acrobot: -100) or there is none and no run ended above 0, the scale is 1 and the
    AUC is the mean return over the run; higher is better either way.
    """
    if threshold is not None:
        return threshold if threshold > 0 else 1.0
    best = max((f for f in finals if f is not None), default=0.0)
    return best if best > 0 else 1.0
