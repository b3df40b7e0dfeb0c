"""A population's optimizer step against K single optimizers, side by side.

K members of one network size step their parameters three ways, taking turns within every
repetition so that machine noise hits them alike:

* ``torch K x``: K ``torch.optim.RMSprop`` (``foreach=True``), one per member;
* ``ours K x``: K of this project's ``RMSprop`` (eager), one per member;
* ``population``: one ``PopulationOptimizer`` over the members' ``[K, N]`` rows.

Two populations: members that share every setting (seeds of one configuration: the block
takes a single run's scalar coefficients) and members with K different learning rates (a
learning-rate sweep: ``[K, 1]`` tensor coefficients). Sizes: train's A2C CartPole network
(4,610 parameters) and its DQN network (67,074). Prints the median step time of each and the
population's speed-up over the faster of the K-optimizer sides.

    python benchmarks/population_step.py [--members 16] [--reps 100] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from rl_rmsprop.optim import make_optimizer
from rl_rmsprop.optim.population import PopulationOptimizer

SIZES = {"a2c mlp": 4_610, "dqn mlp": 67_074}


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def measure(members: int, numel: int, sweep: bool, reps: int) -> dict[str, float]:
    """Median milliseconds per step of each side for one population."""
    g = torch.Generator().manual_seed(0)
    lrs = [1e-4 * (1 + k) if sweep else 5e-4 for k in range(members)]
    grads = torch.randn(members, numel, generator=g) * 1e-2
    data = torch.randn(members, numel, generator=g)
    pop = PopulationOptimizer(data.clone(), grads.clone(), [("rmsprop", {"lr": lr}) for lr in lrs])
    theirs, ours = [], []
    for k, lr in enumerate(lrs):
        p = torch.nn.Parameter(data[k].clone())
        p.grad = grads[k].clone()
        theirs.append(torch.optim.RMSprop([p], lr=lr, foreach=True))
        q = torch.nn.Parameter(data[k].clone())
        q.grad = grads[k].clone()
        ours.append(make_optimizer("rmsprop", [q], lr=lr, impl="eager"))
    sides: dict[str, Callable[[], object]] = {
        f"torch {members} x": lambda: [o.step() for o in theirs],
        f"ours {members} x": lambda: [o.step() for o in ours],
        "population": pop.step,
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(10):
        for fn in sides.values():
            fn()
    for _ in range(reps):
        for name, fn in sides.items():
            times[name].append(_timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.members} members, ms/step")
    print("network  | members       | torch K x | ours K x | population | speed-up")
    for label, numel in SIZES.items():
        for sweep in (False, True):
            m = measure(args.members, numel, sweep, args.reps)
            t, o, p = m[f"torch {args.members} x"], m[f"ours {args.members} x"], m["population"]
            kind = "lr sweep" if sweep else "alike (seeds)"
            print(
                f"{label:8s} | {kind:13s} | {t:9.3f} | {o:8.3f} | {p:10.3f} | {min(t, o) / p:7.2f}x"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
