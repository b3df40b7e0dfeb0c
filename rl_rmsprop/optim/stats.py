"""Clipping and telemetry of a :class:`RMSprop`: its flat buffers handed to :mod:`.figures`.

The figures are the population optimizer's (one run's buffers taken as one row): a handful of
whole-buffer reductions, cheap enough for every logging step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .figures import (
    clip_coefficient,
    eps_dominated,
    gradient_figures,
    histogram_samples,
    layer_figures,
    state_figures,
    step_figures,
    update_ratio,
)
from .functional import coefficients, denominator
from .groups import hyper_of, rule_of
from .rmsprop import RMSprop


def clip_grad_norm_(optimizer: RMSprop, max_norm: float) -> Tensor:
    """Scale all gradients so their global L2 norm is at most ``max_norm``.

    Same rule as ``torch.nn.utils.clip_grad_norm_`` (:func:`clip_coefficient`), but one
    reduction and one multiply per flat buffer instead of one per tensor.

    Args:
        optimizer: the optimizer whose parameters' gradients are clipped.
        max_norm: the largest allowed global norm.

    Returns:
        The global gradient norm before clipping (a 0-d tensor on the first buffer's device).

    """
    spaces = optimizer.spaces
    for space in spaces:
        space.sync_grads()
    norm = total_grad_norm(optimizer)
    coef = clip_coefficient(norm, max_norm)
    for space in spaces:
        space.grad.mul_(coef.to(space.device, space.dtype))
    return norm


def total_grad_norm(optimizer: RMSprop) -> Tensor:
    """Global L2 norm of all gradients in the flat buffers (float32, or float64 if any is)."""
    norms = [
        torch.linalg.vector_norm(s.grad, dtype=torch.promote_types(s.dtype, torch.float32))
        for s in optimizer.spaces
    ]
    if not norms:
        return torch.zeros(())
    device = norms[0].device
    dtype = torch.float64 if any(n.dtype == torch.float64 for n in norms) else torch.float32
    return torch.linalg.vector_norm(torch.stack([n.to(device, dtype) for n in norms]))


def statistics(
    optimizer: RMSprop,
    preclip_norm: Tensor | None = None,
    max_norm: float | None = None,
    per_param: bool = True,
) -> dict[str, Tensor | float]:
    """The ``grad/*`` and ``optim/*`` figures of a :class:`RMSprop`, from its flat buffers.

    Call it after ``step()`` and before ``zero_grad()``. The gradient figures describe the
    gradient that was applied; the optimizer figures the state after the step. The figures
    are the population optimizer's (:func:`gradient_figures`, :func:`state_figures`), taken
    over every buffer's elements as one run's.

    Args:
        optimizer: the optimizer to describe.
        preclip_norm: what :func:`clip_grad_norm_` returned, for ``grad/norm_preclip`` and
            ``grad/clipped``; None when the run does not clip (then ``grad/norm_preclip`` is
            the norm of the gradient applied).
        max_norm: the clipping threshold used.
        per_param: include ``grad/norm/<parameter name>`` for every parameter.

    Returns:
        ``grad/norm_postclip``, ``grad/norm_preclip``, optionally ``grad/clipped`` and
        ``grad/norm/<name>``; ``optim/lr``, ``optim/sq_avg/{mean,min,max}`` (where a square
        average exists), ``optim/effective_lr/{mean,p05,p50,p95}`` (lr / denominator per
        element), ``optim/update_to_param_ratio`` (when ``optimizer.record_update`` was set
        before the step), ``optim/eps_dominated_fraction`` and ``optim/nonfinite_skipped``.

    """
    out: dict[str, Tensor | float] = dict(
        gradient_figures(total_grad_norm(optimizer), preclip_norm, max_norm)
    )
    spaces = optimizer.spaces
    if per_param:
        for space in spaces:
            layers = zip(space.names, space.offsets, space.numels, strict=False)
            out.update(layer_figures(space.grad, layers))
    sq, eff, dominated = [], [], []
    for space in spaces:
        if not any(space.steps):
            continue
        group = optimizer.param_groups[space.group]
        rule, hyper = rule_of(group), hyper_of(group)
        c = coefficients(rule, hyper, max(space.steps))
        d = denominator(space.state, rule, c)
        if d is None:  # SGD: every element's rate is the lr, and no eps
            n = sum(x.numel() for x in space.active_slices(space.data))
            eff.append(torch.full((n,), float(c.clr)))
            dominated.append(torch.zeros(n, dtype=torch.bool))
            continue
        sq.append(torch.cat(list(space.active_slices(space.state.square_avg))).cpu())
        d = torch.cat(list(space.active_slices(d)))
        eff.append((c.clr / d).cpu())
        dominated.append(eps_dominated(d, rule, c.eps).cpu())
    if eff:
        square_avg = torch.cat(sq) if sq else None
        out.update(state_figures(square_avg, torch.cat(eff), torch.cat(dominated)))
    recorded = [s for s in spaces if s.prev_data is not None]
    ratio = None
    if recorded:
        after = torch.cat([s.data.float().cpu() for s in recorded])
        before = torch.cat([s.prev_data.float().cpu() for s in recorded])
        ratio = update_ratio(after, before)
        for space in recorded:
            space.prev_data = None  # the copy is freed once read
    lr = float(optimizer.param_groups[0]["lr"])
    out.update(step_figures(lr, float(optimizer.nonfinite_skipped), ratio))
    return out


def histograms(optimizer: RMSprop, max_elements: int = 1 << 16) -> dict[str, Tensor]:
    """Samples for the ``optim/sq_avg`` and ``grad/values`` histograms (evenly strided)."""
    spaces = optimizer.spaces
    if not spaces:
        return {}
    grad = torch.cat([s.grad.detach().float().cpu() for s in spaces])
    sq = [s.state.square_avg for s in spaces if s.state.square_avg is not None]
    square_avg = torch.cat([x.detach().float().cpu() for x in sq]) if sq else None
    return histogram_samples(grad, square_avg, max_elements)
