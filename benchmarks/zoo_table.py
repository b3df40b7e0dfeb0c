"""rl-baselines3-zoo's table, reproduced: ours and Stable-Baselines3 with the zoo's settings.

For each (algorithm, env) of ``rl_rmsprop/zoo_hparams.json`` that we can train, every seed is
trained by each side in turn, in this process, single-threaded:

* ``SB3``: Stable-Baselines3 with the zoo's settings over its own defaults (``VecNormalize``
  where the zoo normalizes), its optimizer (Adam for DQN, RMSprop for A2C);
* ``ours``: ``python -m rl_rmsprop.train --hparams zoo`` (the same settings and optimizer);
* ``ours rmsprop`` (DQN only): the same with ``--optimizer rmsprop``, the project's default.

Then each trained agent plays 20 greedy episodes on separately seeded envs. Printed per row and
side: the mean and std of those returns over all seeds' episodes, the median wall time of a
run, and the zoo's published figure (one trained agent, benchmark.md). Targets: ours at least
SB3's mean on every row, and within one published std of the zoo's figure.

    python benchmarks/zoo_table.py [--rows dqn:CartPole-v1,a2c:Acrobot-v1] [--seeds 5]
                                   [--first-seed 0]    # seeds first-seed .. first-seed+seeds-1
                                   [--total-steps N]   # N: a shorter budget than the zoo's
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

import gymnasium
import numpy as np
import stable_baselines3
import torch
from stable_baselines3 import A2C, DQN
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize

from rl_rmsprop.hparams import lr_schedule, missing, zoo_data, zoo_settings
from rl_rmsprop.options import parse_config
from rl_rmsprop.run.single import run

EPISODES = 20
"""Greedy evaluation episodes per trained agent (the zoo's benchmark plays more)."""

NOT_SB3 = {"n_envs", "n_timesteps", "normalize", "net_arch"}
"""Zoo keys that are not constructor arguments of SB3's algorithms."""


@dataclass
class Side:
    """One side's results on one row: evaluation means and stds per seed, wall times."""

    means: list[float] = field(default_factory=list)
    stds: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)

    def pooled(self) -> tuple[float, float]:
        """Mean and std over every seed's episodes (equal episodes per seed)."""
        mean = float(np.mean(self.means))
        second = np.mean([s * s + m * m for m, s in zip(self.means, self.stds, strict=True)])
        return mean, float(np.sqrt(max(second - mean * mean, 0.0)))


def train_sb3(algo: str, env_id: str, seed: int, steps: int) -> tuple[float, float]:
    """SB3 with the zoo's settings; the mean and std of its greedy evaluation episodes."""
    settings = zoo_settings(algo, env_id)
    env = make_vec_env(env_id, n_envs=int(settings["n_envs"]), seed=seed)
    if settings.get("normalize"):
        env = VecNormalize(env, gamma=settings["gamma"])
    kwargs = {k: v for k, v in settings.items() if k not in NOT_SB3}
    if isinstance(kwargs["learning_rate"], str):  # the zoo's lin_<x>: progress_remaining * x
        _, initial = lr_schedule(kwargs["learning_rate"])
        kwargs["learning_rate"] = lambda progress, x=initial: progress * x
    if algo == "dqn":
        kwargs["policy_kwargs"] = {"net_arch": list(settings["net_arch"])}
    model = (DQN if algo == "dqn" else A2C)("MlpPolicy", env, seed=seed, device="cpu", **kwargs)
    model.learn(total_timesteps=steps)
    eval_env = make_vec_env(env_id, n_envs=1, seed=seed + 10_000)
    if isinstance(env, VecNormalize):
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
        eval_env.obs_rms = env.obs_rms
    mean, std = evaluate_policy(model, eval_env, n_eval_episodes=EPISODES, deterministic=True)
    return float(mean), float(std)


def train_ours(
    algo: str, env_id: str, seed: int, steps: int, logdir: str, extra: tuple[str, ...]
) -> tuple[float, float]:
    """``train --hparams zoo``; the mean and std of its final greedy evaluation."""
    argv = ["--hparams", "zoo", "--algo", algo, "--env", env_id, "--seed", str(seed)]
    argv += ["--total-steps", str(steps), "--eval-episodes", str(EPISODES), "--eval-every", "0"]
    argv += ["--logdir", logdir, "--run-name", f"{algo}-{env_id}-{seed}-{len(extra)}", "--quiet"]
    summary = run(parse_config([*argv, *extra]))
    return summary["eval_return_mean"], summary["eval_return_std"]


def rows_wanted(text: str | None) -> list[tuple[str, str]]:
    """``algo:env`` pairs to run (default: every entry we can train)."""
    data = zoo_data()
    if text:
        return [tuple(item.split(":", 1)) for item in text.split(",")]  # type: ignore[misc]
    return [(algo, env_id) for algo in ("a2c", "dqn") for env_id in data[algo]]


def main(argv: list[str] | None = None) -> int:
    """Run the table; print one line per row and side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", help="comma-separated algo:env (default: every usable one)")
    parser.add_argument("--seeds", type=int, default=5, help="how many seeds")
    parser.add_argument("--first-seed", type=int, default=0, help="the first of them")
    parser.add_argument("--total-steps", type=int, help="instead of the zoo's budget")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(
        f"torch {torch.__version__}, stable-baselines3 {stable_baselines3.__version__}, "
        f"gymnasium {gymnasium.__version__}, python {platform.python_version()}, "
        f"{platform.processor() or platform.machine()}, threads 1"
    )
    data = zoo_data()
    lines = []
    with tempfile.TemporaryDirectory() as logdir:
        for algo, env_id in rows_wanted(args.rows):
            settings = zoo_settings(algo, env_id)
            lack = missing(settings)
            try:
                gymnasium.make(env_id).close()
            except Exception as e:
                lack = lack or f"the env cannot be made here ({type(e).__name__}: {e})"
            if lack:
                print(f"{algo} {env_id}: skipped, needs {lack}", flush=True)
                continue
            steps = args.total_steps or int(settings["n_timesteps"])
            sides = {"SB3": Side(), "ours": Side()}
            if algo == "dqn":
                sides["ours rmsprop"] = Side()
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                for name, side in sides.items():
                    start = time.perf_counter()
                    if name == "SB3":
                        mean, std = train_sb3(algo, env_id, seed, steps)
                    else:
                        extra = ("--optimizer", "rmsprop") if name == "ours rmsprop" else ()
                        mean, std = train_ours(algo, env_id, seed, steps, logdir, extra)
                    side.walls.append(time.perf_counter() - start)
                    side.means.append(mean)
                    side.stds.append(std)
                    print(
                        f"  {algo} {env_id} seed {seed} {name}: {mean:.1f} +- {std:.1f} "
                        f"({side.walls[-1]:.1f} s)",
                        flush=True,
                    )
            published = data[algo][env_id]["published"]
            sb3_mean = sides["SB3"].pooled()[0]
            for name, side in sides.items():
                mean, std = side.pooled()
                vs_sb3 = (
                    "" if name == "SB3" else f" | >= SB3: {'yes' if mean >= sb3_mean else 'no'}"
                )
                near = (
                    abs(mean - published["mean"]) <= published["std"] or mean >= published["mean"]
                )
                lines.append(
                    f"{algo:<4} {env_id:<15} {name:<13} | {mean:8.1f} +- {std:6.1f} | "
                    f"{statistics.median(side.walls):7.1f} s | zoo {published['mean']:8.1f} +- "
                    f"{published['std']:5.1f} | within a std: {'yes' if near else 'no'}{vs_sb3}"
                )
                print(lines[-1], flush=True)  # each row as it finishes, the table at the end
    budget = f"{args.total_steps:,} steps (not the zoo's budget)" if args.total_steps else "zoo's"
    last = args.first_seed + args.seeds - 1
    print(f"\nseeds {args.first_seed}-{last}, {EPISODES} greedy episodes each, budget {budget}:")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
