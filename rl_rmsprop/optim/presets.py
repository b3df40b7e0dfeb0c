"""Named optimizer presets (OPTIMIZERS.md section 4) and :func:`make_optimizer`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .groups import validate_group
from .rmsprop import RMSprop


def _betas(value: Any) -> dict[str, Any]:
    beta1, beta2 = value
    return {"beta1": beta1, "alpha": beta2}


def _amsgrad(value: Any) -> dict[str, Any]:
    if value:
        raise ValueError("adam: amsgrad=True is not supported; use amsgrad=False")
    return {}


def _unsupported_flag(name: str) -> Callable[[Any], dict[str, Any]]:
    def check(value: Any) -> dict[str, Any]:
        if value:
            raise ValueError(f"{name}=True is not supported; leave it False")
        return {}

    return check


def _ignored(_: Any) -> dict[str, Any]:
    # foreach/fused pick torch's kernels; ours always runs over flat buffers.
    return {}


_TORCH_COMMON = {
    "foreach": _ignored,
    "fused": _ignored,
    "capturable": _unsupported_flag("capturable"),
    "differentiable": _unsupported_flag("differentiable"),
}


@dataclass(frozen=True)
class Preset:
    """A named configuration of :class:`RMSprop` reproducing one published optimizer."""

    name: str
    reproduces: str
    """The reference it matches (and how that was checked)."""
    defaults: Mapping[str, Any]
    """Keyword arguments of :class:`RMSprop` that define the preset."""
    aliases: Mapping[str, Callable[[Any], dict[str, Any]]] = field(default_factory=dict)
    """The reference's own keywords (``betas``, ``initial_accumulator_value``), translated."""


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "rmsprop",
            "torch.optim.RMSprop (all its keywords); eps outside the sqrt, v0 = 0",
            dict(lr=1e-2, alpha=0.99, eps=1e-8),
            _TORCH_COMMON,
        ),
        Preset(
            "rmsprop:tf",
            "TF1 RMSPropOptimizer / OpenAI baselines / SB2 A2C / SB3 RMSpropTFLike: eps inside "
            "the sqrt, v0 = 1 (lr_in_momentum=True for TF1's momentum order)",
            dict(
                lr=1e-2,
                alpha=0.99,
                eps=1e-8,
                eps_in_sqrt=True,
                initial_square_avg=1.0,
                grad_avg_lerp=False,
            ),
        ),
        Preset(
            "rmsprop:dqn-nature",
            "DeepMind's Nature DQN (NeuralQLearner.lua): centered, eps 0.01 inside the sqrt, for "
            "the gradient of the SUMMED loss over the batch (with a mean loss use eps 0.01/B^2)",
            dict(
                lr=2.5e-4,
                alpha=0.95,
                eps=0.01,
                eps_in_sqrt=True,
                centered=True,
                grad_avg_lerp=False,
            ),
        ),
        Preset(
            "rmsprop:graves",
            "Graves 2013, eq. 38-41: centered, eps inside the sqrt, momentum 0.9 with lr inside "
            "the momentum buffer",
            dict(
                lr=1e-4,
                alpha=0.95,
                eps=1e-4,
                eps_in_sqrt=True,
                centered=True,
                momentum=0.9,
                lr_in_momentum=True,
                grad_avg_lerp=False,
            ),
        ),
        Preset(
            "rmsprop:a3c",
            "A3C's RMSprop (Mnih et al. 2016, S2-S3; eps 0.1 from the ChainerRL reproduction), "
            "statistics per process rather than shared",
            dict(lr=7e-4, alpha=0.99, eps=0.1, eps_in_sqrt=True),
        ),
        Preset(
            "adagrad",
            "torch.optim.Adagrad (lr_decay, initial_accumulator_value, eps, weight_decay)",
            dict(lr=1e-2, alpha=1.0, eps=1e-10, sq_mode="sum"),
            {
                **_TORCH_COMMON,
                "initial_accumulator_value": lambda v: {"initial_square_avg": v},
            },
        ),
        Preset(
            "adam",
            "torch.optim.Adam (betas, eps, weight_decay, decoupled_weight_decay = AdamW)",
            dict(lr=1e-3, alpha=0.999, beta1=0.9, eps=1e-8, bias_correction=True),
            {**_TORCH_COMMON, "betas": _betas, "amsgrad": _amsgrad},
        ),
        Preset(
            "sgd",
            "torch.optim.SGD (momentum, dampening, nesterov, weight_decay)",
            dict(lr=1e-3, sq_mode="none"),
            _TORCH_COMMON,
        ),
    )
}

_KEYWORDS = [
    name
    for name, prm in inspect.signature(RMSprop).parameters.items()
    if name != "params" and prm.kind is not inspect.Parameter.VAR_KEYWORD
]


def preset_kwargs(spec: str, **overrides: Any) -> dict[str, Any]:
    """The :class:`RMSprop` keywords of preset ``spec`` with ``overrides`` applied.

    Raises:
        ValueError: unknown spec or keyword, or a keyword given twice (through an alias).
    """
    preset = PRESETS.get(spec)
    if preset is None:
        raise ValueError(f"unknown optimizer spec {spec!r}; choose one of: {', '.join(PRESETS)}")
    kwargs = dict(preset.defaults)
    given: set[str] = set()
    for key, value in overrides.items():
        if key in preset.aliases:
            translated = preset.aliases[key](value)
        elif key in _KEYWORDS:
            translated = {key: value}
        else:
            allowed = sorted(set(_KEYWORDS) | set(preset.aliases))
            raise ValueError(
                f"optimizer {spec!r} has no argument {key!r}; allowed: {', '.join(allowed)}"
            )
        clash = given & translated.keys()
        if clash:
            raise ValueError(f"optimizer {spec!r}: {', '.join(sorted(clash))} given twice")
        given |= translated.keys()
        kwargs.update(translated)
    return kwargs


def preset_group(spec: str, **overrides: Any) -> dict[str, Any]:
    """The parameter-group settings (every :class:`RMSprop` keyword) of a preset, validated.

    What ``make_optimizer(spec, ...).param_groups[0]`` holds, without building an optimizer.

    Raises:
        ValueError: as :func:`make_optimizer`.
    """
    group = {
        name: prm.default
        for name, prm in inspect.signature(RMSprop).parameters.items()
        if name in _KEYWORDS and name not in ("skip_nonfinite", "impl")
    }
    kwargs = preset_kwargs(spec, **overrides)
    kwargs.pop("skip_nonfinite", None)
    kwargs.pop("impl", None)
    group.update(kwargs)
    validate_group(group)
    return group


def make_optimizer(spec: str, params: Iterable[Any], **overrides: Any) -> RMSprop:
    """Build the optimizer named by ``spec`` with keyword overrides.

    Args:
        spec: a preset name from :data:`PRESETS` (``rmsprop``, ``rmsprop:tf``, ...).
        params: parameters, ``named_parameters()`` or parameter groups.
        **overrides: the reference optimizer's keywords (``betas`` for adam,
            ``initial_accumulator_value`` for adagrad, ...) or any :class:`RMSprop` keyword.

    Returns:
        An :class:`RMSprop` configured as the preset.

    Raises:
        ValueError: unknown spec or keyword, or an out-of-range value (the message names it).

    Example:
        >>> import torch
        >>> opt = make_optimizer("rmsprop:tf", torch.nn.Linear(4, 2).parameters(), lr=7e-4)
        >>> opt.param_groups[0]["eps_in_sqrt"], opt.param_groups[0]["initial_square_avg"]
        (True, 1.0)

    """
    return RMSprop(params, **preset_kwargs(spec, **overrides))
