"""The TensorBoard tag schema: every tag a run writes, its kind and meaning, in one place.

The run's own tags (episodes, speed, evaluation, the HParams metrics) are defined here; the
optimizer's are defined where they are computed (:mod:`rl_rmsprop.optim.figures`) and the
algorithms' losses in their agents (:mod:`agents.a2c`, :mod:`agents.dqn`), and gathered here.
``docs/telemetry.md`` is generated from this module (``python -m rl_rmsprop.tags``) and a test
checks that it is current, that every tag a run writes is in the schema, and that no tag is
spelled out anywhere else.
"""

from __future__ import annotations

from agents import a2c, dqn
from rl_rmsprop.optim import figures

EPISODIC_RETURN = "charts/episodic_return"
EPISODIC_LENGTH = "charts/episodic_length"
RETURN_MEAN100 = "charts/episodic_return_mean100"
SPS = "charts/SPS"
FRAMES = "charts/frames"
EPSILON = "charts/epsilon"
EVAL_MEAN = "eval/episodic_return_mean"
EVAL_STD = "eval/episodic_return_std"
HPARAMS = "hparams/"
"""Prefix of the final metrics written with the hparams (``hparams/<summary field>``)."""

RUN_TAGS: dict[str, tuple[str, str]] = {
    EPISODIC_RETURN: ("scalar", "return of every finished training episode (Atari: game)"),
    EPISODIC_LENGTH: ("scalar", "its length in env steps"),
    RETURN_MEAN100: ("scalar", "mean return of the last 100 training episodes"),
    SPS: ("scalar", "env steps per second so far"),
    FRAMES: ("scalar", "emulator frames so far (Atari: 4 per env step)"),
    EPSILON: ("scalar", "DQN's exploration rate"),
    EVAL_MEAN: ("scalar", "mean return of the greedy evaluation episodes"),
    EVAL_STD: ("scalar", "their standard deviation"),
    HPARAMS + "<summary field>": (
        "scalar",
        "the run's final figures beside its hyperparameters (the HParams tab)",
    ),
}

SCHEMA: dict[str, dict[str, tuple[str, str]]] = {
    "the run (`rl_rmsprop/run/loop.py`, `rl_rmsprop/logger.py`)": RUN_TAGS,
    "A2C (`agents/a2c.py`)": a2c.TAGS,
    "DQN (`agents/dqn.py`)": dqn.TAGS,
    "the optimizer (`rl_rmsprop/optim/figures.py`)": figures.TAGS,
}
"""Every tag by who writes it: tag -> (kind, meaning); ``<...>`` marks a name part."""


def all_tags() -> dict[str, tuple[str, str]]:
    """Every tag of :data:`SCHEMA` in one dict."""
    return {tag: entry for group in SCHEMA.values() for tag, entry in group.items()}


def matches(tag: str) -> bool:
    """Whether ``tag`` is in the schema (a ``<...>`` part matches any non-empty name)."""
    for known in all_tags():
        if "<" in known:
            prefix = known[: known.index("<")]
            if tag.startswith(prefix) and len(tag) > len(prefix):
                return True
        elif tag == known:
            return True
    return False


def markdown() -> str:
    """``docs/telemetry.md``: the schema as tables, one per writer."""
    lines = [
        "# Telemetry",
        "",
        "Every TensorBoard tag a run writes, into each member's own event file. Generated from",
        "`rl_rmsprop/tags.py` by `python -m rl_rmsprop.tags > docs/telemetry.md` (a test checks",
        "that this page is current). The step axis is env steps per member. Scalars of the",
        "optimizer and the losses are written every `--log-every` updates, histograms every",
        "`--histogram-every` updates, episodes as they end, evaluations every `--eval-every`",
        "env steps and at the end.",
    ]
    for writer, tags in SCHEMA.items():
        lines += ["", f"## Written by {writer}", "", "| tag | kind | meaning |", "|---|---|---|"]
        lines += [f"| `{tag}` | {kind} | {meaning} |" for tag, (kind, meaning) in tags.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
