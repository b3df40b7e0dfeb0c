"""An optimizer study on a MinAtar game: population mode against one process per run.

4 optimizers (rmsprop, rmsprop:tf, rmsprop:dqn-nature, adam; ``--optimizers`` for others)
x ``--seeds`` seeds of ``--preset`` (a2c-minatar by default; every optimizer takes the
preset's lr, and A2C's eps 1e-5, so only the update rule differs; dqn-minatar's other RMSprop
values go to rmsprop only) on ``--env``, ``--total-steps`` env steps per run, trained by
``python -m rl_rmsprop.compare`` as a user runs it, each side with 2 processes:

* ``population``: ``--population --workers 2`` (two populations, one per process);
* ``processes``: ``--no-population --workers 2`` (one process per run, two at a time).

Printed: per side the wall time of the whole study, the aggregate env steps per second and the
per-optimizer IQM of the last-20 training returns; the ratio of the sides' aggregate SPS; and
the MinAtar paper's DQN return for the game beside them. The paper publishes curves only: its
figures here are read off its learning-curve plot (a 100-episode moving average of training
returns at 5M frames, 30 runs; digitized in the public repository panahiparham/rl-jax,
``experiments/minatar_dqn/minatar_paper_dqn_reference.json``), about +-0.5% of the axis.

With ``--logdir`` the study folders are kept there (compare's table, curves.png, TensorBoard
logs); without it they go to a temporary folder.

    python benchmarks/minatar_study.py --env MinAtar/Breakout-v1 [--preset a2c-minatar]
        [--seeds 5] [--total-steps 2000000] [--sides population,processes] [--logdir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cartpole_vs_sb3 import machine, revision
from population import run_compare

from rl_rmsprop.study.specs import parse_specs

OPTIMIZERS = ("rmsprop", "rmsprop:tf", "rmsprop:dqn-nature", "adam")
PAPER_DQN = {
    "Asterix": 17.25,
    "Breakout": 10.03,
    "Freeway": 50.24,
    "SpaceInvaders": 43.26,
}
"""The MinAtar paper's DQN at 5M frames, read off its learning curves (see the docstring);
Seaquest's curve predates a fix of the game (MinAtar 1.0.10) and is left out."""


def main(argv: list[str] | None = None) -> int:
    """Run the sides and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="MinAtar/Breakout-v1")
    parser.add_argument("--preset", default="a2c-minatar", choices=("a2c-minatar", "dqn-minatar"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--total-steps", type=int, default=2_000_000)
    parser.add_argument("--sides", default="population,processes")
    parser.add_argument(
        "--optimizers",
        default=",".join(OPTIMIZERS),
        help="compare's specs, e.g. rmsprop,rmsprop(lr=1e-4),adam",
    )
    parser.add_argument("--logdir", default=None)
    args = parser.parse_args(argv)
    algo = args.preset.split("-")[0]
    extra = ("--env", args.env, "--preset", args.preset)
    sides = [s for s in args.sides.split(",") if s]
    optimizers = (args.optimizers,)  # compare splits the specs
    count = len(parse_specs(args.optimizers))
    results, tables = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        logdir = args.logdir or tmp
        for side in sides:
            results[side] = run_compare(
                side, args.seeds, args.total_steps, logdir, algo, optimizers, extra
            )
            summary = json.loads((Path(logdir) / f"compare-{side}" / "summary.json").read_text())
            tables[side] = {r["label"]: r for r in summary["optimizers"]}
            print(f"{side}: {results[side]['wall_s']:.1f} s", file=sys.stderr, flush=True)
    game = args.env.split("/")[-1].split("-")[0]
    print(f"machine: {machine()}")
    print(f"torch {torch.__version__}, rl_rmsprop {revision()}; 2 processes per side")
    print(
        f"study: {args.preset} on {args.env}, {count} optimizers x {args.seeds} seeds "
        f"x {args.total_steps:,} steps"
    )
    print(f"{'side':<11} | {'wall':>8} | {'aggregate SPS':>13}")
    for side, r in results.items():
        print(f"{side:<11} | {r['wall_s']:7.1f}s | {r['steps'] / r['wall_s']:13,.0f}")
    if len(results) == 2:
        a, b = (r["steps"] / r["wall_s"] for r in results.values())
        print(f"{sides[0]} / {sides[1]}: {a / b:.2f}x aggregate SPS")
    paper = PAPER_DQN.get(game)
    print(f"last-20 training return, IQM [95% CI] per optimizer; paper's DQN at 5M: {paper}")
    for side, rows in tables.items():
        for name, r in rows.items():
            iqm, low, high = r.get("final_iqm"), r.get("final_ci_low"), r.get("final_ci_high")
            print(f"{side:<11} | {name:<18} | {fmt(iqm)} [{fmt(low)}, {fmt(high)}]")
    return 0


def fmt(value: float | None) -> str:
    """A return with one decimal, or n/a."""
    return "n/a" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
