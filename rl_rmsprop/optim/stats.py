"""Telemetry from the flat buffers: gradient clipping and the ``grad/*`` and ``optim/*`` figures.

Everything here is a handful of whole-buffer reductions, cheap enough for every logging step,
and returns tensors (no host sync) except where a Python number is the natural answer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .functional import Rule, Scalar, coefficients, denominator
from .groups import hyper_of, rule_of
from .rmsprop import RMSprop

MAX_QUANTILE_ELEMENTS = 1 << 20
"""Percentiles are exact up to this many elements, and taken on an even stride beyond."""


def clip_grad_norm_(optimizer: RMSprop, max_norm: float) -> Tensor:
    """Scale all gradients so their global L2 norm is at most ``max_norm``.

    Same rule as ``torch.nn.utils.clip_grad_norm_`` (coefficient max_norm / (norm + 1e-6),
    capped at 1, always applied, so no host sync), but one reduction and one multiply per flat
    buffer instead of one per tensor.

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
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
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

    torch sorts 67k floats in ~7 ms on the build machine and 67k int32 in ~1 ms (a radix
    sort). A float's bits read as an int32 are in the float's order for positive floats and
    in reverse order for negative ones; flipping the 31 bits below the sign of negative ones
    makes the order total (-0 just below +0, infinities at the ends), and the same flip after
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


def statistics(
    optimizer: RMSprop,
    preclip_norm: Tensor | None = None,
    max_norm: float | None = None,
    per_param: bool = True,
) -> dict[str, Tensor | float]:
    """The DESIGN.md ``grad/*`` and ``optim/*`` figures, computed from the flat buffers.

    Call it after ``step()`` and before ``zero_grad()``. The gradient figures describe the
    gradient that was applied; the optimizer figures the state after the step.

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
    postclip = total_grad_norm(optimizer)
    # Without clipping the gradient applied is the gradient computed: both norms are logged,
    # so a dashboard reads grad/norm_preclip whether or not a run clips.
    out: dict[str, Tensor | float] = {
        "grad/norm_postclip": postclip,
        "grad/norm_preclip": postclip if preclip_norm is None else preclip_norm,
    }
    if preclip_norm is not None and max_norm is not None:
        out["grad/clipped"] = (preclip_norm > max_norm).float()
    spaces = optimizer.spaces
    if per_param:
        for space in spaces:
            norms = torch._foreach_norm(space.grad_views) if space.params else []
            for name, n in zip(space.names, norms, strict=True):
                out[f"grad/norm/{name}"] = n
    out["optim/lr"] = float(optimizer.param_groups[0]["lr"])

    sq, eff, dominated, count = [], [], torch.zeros(()), 0
    for space in spaces:
        if not any(space.steps):
            continue
        group = optimizer.param_groups[space.group]
        rule, hyper = rule_of(group), hyper_of(group)
        c = coefficients(rule, hyper, max(space.steps))
        d = denominator(space.state, rule, c)
        n = sum(x.numel() for x in space.active_slices(space.data))
        count += n
        if d is None:
            eff.append(torch.full((n,), float(c.clr)))
            continue
        sq.append(torch.cat(list(space.active_slices(space.state.square_avg))))
        d = torch.cat(list(space.active_slices(d)))
        eff.append((c.clr / d).cpu())
        dominated = dominated + eps_dominated(d, rule, c.eps).sum().cpu()
    if sq:
        v = torch.cat([x.cpu() for x in sq])
        out["optim/sq_avg/mean"] = v.mean()
        out["optim/sq_avg/min"] = v.min()
        out["optim/sq_avg/max"] = v.max()
    if eff:
        e = torch.cat(eff)
        out["optim/effective_lr/mean"] = e.mean()
        p05, p50, p95 = quantiles(e, (0.05, 0.5, 0.95))
        out["optim/effective_lr/p05"] = p05
        out["optim/effective_lr/p50"] = p50
        out["optim/effective_lr/p95"] = p95
        out["optim/eps_dominated_fraction"] = dominated / max(count, 1)
    ratio = update_to_param_ratio(optimizer)
    if ratio is not None:
        out["optim/update_to_param_ratio"] = ratio
    out["optim/nonfinite_skipped"] = float(optimizer.nonfinite_skipped)
    return out


def update_to_param_ratio(optimizer: RMSprop) -> Tensor | None:
    """||p_after - p_before|| / ||p_before|| of the last step, if it was recorded; frees the copy.

    Set ``optimizer.record_update = True`` before a step to record it (one copy of the
    parameters, only on the steps that are logged).
    """
    upd, ref = [], []
    for space in optimizer.spaces:
        if space.prev_data is None:
            continue
        upd.append(torch.linalg.vector_norm((space.data - space.prev_data).float()).cpu())
        ref.append(torch.linalg.vector_norm(space.prev_data.float()).cpu())
        space.prev_data = None
    if not upd:
        return None
    return torch.linalg.vector_norm(torch.stack(upd)) / torch.linalg.vector_norm(torch.stack(ref))


def histograms(optimizer: RMSprop, max_elements: int = 1 << 16) -> dict[str, Tensor]:
    """Samples for the ``optim/sq_avg`` and ``grad/values`` histograms (evenly strided)."""
    out = {}
    sq = [s.state.square_avg for s in optimizer.spaces if s.state.square_avg is not None]
    grads = [s.grad for s in optimizer.spaces]
    for tag, parts in (("optim/sq_avg", sq), ("grad/values", grads)):
        if parts:
            x = torch.cat([p.detach().float().cpu() for p in parts])
            out[tag] = strided_sample(x, max_elements)
    return out
