"""``python -m rl_rmsprop.train``: the composition root.

argv -> Config -> vector env -> agent -> optimizer -> run loop -> TensorBoard, checkpoint,
evaluation, ``summary.json``. Tests call :func:`main` in process.
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.a2c import a2c_loss
from agents.networks import ActorCritic
from agents.rollout import Collector
from envs import EnvError, env_reward_threshold, make_vector_env
from rl_rmsprop.checkpoint import save_atomic, write_json_atomic
from rl_rmsprop.config import Config, parse_config
from rl_rmsprop.logger import Logger, flatten, markdown_table
from rl_rmsprop.optim import clip_grad_norm_, histograms, make_optimizer, statistics

SOLVE_WINDOW = 20
"""solved_at_step: the mean of this many last training episodes reaches the env's threshold."""


class UserError(Exception):
    """A mistake in the user's input: reported as one line, exit status 2."""


@dataclass
class Progress:
    """What the loop tracks for the summary."""

    solved_at_step: int | None = None
    solved_at_time_s: float | None = None
    updates: int = 0


def resolve_device(requested: str) -> torch.device:
    """``auto`` picks the CPU: for MLPs it is faster than a GPU; ``cuda`` needs a GPU."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "--device cuda was asked for but no CUDA device is available; use --device cpu"
        )
    return torch.device("cuda" if requested == "cuda" else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the envs are seeded at their first reset)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_name(cfg: Config) -> str:
    """The run folder name: ``--run-name`` or env__algo__optimizer__seed__time."""
    if cfg.run.run_name:
        return cfg.run.run_name
    opt = cfg.optim.name.replace(":", "-")
    return (
        f"{cfg.env.id.replace('/', '-')}__{cfg.run.algo}__{opt}__{cfg.run.seed}__{int(time.time())}"
    )


def make_run_dir(cfg: Config) -> Path:
    """Create the run folder, refusing an existing one or an unwritable log folder."""
    path = Path(cfg.run.logdir) / run_name(cfg)
    if path.exists():
        raise UserError(f"run folder {path} already exists; choose another --run-name")
    try:
        path.mkdir(parents=True)
    except OSError as e:
        raise UserError(f"cannot create {path} ({e.strerror}); choose a writable --logdir") from e
    return path


def train_a2c(cfg: Config, env: Any, model: ActorCritic, opt: Any, logger: Logger) -> dict:
    """The run loop for A2C: collect -> loss -> backward -> clip -> step -> metrics."""
    a2c, run = cfg.a2c, cfg.run
    collector = Collector(env, run.seed, next(model.parameters()).device)
    threshold = env_reward_threshold(cfg.env.id)
    progress = Progress()
    window: list[float] = []
    start = time.perf_counter()
    while collector.global_step < run.total_steps:
        rollout = collector.collect(model.act, a2c.n_steps)
        loss, metrics = a2c_loss(model, rollout, a2c)
        opt.zero_grad()
        loss.backward()
        preclip = clip_grad_norm_(opt, a2c.max_grad_norm) if a2c.max_grad_norm > 0 else None
        log_now = run.log_every > 0 and progress.updates % run.log_every == 0
        opt.record_update = log_now
        opt.step()
        progress.updates += 1
        step = collector.global_step
        for ep in collector.pop_finished():
            logger.episode(ep.episodic_return, ep.length, ep.step)
            window = [*window[-(SOLVE_WINDOW - 1) :], ep.episodic_return]
            solved = len(window) == SOLVE_WINDOW and threshold is not None
            if solved and progress.solved_at_step is None and np.mean(window) >= threshold:
                progress.solved_at_step = ep.step
                progress.solved_at_time_s = time.perf_counter() - start
        sps = step / (time.perf_counter() - start)
        if log_now:
            figures = statistics(opt, preclip, a2c.max_grad_norm or None)
            logger.scalars({**metrics, **figures, "charts/SPS": sps}, step)
            mean100 = collector.mean_recent()
            if mean100 is not None:
                logger.scalars({"charts/episodic_return_mean100": mean100}, step)
        if run.histogram_every and progress.updates % run.histogram_every == 1:
            logger.histograms(histograms(opt), step)
        logger.progress(step, sps, collector.mean_recent(SOLVE_WINDOW))
    wall = time.perf_counter() - start
    return {
        "total_steps": collector.global_step,
        "updates": progress.updates,
        "wall_time_s": wall,
        "sps": collector.global_step / wall,
        "episodic_return_mean100": collector.mean_recent(),
        "solved_at_step": progress.solved_at_step,
        "solved_at_time_s": progress.solved_at_time_s,
    }


def evaluate(
    model: ActorCritic, cfg: Config, device: torch.device
) -> tuple[float | None, float | None]:
    """Mean and std of ``--eval-episodes`` greedy episodes on a separately seeded env."""
    episodes = cfg.run.eval_episodes
    if episodes == 0:
        return None, None
    env = make_vector_env(cfg.env.id, 1, cfg.run.seed + 10_000, vectorization=cfg.env.vectorization)
    collector = Collector(env, cfg.run.seed + 10_000, device)
    returns: list[float] = []
    while len(returns) < episodes:
        collector.collect(lambda obs: model.act(obs, greedy=True), 1)
        returns += [ep.episodic_return for ep in collector.pop_finished()]
    env.close()
    return float(np.mean(returns[:episodes])), float(np.std(returns[:episodes]))


def run(cfg: Config) -> dict:
    """Train one configuration; returns the summary written to ``summary.json``."""
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device)
    seed_everything(cfg.run.seed)
    env = make_vector_env(
        cfg.env.id, cfg.env.num_envs, cfg.run.seed, vectorization=cfg.env.vectorization
    )
    try:
        obs_dim = math.prod(env.single_observation_space.shape)
        model = ActorCritic(obs_dim, int(env.single_action_space.n), cfg.a2c.hidden).to(device)
        try:
            opt = make_optimizer(cfg.optim.name, model.named_parameters(), **cfg.optim.overrides())
        except ValueError as e:
            raise UserError(f"{e} (see --optimizer and its options in --help)") from e
        run_dir = make_run_dir(cfg)
        write_json_atomic(cfg.to_dict(), run_dir / "config.json")
        logger = Logger(run_dir, cfg.run.total_steps, cfg.run.quiet)
        flat = flatten(cfg.to_dict())
        logger.config(flat, markdown_table(flat))
        logger.message(
            f"run {run_dir}: {cfg.run.algo} on {cfg.env.id} x{cfg.env.num_envs}, optimizer "
            f"{cfg.optim.name} ({opt.impl}), device {device}"
            + (" (auto: an MLP is faster on the CPU)" if cfg.run.device == "auto" else "")
        )
        summary = train_a2c(cfg, env, model, opt, logger)
    finally:
        env.close()
    summary["eval_return_mean"], summary["eval_return_std"] = evaluate(model, cfg, device)
    save_atomic(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "config": cfg.to_dict(),
            "global_step": summary["total_steps"],
        },
        run_dir / "checkpoint.pt",
    )
    summary["run_dir"] = str(run_dir)
    write_json_atomic(summary, run_dir / "summary.json")
    logger.final(
        {
            k: summary[k]
            for k in ("episodic_return_mean100", "eval_return_mean", "solved_at_step", "sps")
        }
    )
    logger.close()
    return summary


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a user mistake, with a one-line message)."""
    cfg = parse_config(argv)
    try:
        summary = run(cfg)
    except (UserError, EnvError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"done: {summary['total_steps']:,} steps in {summary['wall_time_s']:.1f} s "
        f"({summary['sps']:,.0f} SPS), return mean100 {_fmt(summary['episodic_return_mean100'])}, "
        f"eval {_fmt(summary['eval_return_mean'])} +- {_fmt(summary['eval_return_std'])}, "
        f"solved at step {summary['solved_at_step'] or 'never'}; logs in {summary['run_dir']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
