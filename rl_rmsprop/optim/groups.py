"""A parameter group's hyperparameters: their checks, and the update rule they select.

The optimizer keeps torch's parameter groups (dicts of hyperparameters and flags). Here a
group is checked (:func:`validate_group`) and read as the functional core's two parts: the
structural :class:`~rl_rmsprop.optim.functional.Rule` (which terms the update has) and the
numeric :class:`~rl_rmsprop.optim.functional.Hyper`.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from torch import Tensor

from .functional import SQ_MODES, Hyper, Rule

# name -> (lowest, highest, whether the highest is allowed); None = unbounded.
_RANGES: dict[str, tuple[float, float | None, bool]] = {
    "lr": (0.0, None, True),
    "alpha": (0.0, 1.0, True),
    "eps": (0.0, None, True),
    "weight_decay": (0.0, None, True),
    "momentum": (0.0, None, True),
    "dampening": (0.0, 1.0, True),
    "beta1": (0.0, 1.0, False),
    "lr_decay": (0.0, None, True),
    "initial_square_avg": (0.0, None, True),
}


def _check_range(name: str, value: Any) -> None:
    lo, hi, hi_ok = _RANGES[name]
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a number or a one-element tensor")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    above = hi is not None and (value > hi or (value == hi and not hi_ok))
    if not math.isfinite(value) or value < lo or above:
        bound = "inf)" if hi is None else f"{hi}{']' if hi_ok else ')'}"
        raise ValueError(f"{name} must be in [{lo}, {bound}, got {value}")


def validate_group(group: dict[str, Any]) -> None:
    """Check a parameter group's hyperparameters.

    Raises:
        ValueError: naming the argument and its allowed range or values.

    """
    for name in _RANGES:
        _check_range(name, group[name])
    if group["sq_mode"] not in SQ_MODES:
        raise ValueError(f"sq_mode must be one of {', '.join(SQ_MODES)}, got {group['sq_mode']!r}")
    if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
        raise ValueError("nesterov=True needs momentum > 0 and dampening = 0")
    if group["beta1"] > 0 and group["momentum"] > 0:
        raise ValueError("beta1 (Adam's first moment) and momentum cannot both be > 0")


_RULE_KEYS = (
    "sq_mode",
    "eps_in_sqrt",
    "centered",
    "grad_avg_lerp",
    "bias_correction",
    "beta1",
    "momentum",
    "lr_in_momentum",
    "nesterov",
    "dampening",
    "weight_decay",
    "decoupled_weight_decay",
    "maximize",
)
_HYPER_KEYS = Hyper._fields
PLAN_KEYS = tuple(dict.fromkeys(_RULE_KEYS + _HYPER_KEYS))
"""Every group entry an update depends on (a step's plan is cached on their values)."""


@lru_cache(maxsize=256)
def _rule(
    sq_mode: str,
    eps_in_sqrt: bool,
    centered: bool,
    grad_avg_lerp: bool,
    bias_correction: bool,
    beta1: float,
    momentum: float,
    lr_in_momentum: bool,
    nesterov: bool,
    dampening: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> Rule:
    return Rule(
        sq_mode=sq_mode,
        eps_in_sqrt=eps_in_sqrt,
        centered=centered,
        grad_avg_lerp=grad_avg_lerp,
        bias_correction=bias_correction,
        use_beta1=beta1 > 0,
        use_momentum=momentum > 0,
        lr_in_momentum=lr_in_momentum,
        nesterov=nesterov,
        use_dampening=momentum > 0 and dampening != 0,
        weight_decay=weight_decay != 0,
        decoupled_weight_decay=decoupled_weight_decay,
        maximize=maximize,
    )


def rule_of(group: dict[str, Any]) -> Rule:
    """The structural :class:`Rule` of a parameter group (cached: one object per flag set)."""
    return _rule(*map(group.__getitem__, _RULE_KEYS))


def hyper_of(group: dict[str, Any]) -> Hyper:
    """The numeric hyperparameters of a parameter group as Python floats."""
    hyper = Hyper(*map(group.__getitem__, _HYPER_KEYS))
    if isinstance(hyper.lr, Tensor):  # torch allows a tensor lr
        hyper = hyper._replace(lr=hyper.lr.item())
    return hyper
