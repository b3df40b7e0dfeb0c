"""The fused path: the functional rule compiled by ``torch.compile`` into one kernel per buffer.

The kernel is tried once on copies of a buffer when the optimizer is built and checked against
the eager rule; where compilation fails (no C++ compiler, no Triton, an unsupported platform)
or disagrees, that buffer stays on the eager path. Nothing is printed: ``optimizer.impl`` says
which path runs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .functional import Coeffs, Hyper, Rule, State, coefficients, state_dtype, update_

AUTO_COMPILE_MIN_NUMEL = 1 << 18
"""On CPU, ``impl="auto"`` compiles buffers at least this large; below it the eager ops win or
come close, and compiling (the trial step included) takes seconds at start-up even with the kernel
cached on disk; Adam gains nothing from compiling at these sizes. The threshold was lower until the
eager denominator learned to floor denormal variances
(:func:`~rl_rmsprop.optim.functional.denominator`). The measurements: docs/benchmarks.md, "Figures
moved from the code"."""

_TRIAL_RTOL = {torch.float64: 1e-9, torch.float32: 1e-4}
_kernel = None


def _fused(p: Tensor, g: Tensor, state: State, rule: Rule, hp: Tensor, first: bool) -> None:
    update_(p, g, state, rule, Coeffs(*hp.unbind(0), first=first))


def _compiled_kernel():
    global _kernel
    if _kernel is None:
        # dynamic=True: one kernel serves every buffer size; the rule is a guarded constant.
        _kernel = torch.compile(_fused, dynamic=True, fullgraph=True)
    return _kernel


def run_compiled(p: Tensor, g: Tensor, state: State, rule: Rule, c: Coeffs) -> None:
    """Apply the rule with the compiled kernel; coefficients travel as one small tensor."""
    hp = torch.tensor(c[:-1], dtype=state_dtype(p.dtype), device=p.device)
    _compiled_kernel()(p, g, state, rule, hp, bool(c.first) and rule.use_dampening)


def choose_impl(space: object, rule: Rule, hyper: Hyper, request: str) -> str:
    """Decide ``eager`` or ``compiled`` for one flat buffer.

    Args:
        space: a :class:`~rl_rmsprop.optim.flat.FlatSpace`.
        rule: its update rule.
        hyper: its hyperparameters (used for the trial step).
        request: ``auto``, ``eager`` or ``compiled``.

    """
    if request == "eager":
        return "eager"
    if request == "auto" and space.device.type != "cuda" and space.numel < AUTO_COMPILE_MIN_NUMEL:
        return "eager"
    return "compiled" if trial(space.data, space.state, rule, hyper) else "eager"


@torch.no_grad()
def trial(data: Tensor, state: State, rule: Rule, hyper: Hyper) -> bool:
    """Run one compiled and one eager step on copies; True when both work and agree."""
    gen = torch.Generator().manual_seed(0)
    grad = torch.randn(data.shape, generator=gen).to(data.device, data.dtype)
    c = coefficients(rule, hyper, 1)
    deltas = []
    try:
        for fn in (update_, run_compiled):
            p = data.clone()
            fn(p, grad, State(*(None if s is None else s.clone() for s in state)), rule, c)
            deltas.append((p - data).double())
    except Exception:  # any compiler failure means: stay eager
        return False
    eager, fused = deltas
    rtol = _TRIAL_RTOL.get(state_dtype(data.dtype), 1e-2)
    scale = eager.abs().max().item() if eager.numel() else 0.0
    return bool(((eager - fused).abs() <= rtol * scale + 1e-30).all())
