"""Flat buffers: the parameters of one (group, device, dtype) packed into one contiguous tensor.

Each parameter's ``.data`` becomes a view into :attr:`FlatSpace.data`, and its ``.grad`` a view
into :attr:`FlatSpace.grad`, so autograd accumulates straight into the flat gradient and an
optimizer step is a handful of whole-buffer operations. Two things can break the views and are
checked at every step, at the cost of one identity test per parameter:

- ``zero_grad(set_to_none=True)`` or user code replacing ``p.grad``: autograd then hands over a
  fresh tensor; :meth:`FlatSpace.sync_grads` copies it into the flat gradient and re-attaches
  the view.
- ``module.to(...)`` or assigning ``p.data``: the parameter no longer lives in the buffer;
  :meth:`FlatSpace.params_moved` tells the optimizer to rebuild the layout.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from operator import attrgetter, is_
from typing import NamedTuple

import torch
from torch import Tensor

from .functional import Rule, State, init_state

STATE_NAMES = State._fields


def torch_state_names(rule: Rule) -> tuple[str, ...]:
    """Names of the :class:`State` entries in the matching torch optimizer's ``state_dict``.

    ``square_avg`` is Adam's ``exp_avg_sq`` and Adagrad's ``sum``; the rest keep their names.
    """
    if rule.bias_correction:
        return ("exp_avg_sq", *STATE_NAMES[1:])
    if rule.sq_mode == "sum":
        return ("sum", *STATE_NAMES[1:])
    return STATE_NAMES


_grad_of = attrgetter("grad")
_data_ptr = Tensor.data_ptr


class Segment(NamedTuple):
    """A contiguous run of parameters updated together: elements [start, stop), step count t."""

    start: int
    stop: int
    t: int


class FlatSpace:
    """Parameters of one group on one (device, dtype), their gradients and optimizer state.

    Args:
        params: the parameters, in group order; their storage is moved into the flat buffer.
        indices: each parameter's index across all groups (its key in ``state_dict``).
        names: each parameter's name, for per-parameter telemetry.
        rule: the update rule (decides which state buffers exist).
        initial_square_avg: starting value of the square average.
        group: index of the parameter group in the optimizer.

    """

    def __init__(
        self,
        params: Sequence[Tensor],
        indices: Sequence[int],
        names: Sequence[str],
        rule: Rule,
        initial_square_avg: float,
        group: int = 0,
    ) -> None:
        self.group = group
        self.impl = "eager"
        """What runs the update on this buffer: ``eager`` or ``compiled``."""
        self.prev_data: Tensor | None = None
        """Parameters before the last step, kept only when an update ratio was asked for."""
        self.params = list(params)
        self.indices = list(indices)
        self.names = list(names)
        self.numels = [p.numel() for p in self.params]
        self.offsets = [0]
        for n in self.numels:
            self.offsets.append(self.offsets[-1] + n)
        first = self.params[0]
        self.device, self.dtype = first.device, first.dtype
        total = self.offsets[-1]
        self.data = torch.empty(total, dtype=self.dtype, device=self.device)
        self.grad = torch.zeros(total, dtype=self.dtype, device=self.device)
        self.grad_views: list[Tensor] = []
        self._zeros: Tensor | None = None
        for p, a, b in zip(self.params, self.offsets, self.offsets[1:], strict=False):
            self.data[a:b].copy_(p.detach().reshape(-1))
            p.data = self.data[a:b].view_as(p)
            self.grad_views.append(self.grad[a:b].view_as(p))
        self.ptrs = [p.data_ptr() for p in self.params]
        self.all_active = [True] * len(self.params)
        self.attached = [False] * len(self.params)
        """Whether each ``p.grad`` is its view of the flat gradient."""
        self.initial_square_avg = initial_square_avg
        self.state = init_state(self.data, rule, initial_square_avg)
        self.rule = rule
        """The rule the state buffers were last checked against."""
        self.steps = [0] * len(self.params)
        """Per-parameter step counts, as torch keeps them (0 = no state yet)."""

    @property
    def numel(self) -> int:
        """Number of elements in the buffer."""
        return self.offsets[-1]

    def zeros(self) -> Tensor:
        """A zero vector the size of the buffer (made once; for the host-side finite check)."""
        if self._zeros is None:
            self._zeros = torch.zeros_like(self.grad)
        return self._zeros

    def params_moved(self) -> bool:
        """True when some parameter no longer lives in the flat buffer (``.to()``, ``.data =``)."""
        return list(map(_data_ptr, self.params)) != self.ptrs

    def ensure_state(self, rule: Rule) -> None:
        """Allocate state buffers that ``rule`` needs and this space lacks (a flag turned on)."""
        if rule is self.rule:
            return
        self.rule = rule
        needed = (
            rule.sq_mode != "none",
            rule.centered and rule.sq_mode != "none",
            rule.use_beta1,
            rule.use_momentum,
        )
        if all(s is not None or not need for s, need in zip(self.state, needed, strict=True)):
            return
        fresh = init_state(self.data, rule, self.initial_square_avg)
        self.state = State(
            *(old if old is not None else new for old, new in zip(self.state, fresh, strict=True))
        )

    def reset_state(self, rule: Rule, initial_square_avg: float) -> None:
        """Forget all state: fresh buffers for ``rule`` and no steps taken."""
        self.initial_square_avg = initial_square_avg
        self.state = init_state(self.data, rule, initial_square_avg)
        self.rule = rule
        self.steps = [0] * len(self.params)

    def sync_grads(self) -> list[bool]:
        """Pull foreign ``p.grad`` tensors into the flat gradient; say which params have a grad.

        Keeps the invariant that the flat gradient is zero wherever a parameter has no
        gradient, so whole-buffer norms and checks need no masking.

        Returns:
            One flag per parameter: True where the parameter has a gradient this step.

        """
        if all(map(is_, map(_grad_of, self.params), self.grad_views)):
            return self.all_active  # every gradient is its view: the usual step
        active = []
        for i, (p, view) in enumerate(zip(self.params, self.grad_views, strict=True)):
            g = p.grad
            if g is None:
                if self.attached[i]:
                    view.zero_()
                    self.attached[i] = False
                active.append(False)
                continue
            if g is not view:
                if g.is_sparse:
                    raise ValueError("rl_rmsprop optimizers do not support sparse gradients")
                view.copy_(g)
                p.grad = view
                self.attached[i] = True
            active.append(True)
        return active

    def clear_grads(self) -> None:
        """Set every ``p.grad`` to None (torch's ``zero_grad(set_to_none=True)``)."""
        for p in self.params:
            p.grad = None
        self.grad.zero_()
        self.attached = [False] * len(self.params)

    def segments(self, active: Sequence[bool]) -> list[Segment]:
        """Maximal runs of active parameters sharing a step count (one run in the usual case)."""
        if active is self.all_active and self.steps.count(self.steps[0]) == len(self.steps):
            return [Segment(0, self.numel, self.steps[0] + 1)]
        runs: list[Segment] = []
        for i, on in enumerate(active):
            if not on:
                continue
            a, b, t = self.offsets[i], self.offsets[i + 1], self.steps[i] + 1
            if runs and runs[-1].stop == a and runs[-1].t == t:
                runs[-1] = Segment(runs[-1].start, b, t)
            else:
                runs.append(Segment(a, b, t))
        return runs

    def advance(self, active: Sequence[bool]) -> None:
        """Count one step for every active parameter."""
        if active is self.all_active and self.steps.count(self.steps[0]) == len(self.steps):
            self.steps = [self.steps[0] + 1] * len(self.steps)
        else:
            self.steps = [s + 1 if on else s for s, on in zip(self.steps, active, strict=True)]

    def slice(self, start: int, stop: int) -> tuple[Tensor, Tensor, State]:
        """Parameters, gradient and state restricted to elements [start, stop) (views)."""
        if start == 0 and stop == self.numel:
            return self.data, self.grad, self.state
        state = State(*(None if s is None else s[start:stop] for s in self.state))
        return self.data[start:stop], self.grad[start:stop], state

    def active_slices(self, buffer: Tensor) -> Iterator[Tensor]:
        """Views of ``buffer`` over the parameters that have state (have been stepped)."""
        if all(self.steps):
            yield buffer
            return
        for i, s in enumerate(self.steps):
            if s:
                yield buffer[self.offsets[i] : self.offsets[i + 1]]

    def export_state(self, i: int) -> dict[str, Tensor]:
        """Parameter ``i``'s state in torch's per-parameter form (copies); {} if never stepped."""
        if not self.steps[i]:
            return {}
        a, b = self.offsets[i], self.offsets[i + 1]
        shape = self.params[i].shape
        out = {"step": torch.tensor(float(self.steps[i]), dtype=torch.float32)}
        for name, buf in zip(torch_state_names(self.rule), self.state, strict=True):
            if buf is not None:
                out[name] = buf[a:b].view(shape).clone()
        return out

    def import_state(self, i: int, entry: dict[str, Tensor | float]) -> None:
        """Load parameter ``i``'s state from torch's per-parameter form (sizes already checked)."""
        a, b = self.offsets[i], self.offsets[i + 1]
        step = entry.get("step", 0)
        self.steps[i] = int(step.item() if isinstance(step, Tensor) else step)
        names = zip(torch_state_names(self.rule), STATE_NAMES, self.state, strict=True)
        for name, generic, buf in names:
            value = entry.get(name, entry.get(generic))
            if buf is not None and value is not None:
                buf[a:b].copy_(value.reshape(-1))
