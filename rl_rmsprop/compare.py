"""``python -m rl_rmsprop.compare``: optimizer x seed studies, statistics, plots, a dashboard.

Every (optimizer, seed) pair is an ordinary ``train`` run (same code path, same outputs) in
``<logdir>/compare-<name>/<optimizer>/seed-<k>/``, run by a pool of worker processes. The same
seed gives every optimizer the same initial network and environment stream. A finished pair has
a ``summary.json``; re-running the same command skips it and redoes unfinished ones.

The study folder then holds ``summary.csv`` / ``summary.json`` (one row per optimizer: final
return IQM with a 95% stratified bootstrap interval, mean and std, steps and time to solve, area
under the learning curve, SPS), ``curves.png``, ``optim.png`` and a TensorBoard custom-scalars
layout that overlays every run's returns and telemetry.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gc
import json
import math
import multiprocessing
import re
import signal
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rl_rmsprop.cli import exit_cli  # first: the real package, wherever the user stands

# isort: split
from envs import EnvError, env_reward_threshold, is_atari, make_vector_env
from rl_rmsprop.aggregate import (
    RunCurves,
    bootstrap_ci,
    iqm,
    iqm_band,
    normalized_auc,
    step_grid,
)
from rl_rmsprop.board import Band, columns, write_board
from rl_rmsprop.checkpoint import write_json_atomic
from rl_rmsprop.cluster import (
    RayOptions,
    RayUnavailable,
    chunk_checkpoint,
    connect,
    import_ray,
    run_on_ray,
    train_or_resume,
    train_population_chunk,
)
from rl_rmsprop.config import (
    MAX_MEMBERS,
    MAX_SEED,
    Config,
    OneLineErrorParser,
    OptimConfig,
    name_problem,
    parse_config,
)
from rl_rmsprop.logger import FINAL_METRICS
from rl_rmsprop.optim.presets import preset_group
from rl_rmsprop.progress import StudyProgress, clock
from rl_rmsprop.run.builders import env_options, resolve_device
from rl_rmsprop.run.errors import UserError
from rl_rmsprop.run.folders import (
    FolderLock,
    remove_stale_temp_files,
    run_folder,
    study_folder_problem,
)
from rl_rmsprop.run.population import unsupported
from rl_rmsprop.run.session import hparams
from rl_rmsprop.run.signals import Interrupted, StopSignals
from rl_rmsprop.workers import Pool
from rl_rmsprop.workers import report as report_progress

GRID_POINTS = 100
"""Points of the env-step grid the learning curves are put on."""
CURVE_WINDOW = 20
"""A curve's value at a grid step: the mean return of the last this many finished episodes."""
OPTIM_TAGS = {
    "grad/norm_preclip": "gradient norm (before clipping)",
    "optim/effective_lr/p50": "effective learning rate (median lr / denominator)",
    "optim/update_to_param_ratio": "update-to-parameter ratio",
}
"""The telemetry optim.png shows, with its panel titles."""
OPTIM_UNITS = {
    "grad/norm_preclip": "L2 norm of the gradient",
    "optim/effective_lr/p50": "lr / denominator (step per unit gradient)",
    "optim/update_to_param_ratio": "||update|| / ||parameters||",
}
"""Their y-axis labels."""

LOCAL_RAY = "a local Ray instance (it listens on every interface, behind Ray's token)"
"""How the study line names the Ray instance ``--backend ray`` starts without --ray-address."""
RESERVED = {
    "--optimizer": "--optimizers",
    "--seed": "--seeds",
    "--run-name": "--name",
}
"""Train options that compare sets itself, with the compare option to use instead."""


class StudyError(UserError):
    """A mistake in the study's definition: one line, exit status 2."""


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer of a study: a preset name and its overrides."""

    name: str
    """A key of ``rl_rmsprop.optim.PRESETS``."""
    overrides: tuple[tuple[str, Any], ...] = ()
    """(OptimConfig field, value) pairs, in the order given."""

    @property
    def label(self) -> str:
        """How the spec is shown: ``name`` or ``name(k=v,...)``."""
        if not self.overrides:
            return self.name
        return f"{self.name}({','.join(f'{k}={v!r}' for k, v in self.overrides)})"

    @property
    def folder(self) -> str:
        """The study sub-folder: the label, file-name safe (``rmsprop:tf`` -> ``rmsprop-tf``)."""
        text = self.name.replace(":", "-")
        for k, v in self.overrides:
            text += f"__{k}={v!r}"
        return re.sub(r"[^A-Za-z0-9_.=+-]", "_", text)


_SETTABLE = tuple(f.name for f in dataclasses.fields(OptimConfig) if f.name not in ("name",))


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise StudyError(f"unbalanced ')' in --optimizers {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise StudyError(f"unbalanced '(' in --optimizers {text!r}")
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _value(text: str, key: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if key == "impl":
        return text.strip()
    try:
        number = float(text)
    except ValueError:
        raise StudyError(f"--optimizers: {key}={text!r} is not a number") from None
    return (
        int(number) if number.is_integer() and re.fullmatch(r"[+-]?\d+", text.strip()) else number
    )


def parse_specs(text: str) -> list[OptimizerSpec]:
    """Parse ``--optimizers``: comma-separated specs, each ``name`` or ``name(key=value,...)``.

    Keys are the optimizer options of ``train`` (``lr``, ``alpha``, ``eps``, ``momentum``,
    ``centered``, ``weight_decay``, ``eps_in_sqrt``, ``initial_square_avg``, ``beta1``, ``impl``;
    dashes may stand for underscores). Values are numbers or true/false.

    Raises:
        StudyError: on a malformed spec, an unknown key, a non-number value or a duplicate.
    """
    specs: list[OptimizerSpec] = []
    for part in _split_top_level(text):
        match = re.fullmatch(r"([A-Za-z0-9_:\-]+)\s*(?:\((.*)\))?", part, flags=re.S)
        if not part or match is None:
            raise StudyError(
                f"--optimizers: cannot parse {part!r}; write name or name(key=value,...), "
                'e.g. "rmsprop(lr=7e-4),adam(lr=1e-3,eps=1e-5)"'
            )
        name, args = match.group(1), match.group(2)
        overrides: list[tuple[str, Any]] = []
        for item in _split_top_level(args) if args and args.strip() else []:
            key, eq, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not eq or not value.strip():
                raise StudyError(f"--optimizers: {item!r} in {part!r} is not key=value")
            if key not in _SETTABLE:
                raise StudyError(
                    f"--optimizers: unknown option {key!r} in {part!r}; "
                    f"choose from {', '.join(_SETTABLE)}"
                )
            overrides.append((key, _value(value, key)))
        spec = OptimizerSpec(name, tuple(overrides))
        if any(s.folder == spec.folder for s in specs):
            raise StudyError(f"--optimizers: {spec.label} is given twice")
        specs.append(spec)
    return specs


def parse_seeds(text: str) -> list[int]:
    """``"8"`` -> seeds 0..7; ``"3,7,11"`` -> that list.

    Raises:
        StudyError: on anything else, or a count below 1.
    """
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            count = int(text)
            if count > MAX_MEMBERS:
                raise StudyError(f"--seeds {text}: at most {MAX_MEMBERS:,} seeds in one study")
            seeds = list(range(count))
    except ValueError:
        raise StudyError(
            f"--seeds {text!r}: give a count (8 = seeds 0..7) or a list (3,7,11)"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0 or max(seeds) > MAX_SEED:
        raise StudyError(
            f"--seeds {text!r}: need at least one seed, no repeats, each in [0, {MAX_SEED}]"
        )
    return seeds


@dataclass(frozen=True)
class Pair:
    """One (optimizer, seed) run of a study."""

    spec: OptimizerSpec
    seed: int
    cfg: Config

    @property
    def run_dir(self) -> Path:
        """The run's folder."""
        return run_folder(self.cfg)


def build_pairs(
    specs: list[OptimizerSpec], seeds: list[int], train_args: list[str], study: Path
) -> list[Pair]:
    """Each (optimizer, seed) pair's validated train configuration.

    Raises:
        StudyError: if an optimizer spec does not build (unknown preset, bad value), two specs
            are the same optimizer once the algorithm's defaults are filled in, or the study
            has more than ``MAX_MEMBERS`` runs.
        SystemExit: status 2 with one line for a bad train option (from ``parse_config``).
    """
    if len(specs) * len(seeds) > MAX_MEMBERS:
        raise StudyError(
            f"{len(specs)} optimizers x {len(seeds):,} seeds is over the {MAX_MEMBERS:,} runs "
            "one study may hold; use fewer --seeds or --optimizers"
        )
    pairs = []
    resolved: dict[tuple, OptimizerSpec] = {}  # the update rule's hyperparameters -> spec
    for spec in specs:
        base = parse_config([*train_args, "--optimizer", spec.name, "--quiet"])
        optim = dataclasses.replace(base.optim, **dict(spec.overrides))
        try:  # the optimizer must build, as in train, before anything is written
            group = preset_group(optim.name, **optim.overrides())
        except ValueError as e:
            raise StudyError(f"--optimizers {spec.label}: {e}") from None
        rule = (tuple(sorted(group.items())), optim.impl)
        problem = name_problem(spec.folder)
        if problem:
            raise StudyError(f"--optimizers {spec.label}: its folder name {problem}")
        if rule in resolved:
            raise StudyError(
                f"--optimizers: {spec.label} and {resolved[rule].label} are the same optimizer "
                f"under --algo {base.run.algo} (its defaults filled in); drop one"
            )
        resolved[rule] = spec
        for seed in seeds:
            run = dataclasses.replace(
                base.run, seed=seed, logdir=str(study / spec.folder), run_name=f"seed-{seed}"
            )
            pairs.append(Pair(spec, seed, dataclasses.replace(base, optim=optim, run=run)))
    return pairs


def _train_chunk(
    cfgs: list[Config], label: str, checkpoint: Path, progress: Any = None
) -> list[dict[str, Any]]:
    """Worker: one population of runs; each run's summary, or ``{"error": ...}``.

    It resumes from ``checkpoint`` if an earlier attempt left one. A signal makes the
    population finish its update and write its checkpoint; it then ends as Ctrl-C does
    (``KeyboardInterrupt``). Its progress goes to ``progress`` (step, members), by default to
    the parent process (:func:`rl_rmsprop.workers.report`).
    """
    if progress is None:

        def progress(step: int, members: int) -> None:
            report_progress((step, members))

    try:
        with StopSignals() as stop:
            return train_population_chunk(
                cfgs, checkpoint, out=sys.stdout, label=label, stop=stop, progress=progress
            )
    except Interrupted:
        raise KeyboardInterrupt from None


def population_chunks(pairs: list[Pair], workers: int) -> list[list[Pair]]:
    """Split runs into at most ``workers`` populations, seeds interleaved.

    Chunk c takes every ``workers``-th run of each optimizer, so every chunk holds every
    optimizer family and the chunks take about as long.
    """
    count = max(1, min(workers, len(pairs)))
    return [c for c in (pairs[i::count] for i in range(count)) if c]


def run_pairs(
    pairs: list[Pair],
    workers: int,
    out: Any = None,
    population: bool = False,
    ray: RayOptions | None = None,
    study: Path | None = None,
) -> dict[Pair, dict]:
    """Run the pairs that have no ``summary.json``: processes, populations, or Ray tasks.

    An interrupted run resumes from its newest checkpoint (a population from its own); one
    that left none starts again. In process mode each run is a job of a worker pool
    (:class:`rl_rmsprop.workers.Pool`); in population mode the runs are split into
    ``workers`` populations, each one job (run in this process when ``workers`` is 1). With
    ``ray`` each run (or each population) is a Ray task (``rl_rmsprop.cluster``). Each
    finished run prints one line; populations also report their env steps as they train,
    shown live (:class:`~rl_rmsprop.progress.StudyProgress`), and the ETA comes from the
    measured env steps per second. Ctrl-C stops the busy runs at their next update with a
    checkpoint; finished runs are kept.

    Returns:
        Every pair's summary (read back for skipped pairs) or ``{"error": message}``.
    """
    out = out or sys.stdout
    results: dict[Pair, dict] = {}
    todo = []
    for pair in pairs:
        summary_file = pair.run_dir / "summary.json"
        if summary_file.exists():
            results[pair] = json.loads(summary_file.read_text())
            continue
        todo.append(pair)  # unfinished runs resume from their checkpoints
    skipped = len(pairs) - len(todo)
    if skipped:
        print(f"skipping {skipped} finished run(s); {len(todo)} to run", file=out, flush=True)
    if not todo:
        return results
    chunks = population_chunks(todo, workers) if population else [[p] for p in todo]
    job_of = {pair: i for i, chunk in enumerate(chunks) for pair in chunk}
    progress = StudyProgress(sum(p.cfg.run.total_steps for p in todo), len(todo), out)

    def report(pair: Pair, summary: dict) -> None:
        results[pair] = summary
        job = job_of[pair]
        done = sum(p.cfg.run.total_steps for p in chunks[job] if p in results)
        progress.run_finished(job, max(done, progress.steps.get(job, 0)))
        eta = progress.eta()
        progress.message(
            f"{progress.finished}/{len(todo)} {_describe(pair, summary)} | elapsed "
            f"{clock(time.perf_counter() - progress.start)}, ETA "
            f"{'n/a' if eta is None else clock(eta)}"
        )

    def moved(job: int, payload: tuple[int, int]) -> None:
        member_steps, members = payload
        progress.update(job, member_steps * members)

    try:
        if ray is not None:
            run_on_ray(chunks, population, ray, study or Path("."), report)
            return results
        if population:
            labels = [f"population {i + 1}/{len(chunks)}" for i in range(len(chunks))]
            root = study or Path(".")
            jobs = [
                (
                    _train_chunk,
                    ([p.cfg for p in c], label, chunk_checkpoint(root, [p.cfg for p in c])),
                )
                for c, label in zip(chunks, labels, strict=True)
            ]
            if len(chunks) == 1:
                fn, args = jobs[0]
                summaries = fn(*args, progress=lambda step, k: moved(0, (step, k)))
                for pair, summary in zip(todo, summaries, strict=True):
                    report(pair, summary)
                return results
        else:
            jobs = [(train_or_resume, (p.cfg,)) for p in todo]  # resumed where a checkpoint is
        _map_jobs(jobs, workers, chunks, population, todo, report, moved)
    finally:
        progress.close()
    return results


def _map_jobs(
    jobs: list[Any],
    workers: int,
    chunks: list[list[Pair]],
    population: bool,
    todo: list[Pair],
    report: Any,
    moved: Any,
) -> None:
    """Run the jobs in worker processes; report each run's summary as its job finishes."""

    def reported(index: int, result: Any) -> None:
        if isinstance(result, Exception):  # the worker died or the job raised
            result = {"error": str(result)}
        summaries = result if isinstance(result, list) else [result] * len(chunks[index])
        for pair, summary in zip(chunks[index], summaries, strict=True):
            report(pair, summary)

    method = start_method(population, [p.cfg for p in todo])
    if method == "fork":
        # The children's collector then skips what they inherit, instead of touching (and so
        # copying) every page of it (the use gc.freeze is documented for).
        gc.freeze()
    try:
        Pool(min(workers, len(jobs)), method).map(jobs, reported, moved)
    finally:
        if method == "fork":
            gc.unfreeze()


def start_method(population: bool, cfgs: list[Config]) -> str:
    """How worker processes start: ``fork`` for CPU populations where it is safe, else spawn.

    A spawned worker imports torch and the project again (~1.3 s on the build machine, before
    it trains); a forked one starts with this process's modules. Fork is used only where
    nothing it copies can bite: population mode (MLPs) on the CPU with one torch thread per
    worker (so OpenMP never starts a thread pool in a child), no other thread in this
    process, and a platform that has fork. Everything else (process mode, Atari, CUDA,
    several threads) spawns fresh interpreters.
    """
    forkable = "fork" in multiprocessing.get_all_start_methods()
    cpu_single_threaded = all(
        c.run.device in ("cpu", "auto") and c.run.threads == 1 and not is_atari(c.env.id)
        for c in cfgs
    )
    alone = threading.active_count() == 1
    return "fork" if population and forkable and cpu_single_threaded and alone else "spawn"


def _describe(pair: Pair, summary: dict) -> str:
    head = f"{pair.spec.label} seed {pair.seed}:"
    if "error" in summary:
        return f"{head} FAILED ({summary['error']})"
    ret = summary.get("episodic_return_mean100")
    solved = summary.get("solved_at_step")
    ret_text = "n/a" if ret is None else f"{ret:.1f}"
    solved_text = "not solved" if solved is None else f"solved at step {solved:,}"
    where = f" on Ray node {summary['ray_node']}" if "ray_node" in summary else ""
    return f"{head} return {ret_text}, {solved_text}, {summary['wall_time_s']:.1f} s{where}"


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
            )
        )
    return rows


def _fmt(value: float | None, spec: str) -> str:
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
            f"{r.label:<{width}} | {_fmt(r.final_iqm, '6.1f'):>6} {ci:<20} | {mean_std:<15} | "
            f"{r.solved:>2}/{r.runs - r.failed:<3} | {_fmt(r.steps_to_solve, ',.0f'):>14} | "
            f"{solve_time:>13} | {r.eval_solved:>2}/{r.runs - r.failed:<3} "
            f"{_fmt(r.eval_steps_to_solve, ',.0f'):>15} | {_fmt(r.auc, '.3f'):>5} | "
            f"{_fmt(r.sps, ',.0f'):>6}"
        )
    return "\n".join(lines)


MIN_RUNS_FOR_SIGNIFICANCE = 3
"""Below this many finished runs a bootstrap interval is only the range of the runs."""


def significance(rows: list[OptimizerResult]) -> str:
    """Which pairs of optimizers differ: non-overlapping 95% intervals of the final-return IQM.

    Optimizers with fewer than :data:`MIN_RUNS_FOR_SIGNIFICANCE` finished runs are not compared
    (one run gives a zero-width interval, two the range of the two).
    """
    better, unclear = [], []
    enough = [r for r in rows if r.runs - r.failed >= MIN_RUNS_FOR_SIGNIFICANCE]
    if len(enough) < len(rows):
        few = ", ".join(r.label for r in rows if r not in enough)
        if len(enough) < 2:
            return (
                f"significance: too few seeds to tell ({few}: fewer than "
                f"{MIN_RUNS_FOR_SIGNIFICANCE} finished runs); use more --seeds"
            )
    with_ci = [r for r in enough if r.final_ci is not None]
    for i, a in enumerate(with_ci):
        for b in with_ci[i + 1 :]:
            if a.final_ci[0] > b.final_ci[1]:
                better.append(f"{a.label} > {b.label}")
            elif b.final_ci[0] > a.final_ci[1]:
                better.append(f"{b.label} > {a.label}")
            else:
                unclear.append(f"{a.label} ~ {b.label}")
    text = (
        "significant (non-overlapping 95% CIs of the final-return IQM): "
        + (", ".join(better) or "none")
        + "; not significant: "
        + (", ".join(unclear) or "none")
    )
    if len(enough) < len(rows):
        text += f"; not compared (fewer than {MIN_RUNS_FOR_SIGNIFICANCE} finished runs): {few}"
    return text


def read_run_curves(
    pairs: list[Pair], results: dict[Pair, dict], grid: np.ndarray, scale: float
) -> dict[Pair, dict[str, Any]]:
    """Each finished run's return curve and telemetry on ``grid``, and its normalized AUC."""
    out: dict[Pair, dict[str, Any]] = {}
    for pair in pairs:
        if "error" in results[pair]:
            continue
        series = RunCurves(pair.run_dir, ["charts/episodic_return", *OPTIM_TAGS])
        ret = series.on_grid("charts/episodic_return", grid, CURVE_WINDOW)
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


def _study_sps(
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
    """The study's TensorBoard (:mod:`rl_rmsprop.board`): aggregates, margin charts, HParams."""
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
        {f"hparams/{k}": k for k in FINAL_METRICS},
    )


def write_summary(study: Path, rows: list[OptimizerResult], meta: dict[str, Any]) -> None:
    """``summary.csv`` and ``summary.json`` (atomically) in the study folder."""
    records = []
    for r in rows:
        rec = dataclasses.asdict(r)
        ci = rec.pop("final_ci")
        rec["final_ci_low"], rec["final_ci_high"] = (None, None) if ci is None else ci
        records.append(rec)
    write_json_atomic({**meta, "optimizers": records}, study / "summary.json")
    tmp = study / "summary.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    tmp.replace(study / "summary.csv")


def choose_mode(
    base: Config, requested: bool | None, workers: int, ray: RayOptions | None = None
) -> tuple[bool, str]:
    """Population mode or one process (or Ray task) per run, and the line that says which.

    Population mode is used wherever it is supported unless ``--no-population`` was given;
    where it is not (DQN, Atari, video capture, ``--normalize``) the study falls back to one
    process per run, also when ``--population`` was asked for.
    """
    reason = unsupported(base)
    population = requested is not False and reason is None
    why = "--no-population" if requested is False else reason
    if ray is not None:
        where = f"Ray at {ray.address}" if ray.address else LOCAL_RAY
        if population:
            return True, f"population mode: runs batched in {workers} Ray task(s) on {where}"
        return False, f"one Ray task per run on {where} ({why})"
    if population:
        return True, (
            f"population mode: runs batched in {workers} process(es) "
            "(--no-population for one process per run)"
        )
    return False, f"{workers} worker process(es), one run each ({why})"


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


def build_parser() -> argparse.ArgumentParser:
    """The options of compare itself; every other option goes to ``train`` unchanged."""
    parser = OneLineErrorParser(
        prog="python -m rl_rmsprop.compare",
        description=(
            "Train every optimizer x seed pair (each an ordinary train run) and report them with "
            "IQM, bootstrap confidence intervals, plots and a TensorBoard layout. Any option of "
            "python -m rl_rmsprop.train (--algo, --env, --total-steps, --lr, ...) passes through "
            "to every run."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,  # --seed and --optimizer are train's, not --seeds / --optimizers
    )
    parser.add_argument(
        "--optimizers",
        default="rmsprop,rmsprop:tf,adagrad,adam",
        help='comma-separated specs, each name or name(key=value,...), e.g. "rmsprop(lr=7e-4),'
        'adam(lr=1e-3,eps=1e-5)"',
    )
    parser.add_argument("--seeds", default="5", help="a count (8 = seeds 0..7) or a list (3,7,11)")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="processes: runs trained at once, or the number of populations",
    )
    parser.add_argument(
        "--population",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train the runs batched, as populations in --workers processes (default: "
        "wherever supported: A2C on flat observations); --no-population: one process per "
        "run%(default).0s",
    )
    parser.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local: processes or populations on this machine; ray: Ray tasks on a cluster",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="with --backend ray: the cluster (auto: the one `ray start` started; default: "
        "start a Ray instance on this machine)%(default).0s",
    )
    parser.add_argument(
        "--ray-retries",
        type=int,
        default=RayOptions.retries,
        help="with --backend ray: times a run is retried after its worker or node died (it "
        "resumes from its last checkpoint)",
    )
    parser.add_argument(
        "--ray-ship-runs",
        action="store_true",
        help="with --backend ray, when the nodes share no file system: runs are written on "
        "each node's disk and sent back to this machine (off unless given)%(default).0s",
    )
    parser.add_argument("--logdir", default="runs", help="folder that receives the study folder")
    parser.add_argument(
        "--name",
        default=None,
        help="study folder compare-<name> (default: a timestamp; give the same --name to resume "
        "a study)%(default).0s",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a user mistake, with a one-line message)."""
    parser = build_parser()
    args, train_args = parser.parse_known_args(argv)
    try:
        with _sigterm_as_interrupt():
            return _study(args, train_args)
    except (UserError, EnvError, RayUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        lead = "\n" if sys.stderr.isatty() else ""  # end a live progress line first
        print(
            f"{lead}interrupted: finished runs are kept and unfinished ones resume from their "
            f"checkpoints; run the same command with --name {args.name} to continue",
            file=sys.stderr,
        )
        return 130


class _sigterm_as_interrupt:  # noqa: N801 (used as a statement: with _sigterm_as_interrupt())
    """SIGTERM stops the study as Ctrl-C does (workers stopped, checkpoints kept, exit 130)."""

    def __enter__(self) -> None:
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, signal.default_int_handler)

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def _study(args: argparse.Namespace, train_args: list[str]) -> int:
    for token in train_args:
        flag = token.split("=", 1)[0]
        if flag in RESERVED:
            raise StudyError(f"{flag} is set per run by compare; use {RESERVED[flag]}")
    if args.workers < 1:
        raise StudyError("--workers must be >= 1")
    ray = None
    if args.backend == "ray":
        if args.ray_retries < 0:
            raise StudyError("--ray-retries must be >= 0")
        # Ray installed and the cluster reachable, before anything is written.
        connect(import_ray(), args.ray_address)
        ray = RayOptions(args.ray_address, args.ray_retries, args.ray_ship_runs)
        # Every node writes to the same path: the study folder must not depend on a cwd.
        args.logdir = str(Path(args.logdir).resolve())
    else:
        given = [f for f in ("ray_address", "ray_ship_runs") if getattr(args, f)]
        if given or args.ray_retries != RayOptions.retries:
            flag = "--" + (given[0] if given else "ray_retries").replace("_", "-")
            raise StudyError(f"{flag} needs --backend ray")
    specs = parse_specs(args.optimizers)
    seeds = parse_seeds(args.seeds)
    if args.name is None:
        args.name = time.strftime("%Y%m%d-%H%M%S")
    problem = name_problem(args.name)
    if problem:
        raise StudyError(f"--name {args.name!r} {problem}")
    study = Path(args.logdir) / f"compare-{args.name}"
    pairs = build_pairs(specs, seeds, train_args, study)
    base = pairs[0].cfg
    resolve_device(base.run.device)  # --device cuda without a GPU: refused before any write
    options = env_options(base)  # refuses what every run would (DQN on ALE's native env)
    make_vector_env(base.env.id, 1, 0, **options).close()  # exists?
    problem = study_folder_problem(study) if study.exists() or study.is_symlink() else None
    empty = study.is_dir() and not study.is_symlink() and not any(study.iterdir())
    if problem and not empty:  # a folder of the user's: nothing of ours goes into it
        raise StudyError(f"{study} exists and {problem}, so it is not a study; use another --name")
    meta_file = study / "study.json"
    if meta_file.exists():
        previous = json.loads(meta_file.read_text())
        if previous.get("train_args") != train_args:
            other = " ".join(previous["train_args"]) or "train defaults"
            raise StudyError(
                f"{study} holds a study with other train options ({other}); use another --name"
            )
    try:
        study.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StudyError(f"cannot write {study} ({e.strerror}); choose a writable --logdir") from e
    with FolderLock(study):
        remove_stale_temp_files(study)
        write_json_atomic({"train_args": train_args}, meta_file)
        return _run_study(args, ray, specs, seeds, train_args, study, pairs)


def _run_study(
    args: argparse.Namespace,
    ray: RayOptions | None,
    specs: list[OptimizerSpec],
    seeds: list[int],
    train_args: list[str],
    study: Path,
    pairs: list[Pair],
) -> int:
    """Train the study's runs (the study folder is locked), then write its report."""
    base = pairs[0].cfg
    population, how = choose_mode(base, args.population, args.workers, ray)
    print(
        f"study {study}: {base.run.algo} on {base.env.id}, {len(specs)} optimizer(s) x "
        f"{len(seeds)} seed(s) = {len(pairs)} runs of {base.run.total_steps:,} steps; {how}",
        flush=True,
    )
    before = {p for p in pairs if (p.run_dir / "summary.json").exists()}  # trained earlier
    start = time.perf_counter()
    results = run_pairs(pairs, args.workers, population=population, ray=ray, study=study)
    wall = time.perf_counter() - start
    threshold = env_reward_threshold(base.env.id)
    grid = step_grid(base.run.total_steps, GRID_POINTS)
    finished = {p: s for p, s in results.items() if "error" not in s}
    scale = auc_scale(threshold, [s["episodic_return_mean100"] for s in finished.values()])
    title = f"{base.run.algo} on {base.env.id}, {len(seeds)} seeds"
    with report_pool() as pool:
        curves = read_run_curves(pairs, results, grid, scale)
        rows = aggregate(specs, pairs, results, curves)
        bands = study_bands(specs, curves)
        seeds_of = {spec: sum(p.spec == spec for p in curves) for spec in bands}
        plots = [
            pool.submit(plot_curves, bands, seeds_of, grid, study / "curves.png", title, threshold),
            pool.submit(plot_optim, bands, grid, study / "optim.png", title),
        ]
        write_study_board(study, bands, grid, pairs)
        for plot in plots:
            plot.result()
    meta = {
        "algo": base.run.algo,
        "env": base.env.id,
        "seeds": seeds,
        "total_steps": base.run.total_steps,
        "train_args": train_args,
        "reward_threshold": threshold,
        "wall_time_s": wall,
        "workers": args.workers,
        "mode": "population" if population else "processes",
        "backend": args.backend,
        "aggregate_sps": _study_sps(study, finished, before, wall),
    }
    trained_sps = meta["aggregate_sps"] if set(finished) - before else None
    write_summary(study, rows, meta)
    print()
    print(format_table(rows))
    print(significance(rows))
    failed = [(p, s["error"]) for p, s in results.items() if "error" in s]
    for pair, error in failed:
        print(f"failed: {pair.spec.label} seed {pair.seed}: {error}")
    print(
        f"done in {clock(wall)} ({_fmt(trained_sps, ',.0f')} env steps/s in all): "
        f"{study}/summary.csv, curves.png, optim.png; "
        f"tensorboard --logdir {study}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy's: the modules it calls raise
    # rl_rmsprop.compare's exception classes, which __main__'s own copies would not catch.
    from rl_rmsprop.compare import main as module_main

    exit_cli(module_main())
