"""rl-baselines3-zoo's tuned hyperparameters, as option defaults of ``--hparams zoo``.

The values and their source are the data file ``zoo_hparams.json`` beside this module: each
entry is the zoo's own keys, verbatim, and what an entry leaves out is Stable-Baselines3's
default (also in the file), as the zoo itself trains. This module only translates the zoo's
keys into our options. The optimizer is the one SB3 trains with (Adam for DQN, PyTorch RMSprop
with eps 1e-5 for A2C) unless ``--optimizer`` names another.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

DATA_FILE = Path(__file__).with_name("zoo_hparams.json")

OPTIONS = {
    "n_envs": "env.num_envs",
    "n_timesteps": "run.total_steps",
    "learning_rate": "optim.lr",
    "gamma": "learn.gamma",
    "max_grad_norm": "learn.max_grad_norm",
    "net_arch": "learn.hidden",
    "n_steps": "a2c.n_steps",
    "gae_lambda": "a2c.gae_lambda",
    "ent_coef": "a2c.ent_coef",
    "vf_coef": "a2c.vf_coef",
    "rms_prop_eps": "optim.eps",
    "normalize": "env.normalize",
    **{
        key: f"dqn.{key}"
        for key in (
            "buffer_size",
            "learning_starts",
            "batch_size",
            "tau",
            "train_freq",
            "gradient_steps",
            "target_update_interval",
            "exploration_fraction",
            "exploration_initial_eps",
            "exploration_final_eps",
        )
    },
}
"""The zoo's (SB3's) keys -> our ``section.field`` options."""

OPTIMIZER = {"a2c": "rmsprop", "dqn": "adam"}
"""The optimizer SB3 trains each algorithm with (A2C: ``use_rms_prop``, torch's RMSprop)."""


@cache
def zoo_data() -> dict[str, Any]:
    """The data file: its source, SB3's defaults and the zoo's entries per algorithm."""
    return json.loads(DATA_FILE.read_text())


def zoo_settings(algo: str, env_id: str) -> dict[str, Any]:
    """The zoo's settings for ``algo`` on ``env_id`` over SB3's defaults, in the zoo's keys.

    Raises:
        ValueError: the zoo has no entry for them.
    """
    data = zoo_data()
    entry = data[algo].get(env_id)
    if entry is None:
        known = ", ".join(data[algo])
        raise ValueError(
            f"--hparams zoo has no {algo} settings for {env_id} (it has {known}; "
            "see --list-hparams)"
        )
    return {**data["sb3_defaults"][algo], **entry["zoo"]}


def missing(settings: dict[str, Any]) -> str | None:
    """What an entry needs that this project does not build yet, or None."""
    lr = settings.get("learning_rate")
    if isinstance(lr, str) and lr_schedule(lr) is None:
        return f"the learning-rate schedule {lr}"
    return None


def lr_schedule(text: str) -> tuple[str, float] | None:
    """The zoo's schedule string (``lin_0.00083``) as (our ``--lr-schedule``, ``--lr``), or None.

    The zoo's ``lin_<x>`` is ``progress_remaining * x``: our ``linear`` schedule from ``x``.
    """
    kind, _, value = text.partition("_")
    if kind != "lin":
        return None
    try:
        return "linear", float(value)
    except ValueError:
        return None


def zoo_options(algo: str, env_id: str) -> dict[str, Any]:
    """Our option defaults (``section.field`` -> value) for the zoo's ``algo`` on ``env_id``.

    Raises:
        ValueError: no entry, or one that needs what this project does not build yet (see
            :func:`missing`).
    """
    settings = zoo_settings(algo, env_id)
    lack = missing(settings)
    if lack is not None:
        raise ValueError(
            f"--hparams zoo: {algo} on {env_id} needs {lack}, not built yet; give its "
            "options by hand (see --list-hparams)"
        )
    options: dict[str, Any] = {"optim.name": OPTIMIZER[algo]}
    for key, value in settings.items():
        if key not in OPTIONS:
            continue
        if key == "n_timesteps":
            value = int(value)
        elif key == "net_arch":
            value = tuple(value)
        elif key == "learning_rate" and isinstance(value, str):
            options["learn.lr_schedule"], value = lr_schedule(value)
        options[OPTIONS[key]] = value
    if algo == "dqn":  # Adam keeps its own eps; only A2C's RMSprop takes rms_prop_eps
        options.pop("optim.eps", None)
    return options


def format_zoo_table() -> str:
    """The ``--list-hparams`` text: every entry, its settings and the zoo's published score."""
    data = zoo_data()
    source = data["source"]
    lines = [
        f"--hparams zoo: {source['repository']} at {source['commit'][:10]} ({source['date']}), "
        f"{', '.join(source['files'])}; {source['defaults']}.",
    ]
    for algo in ("a2c", "dqn"):
        for env_id, entry in data[algo].items():
            published = entry["published"]
            on = f" on {published['env']}" if "env" in published else ""
            settings = ", ".join(f"{k}={v}" for k, v in entry["zoo"].items())
            lack = missing(zoo_settings(algo, env_id))
            note = "" if lack is None else f"  [not usable yet: needs {lack}]"
            lines.append(
                f"  {algo} {env_id}: {settings} (optimizer {OPTIMIZER[algo]}); published "
                f"{published['mean']:g} +- {published['std']:g}{on}{note}"
            )
    return "\n".join(lines)
