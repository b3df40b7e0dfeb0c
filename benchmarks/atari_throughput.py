"""Atari throughput and replay memory: Stable-Baselines3 versus rl_rmsprop, same settings.

For each preset on PongNoFrameskip-v4 (``dqn-nature``: 1 env, DQN; ``a2c-atari``: 16 envs,
A2C) it measures, in one process with the sides taking turns:

* env frames per second: random actions through each side's full preprocessing stack as its
  training uses it (SB3: ``make_atari_env`` + ``VecFrameStack(4)``, its default
  ``DummyVecEnv``; ours: ``make_vector_env``, for A2C ALE's C++ vector env stepping the copies
  on threads, for DQN Gymnasium's wrapper chain in-process, which its frame replay needs),
  4 emulator frames per step;
* training env steps per second: the whole training loop on the CPU for a fixed number of
  steps (DQN: learning starts after 1,000 steps, then one update per 4 steps, batch 32);
* replay bytes per transition: SB3's ``ReplayBuffer`` (obs and next_obs stored; also with
  ``optimize_memory_usage=True``) against our ``FrameReplayBuffer`` (each frame once).

Targets: our training throughput >= 1.5x SB3's; our replay bytes per transition <= 1/4 of SB3's.
Full Atari results need a GPU and many hours; these are CPU figures of the machinery.

    python benchmarks/atari_throughput.py [--reps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ale_py
import gymnasium
import numpy as np
import stable_baselines3
import torch
from stable_baselines3 import A2C, DQN
from stable_baselines3.common.buffers import ReplayBuffer as SB3ReplayBuffer
from stable_baselines3.common.env_util import make_atari_env
from stable_baselines3.common.vec_env import VecFrameStack

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cartpole_vs_sb3 import machine, revision

from agents.replay import FrameReplayBuffer
from envs import close_env, make_vector_env
from rl_rmsprop.options import parse_config
from rl_rmsprop.run.builders import env_options
from rl_rmsprop.run.single import run

ENV_ID = "PongNoFrameskip-v4"
PRESETS = {"dqn-nature": 1, "a2c-atari": 16}
"""Preset -> env copies."""


def sb3_env(num_envs: int, seed: int):
    """SB3's Atari stack as its docs and the zoo build it."""
    return VecFrameStack(make_atari_env(ENV_ID, n_envs=num_envs, seed=seed), n_stack=4)


def env_fps_sb3(num_envs: int, steps: int) -> float:
    """Emulator frames per second through SB3's preprocessing."""
    env = sb3_env(num_envs, 0)
    env.reset()
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(steps):
        env.step(rng.integers(0, env.action_space.n, size=num_envs))
    wall = time.perf_counter() - start
    env.close()
    return steps * num_envs * 4 / wall


def env_fps_ours(preset: str, steps: int) -> float:
    """Emulator frames per second through our preprocessing, the env the preset trains on."""
    num_envs = PRESETS[preset]
    options = env_options(parse_config(["--preset", preset, "--env", ENV_ID]))
    env = make_vector_env(ENV_ID, num_envs, 0, **options)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(steps):
        env.step(rng.integers(0, env.single_action_space.n, size=num_envs))
    wall = time.perf_counter() - start
    close_env(env)
    return steps * num_envs * 4 / wall


def train_sps_sb3(preset: str, steps: int) -> float:
    """SB3 training env steps per second with the preset's settings."""
    env = sb3_env(PRESETS[preset], 0)
    if preset == "dqn-nature":
        model = DQN(
            "CnnPolicy",
            env,
            learning_rate=2.5e-4,
            buffer_size=20_000,
            learning_starts=1000,
            batch_size=32,
            train_freq=4,
            gradient_steps=1,
            target_update_interval=40_000,
            exploration_fraction=0.1,
            exploration_final_eps=0.1,
            max_grad_norm=10,
            verbose=0,
            seed=0,
            device="cpu",
        )
    else:
        from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

        model = A2C(
            "CnnPolicy",
            env,
            ent_coef=0.01,
            vf_coef=0.25,
            policy_kwargs={"optimizer_class": RMSpropTFLike, "optimizer_kwargs": {"eps": 1e-5}},
            verbose=0,
            seed=0,
            device="cpu",
        )
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    wall = time.perf_counter() - start
    env.close()
    return model.num_timesteps / wall


def train_sps_ours(preset: str, steps: int, logdir: str, name: str, threads: int) -> float:
    """Our training env steps per second with the preset (telemetry at its default cadence)."""
    argv = [
        *("--preset", preset, "--env", ENV_ID, "--total-steps", str(steps)),
        *("--eval-episodes", "0", "--quiet", "--device", "cpu", "--threads", str(threads)),
        *("--logdir", logdir, "--run-name", name, "--checkpoint-every", "0"),
    ]
    if preset == "dqn-nature":
        argv += ["--learning-starts", "1000", "--buffer-size", "20000"]
    return run(parse_config(argv))["sps"]


def replay_bytes() -> dict[str, float]:
    """Bytes per stored transition of a 10,000-transition buffer of each kind."""
    shape = (4, 84, 84)
    space = gymnasium.spaces.Box(0, 255, shape, np.uint8)
    actions = gymnasium.spaces.Discrete(6)
    out = {}
    for label, optimize in (("SB3", False), ("SB3 optimize_memory_usage", True)):
        buf = SB3ReplayBuffer(
            10_000,
            space,
            actions,
            "cpu",
            optimize_memory_usage=optimize,
            handle_timeout_termination=False,
        )
        arrays = [buf.observations, buf.actions, buf.rewards, buf.dones, buf.timeouts]
        if not optimize:
            arrays.append(buf.next_observations)
        out[label] = sum(a.nbytes for a in arrays) / 10_000
    ours = FrameReplayBuffer(10_000, shape, 1, torch.device("cpu"))
    out["ours"] = ours.nbytes / 10_000
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure, interleaved, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions per side and figure")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both sides")
    parser.add_argument("--env-steps", type=int, default=1000, help="vector steps for env FPS")
    parser.add_argument("--dqn-steps", type=int, default=3000)
    parser.add_argument("--a2c-steps", type=int, default=8000)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    gymnasium.register_envs(ale_py)
    print(
        f"torch {torch.__version__}, threads {args.threads}, stable-baselines3 "
        f"{stable_baselines3.__version__}, gymnasium {gymnasium.__version__}, ale-py "
        f"{ale_py.__version__}, python {platform.python_version()}"
    )
    print(f"machine: {machine()}")
    print(f"code: git {revision()}\n")
    rows = []
    with tempfile.TemporaryDirectory(prefix="atari_throughput_") as logdir:
        for preset, num_envs in PRESETS.items():
            steps = args.dqn_steps if preset == "dqn-nature" else args.a2c_steps
            fps = {"SB3": [], "ours": []}
            sps = {"SB3": [], "ours": []}
            for rep in range(args.reps):
                order = ["SB3", "ours"] if rep % 2 == 0 else ["ours", "SB3"]
                for side in order:
                    if side == "SB3":
                        fps[side].append(env_fps_sb3(num_envs, args.env_steps // num_envs * 4))
                        sps[side].append(train_sps_sb3(preset, steps))
                    else:
                        fps[side].append(env_fps_ours(preset, args.env_steps // num_envs * 4))
                        name = f"{preset}-{rep}"
                        sps[side].append(train_sps_ours(preset, steps, logdir, name, args.threads))
                print(
                    f"{preset} rep {rep + 1}: env FPS SB3 {fps['SB3'][-1]:,.0f} ours "
                    f"{fps['ours'][-1]:,.0f}; train SPS SB3 {sps['SB3'][-1]:,.0f} ours "
                    f"{sps['ours'][-1]:,.0f}",
                    flush=True,
                )
            rows.append((preset, num_envs, steps, fps, sps))
    print()
    head = (
        f"{'preset':<11} {'envs':>4} {'steps':>6} | {'env FPS SB3':>11} {'ours':>8} {'ratio':>6} | "
        f"{'train SPS SB3':>13} {'ours':>6} {'ratio':>6}"
    )
    print(head)
    print("-" * len(head))
    for preset, num_envs, steps, fps, sps in rows:
        f_s, f_o = statistics.median(fps["SB3"]), statistics.median(fps["ours"])
        s_s, s_o = statistics.median(sps["SB3"]), statistics.median(sps["ours"])
        print(
            f"{preset:<11} {num_envs:>4} {steps:>6} | {f_s:>11,.0f} {f_o:>8,.0f} "
            f"{f_o / f_s:>5.2f}x | {s_s:>13,.0f} {s_o:>6,.0f} {s_o / s_s:>5.2f}x"
        )
    print(
        "medians of",
        args.reps,
        "repetitions; FPS = emulator frames (4 per env step); target >= 1.5x",
    )
    print()
    sizes = replay_bytes()
    for label, value in sizes.items():
        ratio = sizes["ours"] / value
        extra = "" if label == "ours" else f" (ours / this = {ratio:.3f}; target <= 0.25)"
        print(f"replay bytes per transition, {label}: {value:,.0f}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
