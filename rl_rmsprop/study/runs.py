"""Training a study's runs: worker processes, populations or Ray tasks, with live progress."""

from __future__ import annotations

import gc
import json
import multiprocessing
import sys
import threading
import time
from pathlib import Path
from typing import Any

from envs import is_atari
from rl_rmsprop.cluster import (
    RayOptions,
    chunk_checkpoint,
    run_on_ray,
    train_or_resume,
    train_population_chunk,
)
from rl_rmsprop.config import (
    Config,
)
from rl_rmsprop.run.signals import Interrupted, StopSignals
from rl_rmsprop.study.progress import StudyProgress, clock
from rl_rmsprop.study.specs import (
    Pair,
)
from rl_rmsprop.workers import Pool
from rl_rmsprop.workers import report as report_progress

LOCAL_RAY = "a local Ray instance (it listens on every interface, behind Ray's token)"
"""How the study line names the Ray instance ``--backend ray`` starts without --ray-address."""


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
    shown live (:class:`~rl_rmsprop.study.progress.StudyProgress`), and the ETA comes from the
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
        progress.run_finished(job, done)  # it keeps the larger of this and the job's report
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


def choose_mode(
    requested: bool | None, workers: int, ray: RayOptions | None = None
) -> tuple[bool, str]:
    """Population mode or one process (or Ray task) per run, and the line that says which.

    Every run trains as a member (a single run is a population of one), so a study trains
    as populations unless ``--no-population`` was given.
    """
    population = requested is not False
    if ray is not None:
        where = f"Ray at {ray.address}" if ray.address else LOCAL_RAY
        if population:
            return True, f"population mode: runs batched in {workers} Ray task(s) on {where}"
        return False, f"one Ray task per run on {where} (--no-population)"
    if population:
        return True, (
            f"population mode: runs batched in {workers} process(es) "
            "(--no-population for one process per run)"
        )
    return False, f"{workers} worker process(es), one run each (--no-population)"
