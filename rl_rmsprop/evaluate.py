"""``python -m rl_rmsprop.evaluate RUN_DIR``: play a finished run's greedy policy, print its score.

The run folder's ``model.pt`` (the final network) is loaded into the network its
``config.json`` describes, with its observation statistics (``normalization.pt``) where it
was trained with ``--normalize``, and plays ``--episodes`` episodes exactly as the run's own
final evaluation did: on env copies seeded seed + 10000 + i, one episode each. With the
defaults the figure printed is the one in the run's ``summary.json``. ``--video`` records the
episodes as MP4 files in ``RUN_DIR/videos`` (named ``evaluate-<time>-episode-<i>.mp4``; the
run's own videos are left alone). Nothing else is written.
"""

from __future__ import annotations

from rl_rmsprop.cli import exit_cli  # first: the real package, wherever the user stands

# isort: split
import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from envs import EnvError, close_env, is_atari, make_vector_env
from rl_rmsprop.checkpoint import MODEL_FILE, NORMALIZATION_FILE, CheckpointError, load_weights
from rl_rmsprop.config import Config
from rl_rmsprop.options import OneLineErrorParser
from rl_rmsprop.run.builders import build_model, env_options, resolve_device
from rl_rmsprop.run.errors import UserError
from rl_rmsprop.run.evaluation import EVAL_SEED_OFFSET, check_video, evaluate
from rl_rmsprop.run.folders import run_folder_problem


def build_parser() -> argparse.ArgumentParser:
    """The evaluate command's options."""
    parser = OneLineErrorParser(
        prog="python -m rl_rmsprop.evaluate",
        description="Play a finished run's greedy policy and print the mean and std of its "
        "episode returns.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run (or population member)")
    parser.add_argument(
        "--episodes", type=int, help="episodes to play (default: the run's --eval-episodes)"
    )
    parser.add_argument(
        "--epsilon",
        type=float,
        help="random-action probability (default: the run's --eval-epsilon)",
    )
    parser.add_argument(
        "--seed", type=int, help="env copies are seeded seed + 10000 + i (default: the run's seed)"
    )
    parser.add_argument(
        "--video",
        action="store_true",
        help="record the episodes as MP4 files in RUN_DIR/videos (needs moviepy)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: CUDA for a CNN when available (default: auto)",
    )
    return parser


def load_run(run_dir: Path) -> tuple[Config, dict[str, torch.Tensor], dict | None]:
    """A finished run's configuration, final weights and observation statistics (or None).

    Raises:
        UserError: not a run folder of ours, a population folder, or a run without its files.
    """
    if (run_dir / "population.json").is_file():
        members = sorted(p.name for p in run_dir.glob("seed-*"))
        example = f" (e.g. {run_dir / members[0]})" if members else ""
        raise UserError(f"{run_dir} is a population; evaluate one of its members{example}")
    problem = run_folder_problem(run_dir)
    if problem:
        raise UserError(f"{run_dir} {problem}; give the folder of a finished run")
    cfg = Config.from_dict(json.loads((run_dir / "config.json").read_text()))
    if not (run_dir / MODEL_FILE).is_file():
        raise UserError(
            f"{run_dir} has no {MODEL_FILE}: a run writes it when it finishes (continue this "
            f"one with python -m rl_rmsprop.train --resume {run_dir})"
        )
    try:
        weights = load_weights(run_dir / MODEL_FILE)
        statistics = None
        if cfg.env.normalize:
            saved = load_weights(run_dir / NORMALIZATION_FILE)
            statistics = {k: v.numpy() for k, v in saved.items()}
    except CheckpointError as e:
        raise UserError(f"{e}; evaluate another run or retrain this one") from None
    return cfg, weights, statistics


def run_evaluation(args: argparse.Namespace) -> tuple[float, float, Config, Path | None]:
    """Load the run, play its episodes; the mean, std, config played and the video folder.

    Raises:
        UserError, EnvError: bad input, with the one-line reason.
    """
    run_dir = Path(args.run_dir)
    cfg, weights, statistics = load_run(run_dir)
    run = dataclasses.replace(
        cfg.run,
        eval_episodes=cfg.run.eval_episodes if args.episodes is None else args.episodes,
        eval_epsilon=cfg.run.eval_epsilon if args.epsilon is None else args.epsilon,
        seed=cfg.run.seed if args.seed is None else args.seed,
    )
    cfg = dataclasses.replace(cfg, run=run)
    if run.eval_episodes < 1:
        raise UserError("--episodes must be >= 1")
    if not 0.0 <= run.eval_epsilon <= 1.0:
        raise UserError("--epsilon must be in [0, 1]")
    if run.seed < 0:
        raise UserError("--seed must be >= 0")
    device = resolve_device(args.device, images=is_atari(cfg.env.id))
    env = make_vector_env(cfg.env.id, 1, 0, **env_options(cfg))
    try:
        model = build_model(cfg, env)
    finally:
        close_env(env)
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        raise UserError(
            f"{run_dir / MODEL_FILE} does not fit the network of its config.json (another "
            "run's file?)"
        ) from None
    video_dir = None
    if args.video:
        check_video(cfg, flag="--video")
        video_dir = run_dir / "videos"
    prefix = time.strftime("evaluate-%Y%m%d-%H%M%S")
    mean, std = evaluate(model.to(device), cfg, device, video_dir, statistics, prefix)
    assert mean is not None and std is not None  # at least one episode
    return mean, std, cfg, video_dir


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a user mistake, with a one-line message)."""
    args = build_parser().parse_args(argv)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            mean, std, cfg, video_dir = run_evaluation(args)
    except (UserError, EnvError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run = cfg.run
    policy = "greedy" if run.eval_epsilon == 0 else f"epsilon {run.eval_epsilon:g}"
    videos = f"; videos in {video_dir}" if video_dir is not None else ""
    print(
        f"eval {mean:.1f} +- {std:.1f} over {run.eval_episodes} episodes of {cfg.env.id} "
        f"({policy}; env copies seeded {run.seed} + {EVAL_SEED_OFFSET} + i){videos}"
    )
    return 0


if __name__ == "__main__":
    exit_cli(main())
