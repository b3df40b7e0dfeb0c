"""``python -m rl_rmsprop.compare``: optimizer x seed studies, statistics, plots, a dashboard.

Every (optimizer, seed) pair is an ordinary ``train`` run (same code path, same outputs) in
``<logdir>/compare-<name>/<optimizer>/seed-<k>/``, trained in worker processes, as
populations, or as Ray tasks (:mod:`rl_rmsprop.study.runs`). The same seed gives every
optimizer the same initial network and environment stream. A finished pair has a
``summary.json``; re-running the same command skips it and redoes unfinished ones.

The study folder then holds ``summary.csv`` / ``summary.json`` (one row per optimizer: final
return IQM with a 95% stratified bootstrap interval, mean and std, steps and time to solve, area
under the learning curve, SPS), ``curves.png``, ``optim.png`` (:mod:`rl_rmsprop.study.report`)
and its TensorBoard report (:mod:`rl_rmsprop.study.board`). This module is the command line:
options, the study folder, and the order of things.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path

from rl_rmsprop.cli import exit_cli  # first: the real package, wherever the user stands

# isort: split
from envs import EnvError, env_reward_threshold, make_vector_env
from rl_rmsprop.aggregate import (
    step_grid,
)
from rl_rmsprop.checkpoint import write_json_atomic
from rl_rmsprop.cluster import (
    RayOptions,
    RayUnavailable,
    connect,
    import_ray,
)
from rl_rmsprop.config import name_problem
from rl_rmsprop.options import OneLineErrorParser
from rl_rmsprop.run.builders import env_options, resolve_device
from rl_rmsprop.run.errors import UserError
from rl_rmsprop.run.folders import (
    FolderLock,
    remove_stale_temp_files,
    study_folder_problem,
)
from rl_rmsprop.study.progress import clock
from rl_rmsprop.study.report import (
    GRID_POINTS,
    aggregate,
    auc_scale,
    format_table,
    plot_curves,
    plot_optim,
    read_run_curves,
    report_pool,
    shown,
    significance,
    study_bands,
    study_sps,
    write_study_board,
    write_summary,
)
from rl_rmsprop.study.runs import choose_mode, run_pairs
from rl_rmsprop.study.specs import (
    RESERVED,
    OptimizerSpec,
    Pair,
    StudyError,
    build_pairs,
    parse_seeds,
    parse_specs,
)


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
        help="train the runs batched, as populations in --workers processes (the default, "
        "for A2C and DQN on any env); --no-population: one process per run%(default).0s",
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
    population, how = choose_mode(args.population, args.workers, ray)
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
        "aggregate_sps": study_sps(study, finished, before, wall),
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
        f"done in {clock(wall)} ({shown(trained_sps, ',.0f')} env steps/s in all): "
        f"{study}/summary.csv, curves.png, optim.png; "
        f"tensorboard --logdir {study}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy's: the modules it calls raise
    # rl_rmsprop.compare's exception classes, which __main__'s own copies would not catch.
    from rl_rmsprop.compare import main as module_main

    exit_cli(module_main())
