"""CartPole-v1: Stable-Baselines3 versus rl_rmsprop, same hyperparameters, same seeds.

``--algo a2c``: rl-baselines3-zoo's tuned CartPole A2C (8 envs, n_steps 5, lr 7e-4, RMSprop
alpha 0.99 eps 1e-5, ent_coef 0, vf_coef 0.5, max_grad_norm 0.5, gamma 0.99, gae_lambda 1,
64-64 tanh MLPs, no advantage normalisation), which are our trainer's defaults and SB3's A2C
defaults. Sides: SB3, ours with the default telemetry, ours with telemetry off.

``--algo dqn``: rl-baselines3-zoo's tuned CartPole DQN (1 env, 256-256 ReLU MLP, lr 2.3e-3,
batch 64, buffer 100k, learning_starts 1000, target update every 10 env steps, train_freq 256
with 128 gradient steps, exploration 1.0 -> 0.04 over 16% of the run, gamma 0.99, gradient
clip 10, Huber loss), which are our DQN defaults except the learning rate (ours: 5e-4, found for
RMSprop by a sweep, docs/benchmarks.md). SB3 trains it with Adam (eps 1e-8). Sides: SB3, ours
with ``--optimizer adam --lr 2.3e-3`` (like for like), ours with the project's default RMSprop.

For every seed the sides take turns in one process, rotating their order, so machine noise hits
them alike; torch is single-threaded for all.

Measured: env steps per second over the whole training loop, and time-to-solve: the first env
step (and wall time) at which the mean return of the last 20 finished training episodes reaches
the env's reward threshold (475), the rule of ``rl_rmsprop.train``. Targets: our SPS >= 3x SB3's
(like for like), our time-to-solve <= 1/3 of SB3's; for A2C, telemetry cost <= 10%.

    python benchmarks/cartpole_vs_sb3.py --algo a2c --seeds 5 [--total-steps 200000] [--quick]
    python benchmarks/cartpole_vs_sb3.py --algo dqn --seeds 5 [--total-steps 100000] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import stable_baselines3
import torch
from stable_baselines3 import A2C, DQN
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

from rl_rmsprop.options import parse_config
from rl_rmsprop.run.single import run
from rl_rmsprop.run.tracker import SOLVE_WINDOW

ENV_ID = "CartPole-v1"
NUM_ENVS = {"a2c": 8, "dqn": 1}


@dataclass
class Result:
    """One training run's speed and time-to-solve."""

    sps: float
    solved_at_step: int | None
    solved_at_time_s: float | None


class SolveTracker(BaseCallback):
    """Records SB3's finished training episodes and when the last-20 mean reaches the threshold.

    Episodes come from ``infos[i]["episode"]``, written by the ``Monitor`` that ``make_vec_env``
    wraps around each copy; ``num_timesteps`` already counts the step that ended them, as our
    collector's ``global_step`` does.
    """

    def __init__(self, threshold: float) -> None:
        super().__init__(verbose=0)
        self.threshold = threshold
        self.window: list[float] = []
        self.solved_at_step: int | None = None
        self.solved_at_time_s: float | None = None
        self.start = 0.0

    def _on_training_start(self) -> None:
        self.start = time.perf_counter()

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            episode = info.get("episode")
            if episode is None:
                continue
            self.window = [*self.window[-(SOLVE_WINDOW - 1) :], float(episode["r"])]
            if (
                self.solved_at_step is None
                and len(self.window) == SOLVE_WINDOW
                and np.mean(self.window) >= self.threshold
            ):
                self.solved_at_step = self.num_timesteps
                self.solved_at_time_s = time.perf_counter() - self.start
        return True


SB3_A2C_OPTIMIZERS = {
    "rmsprop": {},  # A2C's own: torch RMSprop, alpha 0.99, eps = rms_prop_eps
    "rmsprop:tf": {
        "optimizer_class": RMSpropTFLike,
        "optimizer_kwargs": {"alpha": 0.99, "eps": 1e-5, "weight_decay": 0},
    },
    "adagrad": {"optimizer_class": torch.optim.Adagrad, "optimizer_kwargs": {"eps": 1e-5}},
    "adam": {"optimizer_class": torch.optim.Adam, "optimizer_kwargs": {"eps": 1e-5}},
}
"""Our A2C optimizer specs (lr 7e-4, eps 1e-5) as SB3 A2C ``policy_kwargs``."""


def _sb3_model(
    algo: str,
    env: Any,
    seed: int,
    optimizer: str = "rmsprop",
    lr: float | None = None,
    policy_kwargs: dict[str, Any] | None = None,
) -> Any:
    """SB3's A2C or DQN with the zoo's CartPole hyperparameters, CPU, verbose off.

    ``optimizer`` (A2C only) is one of :data:`SB3_A2C_OPTIMIZERS`. For DQN, ``lr`` replaces
    the zoo's 2.3e-3 and ``policy_kwargs`` are added to its network's (an optimizer class).
    """
    if algo == "a2c":
        return A2C(
            "MlpPolicy",
            env,
            learning_rate=7e-4,
            n_steps=5,
            gamma=0.99,
            gae_lambda=1.0,
            ent_coef=0.0,
            vf_coef=0.5,
            max_grad_norm=0.5,
            rms_prop_eps=1e-5,
            use_rms_prop=True,
            normalize_advantage=False,
            policy_kwargs={
                "net_arch": {"pi": [64, 64], "vf": [64, 64]},
                "activation_fn": torch.nn.Tanh,
                **SB3_A2C_OPTIMIZERS[optimizer],
            },
            verbose=0,
            seed=seed,
            device="cpu",
        )
    return DQN(
        "MlpPolicy",
        env,
        learning_rate=2.3e-3 if lr is None else lr,
        batch_size=64,
        buffer_size=100_000,
        learning_starts=1000,
        gamma=0.99,
        target_update_interval=10,
        train_freq=256,
        gradient_steps=128,
        exploration_fraction=0.16,
        exploration_initial_eps=1.0,
        exploration_final_eps=0.04,
        max_grad_norm=10,
        policy_kwargs={"net_arch": [256, 256], **(policy_kwargs or {})},
        verbose=0,
        seed=seed,
        device="cpu",
    )


def run_sb3(
    algo: str,
    seed: int,
    total_steps: int,
    threshold: float,
    optimizer: str = "rmsprop",
    **dqn: Any,
) -> Result:
    """One SB3 training run, no TensorBoard, no progress bar (``dqn``: see :func:`_sb3_model`)."""
    env = make_vec_env(ENV_ID, n_envs=NUM_ENVS[algo], seed=seed)
    model = _sb3_model(algo, env, seed, optimizer, **dqn)
    tracker = SolveTracker(threshold)
    start = time.perf_counter()
    model.learn(total_timesteps=total_steps, callback=tracker, progress_bar=False)
    wall = time.perf_counter() - start
    env.close()
    return Result(model.num_timesteps / wall, tracker.solved_at_step, tracker.solved_at_time_s)


def run_ours(algo: str, seed: int, total_steps: int, logdir: str, name: str, *extra: str) -> Result:
    """Our trainer in process, with its defaults for ``algo`` plus ``extra`` options."""
    argv = [
        *("--algo", algo, "--seed", str(seed), "--total-steps", str(total_steps)),
        *("--logdir", logdir, "--run-name", name),
        *("--quiet", "--eval-episodes", "0", "--threads", "1"),
        *extra,
    ]
    summary = run(parse_config(argv))
    return Result(summary["sps"], summary["solved_at_step"], summary["solved_at_time_s"])


SIDES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "a2c": (("ours", ()), ("ours no-tel", ("--log-every", "0", "--histogram-every", "0"))),
    "dqn": (("ours adam", ("--optimizer", "adam", "--lr", "2.3e-3")), ("ours rmsprop", ())),
}
"""Per algorithm, our sides after SB3: (label, extra train options). The first is like-for-like."""


def machine() -> str:
    """CPU model (platform.processor(), else /proc/cpuinfo), OS and core count."""
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu or platform.machine()} | {platform.platform()} | os.cpu_count()={os.cpu_count()}"


def revision() -> str:
    """The project's git commit, ``+dirty`` when code outside benchmarks/ has changes."""
    here = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks"],
            cwd=here,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (sha or "unknown") + ("+dirty" if dirty else "")


def _steps(value: float | None) -> str:
    return "never" if value is None else f"{value:,.0f}"


def _secs(value: float | None, unit: str = "") -> str:
    return "never" if value is None else f"{value:.1f}{unit}"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(num: float | None, den: float | None) -> str:
    return "n/a" if num is None or not den else f"{num / den:.2f}"


def report(algo: str, seeds: list[int], results: dict[str, list[Result]]) -> None:
    """Per-seed table, then medians and each of our sides' ratios to SB3."""
    labels = list(results)
    cols = [f"{lab} {what}" for lab in labels for what in ("SPS", "solved@", "solve s")]
    widths = [max(len(c), 8) for c in cols]
    head = f"{'seed':>4} | " + " | ".join(f"{c:>{w}}" for c, w in zip(cols, widths, strict=True))
    print(head)
    print("-" * len(head))
    for i, seed in enumerate(seeds):
        cells = []
        for lab in labels:
            r = results[lab][i]
            cells += [f"{r.sps:,.0f}", _steps(r.solved_at_step), _secs(r.solved_at_time_s)]
        print(f"{seed:>4} | " + " | ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    n = len(seeds)
    sps = {lab: statistics.median(r.sps for r in rs) for lab, rs in results.items()}
    print()
    print("median SPS: " + ", ".join(f"{lab} {v:,.0f}" for lab, v in sps.items()))
    sb3 = results["SB3"]
    solved = {lab: [r for r in rs if r.solved_at_time_s is not None] for lab, rs in results.items()}
    print(
        f"solved (last-{SOLVE_WINDOW} mean >= threshold): "
        + ", ".join(f"{lab} {len(v)}/{n}" for lab, v in solved.items())
    )
    times = {lab: _median([r.solved_at_time_s for r in v]) for lab, v in solved.items()}
    steps = {lab: _median([r.solved_at_step for r in v]) for lab, v in solved.items()}
    for lab in labels[1:]:
        per_seed = statistics.median(o.sps / s.sps for o, s in zip(results[lab], sb3, strict=True))
        print(
            f"{lab}: SPS / SB3 SPS {sps[lab] / sps['SB3']:.2f}x (median of per-seed ratios "
            f"{per_seed:.2f}x; target >= 3x); median time-to-solve {_secs(times[lab], ' s')} vs "
            f"SB3 {_secs(times['SB3'], ' s')} = {_ratio(times[lab], times['SB3'])} "
            f"(target <= 0.33); median steps-to-solve {_steps(steps[lab])} "
            f"vs SB3 {_steps(steps['SB3'])} "
            f"= {_ratio(steps[lab], steps['SB3'])}"
        )
    if algo == "a2c":
        on, off = results["ours"], results["ours no-tel"]
        cost = 1 - sps["ours"] / sps["ours no-tel"]
        cost_seed = statistics.median(1 - o.sps / f.sps for o, f in zip(on, off, strict=True))
        print(
            f"telemetry cost 1 - SPS_on / SPS_off: {cost:.1%} "
            f"(median of per-seed {cost_seed:.1%}; target <= 10%)"
        )
        same = sum(o.solved_at_step == f.solved_at_step for o, f in zip(on, off, strict=True))
        print(f"ours solved_at_step identical with and without telemetry: {same}/{n} seeds")


def main(argv: list[str] | None = None) -> int:
    """Run every seed's sides interleaved, then print the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algo", choices=("a2c", "dqn"), default="a2c")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 1..N")
    parser.add_argument(
        "--total-steps", type=int, default=None, help="default 200000 (a2c), 100000 (dqn)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 seed, 20k steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = 1
    default_total = 20_000 if args.quick else {"a2c": 200_000, "dqn": 100_000}[args.algo]
    total = args.total_steps or default_total
    torch.set_num_threads(1)
    threshold = gymnasium.spec(ENV_ID).reward_threshold
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"stable-baselines3 {stable_baselines3.__version__}, gymnasium {gymnasium.__version__}, "
        f"python {platform.python_version()}"
    )
    print(f"machine: {machine()}")
    print(f"code: git {revision()}")
    print(
        f"{args.algo} on {ENV_ID} x{NUM_ENVS[args.algo]}, {total:,} steps, "
        f"seeds 1..{args.seeds}, solve threshold {threshold} "
        f"(mean of last {SOLVE_WINDOW} training episodes)\n"
    )
    seeds = list(range(1, args.seeds + 1))
    results: dict[str, list[Result]] = {"SB3": [], **{lab: [] for lab, _ in SIDES[args.algo]}}
    with tempfile.TemporaryDirectory(prefix="cartpole_vs_sb3_") as logdir:
        for i, seed in enumerate(seeds):
            jobs: list[Callable[[], None]] = [
                lambda s=seed: results["SB3"].append(run_sb3(args.algo, s, total, threshold))
            ]
            for k, (lab, extra) in enumerate(SIDES[args.algo]):
                jobs.append(
                    lambda s=seed, lab=lab, extra=extra, k=k: results[lab].append(
                        run_ours(args.algo, s, total, logdir, f"{k}-{s}", *extra)
                    )
                )
            # Rotate who goes first, so no side always runs on a cold (or warm) machine.
            r = i % len(jobs)
            for job in jobs[r:] + jobs[:r]:
                job()
            print(
                f"seed {seed} done: SPS "
                + ", ".join(f"{lab} {rs[-1].sps:,.0f}" for lab, rs in results.items()),
                flush=True,
            )
    print()
    report(args.algo, seeds, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
