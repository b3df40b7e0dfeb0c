"""One optimizer over a population: K members' flat ``[K, N]`` buffers, per-member everything.

Members are rows. Each optimizer family (one :class:`~rl_rmsprop.optim.functional.Rule`: which
terms the update has) owns a contiguous block of rows and is updated by the functional core in
one call, with ``[k, 1]`` tensors for the members' hyperparameters and step counts. Gradient
clipping, the non-finite check and every telemetry figure are per member (reductions along
the rows), so a member's update never depends on another member's gradient or settings.

Coefficients are computed in float64 (as torch.optim computes its Python scalars) and rounded
once to the buffer's dtype, and the tensor form of the rule rounds as the scalar form's fused
primitives do: a member's update is bit for bit the one a single run's :class:`RMSprop` makes
with the same settings (tested for every preset).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .figures import (
    clip_coefficient,
    count_skips,
    eps_dominated,
    gradient_figures,
    histogram_samples,
    layer_figures,
    state_figures,
    step_figures,
    update_ratio,
)
from .functional import Coeffs, Hyper, Rule, State, coefficients, denominator, init_state, update_
from .groups import hyper_of, rule_of
from .presets import preset_group

ROW_BY_ROW_MIN = 16_384
"""Rows at least this long whose members differ are updated one member at a time: for 16
members on one core, 4,610-element rows (A2C's CartPole network) step faster in the tensor
form, 67,074-element rows (DQN's) one by one (``benchmarks/population_step.py``)."""


@dataclass
class Block:
    """The contiguous rows of one optimizer family."""

    start: int
    stop: int
    rule: Rule
    hyper: Hyper
    """``[k, 1]`` float64 tensors (on the buffer's device)."""
    state: State
    cached: Coeffs | None = None
    """The coefficients at t = 2: those that do not depend on the step count (computed once)."""
    decays: bool = False
    """Whether a member has an lr decay (then ``clr`` depends on the step count)."""
    shared: Hyper | None = None
    """The members' hyperparameters as Python floats when they are all the same (a block of
    seeds): the update then takes a single run's scalar coefficients and fused operations."""
    each: tuple[Hyper, ...] = ()
    """Every member's hyperparameters as Python floats: for a row-by-row update, and for the
    bias corrections' powers, taken on the host as a single run takes them (a tensor ``pow``
    may differ from the C library's in the last bit, which float64 buffers would show)."""

    @property
    def rows(self) -> slice:
        """The block's rows of the population buffers."""
        return slice(self.start, self.stop)


def member_settings(name: str, overrides: Mapping[str, Any]) -> tuple[Rule, Hyper, float]:
    """The rule, hyperparameters and initial square average of one member's optimizer spec.

    Raises:
        ValueError: for an unknown spec or a bad value (as :func:`make_optimizer`).
    """
    group = preset_group(name, **overrides)
    return rule_of(group), hyper_of(group), float(group["initial_square_avg"])


class PopulationOptimizer:
    """The unified update rule over ``[K, N]`` member rows, one block per optimizer family.

    Args:
        data: ``[K, N]`` parameters (member k's in row k); updated in place.
        grad: ``[K, N]`` gradients, same layout.
        specs: one ``(preset name, overrides)`` per member; members of one family (same
            :class:`Rule`) must be adjacent rows.
        names: ``(name, offset, numel)`` of each parameter within a row, for per-layer norms,
            in the order of the member network's parameters (a single run's flat buffer):
            gradient norms are summed in that order, so clipping takes a single run's bits.

    Raises:
        ValueError: a bad spec, a shape mismatch, or one family's members not adjacent.
    """

    def __init__(
        self,
        data: Tensor,
        grad: Tensor,
        specs: Sequence[tuple[str, Mapping[str, Any]]],
        names: Sequence[tuple[str, int, int]] = (),
    ) -> None:
        if data.dim() != 2 or grad.shape != data.shape or len(specs) != data.shape[0]:
            raise ValueError("data and grad must be [K, N] with one spec per row")
        self.data, self.grad, self.names = data, grad, list(names)
        offsets = [offset for _, offset, _ in self.names]
        self._order: Tensor | None = None
        """The row's elements in ``names`` order, where that is not the row's own: a norm
        sums its squares in the single run's order and so has its bits."""
        if offsets != sorted(offsets):
            parts = [torch.arange(o, o + n) for _, o, n in self.names]
            self._order = torch.cat(parts).to(data.device)
        settings = [member_settings(name, dict(over)) for name, over in specs]
        self.blocks: list[Block] = []
        start = 0
        for k in range(1, len(settings) + 1):
            if k < len(settings) and settings[k][0] == settings[start][0]:
                continue
            rule = settings[start][0]
            if any(b.rule == rule for b in self.blocks):
                raise ValueError(
                    "members of one optimizer family must be adjacent rows; order them by family"
                )
            self.blocks.append(self._block(start, k, rule, settings[start:k]))
            start = k
        device = data.device
        self.steps = torch.zeros(len(specs), 1, dtype=torch.float64, device=device)
        self._host_steps = [0] * len(specs)
        """``steps`` on the host, for the bias corrections' powers."""
        self.skipped = torch.zeros(len(specs), dtype=torch.long, device=device)
        self.streak = torch.zeros(len(specs), dtype=torch.long, device=device)
        self.frozen = torch.zeros(len(specs), dtype=torch.bool, device=device)
        """Members that take no more steps (e.g. diverged); set by the caller."""
        self.record_update = False
        self.lr_scale = 1.0
        """Every member's lr is its own times this (a schedule's factor; set between steps)."""
        self._prev: Tensor | None = None
        self._streaking = False

    def _block(
        self, start: int, stop: int, rule: Rule, settings: list[tuple[Rule, Hyper, float]]
    ) -> Block:
        column = self._column
        each = tuple(Hyper(*map(float, h)) for _, h, _ in settings)
        hyper = Hyper(*(column(list(values)) for values in zip(*each, strict=True)))
        rows = self.data[start:stop]
        state = init_state(rows, rule, 0.0)
        if state.square_avg is not None:
            state.square_avg.copy_(column([v0 for _, _, v0 in settings]).expand_as(rows))
        shared = each[0] if len(set(each)) == 1 else None
        return Block(start, stop, rule, hyper, state, shared=shared, each=each)

    @property
    def members(self) -> int:
        """K."""
        return self.data.shape[0]

    def hyper_column(self, field: str) -> Tensor:
        """One hyperparameter of every member, ``[K]`` float64."""
        return torch.cat([getattr(b.hyper, field).squeeze(1) for b in self.blocks])

    # -- the step --------------------------------------------------------------------------

    def grad_norms(self) -> Tensor:
        """Each member's gradient L2 norm, ``[K]``, summed in its single run's order."""
        grad = self.grad if self._order is None else self.grad[:, self._order]
        return torch.linalg.vector_norm(grad, dim=1)

    def clip_grad_norm_(self, max_norm: float) -> Tensor:
        """Scale each member's gradient to an L2 norm of at most ``max_norm``; norms before, [K].

        The rule of ``torch.nn.utils.clip_grad_norm_`` (coefficient max_norm / (norm + 1e-6),
        capped at 1), applied per member.
        """
        norms = self.grad_norms()
        self.grad.mul_(clip_coefficient(norms, max_norm).unsqueeze(1))  # the gradient's dtype
        return norms

    def _coeffs(self, block: Block) -> Coeffs:
        """The block's coefficients at its members' step counts, in the buffer's dtype.

        The ones that do not depend on t are computed once (per lr, under a schedule); at each step
        only those that do (lr decay, bias corrections, SGD's first step) are, by the formulas of
        :func:`~rl_rmsprop.optim.functional.coefficients` (a third of the cost of computing them
        all, for Adam's bias corrections; docs/benchmarks.md, "Figures moved from the code"). The
        powers of the bias corrections are the host's.
        """
        rule, hyper = block.rule, block.hyper
        steps = self._host_steps[block.start : block.stop]
        if block.shared is not None and steps.count(steps[0]) == len(steps):
            # Every member alike: a single run's Python floats (the same values as the
            # tensor form's, which rounds alike) and its fused scalar operations, which are faster.
            return coefficients(rule, self._scaled(block.shared), steps[0])
        if self.lr_scale != 1.0:  # as a single run's scheduled group lr, in double precision
            hyper = self._scaled(hyper)
            base = self._cast(coefficients(rule, hyper, 2))
            block.decays = bool((hyper.lr_decay != 0).any())
        else:
            if block.cached is None:
                block.cached = self._cast(coefficients(rule, hyper, 2))
                block.decays = bool((hyper.lr_decay != 0).any())
            base = block.cached
        if not (rule.use_beta1 or rule.bias_correction or rule.use_dampening or block.decays):
            return base
        t = self.steps[block.rows]
        now: dict[str, Any] = {}
        clr = hyper.lr
        if block.decays:
            now["clr"] = now["step_size"] = clr = hyper.lr / (1 + (t - 1) * hyper.lr_decay)
        if rule.use_beta1:
            bc1 = self._column([1 - h.beta1**n for h, n in zip(block.each, steps, strict=True)])
            now["bias_correction1"], now["step_size"] = bc1, clr / bc1
        if rule.bias_correction:
            bc2 = [1 - h.alpha**n for h, n in zip(block.each, steps, strict=True)]
            now["bias_correction2"] = self._column(bc2)
            now["sqrt_bias_correction2"] = self._column([x**0.5 for x in bc2])
        if rule.use_dampening:
            now["first"] = t == 1
        dtype = self.data.dtype
        return base._replace(
            **{k: v.to(dtype) if v.is_floating_point() else v for k, v in now.items()}
        )

    def _scaled(self, hyper: Hyper) -> Hyper:
        """``hyper`` with its lr times the schedule's factor (Python floats or columns)."""
        return hyper if self.lr_scale == 1.0 else hyper._replace(lr=hyper.lr * self.lr_scale)

    def _column(self, values: list[float]) -> Tensor:
        """``[k, 1]`` float64 on the buffers' device."""
        return torch.tensor(values, dtype=torch.float64, device=self.data.device).unsqueeze(1)

    def _cast(self, c: Coeffs) -> Coeffs:
        dtype = self.data.dtype
        return Coeffs(
            *(x.to(dtype) if isinstance(x, Tensor) and x.is_floating_point() else x for x in c)
        )

    @torch.no_grad()
    def step(self, norms: Tensor | None = None) -> Tensor:
        """One update of every member whose gradient is finite and who is not frozen.

        Args:
            norms: the members' gradient norms if already known (from clipping); a member whose
                norm is not finite has a non-finite gradient.

        Returns:
            ``[K]`` bool: which members were updated.
        """
        if norms is None:
            norms = self.grad_norms()
        finite = torch.isfinite(norms)
        ok = finite & ~self.frozen
        everyone = bool(ok.all())
        if self.record_update:
            self._prev = self.data.clone()
        if everyone:
            self.steps += 1
            self._host_steps = [n + 1 for n in self._host_steps]
        else:  # keep the skipped members' rows and state to put back
            keep = ~ok
            saved = (self.data[keep].clone(), self._state_rows(keep))
            self.steps += ok.unsqueeze(1).to(self.steps.dtype)
            stepped = ok.tolist()
            self._host_steps = [n + s for n, s in zip(self._host_steps, stepped, strict=True)]
        for block in self.blocks:
            self._update(block, None if everyone else stepped)
        if not everyone:
            self.data[keep] = saved[0]
            self._restore_state_rows(keep, saved[1])
            bad = (~finite & ~self.frozen).long()
            self.skipped, self.streak = count_skips(self.skipped, self.streak, bad)
        elif self._streaking:
            self.streak.zero_()
        self._streaking = not everyone
        return ok

    @property
    def streaking(self) -> bool:
        """Whether the last step skipped a member (else every ``streak`` is 0)."""
        return self._streaking

    def _update(self, block: Block, stepped: list[bool] | None) -> None:
        """One block's update; ``stepped``: which members step (None: all of them).

        Three forms, all with a single run's bits: members alike at one step count take one
        call with a single run's scalar coefficients; members that differ take the ``[k, 1]``
        tensor form, or, for rows of at least :data:`ROW_BY_ROW_MIN` elements, one scalar
        call per member (fused operations, no ``[k, N]`` temporaries: faster there).
        """
        members = range(block.start, block.stop)
        live = list(members) if stepped is None else [i for i in members if stepped[i]]
        if not live:
            return  # every member of the block skips this step
        rows, rule = block.rows, block.rule
        steps = self._host_steps[block.start : block.stop]
        alike = block.shared is not None and steps.count(steps[0]) == len(steps)
        if alike or self.data.shape[1] < ROW_BY_ROW_MIN:
            update_(self.data[rows], self.grad[rows], block.state, rule, self._coeffs(block))
            return
        for i in live:
            hyper = self._scaled(block.each[i - block.start])
            state = State(*(None if x is None else x[i - block.start] for x in block.state))
            c = coefficients(rule, hyper, self._host_steps[i])
            update_(self.data[i], self.grad[i], state, rule, c)

    def _state_rows(self, mask: Tensor) -> list[list[Tensor | None]]:
        out = []
        for block in self.blocks:
            m = mask[block.rows]
            out.append([None if s is None else s[m].clone() for s in block.state])
        return out

    def _restore_state_rows(self, mask: Tensor, saved: list[list[Tensor | None]]) -> None:
        for block, rows in zip(self.blocks, saved, strict=True):
            m = mask[block.rows]
            for s, r in zip(block.state, rows, strict=True):
                if s is not None:
                    s[m] = r

    # -- checkpoints -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Every block's state, the step counts and the non-finite bookkeeping (copies)."""
        return {
            "blocks": [[None if t is None else t.clone() for t in b.state] for b in self.blocks],
            "steps": self.steps.clone(),
            "skipped": self.skipped.clone(),
            "streak": self.streak.clone(),
            "frozen": self.frozen.clone(),
            "streaking": self._streaking,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (same specs, same shapes).

        Raises:
            ValueError: the state belongs to another population.
        """
        blocks = state["blocks"]
        if len(blocks) != len(self.blocks):
            raise ValueError("the optimizer state has other optimizer families")
        for block, saved in zip(self.blocks, blocks, strict=True):
            for mine, theirs in zip(block.state, saved, strict=True):
                if (mine is None) != (theirs is None) or (
                    mine is not None and mine.shape != theirs.shape
                ):
                    raise ValueError("the optimizer state has another shape")
                if mine is not None:
                    mine.copy_(theirs)
        for name in ("steps", "skipped", "streak", "frozen"):
            getattr(self, name).copy_(state[name])
        self._host_steps = [int(n) for n in self.steps.squeeze(1).tolist()]
        self._streaking = state["streaking"]

    # -- telemetry ---------------------------------------------------------------------------

    @torch.no_grad()
    def statistics(
        self, preclip: Tensor | None = None, max_norm: float | None = None, per_param: bool = True
    ) -> list[dict[str, float]]:
        """The ``grad/*`` and ``optim/*`` figures of every member, as single runs log them.

        Call after :meth:`step`. Reductions run along rows, so each member's figures are its
        own; a figure a member's optimizer does not have (SGD's square average) is left out.

        Returns:
            One dict of tag -> value per member.
        """
        cols = gradient_figures(self.grad_norms(), preclip, max_norm)
        if per_param:
            cols.update(layer_figures(self.grad, self.names))
        per_block = [self._block_figures(block) for block in self.blocks]
        ratio = None if self._prev is None else update_ratio(self.data, self._prev)
        self._prev = None
        lr = self.hyper_column("lr") * self.lr_scale
        cols.update(step_figures(lr, self.skipped, ratio))
        out: list[dict[str, float]] = [{} for _ in range(self.members)]
        for tag, col in cols.items():
            for k, value in enumerate(col.tolist()):
                out[k][tag] = value
        for block, figures in zip(self.blocks, per_block, strict=True):
            for tag, col in figures.items():
                for k, value in enumerate(col.tolist(), start=block.start):
                    out[k][tag] = value
        return out

    def _block_figures(self, block: Block) -> dict[str, Tensor]:
        rows = block.rows
        if not bool((self.steps[rows] > 0).all()):
            return {}
        c = self._coeffs(block)
        d = denominator(block.state, block.rule, c)
        if d is None:  # SGD: every element's rate is the lr, and no eps
            clr = torch.as_tensor(c.clr, dtype=self.data.dtype, device=self.data.device)
            clr = clr.reshape(-1, 1).expand(block.stop - block.start, 1)
            return state_figures(None, clr, torch.zeros_like(clr, dtype=torch.bool))
        dominated = eps_dominated(d, block.rule, c.eps)
        return state_figures(block.state.square_avg, c.clr / d, dominated)

    def histograms(self, k: int, max_elements: int = 1 << 16) -> dict[str, Tensor]:
        """Member k's samples for the ``optim/sq_avg`` and ``grad/values`` histograms."""
        block = next(b for b in self.blocks if b.start <= k < b.stop)
        v = block.state.square_avg
        return histogram_samples(
            self.grad[k], None if v is None else v[k - block.start], max_elements
        )
