"""Run configuration: frozen dataclasses with a docstring under each field, and their checks.

The command line is generated from these classes (:mod:`rl_rmsprop.options`: flag names, types,
defaults and help text), so ``--help``, ``config.json`` and the code cannot drift apart.
Defaults for A2C on CartPole are rl-baselines3-zoo's tuned A2C, so a run is directly
comparable with Stable-Baselines3.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any

from envs import is_atari
from envs.minatar import is_minatar


def flag(name: str, **metadata: Any) -> dict[str, Any]:
    """Field metadata giving a field a CLI flag other than ``--<field-name>``."""
    return {"flag": name, **metadata}


@dataclass(frozen=True)
class RunConfig:
    """What to run, where, and how it reports."""

    algo: str = field(default="a2c", metadata={"choices": ("a2c", "dqn")})
    """Algorithm: a2c (actor-critic) or dqn (deep Q-learning)."""
    seed: int = 1
    """Seed of the network, the action sampling and the environments."""
    total_steps: int = 200_000
    """Environment steps to train for (summed over the vector env's copies)."""
    device: str = field(default="auto", metadata={"choices": ("auto", "cpu", "cuda")})
    """auto: CPU for MLPs (faster than a GPU at this size), CUDA for CNNs when available."""
    threads: int = 1
    """torch CPU threads (0: torch's default); one is fastest for small MLPs."""
    logdir: str = "runs"
    """Folder that receives the run folder."""
    run_name: str | None = None
    """Name of the run folder (default: <env>__<algo>__<optimizer>__<seed>__<time>)."""
    eval_episodes: int = 10
    """Greedy evaluation episodes after training (0: none)."""
    eval_epsilon: float = 0.0
    """Random-action probability during evaluation (the Nature DQN used 0.05)."""
    eval_every: int | None = None
    """Also evaluate greedily every this many env steps during training (unset: 10,000,
    100,000 on MinAtar, 250,000 on Atari; 0: only at the end)."""
    capture_video: bool = False
    """Record the evaluation episodes as MP4 files in <run>/videos (needs moviepy)."""
    preset: str | None = field(
        default=None,
        metadata={"choices": ("dqn-nature", "a2c-atari", "dqn-minatar", "a2c-minatar")},
    )
    """A published configuration (every other option still overrides it): dqn-nature
    (DeepMind 2015), a2c-atari (rl-baselines3-zoo's Atari A2C), dqn-minatar (the MinAtar
    paper's DQN), a2c-minatar (a2c-atari's A2C on MinAtar's network and budget). With another
    --optimizer than the preset's, only its learning rate carries over to that optimizer."""
    hparams: str | None = field(default=None, metadata={"choices": ("zoo",)})
    """zoo: rl-baselines3-zoo's tuned settings for --algo on --env, with SB3's optimizer
    (every other option still overrides them; --list-hparams shows them and their source)."""
    log_every: int = 100
    """Write losses and optimizer telemetry every this many updates (0: never)."""
    histogram_every: int = 1000
    """Write the optim/sq_avg and grad/values histograms every this many updates (0: never)."""
    quiet: bool = False
    """Print only the final summary line."""
    checkpoint_every: int = 50_000
    """Write a full-state checkpoint every this many env steps (0: only the final one)."""
    keep_checkpoints: int = 3
    """Periodic checkpoints kept in <run>/checkpoints (0: all)."""
    save_replay: bool = False
    """Put the DQN replay buffer in checkpoints (needed for an exact DQN resume)."""
    max_nonfinite: int = 100
    """Stop the run after this many updates in a row with non-finite gradients (skipped)."""
    force: bool = False
    """Replace an existing run folder of the same name (only one of our runs: a folder holding
    anything a run does not write is refused)."""
    trust_checkpoint: bool = False
    """With --resume: also load a checkpoint that needs Python's full unpickler (an older
    format, or environments saved in pickled form). Loading such a file can run code: only
    for checkpoints you wrote yourself."""
    population: int = 0
    """Train this many seeds (seed, seed+1, ...) of the configuration at once in one process,
    batched (A2C or DQN, any env; 0: a single run). Members go to <run>/seed-<k>."""
    resume: str | None = None
    """Continue the run in this folder from its newest readable checkpoint (with its own
    config.json; only --total-steps, --threads and --quiet may be given too)."""


@dataclass(frozen=True)
class EnvConfig:
    """The vectorized Gymnasium environment."""

    id: str = field(default="CartPole-v1", metadata=flag("--env"))
    """Registered Gymnasium id with a discrete action space."""
    num_envs: int | None = None
    """Environment copies stepped together (unset: 8 for a2c, 1 for dqn)."""
    vectorization: str = field(
        default="auto", metadata={"choices": ("auto", "native", "sync", "async")}
    )
    """auto: Gymnasium's native vectorized env where one exists, sync otherwise (Atari copies:
    async on 4 or more cores)."""
    normalize: bool = False
    """Normalize observations (running mean and std) and rewards (by the std of the discounted
    return), both clipped to [-10, 10], as Stable-Baselines3's VecNormalize; the statistics
    are kept in checkpoints and used, frozen, at evaluation. Not for Atari or populations."""


@dataclass(frozen=True)
class OptimConfig:
    """The optimizer: a preset from rl_rmsprop.optim.PRESETS plus overrides (unset: preset's)."""

    name: str = field(default="rmsprop", metadata=flag("--optimizer"))
    """Optimizer spec, e.g. rmsprop, rmsprop:tf, rmsprop:dqn-nature, adagrad, adam, sgd."""
    lr: float | None = None
    """Learning rate (unset: 7e-4 for a2c as in the zoo; 5e-4 for dqn, from a sweep with RMSprop,
    where the zoo has 2.3e-3 with Adam; for every optimizer)."""
    alpha: float | None = None
    """Square-average decay (Adam: beta2); unset: the preset's (0.99 for RMSprop)."""
    eps: float | None = None
    """Denominator epsilon, inside or outside the sqrt as the preset says (unset: 1e-5 for a2c
    as in SB3, the preset's for dqn)."""
    momentum: float | None = None
    """Heavy-ball momentum after normalisation."""
    centered: bool | None = None
    """Divide by the running variance (Graves, DQN)."""
    weight_decay: float | None = None
    """L2 weight decay."""
    eps_in_sqrt: bool | None = None
    """sqrt(v + eps) (TF1, DeepMind) instead of sqrt(v) + eps (PyTorch)."""
    initial_square_avg: float | None = None
    """Initial square average v0 (TF1 and SB3's RMSpropTFLike use 1)."""
    beta1: float | None = None
    """Adam's first-moment decay."""
    impl: str | None = field(default=None, metadata={"choices": ("auto", "eager", "compiled")})
    """Optimizer kernel: auto or eager (training's population optimizer is eager; compiled,
    the RMSprop class's torch.compile kernel, is refused here)."""

    def overrides(self) -> dict[str, Any]:
        """Keyword overrides for make_optimizer: every field that is set, except the name."""
        values = dataclasses.asdict(self)
        values.pop("name")
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class LearnConfig:
    """Settings every algorithm has (unset: the algorithm's default)."""

    gamma: float | None = None
    """Discount factor (0.99)."""
    max_grad_norm: float | None = None
    """Global gradient-norm clip, 0 turns it off (a2c 0.5, dqn 10)."""
    hidden: tuple[int, ...] | None = None
    """Hidden layer widths (a2c: 64 64 tanh policy and value MLPs; dqn: 256 256 ReLU)."""
    lr_schedule: str = field(default="constant", metadata={"choices": ("constant", "linear")})
    """constant, or linear: the lr falls from --lr to 0 over --total-steps, set before each
    update from the env steps done (SB3's and the zoo's lin_ schedule)."""
    engine: str = field(default="auto", metadata={"choices": ("auto", "numpy", "autograd")})
    """How gradients are computed: numpy differentiates the MLP (A2C's actor-critic, DQN's
    Q-network) by hand in NumPy (CPU only; faster at CartPole sizes), autograd runs torch's
    autograd; auto takes numpy where it applies (MLP on the CPU) and autograd otherwise. Both
    give the same gradients up to float rounding."""


@dataclass(frozen=True)
class A2CConfig:
    """Advantage actor-critic (synchronous A3C)."""

    n_steps: int = 5
    """Steps per environment in each rollout (one update per rollout)."""
    gae_lambda: float = 1.0
    """GAE lambda; 1.0 gives n-step returns as in Stable-Baselines3's A2C."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""


@dataclass(frozen=True)
class DQNConfig:
    """Deep Q-learning (flag names as in Stable-Baselines3; defaults: the zoo's CartPole DQN)."""

    buffer_size: int = 100_000
    """Replay capacity in transitions."""
    learning_starts: int = 1000
    """Env steps collected before the first update."""
    batch_size: int = 64
    """Transitions per gradient step."""
    train_freq: int = 256
    """Env steps (summed over envs) between training rounds."""
    gradient_steps: int = 128
    """Gradient steps per training round (-1: as many as env steps per round, as SB3)."""
    target_update_interval: int = 10
    """Env steps between target-network updates, counted as SB3 does (only while collecting,
    so the target is fixed during a training round's gradient steps)."""
    tau: float = 1.0
    """Target update: 1 copies (hard update), < 1 is Polyak averaging."""
    exploration_fraction: float = 0.16
    """Share of --total-steps over which epsilon decays linearly."""
    exploration_initial_eps: float = 1.0
    """Epsilon at the start."""
    exploration_final_eps: float = 0.04
    """Epsilon after the decay."""
    double_dqn: bool = False
    """Double DQN targets (online net picks, target net evaluates)."""
    loss: str = field(default="huber", metadata={"choices": ("huber", "mse")})
    """TD loss."""
    loss_reduction: str = field(default="mean", metadata={"choices": ("mean", "sum")})
    """mean, or sum as DeepMind's Nature DQN (whose optimizer preset assumes it)."""


ALGO_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "a2c": {
        "env": {"num_envs": 8},
        "optim": {"lr": 7e-4, "eps": 1e-5},
        "learn": {"gamma": 0.99, "max_grad_norm": 0.5, "hidden": (64, 64)},
    },
    "dqn": {
        "env": {"num_envs": 1},
        "optim": {"lr": 5e-4},
        "learn": {"gamma": 0.99, "max_grad_norm": 10.0, "hidden": (256, 256)},
    },
}
"""What an unset (None) option means for each algorithm."""

EVAL_EVERY = 10_000
"""Env steps between greedy evaluations by default (as the zoo evaluates classic control)."""
MINATAR_EVAL_EVERY = 100_000
"""The same on MinAtar, whose runs are millions of frames of games stepped in Python (what
evaluating every 10k cost: docs/benchmarks.md)."""
ATARI_EVAL_EVERY = 250_000
"""The same on Atari, where one evaluation plays several long games."""


def default_eval_every(env_id: str) -> int:
    """Env steps between evaluations when ``--eval-every`` is not given, for ``env_id``."""
    if is_atari(env_id):
        return ATARI_EVAL_EVERY
    return MINATAR_EVAL_EVERY if is_minatar(env_id) else EVAL_EVERY


@dataclass(frozen=True)
class Config:
    """A whole run, fully resolved (written to config.json)."""

    run: RunConfig = RunConfig()
    env: EnvConfig = EnvConfig()
    optim: OptimConfig = OptimConfig()
    learn: LearnConfig = LearnConfig()
    a2c: A2CConfig = A2CConfig()
    dqn: DQNConfig = DQNConfig()

    def resolved(self) -> Config:
        """The config with every unset option replaced by the algorithm's default."""
        parts = {}
        for section, defaults in ALGO_DEFAULTS[self.run.algo].items():
            current = getattr(self, section)
            unset = {k: v for k, v in defaults.items() if getattr(current, k) is None}
            parts[section] = dataclasses.replace(current, **unset)
        if self.run.algo == "dqn" and self.dqn.gradient_steps == -1:  # SB3's -1
            num_envs = parts.get("env", self.env).num_envs
            rounds = max(1, self.dqn.train_freq // num_envs) * num_envs
            parts["dqn"] = dataclasses.replace(self.dqn, gradient_steps=rounds)
        if self.run.eval_every is None:
            every = default_eval_every(self.env.id)
            parts["run"] = dataclasses.replace(self.run, eval_every=every)
        return dataclasses.replace(self, **parts)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (JSON-ready)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The resolved configuration as indented JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Config:
        """Rebuild a Config from :meth:`to_dict` output."""
        parts = {}
        for f in dataclasses.fields(Config):
            cls = section_class(f.name)
            values = dict(data.get(f.name, {}))
            if f.name == "learn" and "engine" in data.get("a2c", {}):
                values.setdefault("engine", data["a2c"]["engine"])  # config.json before 2026-11-24
            if f.name == "a2c":
                values.pop("engine", None)
            for sub in dataclasses.fields(cls):
                if sub.name in values and isinstance(values[sub.name], list):
                    values[sub.name] = tuple(values[sub.name])
            parts[f.name] = cls(**values)
        return Config(**parts)


def section_class(name: str) -> type:
    """The dataclass of one section of :class:`Config` (``"run"`` -> :class:`RunConfig`)."""
    return typing.get_type_hints(Config)[name]


MAX_SEED = 2**32 - 1
"""Largest seed (NumPy's global generator takes seeds below 2**32)."""
MAX_MEMBERS = 10_000
"""Most runs of one population or one compare study."""
MAX_NAME_BYTES = 200
"""Longest run or study name (most file systems allow 255 bytes a component)."""


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a run or study folder name (None if it can).

    A name is one path component: not empty, not ``.`` or ``..``, no slash or backslash, no
    control characters, at most :data:`MAX_NAME_BYTES` bytes in UTF-8.
    """
    if not name:
        return "is empty"
    if name in (".", ".."):
        return "is not a folder name"
    if "/" in name or "\\" in name:
        return "contains a path separator (give one folder name; --logdir says where it goes)"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains a control character"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


def validate(cfg: Config) -> str | None:
    """Return a one-line description of the first invalid value, or None if all are valid."""
    name = cfg.run.run_name
    if name is not None and name_problem(name):
        return f"--run-name {name!r} {name_problem(name)}"
    last_seed = cfg.run.seed + max(cfg.run.population - 1, 0)
    cores = os.cpu_count() or 1
    lr = cfg.optim.lr
    checks = [
        (cfg.run.total_steps > 0, "--total-steps must be > 0"),
        (
            cfg.run.seed >= 0 and last_seed <= MAX_SEED,
            f"--seed must be in [0, {MAX_SEED}]"
            + (" for every member (seed + population - 1)" if cfg.run.population > 1 else ""),
        ),
        (
            0 <= cfg.run.threads <= cores,
            f"--threads must be in [0, {cores}] (this machine's cores; 0: torch's default)",
        ),
        (lr is None or (math.isfinite(lr) and lr > 0), "--lr must be a finite number > 0"),
        (cfg.run.eval_episodes >= 0, "--eval-episodes must be >= 0"),
        (0.0 <= cfg.run.eval_epsilon <= 1.0, "--eval-epsilon must be in [0, 1]"),
        (
            cfg.run.eval_every is None or cfg.run.eval_every >= 0,
            "--eval-every must be >= 0 (0: only at the end)",
        ),
        (cfg.run.log_every >= 0, "--log-every must be >= 0"),
        (cfg.run.histogram_every >= 0, "--histogram-every must be >= 0"),
        (cfg.run.checkpoint_every >= 0, "--checkpoint-every must be >= 0 (0: final only)"),
        (cfg.run.keep_checkpoints >= 0, "--keep-checkpoints must be >= 0 (0: all)"),
        (cfg.run.max_nonfinite >= 1, "--max-nonfinite must be >= 1"),
        (
            0 <= cfg.run.population <= MAX_MEMBERS,
            f"--population must be in [0, {MAX_MEMBERS:,}] (0: a single run)",
        ),
        (cfg.env.num_envs >= 1, "--num-envs must be >= 1"),
        (
            not (cfg.env.normalize and is_atari(cfg.env.id)),
            "--normalize is for flat observations; Atari frames are scaled by the network",
        ),
        (
            cfg.optim.impl != "compiled",
            "--impl compiled: training steps its members with the population optimizer, which "
            "has no compiled kernel; drop --impl (the RMSprop class keeps impl= for your own "
            "training loops)",
        ),
        (0.0 <= cfg.learn.gamma <= 1.0, "--gamma must be in [0, 1]"),
        (cfg.learn.max_grad_norm >= 0, "--max-grad-norm must be >= 0 (0 turns clipping off)"),
        (all(h >= 1 for h in cfg.learn.hidden), "--hidden widths must be >= 1"),
        (cfg.a2c.n_steps >= 1, "--n-steps must be >= 1"),
        (0.0 <= cfg.a2c.gae_lambda <= 1.0, "--gae-lambda must be in [0, 1]"),
        (cfg.a2c.ent_coef >= 0, "--ent-coef must be >= 0"),
        (cfg.a2c.vf_coef >= 0, "--vf-coef must be >= 0"),
        (cfg.dqn.buffer_size >= 1, "--buffer-size must be >= 1"),
        (cfg.dqn.learning_starts >= 0, "--learning-starts must be >= 0"),
        (cfg.dqn.batch_size >= 1, "--batch-size must be >= 1"),
        (cfg.dqn.train_freq >= 1, "--train-freq must be >= 1"),
        (
            cfg.dqn.gradient_steps >= 1 or cfg.dqn.gradient_steps == -1,
            "--gradient-steps must be >= 1, or -1 (as many as env steps per round)",
        ),
        (cfg.dqn.target_update_interval >= 1, "--target-update-interval must be >= 1"),
        (0.0 < cfg.dqn.tau <= 1.0, "--tau must be in (0, 1]"),
        (0.0 <= cfg.dqn.exploration_fraction <= 1.0, "--exploration-fraction must be in [0, 1]"),
        (0.0 <= cfg.dqn.exploration_initial_eps <= 1.0, "--exploration-initial-eps: [0, 1]"),
        (0.0 <= cfg.dqn.exploration_final_eps <= 1.0, "--exploration-final-eps: [0, 1]"),
    ]
    for ok, message in checks:
        if not ok:
            return message
    return _budget_problem(cfg)


def _budget_problem(cfg: Config) -> str | None:
    """A budget smaller than one update's worth of env steps (it would overshoot many times)."""
    envs = cfg.env.num_envs
    if cfg.run.algo == "a2c":
        rollout = envs * cfg.a2c.n_steps
        if cfg.run.total_steps < rollout:
            return (
                f"--total-steps {cfg.run.total_steps:,} is less than one rollout ({envs} envs x "
                f"{cfg.a2c.n_steps} --n-steps = {rollout:,} steps); raise --total-steps or "
                "lower --num-envs"
            )
    elif cfg.run.total_steps < envs:
        return (
            f"--total-steps {cfg.run.total_steps:,} is less than one step of {envs} envs; raise "
            "--total-steps or lower --num-envs"
        )
    return None
