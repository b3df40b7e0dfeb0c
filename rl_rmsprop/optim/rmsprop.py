"""``RMSprop``: a ``torch.optim.Optimizer`` over flat buffers running the unified update rule.

With torch's arguments it is ``torch.optim.RMSprop``; the keyword-only flags turn it into the
TF1/SB3, DeepMind, Graves or A3C variant, or into Adagrad, Adam and SGD (see ``presets.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim import optimizer as _optim_module

from .compiled import choose_impl, run_compiled
from .figures import count_skips
from .flat import FlatSpace
from .functional import Coeffs, Hyper, Rule, coefficients, update_
from .groups import PLAN_KEYS, hyper_of, rule_of, validate_group

IMPLS = ("auto", "eager", "compiled")


def _plain(method: Callable[..., Any]) -> Callable[..., Any]:
    """A ``torch.optim.Optimizer`` method without its ``torch._disable_dynamo`` wrapper.

    torch wraps ``add_param_group``, ``state_dict``, ``load_state_dict`` and ``zero_grad`` so
    that TorchDynamo never traces them; the wrapper imports ``torch._dynamo`` the first time
    it runs, which took ~0.95 s of every run's start-up on the build machine. Nothing here
    runs under TorchDynamo (the compiled kernels compile update functions, not these
    methods), so the plain method (``__wrapped__``, kept by ``functools.wraps``) is called.
    """
    return getattr(method, "__wrapped__", method)


class RMSprop(Optimizer):
    """RMSprop in every published variant, vectorized over flat buffers.

    With the positional arguments alone this reproduces ``torch.optim.RMSprop`` (bit for bit in
    float32 on the eager path). The keyword-only flags select the other variants of
    OPTIMIZERS.md; prefer :func:`rl_rmsprop.optim.make_optimizer` with a preset name.

    Each parameter's storage is moved into one flat buffer per (group, device, dtype) and its
    gradient becomes a view of a flat gradient buffer, so a step is a fixed number of
    whole-buffer operations (or one fused kernel) whatever the number of layers.

    Args:
        params: parameters or ``named_parameters()`` (names feed per-layer telemetry) or groups.
        lr: learning rate.
        alpha: decay of the square average and of the centering mean (Adam's beta2).
        eps: added to the denominator, outside or inside the square root.
        weight_decay: L2 penalty added to the gradient (or decoupled, see below).
        momentum: heavy-ball momentum applied after normalisation.
        centered: normalise by the running variance v - m^2 (clamped at 0).
        maximize: ascend the objective.
        eps_in_sqrt: denominator sqrt(v + eps) (TF1, DeepMind) instead of sqrt(v) + eps.
        initial_square_avg: v0; TF1 and SB3's RMSpropTFLike start at 1.
        lr_in_momentum: TF1/Graves order, b = mu b + lr g/d and p -= b.
        sq_mode: ``ema`` (RMSprop), ``sum`` (Adagrad) or ``none`` (SGD).
        bias_correction: divide v (and m) by 1 - alpha^t (Adam).
        beta1: Adam's first-moment decay; 0 disables it.
        nesterov: Nesterov momentum.
        dampening: SGD dampening of the momentum buffer.
        lr_decay: Adagrad's lr / (1 + (t - 1) lr_decay).
        decoupled_weight_decay: AdamW's p *= 1 - lr wd.
        grad_avg_lerp: update the centering mean with torch's ``lerp_`` (False: SB3/TF form).
        skip_nonfinite: skip a step whose gradients are not all finite and count it in
            :attr:`nonfinite_skipped` (:attr:`nonfinite_streak` counts such steps in a row).
            ``True`` decides on the host (one device sync per step) and touches nothing.
            ``"device"`` decides on the device without a sync: the step is computed and then
            undone with ``torch.where``, so parameters and state stay as they were, but step
            counts advance (only Adam's bias correction, Adagrad's ``lr_decay`` and SGD's
            ``dampening`` read them).
        impl: ``auto`` (a ``torch.compile`` fused kernel on CUDA and for large buffers, eager
            otherwise), ``eager`` or ``compiled``; a kernel that fails to compile falls back to
            eager. :attr:`impl` says what runs.

    Numeric hyperparameters may be changed in ``param_groups`` between steps (LR schedulers).

    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        maximize: bool = False,
        *,
        eps_in_sqrt: bool = False,
        initial_square_avg: float = 0.0,
        lr_in_momentum: bool = False,
        sq_mode: str = "ema",
        bias_correction: bool = False,
        beta1: float = 0.0,
        nesterov: bool = False,
        dampening: float = 0.0,
        lr_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        grad_avg_lerp: bool = True,
        skip_nonfinite: bool | str = False,
        impl: str = "auto",
    ) -> None:
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
        if skip_nonfinite not in (False, True, "device"):
            raise ValueError(
                f"skip_nonfinite must be False, True or 'device', got {skip_nonfinite!r}"
            )
        defaults = dict(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            maximize=maximize,
            eps_in_sqrt=eps_in_sqrt,
            initial_square_avg=initial_square_avg,
            lr_in_momentum=lr_in_momentum,
            sq_mode=sq_mode,
            bias_correction=bias_correction,
            beta1=beta1,
            nesterov=nesterov,
            dampening=dampening,
            lr_decay=lr_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            grad_avg_lerp=grad_avg_lerp,
        )
        self.skip_nonfinite = skip_nonfinite
        self._skipped: int | Tensor = 0
        self._streak: int | Tensor = 0
        self.impl_request = impl
        self.record_update = False
        """When True, the next step keeps a copy of the parameters (for update/param ratios)."""
        self._spaces: list[FlatSpace] = []
        self._plans: dict[int, tuple[tuple[Any, ...], tuple[Rule, Hyper, Coeffs | None]]] = {}
        super().__init__(params, defaults)
        self._build()

    # -- layout ------------------------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group as torch does, validate it and re-pack the flat buffers."""
        _plain(Optimizer.add_param_group)(self, param_group)
        validate_group(self.param_groups[-1])
        if self._spaces:
            self._build()

    @property
    def spaces(self) -> list[FlatSpace]:
        """The flat buffers, one per (group, device, dtype), in group order."""
        return self._spaces

    @property
    def impl(self) -> str:
        """What runs the update: ``eager``, ``compiled``, or ``mixed`` across buffers."""
        kinds = {space.impl for space in self._spaces} or {"eager"}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    def _build(self) -> None:
        """(Re)pack parameters into flat buffers, carrying any existing state over."""
        carried = {}
        for space in self._spaces:
            for i, p in enumerate(space.params):
                carried[p] = space.export_state(i)
        spaces = []
        index = 0
        for gi, group in enumerate(self.param_groups):
            names = group.get("param_names")
            by_key: dict[tuple[torch.device, torch.dtype], list[tuple[Tensor, int, str]]] = {}
            for k, p in enumerate(group["params"]):
                name = names[k] if names else f"param{index}"
                by_key.setdefault((p.device, p.dtype), []).append((p, index, name))
                index += 1
            rule = rule_of(group)
            for items in by_key.values():
                ps, ids, ns = zip(*items, strict=True)
                space = FlatSpace(ps, ids, ns, rule, group["initial_square_avg"], gi)
                for i, p in enumerate(ps):
                    if carried.get(p):
                        space.import_state(i, carried[p])
                space.impl = choose_impl(space, rule, hyper_of(group), self.impl_request)
                spaces.append(space)
        self._spaces = spaces

    # -- the step ----------------------------------------------------------------------------

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one optimization step (skipped entirely if gradients are non-finite).

        Args:
            closure: re-evaluates the model and returns the loss (optional).

        Returns:
            The closure's loss, if a closure was given.
        """
        # torch wraps every optimizer's step in a profiler range and hook loop that costs
        # more per call than our whole step on a small network; do the same work only
        # when it has an effect.
        if torch.autograd._profiler_enabled():
            with torch.autograd.profiler.record_function("Optimizer.step#RMSprop.step"):
                return self._hooked_step(closure)
        return self._hooked_step(closure)

    step.hooked = True  # tells torch.optim.Optimizer not to wrap it again

    def _hooked_step(self, closure: Callable[[], float] | None) -> float | None:
        pre_hooks = (_optim_module._global_optimizer_pre_hooks, self._optimizer_step_pre_hooks)
        post_hooks = (self._optimizer_step_post_hooks, _optim_module._global_optimizer_post_hooks)
        if not any(pre_hooks) and not any(post_hooks):
            with torch.no_grad():
                return self._step(closure)
        args, kwargs = (self,), {"closure": closure}
        for hooks in pre_hooks:
            for hook in list(hooks.values()):
                result = hook(self, args, kwargs)
                if result is not None:
                    args, kwargs = result
        with torch.no_grad():
            loss = self._step(kwargs.get("closure"))
        for hooks in post_hooks:
            for hook in list(hooks.values()):
                hook(self, args, kwargs)
        return loss

    def _step(self, closure: Callable[[], float] | None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for space in self._spaces:
            if space.params_moved():
                self._build()
                break
        plans = []
        for space in self._spaces:
            active = space.sync_grads()
            plans.append((space, active, space.segments(active)))
        if self.skip_nonfinite is True:
            bad = int(not _all_finite_host(plans))
            self._skipped, self._streak = count_skips(self._skipped, self._streak, bad)
            if bad:
                return loss
        guard = None
        if self.skip_nonfinite == "device":
            ok = _finite_flag(plans)
            guard = (ok, [])
            self._skipped, self._streak = count_skips(self._skipped, self._streak, (~ok).long())
        for space, active, segments in plans:
            if not segments:
                continue
            rule, hyper, t_free = self._plan(space)
            space.ensure_state(rule)
            if guard is not None:
                buffers = [space.data, *(s for s in space.state if s is not None)]
                guard[1].extend((b, b.clone()) for b in buffers)
            if self.record_update:
                space.prev_data = space.data.clone()
            for seg in segments:
                c = t_free or coefficients(rule, hyper, seg.t)
                p, g, state = space.slice(seg.start, seg.stop)
                if space.impl == "compiled":
                    run_compiled(p, g, state, rule, c)
                else:
                    update_(p, g, state, rule, c)
            space.advance(active)
        if guard is not None:  # undo the step where a gradient was not finite, without a sync
            ok, saved = guard
            for buffer, before in saved:
                buffer.copy_(torch.where(ok.to(buffer.device), buffer, before))
        self.record_update = False
        return loss

    @property
    def nonfinite_skipped(self) -> int:
        """Steps skipped because a gradient was not finite (reading it syncs in device mode)."""
        return int(self._skipped)

    @property
    def nonfinite_streak(self) -> int:
        """Skipped steps in a row, up to the last step (reading it syncs in device mode)."""
        return int(self._streak)

    def _plan(self, space: FlatSpace) -> tuple[Rule, Hyper, Coeffs | None]:
        """Rule, hyperparameters and (when they do not depend on t) coefficients of a buffer.

        Cached while the group's values stay the same: rebuilding them at every step is a
        noticeable share of a small network's step.
        """
        group = self.param_groups[space.group]
        key = tuple(map(group.__getitem__, PLAN_KEYS))
        cached = self._plans.get(space.group)
        if cached is not None and cached[0] == key and not isinstance(group["lr"], Tensor):
            return cached[1]
        rule, hyper = rule_of(group), hyper_of(group)
        depends_on_t = rule.use_beta1 or rule.bias_correction or rule.use_dampening
        t_free = None if depends_on_t or hyper.lr_decay else coefficients(rule, hyper, 2)
        self._plans[space.group] = (key, (rule, hyper, t_free))
        return rule, hyper, t_free

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero the gradients: one fill of each flat buffer (the gradient views stay attached).

        Args:
            set_to_none: set every ``p.grad`` to None as torch does by default; the next step
                then copies autograd's fresh gradients into the flat buffer (one extra copy).

        """
        for space in self._spaces:
            if set_to_none:
                space.clear_grads()
                continue
            space.grad.zero_()
            for p, view in zip(space.params, space.grad_views, strict=True):
                if p.grad is not None and p.grad is not view:
                    p.grad = None  # a foreign tensor: drop it, like torch's zeroed-and-unused
        return None

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Torch's format and names: per-parameter state copies keyed by index, and groups.

        Entries are ``step``, ``square_avg`` (``exp_avg_sq`` for Adam, ``sum`` for Adagrad),
        ``grad_avg``, ``exp_avg`` and ``momentum_buffer``, where the rule has them.
        """
        out = _plain(Optimizer.state_dict)(self)
        for space in self._spaces:
            for i, idx in enumerate(space.indices):
                entry = space.export_state(i)
                if entry:
                    out["state"][idx] = entry
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state from :meth:`state_dict` (or a torch optimizer's) and continue.

        Everything is checked before anything changes: a state that does not fit leaves the
        optimizer as it was.

        Raises:
            ValueError: the groups, hyperparameters or parameter sizes do not match.
        """
        saved = state_dict["state"]
        groups = copy.deepcopy(state_dict["param_groups"])
        for group in groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)  # a torch optimizer's groups lack our flags
            validate_group(group)
        for space in self._spaces:
            for i, idx in enumerate(space.indices):
                for name, value in saved.get(idx, {}).items():
                    if name != "step" and value.numel() != space.numels[i]:
                        raise ValueError(
                            f"optimizer state {name!r} of parameter {space.names[i]!r} has "
                            f"{value.numel()} elements, the parameter has {space.numels[i]}: "
                            "the state belongs to a different network"
                        )
        _plain(Optimizer.load_state_dict)(self, {"state": {}, "param_groups": groups})
        for space in self._spaces:
            group = self.param_groups[space.group]
            space.reset_state(rule_of(group), group["initial_square_avg"])
            for i, idx in enumerate(space.indices):
                if idx in saved:
                    space.import_state(i, saved[idx])
        self.state.clear()


def _all_finite_host(plans: list[tuple[FlatSpace, list[bool], list[Any]]]) -> bool:
    """Whether every gradient about to be applied is finite, decided on the host.

    A float32/float64 CPU buffer is checked as ``dot(g, 0) == 0``: a finite g_i gives g_i * 0 = 0
    exactly and an inf or nan gives nan, which no sum of products turns back into 0, so the test is
    exact and cannot overflow. It is one BLAS call where ``torch.isfinite(g).all()`` runs several
    kernels (docs/benchmarks.md, "Figures moved from the code"). Other buffers go through
    :func:`_finite_flag` and one sync.
    """
    rest = []
    for plan in plans:
        space, _, segments = plan
        grad = space.grad
        if grad.device.type == "cpu" and grad.dtype in (torch.float32, torch.float64):
            zeros = space.zeros()
            for seg in segments:
                if torch.dot(grad[seg.start : seg.stop], zeros[seg.start : seg.stop]) != 0:
                    return False
        else:
            rest.append(plan)
    return not rest or bool(_finite_flag(rest))


def _finite_flag(plans: list[tuple[FlatSpace, list[bool], list[Any]]]) -> Tensor:
    """A 0-d bool tensor: every gradient about to be applied is finite (no host sync)."""
    flags = [
        torch.isfinite(space.grad[seg.start : seg.stop]).all()
        for space, _, segments in plans
        for seg in segments
    ]
    if not flags:
        return torch.tensor(True)
    first = flags[0].device
    return torch.stack([f.to(first) for f in flags]).all()
