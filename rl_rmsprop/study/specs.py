"""What a study trains: optimizer specs, seeds, and the (optimizer, seed) run pairs."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rl_rmsprop.config import (
    MAX_MEMBERS,
    MAX_SEED,
    Config,
    OptimConfig,
    name_problem,
)
from rl_rmsprop.optim.presets import preset_group
from rl_rmsprop.options import parse_config
from rl_rmsprop.run.errors import UserError
from rl_rmsprop.run.folders import (
    run_folder,
)

RESERVED = {
    "--optimizer": "--optimizers",
    "--seed": "--seeds",
    "--run-name": "--name",
}
"""Train options that compare sets itself, with the compare option to use instead."""


class StudyError(UserError):
    """A mistake in the study's definition: one line, exit status 2."""


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer of a study: a preset name and its overrides."""

    name: str
    """A key of ``rl_rmsprop.optim.PRESETS``."""
    overrides: tuple[tuple[str, Any], ...] = ()
    """(OptimConfig field, value) pairs, in the order given."""

    @property
    def label(self) -> str:
        """How the spec is shown: ``name`` or ``name(k=v,...)``."""
        if not self.overrides:
            return self.name
        return f"{self.name}({','.join(f'{k}={v!r}' for k, v in self.overrides)})"

    @property
    def folder(self) -> str:
        """The study sub-folder: the label, file-name safe (``rmsprop:tf`` -> ``rmsprop-tf``)."""
        text = self.name.replace(":", "-")
        for k, v in self.overrides:
            text += f"__{k}={v!r}"
        return re.sub(r"[^A-Za-z0-9_.=+-]", "_", text)


_SETTABLE = tuple(f.name for f in dataclasses.fields(OptimConfig) if f.name not in ("name",))


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise StudyError(f"unbalanced ')' in --optimizers {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise StudyError(f"unbalanced '(' in --optimizers {text!r}")
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _value(text: str, key: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if key == "impl":
        return text.strip()
    try:
        number = float(text)
    except ValueError:
        raise StudyError(f"--optimizers: {key}={text!r} is not a number") from None
    return (
        int(number) if number.is_integer() and re.fullmatch(r"[+-]?\d+", text.strip()) else number
    )


def parse_specs(text: str) -> list[OptimizerSpec]:
    """Parse ``--optimizers``: comma-separated specs, each ``name`` or ``name(key=value,...)``.

    Keys are the optimizer options of ``train`` (``lr``, ``alpha``, ``eps``, ``momentum``,
    ``centered``, ``weight_decay``, ``eps_in_sqrt``, ``initial_square_avg``, ``beta1``, ``impl``;
    dashes may stand for underscores). Values are numbers or true/false.

    Raises:
        StudyError: on a malformed spec, an unknown key, a non-number value or a duplicate.
    """
    specs: list[OptimizerSpec] = []
    for part in _split_top_level(text):
        match = re.fullmatch(r"([A-Za-z0-9_:\-]+)\s*(?:\((.*)\))?", part, flags=re.S)
        if not part or match is None:
            raise StudyError(
                f"--optimizers: cannot parse {part!r}; write name or name(key=value,...), "
                'e.g. "rmsprop(lr=7e-4),adam(lr=1e-3,eps=1e-5)"'
            )
        name, args = match.group(1), match.group(2)
        overrides: list[tuple[str, Any]] = []
        for item in _split_top_level(args) if args and args.strip() else []:
            key, eq, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not eq or not value.strip():
                raise StudyError(f"--optimizers: {item!r} in {part!r} is not key=value")
            if key not in _SETTABLE:
                raise StudyError(
                    f"--optimizers: unknown option {key!r} in {part!r}; "
                    f"choose from {', '.join(_SETTABLE)}"
                )
            overrides.append((key, _value(value, key)))
        spec = OptimizerSpec(name, tuple(overrides))
        if any(s.folder == spec.folder for s in specs):
            raise StudyError(f"--optimizers: {spec.label} is given twice")
        specs.append(spec)
    return specs


def parse_seeds(text: str) -> list[int]:
    """``"8"`` -> seeds 0..7; ``"3,7,11"`` -> that list.

    Raises:
        StudyError: on anything else, or a count below 1.
    """
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            count = int(text)
            if count > MAX_MEMBERS:
                raise StudyError(f"--seeds {text}: at most {MAX_MEMBERS:,} seeds in one study")
            seeds = list(range(count))
    except ValueError:
        raise StudyError(
            f"--seeds {text!r}: give a count (8 = seeds 0..7) or a list (3,7,11)"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0 or max(seeds) > MAX_SEED:
        raise StudyError(
            f"--seeds {text!r}: need at least one seed, no repeats, each in [0, {MAX_SEED}]"
        )
    return seeds


@dataclass(frozen=True)
class Pair:
    """One (optimizer, seed) run of a study."""

    spec: OptimizerSpec
    seed: int
    cfg: Config

    @property
    def run_dir(self) -> Path:
        """The run's folder."""
        return run_folder(self.cfg)


def build_pairs(
    specs: list[OptimizerSpec], seeds: list[int], train_args: list[str], study: Path
) -> list[Pair]:
    """Each (optimizer, seed) pair's validated train configuration.

    Raises:
        StudyError: if an optimizer spec does not build (unknown preset, bad value), two specs
            are the same optimizer once the algorithm's defaults are filled in, or the study
            has more than ``MAX_MEMBERS`` runs.
        SystemExit: status 2 with one line for a bad train option (from ``parse_config``).
    """
    if len(specs) * len(seeds) > MAX_MEMBERS:
        raise StudyError(
            f"{len(specs)} optimizers x {len(seeds):,} seeds is over the {MAX_MEMBERS:,} runs "
            "one study may hold; use fewer --seeds or --optimizers"
        )
    pairs = []
    resolved: dict[tuple, OptimizerSpec] = {}  # the update rule's hyperparameters -> spec
    for spec in specs:
        base = parse_config([*train_args, "--optimizer", spec.name, "--quiet"])
        optim = dataclasses.replace(base.optim, **dict(spec.overrides))
        try:  # the optimizer must build, as in train, before anything is written
            group = preset_group(optim.name, **optim.overrides())
        except ValueError as e:
            raise StudyError(f"--optimizers {spec.label}: {e}") from None
        rule = (tuple(sorted(group.items())), optim.impl)
        problem = name_problem(spec.folder)
        if problem:
            raise StudyError(f"--optimizers {spec.label}: its folder name {problem}")
        if rule in resolved:
            raise StudyError(
                f"--optimizers: {spec.label} and {resolved[rule].label} are the same optimizer "
                f"under --algo {base.run.algo} (its defaults filled in); drop one"
            )
        resolved[rule] = spec
        for seed in seeds:
            run = dataclasses.replace(
                base.run, seed=seed, logdir=str(study / spec.folder), run_name=f"seed-{seed}"
            )
            pairs.append(Pair(spec, seed, dataclasses.replace(base, optim=optim, run=run)))
    return pairs
