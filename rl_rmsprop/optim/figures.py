"""The telemetry and safeguards of both optimizers, written once.

Each function takes one run's buffers as 1-d tensors or K members' as ``[K, n]`` rows and
works along the last dimension, so :class:`~rl_rmsprop.optim.RMSprop` (the torch-API optimizer
of one network) and :class:`~rl_rmsprop.optim.population.PopulationOptimizer` (K members,
which every training run uses, a single run being K = 1) clip, count skipped steps and log
the ``grad/*`` and ``optim/*`` tags by the same arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from .functional import Rule, Scalar

# The tags these figures are logged under (rl_rmsprop/tags.py gathers every tag's schema).
NORM_PRECLIP = "grad/norm_preclip"
NORM_POSTCLIP = "grad/norm_postclip"
CLIPPED = "grad/clipped"
LAYER_NORM = "grad/norm/"
"""Prefix: ``grad/norm/<parameter name>``."""
GRAD_VALUES = "grad/values"
LR = "optim/lr"
SQ_AVG = "optim/sq_avg"
SQ_AVG_MEAN, SQ_AVG_MIN, SQ_AVG_MAX = (f"{SQ_AVG}/{s}" for s in ("mean", "min", "max"))
EFFECTIVE_LR = "optim/effective_lr"
EFF_MEAN, EFF_P05, EFF_P50, EFF_P95 = (f"{EFFECTIVE_LR}/{s}" for s in ("mean", "p05", "p50", "p95"))
UPDATE_RATIO = "optim/update_to_param_ratio"
EPS_DOMINATED = "optim/eps_dominated_fraction"
NONFINITE_SKIPPED = "optim/nonfinite_skipped"

TAGS: dict[str, tuple[str, str]] = {
    NORM_PRECLIP: ("scalar", "gradient L2 norm before clipping (the norm applied if not clipping)"),
    NORM_POSTCLIP: ("scalar", "L2 norm of the gradient applied"),
    CLIPPED: ("scalar", "1 where clipping scaled the gradient, else 0 (only when clipping)"),
    LAYER_NORM + "<parameter>": ("scalar", "L2 norm of one parameter's gradient"),
    LR: ("scalar", "learning rate of the step (with the schedule's factor)"),
    SQ_AVG_MEAN: ("scalar", "mean of the square average v over the elements"),
    SQ_AVG_MIN: ("scalar", "smallest v"),
    SQ_AVG_MAX: ("scalar", "largest v"),
    EFF_MEAN: ("scalar", "mean over the elements of lr / denominator"),
    EFF_P05: ("scalar", "5th percentile of lr / denominator"),
    EFF_P50: ("scalar", "median of lr / denominator"),
    EFF_P95: ("scalar", "95th percentile of lr / denominator"),
    UPDATE_RATIO: ("scalar", "||p after - p before|| / ||p before|| of the logged step"),
    EPS_DOMINATED: ("scalar", "share of elements where eps outweighs the variance term"),
    NONFINITE_SKIPPED: ("scalar", "steps skipped so far for a non-finite gradient"),
    GRAD_VALUES: ("histogram", "the gradient's elements (strided sample)"),
    SQ_AVG: ("histogram", "the square average's elements (strided sample)"),
}
"""Every tag of this module: (kind, meaning)."""

MAX_QUANTILE_ELEMENTS = 1 << 20
"""Percentiles are exact up to this many elements, and taken on an even stride beyond."""


def clip_coefficient(norm: Tensor, max_norm: float) -> Tensor:
    """The factor ``torch.nn.utils.clip_grad_norm_`` scales a gradient by, elementwise.

    max_norm / (norm + 1e-6), capped at 1: always applied, so clipping needs no host sync.
    ``norm`` is one run's global norm (0-d) or every member's (``[K]``).
    """
    return (max_norm / (norm + 1e-6)).clamp_(max=1.0)


def count_skips(
    skipped: int | Tensor, streak: int | Tensor, bad: int | Tensor
) -> tuple[int | Tensor, int | Tensor]:
    """The non-finite bookkeeping after one step: steps skipped in all and in a row.

    Args:
        skipped: steps skipped so far (a Python int, a 0-d tensor or ``[K]``).
        streak: steps skipped in a row so far, same form.
        bad: 1 where this step was skipped, 0 where it was taken (same form, integer).

    Returns:
        ``(skipped + bad, (streak + 1) * bad)``: a taken step ends a streak.
    """
    return skipped + bad, (streak + 1) * bad


def gradient_figures(
    postclip: Tensor, preclip: Tensor | None = None, max_norm: float | None = None
) -> dict[str, Tensor]:
    """``grad/norm_postclip``, ``grad/norm_preclip`` and, when clipping, ``grad/clipped``.

    Without clipping the gradient applied is the gradient computed: both norms are logged,
    so a dashboard reads ``grad/norm_preclip`` whether or not a run clips.
    """
    out = {
        NORM_POSTCLIP: postclip,
        NORM_PRECLIP: postclip if preclip is None else preclip,
    }
    if preclip is not None and max_norm is not None:
        out[CLIPPED] = (preclip > max_norm).to(preclip.dtype)
    return out


def layer_figures(grad: Tensor, layers: Iterable[tuple[str, int, int]]) -> dict[str, Tensor]:
    """``grad/norm/<name>`` of each ``(name, offset, numel)`` slice of the last dimension."""
    return {
        f"{LAYER_NORM}{name}": torch.linalg.vector_norm(grad[..., offset : offset + numel], dim=-1)
        for name, offset, numel in layers
    }


def state_figures(
    square_avg: Tensor | None, effective_lr: Tensor, dominated: Tensor
) -> dict[str, Tensor]:
    """The ``optim/*`` figures of the optimizer's state after a step.

    Args:
        square_avg: the square average (None for SGD, which has none).
        effective_lr: lr / denominator of every element.
        dominated: where eps outweighs the variance term (:func:`eps_dominated`).

    Returns:
        ``optim/sq_avg/{mean,min,max}`` (with a square average),
        ``optim/effective_lr/{mean,p05,p50,p95}`` and ``optim/eps_dominated_fraction``.
    """
    out = {}
    if square_avg is not None:
        out[SQ_AVG_MEAN] = square_avg.mean(-1)
        out[SQ_AVG_MIN] = square_avg.amin(-1)
        out[SQ_AVG_MAX] = square_avg.amax(-1)
    out[EFF_MEAN] = effective_lr.mean(-1)
    p05, p50, p95 = quantiles(effective_lr, (0.05, 0.5, 0.95))
    out[EFF_P05] = p05
    out[EFF_P50] = p50
    out[EFF_P95] = p95
    out[EPS_DOMINATED] = dominated.float().mean(-1)
    return out


def update_ratio(after: Tensor, before: Tensor) -> Tensor:
    """``optim/update_to_param_ratio``: ||after - before|| / ||before||."""
    after, before = after.float(), before.float()
    return torch.linalg.vector_norm(after - before, dim=-1) / torch.linalg.vector_norm(
        before, dim=-1
    )


def histogram_samples(
    grad: Tensor, square_avg: Tensor | None, max_elements: int = 1 << 16
) -> dict[str, Tensor]:
    """Samples for the ``grad/values`` and ``optim/sq_avg`` histograms (1-d, evenly strided)."""
    parts = {GRAD_VALUES: grad}
    if square_avg is not None:
        parts[SQ_AVG] = square_avg
    return {tag: strided_sample(x.detach().float().cpu(), max_elements) for tag, x in parts.items()}


def quantiles(x: Tensor, qs: tuple[float, ...]) -> Tensor:
    """Quantiles of ``x`` along its last dimension: ``[len(qs), ...]``.

    Exact up to :data:`MAX_QUANTILE_ELEMENTS` elements, taken on an even stride beyond. The
    values are ``torch.quantile``'s (linear interpolation), bit for bit; on the CPU the sort
    is done on the floats' bits as integers (:func:`sorted_floats`).
    """
    n = x.shape[-1]
    if n > MAX_QUANTILE_ELEMENTS:
        x = x[..., :: -(-n // MAX_QUANTILE_ELEMENTS)]
        n = x.shape[-1]
    x = x.float()
    q = torch.tensor(qs, device=x.device)
    if x.device.type != "cpu" or n == 0 or bool(torch.isnan(x).any()):
        return torch.quantile(x, q, dim=-1)
    ordered = sorted_floats(x)
    # torch.quantile's linear rule: the values at floor and ceil of q (n - 1), lerped.
    ranks = q * (n - 1)
    lower = ranks.long()
    below = ordered[..., lower]
    above = ordered[..., ranks.ceil().long()]
    return below.lerp(above, ranks - lower).movedim(-1, 0)


def sorted_floats(x: Tensor) -> Tensor:
    """A float32 CPU tensor without NaN, sorted along its last dimension.

    torch sorts int32 several times faster than floats (a radix sort; docs/benchmarks.md, "Figures
    moved from the code"). A float's bits read as an int32 are in the float's order for positive
    floats and in reverse order for negative ones; flipping the 31 bits below the sign of negative
    ones makes the order total (-0 just below +0, infinities at the ends), and the same flip after
    the sort gives the floats back.
    """
    bits = x.view(torch.int32)
    keys = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    if keys.dim() == 1:
        keys = torch.sort(keys).values
    else:  # row by row: the radix sort is for 1-d tensors (a [1, 67k] sort took 10x longer)
        rows = keys.reshape(-1, keys.shape[-1])
        keys = torch.stack([torch.sort(row).values for row in rows]).reshape(keys.shape)
    return (keys ^ ((keys >> 31) & 0x7FFFFFFF)).view(torch.float32)


def eps_dominated(d: Tensor, rule: Rule, eps: Scalar) -> Tensor:
    """Where eps outweighs the variance term of the denominator ``d`` (bool, like ``d``).

    sqrt(var) < eps <=> d < 2 eps (eps outside the sqrt); var < eps <=> d^2 < 2 eps (inside).
    """
    return d * d < 2 * eps if rule.eps_in_sqrt else d < 2 * eps


def strided_sample(x: Tensor, max_elements: int) -> Tensor:
    """At most about ``max_elements`` of a 1-d tensor, evenly strided (for histograms)."""
    return x[:: max(1, -(-x.numel() // max_elements))]


def step_figures(lr: Tensor | float, skipped: Tensor | float, ratio: Tensor | None) -> dict:
    """``optim/lr``, ``optim/nonfinite_skipped`` and, when recorded, the update ratio."""
    out = {LR: lr, NONFINITE_SKIPPED: skipped}
    if ratio is not None:
        out[UPDATE_RATIO] = ratio
    return out
