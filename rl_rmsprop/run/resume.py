"""``--resume``: the configuration a run or population folder continues with."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from rl_rmsprop.config import Config
from rl_rmsprop.options import parse_config
from rl_rmsprop.run.errors import UserError
from rl_rmsprop.run.population_command import POPULATION_FILE

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
