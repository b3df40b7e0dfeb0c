"""Vectorized, exact optimizers over flat buffers (imports torch only).

- :class:`RMSprop`: a ``torch.optim.Optimizer`` running the unified rule of OPTIMIZERS.md.
- :func:`make_optimizer` and :data:`PRESETS`: the published variants by name.
- :mod:`~rl_rmsprop.optim.functional`: the rule as plain functions over ``[N]`` or ``[K, N]``.
- :func:`clip_grad_norm_`, :func:`statistics`, :func:`histograms`: telemetry.
"""

from .functional import Coeffs, Hyper, Rule, State, coefficients, init_state, update_
from .presets import PRESETS, Preset, make_optimizer
from .rmsprop import RMSprop
from .stats import clip_grad_norm_, histograms, statistics, total_grad_norm

__all__ = [
    "PRESETS",
    "Coeffs",
    "Hyper",
    "Preset",
    "RMSprop",
    "Rule",
    "State",
    "clip_grad_norm_",
    "coefficients",
    "histograms",
    "init_state",
    "make_optimizer",
    "statistics",
    "total_grad_norm",
    "update_",
]
