"""``python -m rl_rmsprop.train``: the composition root.

argv -> Config -> vector env -> agent -> optimizer -> run loop -> TensorBoard, checkpoint,
evaluation, ``summary.json``. Tests call :func:`main` in process.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.util
import json
import math
import random
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium.wrappers import RecordVideo
from torch import Tensor, nn

from agents import a2c_numpy, dqn_numpy
from agents.a2c import a2c_loss
from agents.dqn import (
    CnnQNetwork,
    QNetwork,
    dqn_loss,
    epsilon_greedy,
    lazy_epsilon_greedy,
    linear_epsilon,
    polyak_update,
    td_targets,
)
from agents.networks import ActorCritic, CnnActorCritic
from agents.replay import FrameReplayBuffer, ReplayBuffer, ReplaySample
from agents.rollout import WORKER_DIED, Collector, EnvStepFailed
from envs import EnvError, close_env, env_reward_threshold, is_atari, make_vector_env
from envs.atari import FRAME_SKIP, NativeAtari, atari_wrappers
from rl_rmsprop.checkpoint import (
    CHECKPOINT_DIR,
    FINAL_CHECKPOINT,
    FORMAT,
    CheckpointError,
    UnsafeCheckpoint,
    checkpoint_path,
    load_checkpoint,
    pack_env,
    prune_checkpoints,
    resume_candidates,
    save_checkpoint,
    unpack_env,
    write_json_atomic,
)
from rl_rmsprop.config import Config, parse_config
from rl_rmsprop.errors import Diverged, EnvCrashed, TrainingFailed, UserError
from rl_rmsprop.logger import Logger, flatten, markdown_table
from rl_rmsprop.optim import clip_grad_norm_, histograms, make_optimizer, statistics
from rl_rmsprop.optim.presets import preset_group
from rl_rmsprop.runfolder import FolderLock, remove_stale_temp_files, replace_run_folder
from rl_rmsprop.threads import set_threads

no_grad = torch.no_grad()
"""Decorator for the acting policies: acting needs no autograd graph."""

SOLVE_WINDOW = 20
"""solved_at_step: the mean of this many last training episodes reaches the env's threshold."""
EVAL_SEED_OFFSET = 10_000
"""Evaluation envs are seeded with the run's seed plus this."""


class SolvedAt:
    """When a run first counts as solved (the rule of single runs and population members).

    Solved: the mean return of the last :data:`SOLVE_WINDOW` training episodes reaches the
    env's reward threshold; never for an env without a threshold.

    Args:
        threshold: the env's reward threshold, or None.
    """

    def __init__(self, threshold: float | None) -> None:
        self.threshold = threshold
        self.window: list[float] = []
        self.step: int | None = None
        self.time_s: float | None = None

    def add(self, episodic_return: float, step: int, elapsed_s: float) -> None:
        """Take one finished episode (its return, the env step and wall time it ended at)."""
        if self.step is not None or self.threshold is None:
            return
        window = self.window
        window.append(episodic_return)
        if len(window) > SOLVE_WINDOW:
            del window[0]
        # The mean can reach the threshold only if the largest return does: a cheap test first.
        full = len(window) == SOLVE_WINDOW
        if full and max(window) >= self.threshold and np.mean(window) >= self.threshold:
            self.step, self.time_s = step, elapsed_s

    def state_dict(self) -> dict[str, Any]:
        """The window and the solved-at figures (the keys of earlier checkpoints)."""
        return {
            "window": list(self.window),
            "solved_at_step": self.step,
            "solved_at_time_s": self.time_s,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.window = list(state["window"])
        self.step, self.time_s = state["solved_at_step"], state["solved_at_time_s"]


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
        self.atari = is_atari(cfg.env.id)
        self.solved = SolvedAt(env_reward_threshold(cfg.env.id))
        self.updates = 0
        self.start = time.perf_counter()
        on_cpu = all(p.device.type == "cpu" for g in opt.param_groups for p in g["params"])
        self.nonfinite_check_every = 1 if on_cpu else 50

    def clip_and_step(self, metrics: dict[str, Any]) -> None:
        """Clip, step the optimizer and write telemetry every ``--log-every`` updates."""
        preclip = clip_grad_norm_(self.opt, self.max_norm) if self.max_norm > 0 else None
        log_now = self.run.log_every > 0 and self.updates % self.run.log_every == 0
        self.opt.record_update = log_now
        self.opt.step()
        self.updates += 1
        step = self.collector.global_step
        # Reading the streak is free on the CPU; on a GPU it syncs, so only now and then.
        if self.updates % self.nonfinite_check_every == 0:
            streak = self.opt.nonfinite_streak
            if streak >= self.run.max_nonfinite:
                raise Diverged(
                    f"stopped at step {step:,}: the last {streak} updates had non-finite "
                    "gradients and were skipped (the loss diverged); lower --lr or "
                    "--max-grad-norm"
                )
        if log_now:
            figures = statistics(self.opt, preclip, self.max_norm or None)
            extra = {"charts/frames": step * FRAME_SKIP} if self.atari else {}
            self.logger.scalars({**metrics, **figures, "charts/SPS": self.sps(), **extra}, step)
            mean100 = self.collector.mean_recent()
            if mean100 is not None:
                self.logger.scalars({"charts/episodic_return_mean100": mean100}, step)
        if self.run.histogram_every and self.updates % self.run.histogram_every == 1:
            self.logger.histograms(histograms(self.opt), step)

    def state_dict(self) -> dict[str, Any]:
        """Counters and the solved-at bookkeeping (for checkpoints)."""
        return {
            **self.solved.state_dict(),
            "updates": self.updates,
            "elapsed_s": time.perf_counter() - self.start,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; wall time continues from the saved elapsed time."""
        self.solved.load_state_dict(state)
        self.updates = state["updates"]
        self.start = time.perf_counter() - state["elapsed_s"]

    def sps(self) -> float:
        """Env steps per second since the loop started."""
        return self.collector.global_step / max(time.perf_counter() - self.start, 1e-9)

    def record_episodes(self) -> None:
        """Log finished episodes, note when the env is first solved, update the progress."""
        for ep in self.collector.pop_finished():
            self.logger.episode(ep.episodic_return, ep.length, ep.step)
            self.solved.add(ep.episodic_return, ep.step, time.perf_counter() - self.start)
        step = self.collector.global_step
        if self.logger.progress_due(step):
            self.logger.progress(step, self.sps(), self.collector.mean_recent(SOLVE_WINDOW))

    def summary(self) -> dict[str, Any]:
        """The figures of ``summary.json`` that the loop knows."""
        wall = time.perf_counter() - self.start
        return {
            "total_steps": self.collector.global_step,
            "updates": self.updates,
            "wall_time_s": wall,
            "sps": self.collector.global_step / wall,
            "episodic_return_mean100": self.collector.mean_recent(),
            "solved_at_step": self.solved.step,
            "solved_at_time_s": self.solved.time_s,
        }


def build_model(cfg: Config, env: Any) -> nn.Module:
    """The algorithm's network for the env: Nature CNN on image frames, MLPs otherwise.

    Raises:
        UserError: images too small for the Nature CNN.
    """
    shape = env.single_observation_space.shape
    n_actions = int(env.single_action_space.n)
    if len(shape) == 3:  # uint8 images [C, H, W] (stacked frames on Atari)
        cnn = CnnActorCritic if cfg.run.algo == "a2c" else CnnQNetwork
        try:
            return cnn(shape[0], n_actions, image_size=shape[1:])
        except ValueError as e:
            raise UserError(f"{cfg.env.id}: {e}; choose an env with larger images") from None
    mlp = ActorCritic if cfg.run.algo == "a2c" else QNetwork
    return mlp(math.prod(shape), n_actions, cfg.learn.hidden)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a new allocation on ``device`` (None if it cannot be told)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def build_replay(cfg: Config, env: Any, device: torch.device) -> tuple[Any, str]:
    """The DQN replay memory (frames stored once for stacked uint8 frames) and a note on its size.

    Raises:
        UserError: if it would not fit in the memory available on ``device``.
    """
    space, capacity = env.single_observation_space, cfg.dqn.buffer_size
    # Frames stored once: only Atari's stacks, whose next observation shares all but one frame.
    frames = is_atari(cfg.env.id) and len(space.shape) == 3 and space.dtype == np.uint8
    obs_dtype = torch.uint8 if space.dtype == np.uint8 else torch.float32  # images stay bytes
    if frames:
        need = FrameReplayBuffer.bytes_needed(capacity, space.shape, env.num_envs)
    else:
        need = ReplayBuffer.bytes_needed(capacity, space.shape, obs_dtype)
    free = available_memory(device)
    if free is not None and need > 0.9 * free:
        raise UserError(
            f"the replay buffer of {capacity:,} transitions needs {need / 1e9:.1f} GB but only "
            f"{free / 1e9:.1f} GB are available on {device}; lower --buffer-size"
        )
    if frames:
        buffer: Any = FrameReplayBuffer(capacity, space.shape, env.num_envs, device)
    else:
        buffer = ReplayBuffer(capacity, space.shape, env.num_envs, device, obs_dtype)
    kind = "frames stored once" if frames else "obs and next obs"
    note = f"replay buffer: {capacity:,} transitions, {need / 1e9:.2f} GB on {device} ({kind})"
    return buffer, note


def resolve_device(requested: str, images: bool = False) -> torch.device:
    """``auto``: CUDA for a CNN on frames when a GPU is there, else the CPU (faster for MLPs).

    Raises:
        UserError: ``cuda`` was asked for and there is no GPU.
    """
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "--device cuda was asked for but no CUDA device is available; use --device cpu"
        )
    if requested == "auto":
        return torch.device("cuda" if images and torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def device_note(requested: str, device: torch.device, images: bool) -> str:
    """Why ``--device auto`` chose ``device`` (empty for an explicit choice)."""
    if requested != "auto":
        return ""
    if device.type == "cuda":
        return " (auto: CUDA for a CNN)"
    if images:
        return " (auto: no GPU found; a CNN trains slowly on the CPU)"
    return " (auto: an MLP is faster on the CPU)"


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


def run_folder(cfg: Config) -> Path:
    """The run's folder: ``--logdir`` / the run name."""
    return Path(cfg.run.logdir) / run_name(cfg)


def make_run_dir(cfg: Config) -> Path:
    """Create the run folder, refusing an existing one or an unwritable one.

    With ``--force`` an existing folder is replaced if it is one of our runs (and the line
    that says so is printed); anything else is refused and left as it is.
    """
    path = run_folder(cfg)
    replaced = None
    if path.exists() or path.is_symlink():
        if not cfg.run.force:
            raise UserError(
                f"run folder {path} already exists; choose another --run-name, continue it "
                f"with --resume {path}, or replace it with --force"
            )
        replaced = replace_run_folder(path)
    try:
        path.mkdir(parents=True)
    except FileExistsError:  # made by another process since the check
        raise UserError(f"run folder {path} was just created by another process") from None
    except OSError as e:
        raise UserError(f"cannot create {path} ({e.strerror}); choose a writable --logdir") from e
    if replaced:
        print(replaced, file=sys.stderr)
    return path


class Interrupted(Exception):  # noqa: N818 (a stop, not an error)
    """The run stopped on SIGINT or SIGTERM after writing a checkpoint."""

    def __init__(self, signum: int, step: int, run_dir: Path) -> None:
        super().__init__(signum)
        self.signum, self.step, self.run_dir = signum, step, run_dir


class StopSignals:
    """SIGINT/SIGTERM handling for the run loop, as a context manager.

    The first signal only sets :attr:`signum`; the loop finishes its current update, writes a
    checkpoint and raises :class:`Interrupted`. A second signal raises ``KeyboardInterrupt`` at
    once. Outside the main thread (where handlers cannot be installed) it does nothing. A
    signal that is ignored when it starts stays ignored (the ``nohup`` convention; a study's
    workers ignore Ctrl-C and are stopped by their parent's SIGTERM).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class DQNParts:
    """What DQN keeps besides the online network: target network, replay, target count."""

    target: nn.Module
    buffer: ReplayBuffer
    target_updates: int = 0


@dataclass
class Session:
    """One run's live objects; the loops advance it, :meth:`state` checkpoints it."""

    cfg: Config
    run_dir: Path
    env: Any
    model: nn.Module
    opt: Any
    logger: Logger
    collector: Collector
    tracker: Tracker
    stop: StopSignals
    dqn: DQNParts | None = None
    last_checkpoint: int = 0
    """Env step of the last checkpoint written (or resumed from); the next is due one
    ``--checkpoint-every`` boundary later."""
    env_restored: bool | str = True
    """True, or why the environments were rebuilt rather than restored on resume."""
    device: torch.device | None = None
    evaluations: int = 0
    engine: str | None = None
    """How gradients are computed (:func:`gradient_engine`, resolved once)."""

    def state(self) -> dict[str, Any]:
        """The full training state: everything an exact continuation needs, as plain data."""
        rng = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        dqn = None
        if self.dqn is not None:
            dqn = {
                "target": self.dqn.target.state_dict(),
                "target_updates": self.dqn.target_updates,
                "buffer": self.dqn.buffer.state_dict() if self.cfg.run.save_replay else None,
            }
        return {
            "format": FORMAT,
            "identity": identity(self.cfg, self.env),
            "config": self.cfg.to_dict(),
            "global_step": self.collector.global_step,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "collector": self.collector.state_dict(),
            "tracker": self.tracker.state_dict(),
            "env": pack_env(self.env),
            "rng": rng,
            "dqn": dqn,
            "evaluations": self.evaluations,
        }

    def checkpoint(self) -> None:
        """Write a periodic checkpoint now and prune old ones."""
        step = self.collector.global_step
        # Events logged up to here go to disk first: a resume keeps them (and purges later ones).
        self.logger.flush()
        (self.run_dir / CHECKPOINT_DIR).mkdir(exist_ok=True)
        save_checkpoint(self.state(), checkpoint_path(self.run_dir, step))
        prune_checkpoints(self.run_dir, self.cfg.run.keep_checkpoints)
        self.last_checkpoint = step

    def boundary(self) -> None:
        """Called where the loop can be resumed: checkpoint when due, stop when signalled."""
        step = self.collector.global_step
        if self.stop.signum is not None:
            self.checkpoint()
            raise Interrupted(self.stop.signum, step, self.run_dir)
        # Evaluate before checkpointing: the checkpoint then holds the RNG state after it.
        every = self.cfg.run.eval_every
        if every and step // every > self.evaluations and step < self.cfg.run.total_steps:
            self.evaluations = step // every
            mean, std = evaluate(self.model, self.cfg, self.device or torch.device("cpu"))
            if mean is not None:
                self.logger.scalars(
                    {"eval/episodic_return_mean": mean, "eval/episodic_return_std": std}, step
                )
        every = self.cfg.run.checkpoint_every
        due = every and step // every > self.last_checkpoint // every
        if due and step < self.cfg.run.total_steps:  # the final checkpoint follows anyway
            self.checkpoint()


def train_a2c(sess: Session) -> dict:
    """The A2C run loop: collect a rollout -> loss -> backward -> clip -> step -> metrics."""
    cfg, collector, tracker, model, opt = (
        sess.cfg,
        sess.collector,
        sess.tracker,
        sess.model,
        sess.opt,
    )
    engine = a2c_numpy.NumpyA2C(model) if sess.engine == "numpy" else None
    act = engine.act if engine is not None else model.act
    while collector.global_step < cfg.run.total_steps:
        rollout = collector.collect(act, cfg.a2c.n_steps)
        if engine is not None:  # writes the gradients into .grad itself
            metrics = engine.gradients(rollout, cfg.a2c, cfg.learn.gamma)
        else:
            loss, metrics = a2c_loss(model, rollout, cfg.a2c, cfg.learn.gamma)
            opt.zero_grad()
            loss.backward()
        tracker.clip_and_step(metrics)
        tracker.record_episodes()
        sess.boundary()
    return tracker.summary()


def gradient_engine(cfg: Config, model: nn.Module) -> str:
    """The engine a run computes gradients with: ``--engine``, auto resolved (numpy where it fits).

    Raises:
        UserError: ``--engine numpy`` for a model it cannot train (Atari CNN, CUDA).
    """
    fits = (a2c_numpy if cfg.run.algo == "a2c" else dqn_numpy).supports(model)
    if cfg.learn.engine == "numpy" and not fits:
        raise UserError(
            "--engine numpy trains MLPs on the CPU only; use --engine auto (or autograd) for "
            "Atari or --device cuda"
        )
    if cfg.learn.engine == "auto":
        return "numpy" if fits else "autograd"
    return cfg.learn.engine


TargetsFn = Callable[[ReplaySample], Tensor]
"""A replay sample -> its ``[B]`` TD targets (target network, gamma and the rule bound in)."""


def training_batches(
    buffer: ReplayBuffer, targets_of: TargetsFn, cfg: Config
) -> Iterator[tuple[ReplaySample, Tensor]]:
    """A training round's ``gradient_steps`` minibatches with their TD targets.

    The target network is fixed during a round (it changes only while collecting), so without
    Double DQN every minibatch is drawn at once and all targets come from one forward pass:
    the same distribution as drawing them one by one, for one large matrix product instead of
    ``gradient_steps`` small ones. Double DQN's targets use the online network, which changes
    after each gradient step, so they are computed per minibatch.
    """
    size, steps = cfg.dqn.batch_size, cfg.dqn.gradient_steps
    if cfg.dqn.double_dqn:
        for _ in range(steps):
            batch = buffer.sample(size)
            yield batch, targets_of(batch)
        return
    big = buffer.sample(size * steps)
    targets = targets_of(big)
    for i in range(0, size * steps, size):
        yield ReplaySample(*(t[i : i + size] for t in big)), targets[i : i + size]


def dqn_engine(
    sess: Session,
) -> tuple[Callable[[Tensor], Tensor], TargetsFn, Callable[[ReplaySample, Tensor], dict]]:
    """The run's Q-values for acting, TD targets and gradient step, by ``sess.engine``.

    The gradient step computes the TD loss of a minibatch and leaves its gradient in the
    parameters' ``.grad``; it returns the loss metrics.
    """
    cfg, q_net = sess.cfg, sess.model
    assert sess.dqn is not None
    target, dqn, gamma = sess.dqn.target, cfg.dqn, cfg.learn.gamma
    if sess.engine == "numpy":
        online, offline = dqn_numpy.NumpyQ(q_net), dqn_numpy.NumpyQ(target)
        double = online if dqn.double_dqn else None

        def numpy_targets(b: ReplaySample) -> Tensor:
            return offline.td_targets(b.rewards, b.next_obs, b.terminated, gamma, double)

        def numpy_step(batch: ReplaySample, targets: Tensor) -> dict:
            return online.gradients(batch, targets, dqn.loss, dqn.loss_reduction)

        return online.q_values, numpy_targets, numpy_step

    def torch_targets(b: ReplaySample) -> Tensor:
        return td_targets(
            b.rewards, b.next_obs, b.terminated, target, q_net, gamma, double=dqn.double_dqn
        )

    def torch_step(batch: ReplaySample, targets: Tensor) -> dict:
        loss, metrics = dqn_loss(q_net, batch, targets, dqn.loss, dqn.loss_reduction)
        sess.opt.zero_grad()
        loss.backward()
        return metrics

    return no_grad(q_net), torch_targets, torch_step


def train_dqn(sess: Session) -> dict:
    """The DQN run loop: act epsilon-greedily -> store valid transitions -> gradient steps."""
    cfg, collector, tracker, q_net = sess.cfg, sess.collector, sess.tracker, sess.model
    assert sess.dqn is not None
    dqn, run, parts = cfg.dqn, cfg.run, sess.dqn
    steps_per_round = max(1, dqn.train_freq // collector.num_envs)
    n_actions = int(sess.env.single_action_space.n)
    q_values, targets_of, gradient_step = dqn_engine(sess)
    while collector.global_step < run.total_steps:
        for _ in range(steps_per_round):
            eps = linear_epsilon(
                collector.global_step,
                run.total_steps,
                dqn.exploration_fraction,
                dqn.exploration_initial_eps,
                dqn.exploration_final_eps,
            )
            s = collector.step(lambda obs, e=eps: lazy_epsilon_greedy(q_values, obs, e, n_actions))
            parts.buffer.add(s.obs, s.next_obs, s.actions, s.rewards, s.terminated, s.valid)
            tracker.record_episodes()
            # SB3 counts the target interval in env steps and updates only while collecting,
            # so the target stays fixed through a training round's gradient steps.
            if collector.global_step // dqn.target_update_interval > parts.target_updates:
                parts.target_updates = collector.global_step // dqn.target_update_interval
                polyak_update(parts.target, q_net, dqn.tau)
        if collector.global_step >= dqn.learning_starts and len(parts.buffer) > 0:
            for batch, targets in training_batches(parts.buffer, targets_of, cfg):
                metrics = gradient_step(batch, targets)
                tracker.clip_and_step({**metrics, "charts/epsilon": eps})
        sess.boundary()
    return tracker.summary()


def greedy_policy(model: nn.Module, epsilon: float = 0.0) -> Any:
    """Observations -> the model's best actions (argmax of logits or of Q-values).

    With ``epsilon`` > 0 each action is uniformly random with that probability (the Nature DQN
    evaluates at 0.05).
    """
    actor = isinstance(model, (ActorCritic, CnnActorCritic))
    scores = no_grad(lambda obs: model(obs)[0]) if actor else no_grad(model)
    if epsilon > 0.0:
        return lambda obs: epsilon_greedy(scores(obs), epsilon)
    if actor:
        return lambda obs: model.act(obs, greedy=True)
    return lambda obs: scores(obs).argmax(-1)


def evaluate(
    model: nn.Module, cfg: Config, device: torch.device, video_dir: Path | None = None
) -> tuple[float | None, float | None]:
    """Mean and std of ``--eval-episodes`` greedy episodes on a separately seeded env.

    With ``video_dir`` every episode is recorded there as an MP4 (Gymnasium's RecordVideo
    around the emulator, so the video shows every frame, not only the ones the agent saw).
    """
    episodes = cfg.run.eval_episodes
    if episodes == 0:
        return None, None
    env_kwargs, wrappers = None, None
    if video_dir is not None:
        env_kwargs = {"render_mode": "rgb_array"}
        record = partial(RecordVideo, video_folder=str(video_dir), episode_trigger=lambda _: True)
        record_quietly = partial(_quiet_video, record)
        wrappers = [record_quietly, *atari_wrappers()] if is_atari(cfg.env.id) else [record_quietly]
    seed = cfg.run.seed + EVAL_SEED_OFFSET
    if wrappers:
        options = {"vectorization": "sync", "wrappers": wrappers, "env_kwargs": env_kwargs}
    else:
        options = env_options(cfg)
    env = make_vector_env(cfg.env.id, 1, seed, **options)
    was_training = model.training
    model.eval()
    try:
        collector = Collector(env, seed, device)
        policy = greedy_policy(model, cfg.run.eval_epsilon)
        returns: list[float] = []
        while len(returns) < episodes:
            collector.step(policy)
            returns += [ep.episodic_return for ep in collector.pop_finished()]
    finally:
        model.train(was_training)
        close_env(env)
    return float(np.mean(returns[:episodes])), float(np.std(returns[:episodes]))


def env_options(cfg: Config) -> dict[str, Any]:
    """``make_vector_env`` keywords for this run's environments (training and evaluation).

    A2C on an Atari game gets ALE's C++ vector env under ``--vectorization auto``. DQN keeps
    Gymnasium's Python wrapper chain: its frame replay rebuilds each stack the way
    ``FrameStackObservation`` pads it, which ALE's env does not.

    Raises:
        UserError: DQN on Atari with ``--vectorization native``.
    """
    if cfg.run.algo == "dqn" and is_atari(cfg.env.id):
        if cfg.env.vectorization == "native":
            raise UserError(
                "DQN's frame replay rebuilds stacks as Gymnasium's wrappers pad them, not as "
                "ALE's native vector env does; use --vectorization auto, sync or async"
            )
        return {"vectorization": cfg.env.vectorization, "wrappers": atari_wrappers()}
    return {"vectorization": cfg.env.vectorization}


def env_note(env: Any) -> str:
    """`` (ALE vector env, N threads)`` for ALE's C++ env on the run line; empty otherwise."""
    if isinstance(env, NativeAtari):
        return f" (ALE vector env, {env.threads} threads)"
    return ""


def check_video(cfg: Config) -> None:
    """Fail early, before anything is written, if evaluation episodes cannot be recorded.

    Raises:
        UserError: moviepy is missing, or the env cannot render frames.
    """
    if importlib.util.find_spec("moviepy") is None:
        raise UserError('--capture-video needs moviepy; install it: pip install -e ".[video]"')
    kwargs = {"render_mode": "rgb_array"}
    env = make_vector_env(cfg.env.id, 1, 0, vectorization="sync", wrappers=[], env_kwargs=kwargs)
    try:
        env.reset(seed=0)
        env.unwrapped.envs[0].render()
    except gymnasium.error.DependencyNotInstalled as e:
        raise UserError(f"--capture-video: {cfg.env.id} cannot render frames ({e})") from None
    finally:
        close_env(env)


def _quiet_video(record: Any, env: Any) -> Any:
    with warnings.catch_warnings():  # "overwriting existing videos" and moviepy chatter
        warnings.simplefilter("ignore")
        return record(env)


HPARAM_SKIP = (
    "run.logdir",
    "run.run_name",
    "run.quiet",
    "run.resume",
    "run.force",
    "run.population",
)
"""Config entries that say nothing about the training (left out of the HParams tab)."""


def hparams(cfg: Config) -> dict[str, Any]:
    """The config as the HParams tab shows it: optimizer first, the other algorithm left out."""
    other = "dqn" if cfg.run.algo == "a2c" else "a2c"
    data = cfg.to_dict()
    order = ["optim", "run", "env", "learn", cfg.run.algo]
    flat = flatten({section: data[section] for section in order if section != other})
    return {k: v for k, v in flat.items() if k not in HPARAM_SKIP}


def identity(cfg: Config, env: Any) -> dict[str, Any]:
    """What a checkpoint must agree on with the run that loads it."""
    return {
        "algo": cfg.run.algo,
        "env": cfg.env.id,
        "num_envs": cfg.env.num_envs,
        "obs_shape": list(env.single_observation_space.shape),
        "n_actions": int(env.single_action_space.n),
        "hidden": list(cfg.learn.hidden),
    }


def find_checkpoint(run_dir: Path, trust: bool = False) -> tuple[Path, dict[str, Any]]:
    """The newest readable checkpoint of a run folder (final first, then periodic, newest first).

    Damaged ones are reported on stderr and skipped; the previous one is used. One that would
    need the full unpickler stops the search (unless ``trust``): it is not damage but a file
    that could run code, and the user decides.

    Raises:
        UserError: the folder is not a run folder, holds no readable checkpoint, or its newest
            intact checkpoint is not plain data.
    """
    if not (run_dir / "config.json").is_file():
        raise UserError(f"{run_dir} is not a run folder (no config.json); check the --resume path")
    candidates = resume_candidates(run_dir)
    if not candidates:
        raise UserError(f"{run_dir} has no checkpoint to resume from; start a new run instead")
    problems = []
    for path in candidates:
        try:
            return path, load_checkpoint(path, trust)
        except UnsafeCheckpoint as e:
            raise UserError(str(e)) from None
        except CheckpointError as e:
            problems.append(str(e))
            print(f"warning: {e}; trying an older one", file=sys.stderr)
    raise UserError(f"no readable checkpoint in {run_dir} ({problems[-1]}); start a new run")


RESUMABLE = ("run.resume", "run.total_steps", "run.quiet", "run.threads", "run.trust_checkpoint")
"""Config entries a resume may change (the rest must be what the checkpoint was written with)."""


def config_changes(saved: dict[str, Any], current: Config) -> list[str]:
    """The entries (but :data:`RESUMABLE`) in which ``current`` differs from a saved config."""
    theirs = flatten(Config.from_dict(saved).to_dict())
    mine = flatten(current.to_dict())
    return [
        f"{k.split('.')[-1]} {theirs.get(k)!r} in the checkpoint vs {v!r} in config.json"
        for k, v in mine.items()
        if k not in RESUMABLE and theirs.get(k) != v
    ]


def restore(sess: Session, state: dict[str, Any], path: Path) -> None:
    """Load a checkpoint's state into a freshly built session, checking it belongs to it.

    Raises:
        UserError: the checkpoint is from another algorithm, env or network shape, or the
            run's config.json was changed since the checkpoint was written.
    """
    mine, theirs = identity(sess.cfg, sess.env), state.get("identity", {})
    if mine != theirs:
        diff = ", ".join(
            f"{k} {theirs.get(k)!r} in the checkpoint vs {v!r} here"
            for k, v in mine.items()
            if theirs.get(k) != v
        )
        raise UserError(f"checkpoint {path} belongs to another run ({diff}); resume its own folder")
    if "config" in state:
        changed = config_changes(state["config"], sess.cfg)
        if changed:
            raise UserError(
                f"{sess.run_dir / 'config.json'} was changed since checkpoint {path.name} was "
                f"written ({', '.join(changed[:3])}); restore it, or start a new run with the "
                "new settings"
            )
    try:
        sess.model.load_state_dict(state["model"])
        sess.opt.load_state_dict(state["optimizer"])
        if sess.dqn is not None:
            sess.dqn.target.load_state_dict(state["dqn"]["target"])
            sess.dqn.target_updates = state["dqn"]["target_updates"]
            if state["dqn"]["buffer"] is not None:
                sess.dqn.buffer.load_state_dict(state["dqn"]["buffer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"checkpoint {path} does not fit this run ({first})") from None
    sess.evaluations = state.get("evaluations", 0)
    sess.collector.load_state_dict(state["collector"])
    sess.tracker.load_state_dict(state["tracker"])
    env, why = unpack_env(sess.env, state["env"], sess.cfg.run.trust_checkpoint)
    sess.env = sess.collector.env = env
    if why is not None:
        sess.env_restored = why
        obs, _ = sess.env.reset(seed=sess.cfg.run.seed + sess.collector.global_step)
        sess.collector.obs = obs
        sess.collector.prev_done = np.zeros(sess.collector.num_envs, dtype=bool)
    rng = state["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    sess.last_checkpoint = sess.collector.global_step


def run(cfg: Config, resume: Path | None = None) -> dict:
    """Train one configuration (or continue the run in ``resume``); returns the summary.

    The run folder is locked for as long as this runs (:class:`FolderLock`).

    Raises:
        UserError: bad input, found before anything is written.
        TrainingFailed: training started and could not go on (diverged, the environment
            raised or died, a write failed); the folder keeps its checkpoints, or is removed
            if this call created it and no checkpoint was written yet.
        Interrupted: SIGINT or SIGTERM; a checkpoint was written.
    """
    if cfg.run.threads:
        set_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device, images=is_atari(cfg.env.id))
    if cfg.run.capture_video:
        check_video(cfg)
    seed_everything(cfg.run.seed)
    if resume is None:
        return _run_locked(cfg, device, None)  # it locks the folder once it has made it
    with FolderLock(resume):
        return _run_locked(cfg, device, resume)


def _run_locked(cfg: Config, device: torch.device, resume: Path | None) -> dict:
    state, ckpt_path, new_lock = None, None, None
    if resume is not None:
        remove_stale_temp_files(resume)
        ckpt_path, state = find_checkpoint(resume, cfg.run.trust_checkpoint)
    env = make_vector_env(cfg.env.id, cfg.env.num_envs, cfg.run.seed, **env_options(cfg))
    sess, run_dir, created = None, resume, False
    try:
        model = build_model(cfg, env).to(device)
        try:
            opt = make_optimizer(
                cfg.optim.name,
                model.named_parameters(),
                **cfg.optim.overrides(),
                # Non-finite gradients skip the update: decided on the host on the CPU (exact,
                # no cost), on the device on CUDA (no sync per step).
                skip_nonfinite="device" if device.type == "cuda" else True,
            )
        except ValueError as e:
            raise UserError(f"{e} (see --optimizer and its options in --help)") from e
        dqn, replay_note = None, ""
        engine = gradient_engine(cfg, model)
        if cfg.run.algo == "dqn":
            buffer, replay_note = build_replay(cfg, env, device)
            dqn = DQNParts(copy.deepcopy(model).requires_grad_(False), buffer)
        collector = Collector(env, cfg.run.seed, device)
        if resume is None:
            run_dir, created = make_run_dir(cfg), True
            new_lock = FolderLock(run_dir).acquire()
            write_json_atomic(cfg.to_dict(), run_dir / "config.json")
            logger = Logger(run_dir, cfg.run.total_steps, cfg.run.quiet)
        else:
            logger = None  # opened after the checks below, with the resume step
        sess = Session(cfg, run_dir, env, model, opt, logger, collector, None, StopSignals(), dqn)
        sess.device, sess.engine = device, engine
        sess.tracker = Tracker(cfg, collector, opt, logger)
        open_logs(sess, state, ckpt_path, replay_note)
        summary, final_state = train_session(sess)
        return finish(sess, summary, final_state)
    except (TrainingFailed, OSError, EnvStepFailed) as e:
        raise training_failure(e, sess, run_dir, created) from None
    finally:
        if new_lock is not None:
            new_lock.release()
        close_env(sess.env if sess is not None else env)


def open_logs(
    sess: Session, state: dict[str, Any] | None, ckpt_path: Path | None, replay_note: str
) -> None:
    """Restore a resumed session from its checkpoint, then write the run's opening lines."""
    cfg, run_dir = sess.cfg, sess.run_dir
    flat = hparams(cfg)
    if state is not None:
        restore(sess, state, ckpt_path)
        step = sess.collector.global_step
        # purge_step: TensorBoard drops what the interrupted run logged after the
        # checkpoint, so the resumed run's events replace them instead of doubling them.
        # What was logged at the checkpoint's own step (before it was written) is kept.
        sess.logger = sess.tracker.logger = Logger(
            run_dir, cfg.run.total_steps, cfg.run.quiet, purge_step=step + 1
        )
        sess.logger.config(flat, None)
        exact = sess.env_restored is True
        sess.logger.message(
            f"resumed {run_dir} from {ckpt_path.name} at step {step:,}"
            + (
                ""
                if exact
                else f" (not an exact continuation: {sess.env_restored}; new episodes start here)"
            )
        )
    else:
        sess.logger.config(flat, markdown_table(flatten(cfg.to_dict())))
    if replay_note:
        sess.logger.message(replay_note)
    images = is_atari(cfg.env.id)
    sess.logger.message(
        f"run {run_dir}: {cfg.run.algo} on {cfg.env.id} x{cfg.env.num_envs}{env_note(sess.env)}, "
        f"optimizer {cfg.optim.name} ({sess.opt.impl}), {sess.engine} gradients, device "
        f"{sess.device}" + device_note(cfg.run.device, sess.device, images=images)
    )


def train_session(sess: Session) -> tuple[dict, dict]:
    """Run the algorithm's loop under the stop signals; the summary and the final state.

    Raises:
        Interrupted, TrainingFailed: the loop stopped (the events are flushed first).
    """
    loop = train_a2c if sess.cfg.run.algo == "a2c" else train_dqn
    try:
        # NumPy's overflow warnings would only repeat what the non-finite check counts and
        # reports (a diverging loss): silenced for the loop, not the process.
        with sess.stop, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            summary = loop(sess)
        # The final state is taken here: the environments are still open, and the
        # evaluation after it (its RNG draws) is not part of the training a resume continues.
        return summary, sess.state()
    except WORKER_DIED as e:
        sess.logger.close()
        raise EnvCrashed(
            f"an environment worker of {sess.cfg.env.id} died ({type(e).__name__}) at step "
            f"{sess.collector.global_step:,}"
        ) from None
    except EnvStepFailed as e:
        sess.logger.close()
        raise EnvCrashed(f"{e} at step {sess.collector.global_step:,}") from None
    except BaseException:  # anything else: what was logged still reaches the disk
        sess.logger.close()
        raise


def finish(sess: Session, summary: dict, final_state: dict) -> dict:
    """After training: the final evaluation, checkpoint, ``summary.json`` and hparams."""
    cfg, run_dir, logger = sess.cfg, sess.run_dir, sess.logger
    video_dir = run_dir / "videos" if cfg.run.capture_video else None
    mean, std = evaluate(sess.model, cfg, sess.device or torch.device("cpu"), video_dir)
    summary["eval_return_mean"], summary["eval_return_std"] = mean, std
    if mean is not None:
        logger.scalars(
            {"eval/episodic_return_mean": mean, "eval/episodic_return_std": std},
            summary["total_steps"],
        )
    save_checkpoint(final_state, run_dir / FINAL_CHECKPOINT)
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


def training_failure(
    error: BaseException, sess: Session | None, run_dir: Path | None, created: bool
) -> TrainingFailed:
    """The one-line failure for an error during training, saying what is left on disk.

    A write that failed (disk full, a read-only folder) is named as such. Where a checkpoint
    exists the line says how to continue; a folder this call created that holds none is
    removed (nothing half-written stays behind), except for a diverged run, whose events
    show how it diverged.
    """
    if isinstance(error, OSError):
        step = f" at step {sess.collector.global_step:,}" if sess is not None else ""
        where = error.filename or run_dir
        text = (
            f"cannot write {where} ({error.strerror or error}){step}; free space or fix permissions"
        )
        error = TrainingFailed(text)
    if isinstance(error, EnvStepFailed):  # the env raised while it was first reset
        error = EnvCrashed(str(error))
    if sess is not None and sess.logger is not None:
        with contextlib.suppress(OSError):  # the disk that failed may fail again
            sess.logger.close()
    if run_dir is None:
        return error if isinstance(error, TrainingFailed) else TrainingFailed(str(error))
    saved = resume_candidates(run_dir)
    if saved:
        last = saved[0].relative_to(run_dir)
        return type(error)(f"{error}; continue from {last} with --resume {run_dir}")
    if created and not isinstance(error, Diverged):
        shutil.rmtree(run_dir, ignore_errors=True)
        return type(error)(f"{error}; nothing was kept (no checkpoint had been written yet)")
    return type(error)(f"{error}; no checkpoint was written, the logs are in {run_dir}")


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


RESUMABLE_OPTIONS = ("--resume", "--total-steps", "--quiet", "--threads", "--trust-checkpoint")
"""Options that may accompany --resume (the rest of the configuration is the run's own)."""


def resume_config(argv: list[str]) -> tuple[Config, Path]:
    """The configuration of ``--resume DIR`` (its config.json) with the allowed overrides.

    Raises:
        UserError: for a missing folder, an unreadable config.json, or other options given.
    """
    given = [a.split("=", 1)[0] for a in argv if a.startswith("--")]
    others = [g for g in given if g not in RESUMABLE_OPTIONS]
    if others:
        raise UserError(
            f"--resume continues a run with its own configuration; {others[0]} cannot be "
            f"changed (only {', '.join(RESUMABLE_OPTIONS[1:])} may be given)"
        )
    cli = parse_config(argv)
    run_dir = Path(cli.run.resume)
    try:
        saved = Config.from_dict(json.loads((run_dir / "config.json").read_text()))
    except FileNotFoundError:
        raise UserError(f"{run_dir} is not a run folder (no config.json); check the path") from None
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"cannot read {run_dir / 'config.json'} ({e})") from None
    # Trust comes from this command line only, never from a file in the folder.
    changes: dict[str, Any] = {
        "resume": str(run_dir),
        "quiet": cli.run.quiet or saved.run.quiet,
        "trust_checkpoint": cli.run.trust_checkpoint,
    }
    if "--total-steps" in given:
        changes["total_steps"] = cli.run.total_steps
    if "--threads" in given:
        changes["threads"] = cli.run.threads
    return dataclasses.replace(saved, run=dataclasses.replace(saved.run, **changes)), run_dir


POPULATION_FILE = "population.json"
"""In a ``train --population`` folder: the configuration, then every member's summary."""


def train_population(cfg: Config, resume: Path | None = None) -> int:
    """``--population K``: K seeds of ``cfg`` in one batched process; member i in seed-<k>.

    The population's checkpoint is ``checkpoint.pt`` in its folder (every
    ``--checkpoint-every`` member steps, and on SIGINT/SIGTERM); ``resume`` continues the
    population in that folder. ``population.json`` holds the configuration, then every
    member's summary and the aggregate speed. Returns the exit status (1 if a member
    diverged, 128 + signal when stopped).

    Raises:
        UserError: the configuration cannot train as a population, or the folder exists.
    """
    from rl_rmsprop.population import unsupported

    reason = unsupported(cfg)
    if reason:
        raise UserError(f"{reason}; drop --population to train one run")
    # What can be checked before anything is written: the device, the env id, the optimizer.
    resolve_device(cfg.run.device)
    env_reward_threshold(cfg.env.id)
    try:
        preset_group(cfg.optim.name, **cfg.optim.overrides())
    except ValueError as e:
        raise UserError(f"{e} (see --optimizer and its options in --help)") from e
    size = cfg.run.population
    if resume is None:
        name = cfg.run.run_name or run_name(cfg).replace(f"__{cfg.run.seed}__", f"__pop{size}__")
        folder = make_run_dir(
            dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, run_name=name))
        )
    else:
        folder = resume
    with FolderLock(folder):
        if resume is None:
            write_json_atomic({"members": size, "config": cfg.to_dict()}, folder / POPULATION_FILE)
        else:
            remove_stale_temp_files(folder)
        summaries = _train_population_locked(cfg, folder, resume)
    return _report_population(cfg, folder, summaries)


def _train_population_locked(cfg: Config, folder: Path, resume: Path | None) -> list[dict]:
    from rl_rmsprop.population import PopulationError, population_configs, run_population

    checkpoint = folder / FINAL_CHECKPOINT
    if resume is not None and not checkpoint.exists():
        raise UserError(
            f"{folder} has no population checkpoint to resume from (finished, or stopped "
            "before its first one); start it again"
        )
    try:
        with StopSignals() as stop:
            summaries = run_population(
                population_configs(cfg, cfg.run.population, folder),
                label=f"population {folder}",
                checkpoint=checkpoint,
                stop=stop,
            )
    except UnsafeCheckpoint as e:
        raise UserError(str(e)) from None
    except PopulationError as e:
        if resume is None:
            shutil.rmtree(folder, ignore_errors=True)  # made by this call, nothing kept yet
        raise UserError(f"{e}; drop --population to train one run") from None
    except (UserError, EnvError):
        if resume is None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    except (EnvStepFailed, EOFError, OSError) as e:  # during training: as a single run's
        failure: TrainingFailed
        if isinstance(e, (EnvStepFailed, *WORKER_DIED)):
            failure = EnvCrashed(str(e) or type(e).__name__)
        else:
            failure = TrainingFailed(f"cannot write {e.filename or folder} ({e.strerror or e})")
        kept = checkpoint.exists()
        if not kept and resume is None:
            shutil.rmtree(folder, ignore_errors=True)  # made by this call, nothing to resume
        where = f"continue with --resume {folder}" if kept else "nothing was kept"
        raise type(failure)(f"{failure}; {where}") from None
    checkpoint.unlink(missing_ok=True)  # finished: nothing to resume
    return summaries


def _report_population(cfg: Config, folder: Path, summaries: list[dict]) -> int:
    """Write the population's ``population.json`` and print its lines; the exit status."""
    size = cfg.run.population
    done = [s for s in summaries if "error" not in s]
    failed = [s["error"] for s in summaries if "error" in s]
    wall = max((s["wall_time_s"] for s in done), default=0.0)
    steps = sum(s["total_steps"] for s in done)
    write_json_atomic(
        {
            "members": size,
            "config": cfg.to_dict(),
            "wall_time_s": wall,
            "aggregate_sps": steps / max(wall, 1e-9),
            "summaries": summaries,
        },
        folder / POPULATION_FILE,
    )
    for i, error in enumerate(s.get("error") for s in summaries):
        if error:
            print(f"error: member seed {cfg.run.seed + i}: {error}", file=sys.stderr)
    finals = [
        s["episodic_return_mean100"] for s in done if s["episodic_return_mean100"] is not None
    ]
    evals = [s["eval_return_mean"] for s in done if s["eval_return_mean"] is not None]
    solved = sum(s["solved_at_step"] is not None for s in done)
    print(
        f"done: {size} members x {cfg.run.total_steps:,} steps in {wall:.1f} s "
        f"({steps / max(wall, 1e-9):,.0f} aggregate SPS), return mean100 median "
        f"{_fmt(float(np.median(finals)) if finals else None)}, eval median "
        f"{_fmt(float(np.median(evals)) if evals else None)}, solved {solved}/{size}; "
        f"logs in {folder}"
    )
    return 1 if failed else 0


def population_resume_config(argv: list[str], folder: Path) -> Config:
    """The configuration of a ``train --population`` folder, as it was written.

    Only ``--quiet`` and ``--trust-checkpoint`` may be given with it.

    Raises:
        UserError: other options given, or an unreadable ``population.json``.
    """
    allowed = ("--resume", "--quiet", "--trust-checkpoint")
    given = [a.split("=", 1)[0] for a in argv if a.startswith("--")]
    others = [g for g in given if g not in allowed]
    if others:
        raise UserError(
            f"--resume continues a population as it was; {others[0]} cannot be changed "
            "(only --quiet and --trust-checkpoint may be given)"
        )
    try:
        saved = Config.from_dict(json.loads((folder / POPULATION_FILE).read_text())["config"])
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise UserError(f"cannot read {folder / POPULATION_FILE} ({e})") from None
    run = dataclasses.replace(
        saved.run,
        quiet="--quiet" in given or saved.run.quiet,
        trust_checkpoint="--trust-checkpoint" in given,  # from this command line only
    )
    return dataclasses.replace(saved, run=run)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a user mistake, with a one-line message)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if any(a == "--resume" or a.startswith("--resume=") for a in argv):
            folder = Path(parse_config(argv).run.resume)
            if (folder / POPULATION_FILE).exists():
                return train_population(population_resume_config(argv, folder), resume=folder)
            cfg, run_dir = resume_config(argv)
            summary = run(cfg, resume=run_dir)
        else:
            cfg = parse_config(argv)
            if cfg.run.population:
                return train_population(cfg)
            summary = run(cfg)
    except (UserError, EnvError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        name = signal.Signals(e.signum).name
        print(
            f"stopped by {name} at step {e.step:,}; checkpoint written. Continue with: "
            f"python -m rl_rmsprop.train --resume {e.run_dir}",
            file=sys.stderr,
        )
        return 128 + e.signum
    except KeyboardInterrupt:
        print("stopped at once (second signal); resume from the last checkpoint", file=sys.stderr)
        return 130
    except TrainingFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"done: {summary['total_steps']:,} steps in {summary['wall_time_s']:.1f} s "
        f"({summary['sps']:,.0f} SPS), return mean100 {_fmt(summary['episodic_return_mean100'])}, "
        f"eval {_fmt(summary['eval_return_mean'])} +- {_fmt(summary['eval_return_std'])}, "
        f"solved at step {summary['solved_at_step'] or 'never'}; logs in {summary['run_dir']}"
    )
    return 0


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy's: the modules it calls raise
    # rl_rmsprop.train's exception classes, which __main__'s own copies would not catch.
    from rl_rmsprop import exit_cli
    from rl_rmsprop.train import main as module_main

    exit_cli(module_main())
