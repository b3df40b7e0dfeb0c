"""An optimizer study three ways: population mode, worker processes, Stable-Baselines3.

The A2C study (``--algo a2c``): CartPole-v1 with the zoo's tuned settings (our defaults), 4
optimizers (rmsprop, rmsprop:tf, adagrad, adam; lr 7e-4 and eps 1e-5 for all, as train's A2C
defaults) x 8 seeds, 100k env steps per run.

The DQN study (``--algo dqn``): CartPole-v1 with train's DQN defaults (the zoo's network and
schedule: 256-256 ReLU MLP, 128 gradient steps of 64 every 256 env steps; lr 5e-4) and the
same 4 optimizers x 8 seeds, 50k env steps per run. SB3's side uses the same settings with
``torch.optim.RMSprop``, SB3's ``RMSpropTFLike``, ``torch.optim.Adagrad`` and
``torch.optim.Adam`` at their default eps.

Sides, one after another in this run, each with 2 processes (the machine's cores):

* ``population``: ``python -m rl_rmsprop.compare --population --workers 2`` (two populations
  of 16 runs, one per process);
* ``processes``: ``python -m rl_rmsprop.compare --no-population --workers 2`` (one process
  per run, two at a time);
* ``sb3``: the same 32 configurations as Stable-Baselines3 A2C runs (``RMSprop``,
  ``RMSpropTFLike``, ``Adagrad`` and ``Adam`` with the same lr and eps), two processes at a
  time, no logging.

Printed per side: wall time of the whole study (process start-up, training, evaluation,
report), aggregate env steps per second (all runs' steps / wall time), seeds that solved
(last-20 training episodes' mean >= 475), and the ratios. Targets: population >= 10x the
aggregate SPS of process mode and >= 300k aggregate SPS.

    python benchmarks/population.py [--algo a2c|dqn] [--seeds 8] [--total-steps N]
        [--sides population,processes,sb3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import stable_baselines3
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cartpole_vs_sb3 import machine, revision, run_sb3
from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

OPTIMIZERS = ("rmsprop", "rmsprop:tf", "adagrad", "adam")
SIDES = ("population", "processes", "sb3")
STEPS = {"a2c": 100_000, "dqn": 50_000}
"""Env steps per run by default."""
SB3_DQN_OPTIMIZERS = {
    "rmsprop": {"optimizer_class": torch.optim.RMSprop, "optimizer_kwargs": {"alpha": 0.99}},
    "rmsprop:tf": {"optimizer_class": RMSpropTFLike, "optimizer_kwargs": {"alpha": 0.99}},
    "adagrad": {"optimizer_class": torch.optim.Adagrad},
    "adam": {"optimizer_class": torch.optim.Adam},
}
"""The DQN study's optimizers as SB3 DQN ``policy_kwargs`` entries."""


def run_compare(
    side: str,
    seeds: int,
    total_steps: int,
    logdir: str,
    algo: str = "a2c",
    optimizers: tuple[str, ...] = OPTIMIZERS,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One compare study as a user runs it (a fresh interpreter); wall time and outcomes.

    ``extra`` are more compare options (``--env``, ``--preset``, ...); the study folder is
    ``<logdir>/compare-<side>``.
    """
    flag = "--population" if side == "population" else "--no-population"
    cmd = [
        *(sys.executable, "-m", "rl_rmsprop.compare", flag, "--workers", "2", "--algo", algo),
        *("--optimizers", ",".join(optimizers), "--seeds", str(seeds)),
        *("--total-steps", str(total_steps), "--logdir", logdir, "--name", side),
        *extra,
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    study = json.loads((Path(logdir) / f"compare-{side}" / "summary.json").read_text())
    runs = sum(r["runs"] - r["failed"] for r in study["optimizers"])
    return {
        "wall_s": wall,
        "steps": runs * total_steps,
        "solved": sum(r["solved"] for r in study["optimizers"]),
        "runs": runs,
    }


def _sb3_job(args: tuple[str, str, int, int]) -> tuple[str, bool]:
    algo, optimizer, seed, total_steps = args
    torch.set_num_threads(1)
    if algo == "dqn":
        result = run_sb3(
            "dqn", seed, total_steps, 475.0, lr=5e-4, policy_kwargs=SB3_DQN_OPTIMIZERS[optimizer]
        )
    else:
        result = run_sb3("a2c", seed, total_steps, 475.0, optimizer=optimizer)
    return optimizer, result.solved_at_step is not None


def run_sb3_study(seeds: int, total_steps: int, algo: str = "a2c") -> dict[str, Any]:
    """The same configurations as SB3 runs, two processes at a time."""
    jobs = [(algo, o, s, total_steps) for o in OPTIMIZERS for s in range(seeds)]
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        outcomes = pool.map(_sb3_job, jobs, chunksize=1)
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "steps": len(jobs) * total_steps,
        "solved": sum(ok for _, ok in outcomes),
        "runs": len(jobs),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the sides and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algo", choices=tuple(STEPS), default="a2c")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--total-steps", type=int, default=None)
    parser.add_argument("--sides", default=",".join(SIDES))
    args = parser.parse_args(argv)
    sides = [s for s in args.sides.split(",") if s]
    algo, steps = args.algo, args.total_steps or STEPS[args.algo]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as logdir:
        for side in sides:
            if side == "sb3":
                results[side] = run_sb3_study(args.seeds, steps, algo)
            else:
                results[side] = run_compare(side, args.seeds, steps, logdir, algo)
            r = results[side]
            print(f"{side}: {r['wall_s']:.1f} s", file=sys.stderr, flush=True)
    print(f"machine: {machine()}")
    print(
        f"torch {torch.__version__}, stable-baselines3 {stable_baselines3.__version__}, "
        f"rl_rmsprop {revision()}; 2 processes per side"
    )
    print(
        f"study: {algo} CartPole-v1, {len(OPTIMIZERS)} optimizers x {args.seeds} seeds x "
        f"{steps:,} steps"
    )
    print(f"{'side':<11} | {'wall':>8} | {'aggregate SPS':>13} | {'solved':>6}")
    for side, r in results.items():
        sps = r["steps"] / r["wall_s"]
        print(f"{side:<11} | {r['wall_s']:7.1f}s | {sps:13,.0f} | {r['solved']:>2}/{r['runs']:<3}")
    if "population" in results:
        pop = results["population"]["steps"] / results["population"]["wall_s"]
        for other in ("processes", "sb3"):
            if other in results:
                sps = results[other]["steps"] / results[other]["wall_s"]
                print(f"population / {other}: {pop / sps:.1f}x aggregate SPS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
