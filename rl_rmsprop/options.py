"""The command line of ``train``, generated from the configuration's dataclasses.

Flag names, types, defaults and help text come from the fields of :mod:`rl_rmsprop.config`
(each field's docstring is its help), so ``--help``, ``config.json`` and the code cannot drift
apart. ``--preset`` and ``--hparams zoo`` are sets of defaults that any flag still overrides.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import textwrap
import types
import typing
from functools import cache
from typing import Any

from rl_rmsprop.config import Config, section_class, validate
from rl_rmsprop.hparams import format_zoo_table, zoo_options


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The string literal under each field of a dataclass (its help text)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def _base_type(annotation: Any) -> tuple[type, bool]:
    """(element type, is_tuple) of a field annotation such as ``float | None``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _base_type(args[0])
    if origin is tuple:
        return args[0], True
    return annotation, False


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage dump), exit status 2."""

    def error(self, message: str) -> typing.NoReturn:
        """Print ``error: <message>`` and a pointer to ``--help``, then exit 2."""
        self.exit(2, f"error: {message} (see --help)\n")


def help_text(doc: str, default: Any) -> str:
    """An option's help: its docstring and, where it has one, its default as a user types it.

    ``%`` is escaped, since argparse formats help strings with it.
    """
    text = doc.replace("%", "%%")
    if default is None:
        return text
    if isinstance(default, bool):
        shown = "true" if default else "false"
    elif isinstance(default, tuple):
        shown = " ".join(map(str, default))
    else:
        shown = str(default).replace("%", "%%")
    return f"{text} (default: {shown})"


def build_parser(prog: str = "python -m rl_rmsprop.train") -> argparse.ArgumentParser:
    """The argument parser, generated from the dataclasses.

    Each option's help is its field's docstring and its default (``true``/``false`` for a
    switch; none for an unset default, whose docstring says what unset means); an option with
    choices shows them as its argument (``--algo {a2c,dqn}``).
    """
    parser = OneLineErrorParser(
        prog=prog,
        description="Train an agent with an exact, observable optimizer; logs to TensorBoard.",
    )
    for section in dataclasses.fields(Config):
        cls = section_class(section.name)
        group = parser.add_argument_group(section.name, (cls.__doc__ or "").strip())
        hints = typing.get_type_hints(cls)
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            kind, is_tuple = _base_type(hints[f.name])
            kwargs: dict[str, Any] = {
                "dest": f"{section.name}.{f.name}",
                "default": f.default,
                "help": help_text(docs.get(f.name, ""), f.default),
            }
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
            if kind is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["type"] = kind
                if "choices" not in f.metadata:
                    kwargs["metavar"] = kind.__name__.upper()
                if is_tuple:
                    kwargs["nargs"] = "+"
            group.add_argument(_flag_name(f), **kwargs)
    parser.add_argument(
        "--list-hparams",
        nargs=0,
        action=_ListHparams,
        default=argparse.SUPPRESS,
        help="show the settings --hparams zoo can load, and their source, then exit",
    )
    return parser


class _ListHparams(argparse.Action):
    """``--list-hparams``: print the zoo's table and exit, as ``--help`` does."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(format_zoo_table())
        parser.exit(0)


def parse_config(argv: list[str] | None = None) -> Config:
    """Parse command-line arguments into a validated :class:`Config`.

    Raises:
        SystemExit: status 2 with a one-line message for a malformed or out-of-range option.
    """
    parser = build_parser()
    known, _ = parser.parse_known_args(argv)
    given = _given_options(parser, argv)  # whatever the defaults: presets do not change it
    preset = getattr(known, "run.preset", None)
    if preset:
        chosen = getattr(known, "optim.name") if "optim.name" in given else None
        parser.set_defaults(**preset_defaults(preset, chosen))
    if getattr(known, "run.hparams", None) == "zoo":
        if preset:
            parser.exit(2, "error: --hparams and --preset are two sets of defaults; give one\n")
        algo, env_id = getattr(known, "run.algo"), getattr(known, "env.id")
        try:
            parser.set_defaults(**zoo_options(algo, env_id))
        except ValueError as e:
            parser.exit(2, f"error: {e}\n")
    ns = vars(parser.parse_args(argv))
    sections: dict[str, dict[str, Any]] = {}
    for key, value in ns.items():
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = tuple(value) if isinstance(value, list) else value
    cfg = Config(**{name: section_class(name)(**vals) for name, vals in sections.items()})
    cfg = cfg.resolved()
    problem = contradiction(cfg.run.algo, given) or validate(cfg)
    if problem:
        parser.exit(2, f"error: {problem}\n")
    return cfg


PRESETS: dict[str, dict[str, Any]] = {
    # DeepMind, "Human-level control through deep reinforcement learning", Nature 518 (2015),
    # Extended Data Table 1. Its "frames" are agent steps (4 emulator frames each). Its target
    # network is updated every 10,000 updates = 40,000 env steps at one update per 4 steps; it
    # clips the TD error (Huber loss, summed over the batch) and not the gradient norm.
    "dqn-nature": {
        "run.algo": "dqn",
        "run.total_steps": 10_000_000,
        "run.threads": 0,  # a CNN uses every core, unlike the small MLPs of the defaults
        "run.eval_epsilon": 0.05,
        "env.num_envs": 1,
        "optim.name": "rmsprop:dqn-nature",
        "optim.lr": 2.5e-4,
        "learn.gamma": 0.99,
        "learn.max_grad_norm": 0.0,
        "dqn.buffer_size": 1_000_000,
        "dqn.learning_starts": 50_000,
        "dqn.batch_size": 32,
        "dqn.train_freq": 4,
        "dqn.gradient_steps": 1,
        "dqn.target_update_interval": 40_000,
        "dqn.tau": 1.0,
        "dqn.exploration_initial_eps": 1.0,
        "dqn.exploration_final_eps": 0.1,
        "dqn.exploration_fraction": 0.1,  # 1M of the 10M steps
        "dqn.loss": "huber",
        "dqn.loss_reduction": "sum",
    },
    # rl-baselines3-zoo hyperparams/a2c.yml, "atari": 16 envs, CnnPolicy, ent_coef 0.01,
    # vf_coef 0.25, RMSpropTFLike(eps=1e-5), 1e7 steps; A2C's defaults otherwise.
    "a2c-atari": {
        "run.algo": "a2c",
        "run.total_steps": 10_000_000,
        "run.threads": 0,
        "env.num_envs": 16,
        "optim.name": "rmsprop:tf",
        "optim.lr": 7e-4,
        "optim.eps": 1e-5,
        "learn.gamma": 0.99,
        "learn.max_grad_norm": 0.5,
        "a2c.n_steps": 5,
        "a2c.ent_coef": 0.01,
        "a2c.vf_coef": 0.25,
    },
    # MinAtar (Young and Tian 2019), examples/dqn.py of the minatar package's repository: the
    # paper's network (agents.networks.MinAtarCNN), one update of a 32 batch every frame from
    # frame 5,000, a 100k replay, target copied every 1,000 updates, epsilon 1 -> 0.1 over
    # 100k frames, Huber loss averaged over the batch, no gradient clipping, and
    # torch.optim.RMSprop(lr=2.5e-4, alpha=0.95, eps=0.01, centered=True, momentum=0.95).
    "dqn-minatar": {
        "run.algo": "dqn",
        "run.total_steps": 5_000_000,
        "env.num_envs": 1,
        "optim.name": "rmsprop",
        "optim.lr": 2.5e-4,
        "optim.alpha": 0.95,
        "optim.eps": 0.01,
        "optim.centered": True,
        "optim.momentum": 0.95,
        "learn.gamma": 0.99,
        "learn.max_grad_norm": 0.0,
        "dqn.buffer_size": 100_000,
        "dqn.learning_starts": 5_000,
        "dqn.batch_size": 32,
        "dqn.train_freq": 1,
        "dqn.gradient_steps": 1,
        "dqn.target_update_interval": 1_000,
        "dqn.tau": 1.0,
        "dqn.exploration_initial_eps": 1.0,
        "dqn.exploration_final_eps": 0.1,
        "dqn.exploration_fraction": 0.02,  # 100k of the 5M frames
        "dqn.loss": "huber",
        "dqn.loss_reduction": "mean",
    },
}
"""``--preset`` values: option defaults (section.field) that any flag still overrides."""
# The MinAtar paper has no batched actor-critic (its AC(lambda) learns online from one
# stream): this is a2c-atari's A2C (16 envs, 5-step rollouts, RMSpropTFLike) on the paper's
# network and frame budget, on one thread (a single run gains ~14% from a second core, and
# a study's processes take one core each).
PRESETS["a2c-minatar"] = {**PRESETS["a2c-atari"], "run.total_steps": 5_000_000, "run.threads": 1}


def preset_defaults(preset: str, optimizer: str | None = None) -> dict[str, Any]:
    """A preset's option defaults when ``--optimizer`` is ``optimizer`` (None: not given).

    A preset's optimizer values other than the learning rate (alpha, eps, momentum, centered)
    belong to its own optimizer: with another one, only the learning rate carries over and the
    chosen optimizer keeps its own defaults (Adam takes no momentum; Adam's eps is not
    RMSprop's).
    """
    values = PRESETS[preset]
    if optimizer is None or optimizer == values["optim.name"]:
        return dict(values)
    return {k: v for k, v in values.items() if not k.startswith("optim.") or k == "optim.lr"}


_UNSET = object()


def _given_options(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The ``section.field`` destinations the command line set explicitly."""
    saved = {a.dest: a.default for a in parser._actions if a.default is not argparse.SUPPRESS}
    parser.set_defaults(**{dest: _UNSET for dest in saved})
    try:
        ns = vars(parser.parse_args(argv))
    finally:
        parser.set_defaults(**saved)
    return {dest for dest, value in ns.items() if value is not _UNSET}


OTHER_ALGO_OPTIONS = {"a2c": ("dqn", "run.save_replay"), "dqn": ("a2c",)}
"""Per algorithm, the option sections (or single options) that belong to the other one."""


def contradiction(algo: str, given: set[str]) -> str | None:
    """A one-line message if an option of the other algorithm was given, else None."""
    for dest in sorted(given):
        section = dest.split(".")[0]
        if section in OTHER_ALGO_OPTIONS[algo] or dest in OTHER_ALGO_OPTIONS[algo]:
            cls = section_class(section)
            f = next(f for f in dataclasses.fields(cls) if f.name == dest.split(".")[1])
            other = "dqn" if algo == "a2c" else "a2c"
            return f"{_flag_name(f)} belongs to --algo {other} and does nothing with --algo {algo}"
    return None
