"""The functional core: one element-wise update rule whose flags reproduce every RMSprop.

The rule is OPTIMIZERS.md section 3. It works on any tensor shape: one flat buffer ``[N]`` of a
single run, or ``[K, N]`` stacked population members whose hyperparameters are ``[K, 1]`` tensors
and whose step counts are a ``[K, 1]`` tensor. Structural choices (which terms exist) live in a
frozen :class:`Rule`; numbers live in :class:`Coeffs`, either Python floats or tensors.

With Python-float coefficients the operations are torch's own fused primitives in torch's order
(``mul_().addcmul_()``, ``lerp_``, ``addcdiv_``), so float32 results are bit-identical to
``torch.optim``. With tensor coefficients the same maths runs with broadcasting ops that round
as those primitives do, on coefficients derived in double precision as torch.optim derives its
Python floats; that path is what ``torch.compile`` fuses and what populations use, and on the
CPU a population member's step is bit for bit the single run's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

Scalar = float | Tensor
SQ_MODES = ("ema", "sum", "none")


@dataclass(frozen=True)
class Rule:
    """Which terms of the unified rule exist (hashable: a compiled kernel is keyed on it)."""

    sq_mode: str = "ema"
    """``ema``: v = alpha v + (1-alpha) g^2; ``sum``: v += g^2 (Adagrad); ``none``: d = 1 (SGD)."""
    eps_in_sqrt: bool = False
    """Denominator sqrt(var + eps) (TF1, DeepMind) instead of sqrt(var) + eps (PyTorch)."""
    centered: bool = False
    """Divide by the running variance v - m^2 (Graves, DQN) instead of v."""
    grad_avg_lerp: bool = True
    """Update m with ``lerp_`` (torch) rather than ``mul_(alpha).add_(g, 1 - alpha)`` (SB3, TF)."""
    bias_correction: bool = False
    """Divide v (and m) by 1 - alpha^t (Adam)."""
    use_beta1: bool = False
    """Adam's first moment as the numerator, bias-corrected by 1 - beta1^t."""
    use_momentum: bool = False
    """Heavy-ball momentum after normalisation."""
    lr_in_momentum: bool = False
    """TF1/Graves: b = mu b + lr g/d; p -= b. Otherwise PyTorch: b = mu b + g/d; p -= lr b."""
    nesterov: bool = False
    """Nesterov momentum."""
    use_dampening: bool = False
    """SGD dampening: b = g/d at the first step, then mu b + (1 - dampening) g/d."""
    weight_decay: bool = False
    """Apply weight decay (L2 on the gradient, or decoupled)."""
    decoupled_weight_decay: bool = False
    """AdamW: p *= 1 - lr wd before the update, instead of g += wd p."""
    maximize: bool = False
    """Ascend instead of descend."""


class Hyper(NamedTuple):
    """Numeric hyperparameters of one parameter group (floats) or population ([K, 1] tensors)."""

    lr: Scalar
    alpha: Scalar
    eps: Scalar
    weight_decay: Scalar = 0.0
    momentum: Scalar = 0.0
    dampening: Scalar = 0.0
    beta1: Scalar = 0.0
    lr_decay: Scalar = 0.0


class Coeffs(NamedTuple):
    """Per-step numbers of the update, derived from :class:`Hyper` and the step count t."""

    lr: Scalar
    """The group's lr (decoupled weight decay uses it undecayed)."""
    clr: Scalar
    """lr / (1 + (t - 1) lr_decay), Adagrad's decayed rate (equal to lr without decay)."""
    alpha: Scalar
    eps: Scalar
    weight_decay: Scalar
    momentum: Scalar
    dampening: Scalar
    beta1: Scalar
    bias_correction1: Scalar
    """1 - beta1^t (1 when unused)."""
    bias_correction2: Scalar
    """1 - alpha^t (1 when unused)."""
    one_minus_alpha: Scalar
    """1 - alpha (the weight of the new squared gradient)."""
    one_minus_beta1: Scalar
    """1 - beta1 (Adam's weight of the new gradient)."""
    one_minus_dampening: Scalar
    """1 - dampening (SGD's weight of the new gradient in the momentum buffer)."""
    step_size: Scalar
    """clr / bias_correction1 (torch.optim.Adam's step size; clr without beta1)."""
    sqrt_bias_correction2: Scalar
    """sqrt(bias_correction2) (Adam divides sqrt(v) by it)."""
    decay: Scalar
    """1 - lr * weight_decay (decoupled weight decay's factor)."""
    first: bool | Tensor
    """t == 1 (SGD's momentum buffer starts at the first gradient)."""


class State(NamedTuple):
    """Optimizer state for one buffer; unused entries are None. Names are torch's."""

    square_avg: Tensor | None
    grad_avg: Tensor | None
    exp_avg: Tensor | None
    momentum_buffer: Tensor | None


def state_dtype(param_dtype: torch.dtype) -> torch.dtype:
    """Dtype the state is kept in: float32 for 16-bit parameters (eps = 1e-8 is 0 in float16)."""
    return torch.float32 if param_dtype in (torch.float16, torch.bfloat16) else param_dtype


def init_state(like: Tensor, rule: Rule, initial_square_avg: float = 0.0) -> State:
    """Fresh state shaped like ``like`` (square average at ``initial_square_avg``, rest zero)."""
    dtype = state_dtype(like.dtype)

    def zeros() -> Tensor:
        return torch.zeros(like.shape, dtype=dtype, device=like.device)

    square_avg = None
    if rule.sq_mode != "none":
        square_avg = torch.full(like.shape, initial_square_avg, dtype=dtype, device=like.device)
    return State(
        square_avg=square_avg,
        grad_avg=zeros() if rule.centered and rule.sq_mode != "none" else None,
        exp_avg=zeros() if rule.use_beta1 else None,
        momentum_buffer=zeros() if rule.use_momentum else None,
    )


def coefficients(rule: Rule, hyper: Hyper, t: int | Tensor) -> Coeffs:
    """Per-step coefficients for step count ``t`` (already incremented; int or [K, 1] tensor).

    Every number the update uses is derived here, in the precision of ``hyper``: Python floats
    exactly as torch.optim computes them (double precision), and a population's float64
    tensors by the same formulas, rounded to the buffers' dtype once afterwards. The update
    then takes each number as it is, so both forms round alike (part of being bit-identical).
    """
    lr = hyper.lr
    clr = lr / (1 + (t - 1) * hyper.lr_decay)
    bc1 = 1 - hyper.beta1**t if rule.use_beta1 else 1.0
    bc2 = 1 - hyper.alpha**t if rule.bias_correction else 1.0
    return Coeffs(
        lr=lr,
        clr=clr,
        alpha=hyper.alpha,
        eps=hyper.eps,
        weight_decay=hyper.weight_decay,
        momentum=hyper.momentum,
        dampening=hyper.dampening,
        beta1=hyper.beta1,
        bias_correction1=bc1,
        bias_correction2=bc2,
        one_minus_alpha=1 - hyper.alpha,
        one_minus_beta1=1 - hyper.beta1,
        one_minus_dampening=1 - hyper.dampening,
        step_size=clr / bc1 if rule.use_beta1 else clr,
        sqrt_bias_correction2=_sqrt(bc2),
        decay=1 - lr * hyper.weight_decay,
        first=t == 1,
    )


# Helpers that use torch's fused primitive for a Python scalar (bit-identical with torch.optim)
# and, for a tensor scalar (populations, compiled kernels), broadcasting ops that round as the
# primitive's CPU kernel does: addcdiv is self + (value * a) / b, addcmul self + value * a * b,
# and add with alpha one multiply-add, as addcmul with the scalar as its second factor.


def _addcmul_(x: Tensor, a: Tensor, b: Tensor, value: Scalar) -> Tensor:
    if isinstance(value, Tensor):
        return x.addcmul_(a * value, b)
    return x.addcmul_(a, b, value=value)


def _addcdiv_(x: Tensor, a: Tensor, b: Tensor, value: Scalar) -> Tensor:
    if isinstance(value, Tensor):
        return x.add_(a.mul(value).div_(b))
    return x.addcdiv_(a, b, value=value)


def _add_(x: Tensor, y: Tensor, alpha: Scalar) -> Tensor:
    if isinstance(alpha, Tensor):
        return x.addcmul_(y, alpha)
    return x.add_(y, alpha=alpha)


def _sqrt(x: Scalar) -> Scalar:
    return x.sqrt() if isinstance(x, Tensor) else x**0.5


def _sqrt_floor(v: Tensor, rule: Rule, c: Coeffs) -> float | Tensor:
    """The least variance worth taking the square root of in ``sqrt(var) + eps``: 0 or more.

    A square average of parameters that get no gradient (a ReLU unit that stopped learning)
    decays into the denormal floats, where the CPU's square root is many times slower
    (docs/benchmarks.md, "Figures moved from the code"). Below the smallest normal
    float t, sqrt(var) / sqrt(1 - alpha^t) is under half an ulp of eps whenever this returns
    t, so sqrt(max(var, t)) + eps rounds to exactly eps, as sqrt(var) + eps does: the same
    bits, without the slow path. Returns 0 (no floor) where that cannot be guaranteed: eps
    inside the square root (no denormals reach it), or an eps so small that the bound fails.
    With tensor coefficients (a population's ``[k, 1]`` rows) the floor is a tensor: t for
    the rows where the bound holds, 0 for the others.
    """
    eps = c.eps
    correction = c.bias_correction2 if rule.bias_correction else 1.0
    if rule.eps_in_sqrt:
        return 0.0
    info = torch.finfo(v.dtype)
    if isinstance(eps, Tensor) or isinstance(correction, Tensor):
        eps_t = torch.as_tensor(eps, dtype=torch.float64, device=v.device)
        corr = torch.as_tensor(correction, dtype=torch.float64, device=v.device)
        bound = torch.sqrt(info.tiny / corr.clamp_min(info.tiny)) <= eps_t * info.eps / 4
        return torch.where(bound & (corr > 0), info.tiny, 0.0).to(v.dtype)
    if correction <= 0.0 or math.sqrt(info.tiny / correction) > eps * info.eps / 4:
        return 0.0
    return info.tiny


def denominator(state: State, rule: Rule, c: Coeffs) -> Tensor | None:
    """The denominator d of the update from the (already updated) state; None without one.

    PyTorch: sqrt(var) + eps. TF1/DeepMind: sqrt(var + eps). Centered variance is clamped at 0:
    rounding can make v - m^2 slightly negative, where torch returns NaN.
    """
    if rule.sq_mode == "none":
        return None
    v = state.square_avg
    bias_corrected = rule.bias_correction
    floor = _sqrt_floor(v, rule, c)
    if rule.centered:
        m = state.grad_avg
        if bias_corrected:
            v = v / c.bias_correction2
            m = m / c.bias_correction2
        var = v.addcmul(m, m, value=-1).clamp_min_(floor)
        return var.add_(c.eps).sqrt_() if rule.eps_in_sqrt else var.sqrt_().add_(c.eps)
    if rule.eps_in_sqrt:
        var = v / c.bias_correction2 if bias_corrected else v
        return var.add(c.eps).sqrt_()
    floored = isinstance(floor, Tensor) or floor > 0.0
    d = torch.clamp_min(v, floor).sqrt_() if floored else v.sqrt()
    if bias_corrected:
        # torch.optim.Adam divides sqrt(v) by sqrt(1 - beta2^t), not v by (1 - beta2^t).
        d = d.div_(c.sqrt_bias_correction2)
    return d.add_(c.eps)


def update_(param: Tensor, grad: Tensor, state: State, rule: Rule, c: Coeffs) -> None:
    """Apply one step of the unified rule in place to ``param`` and ``state``.

    Order of operations is OPTIMIZERS.md section 3 (torch's). A 16-bit ``param`` is updated
    through a float32 copy, since its state is float32.

    Args:
        param: parameters, ``[N]`` or ``[K, N]``; updated in place.
        grad: gradient of the same shape (never modified).
        state: state buffers of the same shape (float32 for 16-bit params); updated in place.
        rule: which terms exist.
        c: coefficients from :func:`coefficients`, floats or tensors broadcastable to ``param``.

    """
    work_dtype = state_dtype(param.dtype)
    p = param if param.dtype == work_dtype else param.to(work_dtype)
    g = grad if grad.dtype == work_dtype else grad.to(work_dtype)
    if rule.maximize:
        g = -g
    if rule.weight_decay:
        if rule.decoupled_weight_decay:
            p.mul_(c.decay)
        else:
            g = _added(g, p, c.weight_decay)

    v = state.square_avg
    if rule.sq_mode == "ema":
        _addcmul_(v.mul_(c.alpha), g, g, c.one_minus_alpha)
    elif rule.sq_mode == "sum":
        v.addcmul_(g, g, value=1)
    if rule.centered and rule.sq_mode != "none":
        m = state.grad_avg
        if rule.grad_avg_lerp:
            m.lerp_(g, c.one_minus_alpha)
        else:
            _add_(m.mul_(c.alpha), g, c.one_minus_alpha)
    d = denominator(state, rule, c)

    clr = c.step_size
    num = g
    if rule.use_beta1:
        num = state.exp_avg.lerp_(g, c.one_minus_beta1)

    if rule.use_momentum:
        _momentum_(p, num, d, state.momentum_buffer, rule, c, clr)
    elif d is None:
        _add_(p, num, -clr)
    else:
        _addcdiv_(p, num, d, -clr)

    if p is not param:
        param.copy_(p)


def _momentum_(
    p: Tensor, num: Tensor, d: Tensor | None, b: Tensor, rule: Rule, c: Coeffs, clr: Scalar
) -> None:
    """Heavy-ball momentum after normalisation, lr outside (torch) or inside (TF1) the buffer."""
    scale = clr if rule.lr_in_momentum else 1.0
    if rule.use_dampening:
        # torch.optim.SGD: the buffer starts as the first (normalised) gradient, undamped.
        fresh = _normalised(num, d, scale)
        if isinstance(c.first, Tensor):
            damped = torch.addcmul(b * c.momentum, fresh, c.one_minus_dampening)
            b.copy_(torch.where(c.first, fresh, damped))
        elif c.first:
            b.copy_(fresh)
        else:
            _add_(b.mul_(c.momentum), fresh, c.one_minus_dampening)
    elif d is None:
        _add_(b.mul_(c.momentum), num, scale)
    else:
        _addcdiv_(b.mul_(c.momentum), num, d, scale)

    direction = _added(_normalised(num, d, scale), b, c.momentum) if rule.nesterov else b
    if rule.lr_in_momentum:
        p.sub_(direction)
    else:
        _add_(p, direction, -clr)


def _added(x: Tensor, y: Tensor, alpha: Scalar) -> Tensor:
    """X + alpha * y as a new tensor (torch's ``x.add(y, alpha=alpha)`` for a float alpha)."""
    if isinstance(alpha, Tensor):
        return torch.addcmul(x, y, alpha)
    return x.add(y, alpha=alpha)


def _normalised(num: Tensor, d: Tensor | None, scale: Scalar) -> Tensor:
    """Scale * num / d as a new tensor (num / d when scale is the Python 1.0)."""
    step = num.clone() if d is None else num / d
    if isinstance(scale, float) and scale == 1.0:
        return step
    return step.mul_(scale)
