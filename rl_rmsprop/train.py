"""``python -m rl_rmsprop.train``: the composition root.

argv -> Config -> vector env -> agent -> optimizer -> run loop -> TensorBoard, checkpoint,
evaluation, ``summary.json``. Tests call :func:`main` in process.
"""

from __future__ import annotations

import copy
import math
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from agents.a2c import a2c_loss
from agents.dqn import QNetwork, dqn_loss, epsilon_greedy, linear_epsilon, polyak_update, td_targets
from agents.networks import ActorCritic
from agents.replay import ReplayBuffer, ReplaySample
from agents.rollout import Collector
from envs import EnvError, env_reward_threshold, make_vector_env
from rl_rmsprop.checkpoint import save_atomic, write_json_atomic
from rl_rmsprop.config import Config, parse_config
from rl_rmsprop.logger import Logger, flatten, markdown_table
from rl_rmsprop.optim import clip_grad_norm_, histograms, make_optimizer, statistics

no_grad = torch.no_grad()
"""Decorator for the acting policies: acting needs no autograd graph."""

SOLVE_WINDOW = 20
"""solved_at_step: the mean of this many last training episodes reaches the env's threshold."""


class UserError(Exception):
    """A mistake in the user's input: reported as one line, exit status 2."""


class Tracker:
    """What every run loop shares: episodes, solved-at, telemetry cadence, progress, summary.

    Args:
        cfg: the run's configuration.
        collector: the rollout collector (owns the env step count and finished episodes).
        opt: the optimizer (for telemetry).
        logger: where everything is written.
    """

    def __init__(self, cfg: Config, collector: Collector, opt: Any, logger: Logger) -> None:
        self.run, self.collector, self.opt, self.logger = cfg.run, collector, opt, logger
        self.max_norm = cfg.learn.max_grad_norm
        self.threshold = env_reward_threshold(cfg.env.id)
        self.window: list[float] = []
        self.solved_at_step: int | None = None
        self.solved_at_time_s: float | None = None
        self.updates = 0
        self.start = time.perf_counter()

    def clip_and_step(self, metrics: dict[str, Any]) -> None:
        """Clip, step the optimizer and write telemetry every ``--log-every`` updates."""
        preclip = clip_grad_norm_(self.opt, self.max_norm) if self.max_norm > 0 else None
        log_now = self.run.log_every > 0 and self.updates % self.run.log_every == 0
        self.opt.record_update = log_now
        self.opt.step()
        self.updates += 1
        step = self.collector.global_step
        if log_now:
            figures = statistics(self.opt, preclip, self.max_norm or None)
            self.logger.scalars({**metrics, **figures, "charts/SPS": self.sps()}, step)
            mean100 = self.collector.mean_recent()
            if mean100 is not None:
                self.logger.scalars({"charts/episodic_return_mean100": mean100}, step)
        if self.run.histogram_every and self.updates % self.run.histogram_every == 1:
            self.logger.histograms(histograms(self.opt), step)

    def sps(self) -> float:
        """Env steps per second since the loop started."""
        return self.collector.global_step / max(time.perf_counter() - self.start, 1e-9)

    def record_episodes(self) -> None:
        """Log finished episodes, note when the env is first solved, update the progress."""
        for ep in self.collector.pop_finished():
            self.logger.episode(ep.episodic_return, ep.length, ep.step)
            self.window = [*self.window[-(SOLVE_WINDOW - 1) :], ep.episodic_return]
            full = len(self.window) == SOLVE_WINDOW and self.threshold is not None
            if full and self.solved_at_step is None and np.mean(self.window) >= self.threshold:
                self.solved_at_step = ep.step
                self.solved_at_time_s = time.perf_counter() - self.start
        recent = self.collector.mean_recent(SOLVE_WINDOW)
        self.logger.progress(self.collector.global_step, self.sps(), recent)

    def summary(self) -> dict[str, Any]:
        """The figures of ``summary.json`` that the loop knows."""
        wall = time.perf_counter() - self.start
        return {
            "total_steps": self.collector.global_step,
            "updates": self.updates,
            "wall_time_s": wall,
            "sps": self.collector.global_step / wall,
            "episodic_return_mean100": self.collector.mean_recent(),
            "solved_at_step": self.solved_at_step,
            "solved_at_time_s": self.solved_at_time_s,
        }


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
    """The A2C run loop: collect a rollout -> loss -> backward -> clip -> step -> metrics."""
    collector = Collector(env, cfg.run.seed, next(model.parameters()).device)
    tracker = Tracker(cfg, collector, opt, logger)
    while collector.global_step < cfg.run.total_steps:
        rollout = collector.collect(model.act, cfg.a2c.n_steps)
        loss, metrics = a2c_loss(model, rollout, cfg.a2c, cfg.learn.gamma)
        opt.zero_grad()
        loss.backward()
        tracker.clip_and_step(metrics)
        tracker.record_episodes()
    return tracker.summary()


def training_batches(
    buffer: ReplayBuffer, target: nn.Module, q_net: nn.Module, cfg: Config
) -> Iterator[tuple[ReplaySample, Tensor]]:
    """A training round's ``gradient_steps`` minibatches with their TD targets.

    The target network is fixed during a round (it changes only while collecting), so without
    Double DQN every minibatch is drawn at once and all targets come from one forward pass:
    the same distribution as drawing them one by one, for one large matrix product instead of
    ``gradient_steps`` small ones. Double DQN's targets use the online network, which changes
    after each gradient step, so they are computed per minibatch.
    """
    dqn, gamma = cfg.dqn, cfg.learn.gamma
    size, steps = dqn.batch_size, dqn.gradient_steps
    if dqn.double_dqn:
        for _ in range(steps):
            batch = buffer.sample(size)
            yield (
                batch,
                td_targets(
                    batch.rewards,
                    batch.next_obs,
                    batch.terminated,
                    target,
                    q_net,
                    gamma,
                    double=True,
                ),
            )
        return
    big = buffer.sample(size * steps)
    targets = td_targets(big.rewards, big.next_obs, big.terminated, target, None, gamma)
    for i in range(0, size * steps, size):
        yield ReplaySample(*(t[i : i + size] for t in big)), targets[i : i + size]


def train_dqn(cfg: Config, env: Any, q_net: QNetwork, opt: Any, logger: Logger) -> dict:
    """The DQN run loop: act epsilon-greedily -> store valid transitions -> gradient steps."""
    dqn, run = cfg.dqn, cfg.run
    device = next(q_net.parameters()).device
    target = copy.deepcopy(q_net).requires_grad_(False)
    buffer = ReplayBuffer(dqn.buffer_size, env.single_observation_space.shape, env.num_envs, device)
    collector = Collector(env, run.seed, device)
    tracker = Tracker(cfg, collector, opt, logger)
    steps_per_round = max(1, dqn.train_freq // env.num_envs)
    target_updates = 0
    while collector.global_step < run.total_steps:
        for _ in range(steps_per_round):
            eps = linear_epsilon(
                collector.global_step,
                run.total_steps,
                dqn.exploration_fraction,
                dqn.exploration_initial_eps,
                dqn.exploration_final_eps,
            )
            s = collector.step(no_grad(lambda obs, e=eps: epsilon_greedy(q_net(obs), e)))
            buffer.add(s.obs, s.next_obs, s.actions, s.rewards, s.terminated, s.valid)
            tracker.record_episodes()
            # SB3 counts the target interval in env steps and updates only while collecting,
            # so the target stays fixed through a training round's gradient steps.
            if collector.global_step // dqn.target_update_interval > target_updates:
                target_updates = collector.global_step // dqn.target_update_interval
                polyak_update(target, q_net, dqn.tau)
        if collector.global_step < dqn.learning_starts or len(buffer) == 0:
            continue
        for batch, targets in training_batches(buffer, target, q_net, cfg):
            loss, metrics = dqn_loss(q_net, batch, targets, dqn.loss, dqn.loss_reduction)
            opt.zero_grad()
            loss.backward()
            tracker.clip_and_step({**metrics, "charts/epsilon": eps})
    return tracker.summary()


def greedy_policy(model: nn.Module) -> Any:
    """Observations -> the model's best actions (argmax of logits or of Q-values)."""
    if isinstance(model, ActorCritic):
        return lambda obs: model.act(obs, greedy=True)
    return no_grad(lambda obs: model(obs).argmax(-1))


def evaluate(
    model: nn.Module, cfg: Config, device: torch.device
) -> tuple[float | None, float | None]:
    """Mean and std of ``--eval-episodes`` greedy episodes on a separately seeded env."""
    episodes = cfg.run.eval_episodes
    if episodes == 0:
        return None, None
    env = make_vector_env(cfg.env.id, 1, cfg.run.seed + 10_000, vectorization=cfg.env.vectorization)
    collector = Collector(env, cfg.run.seed + 10_000, device)
    returns: list[float] = []
    while len(returns) < episodes:
        collector.collect(greedy_policy(model), 1)
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
        n_actions = int(env.single_action_space.n)
        network = ActorCritic if cfg.run.algo == "a2c" else QNetwork
        model = network(obs_dim, n_actions, cfg.learn.hidden).to(device)
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
        loop = train_a2c if cfg.run.algo == "a2c" else train_dqn
        summary = loop(cfg, env, model, opt, logger)
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
