"""K copies of one network as a single module: parameters ``[K, ...]`` over a flat ``[K, N]`` row.

Member k's parameters are row k of one ``[K, N]`` buffer and its gradients row k of another,
so one optimizer step over ``[K, N]`` trains every member (``rl_rmsprop.optim.population``).
The forward pass is the network's own ``forward``, vectorized over the members by
``torch.func.vmap`` of ``functional_call``: no second copy of any network is written, and a
CNN is batched as well as an MLP. The small-MLP CPU engines (``agents.numpy_mlp``) read NumPy
views of the same leaves.

Members never influence each other: vmap runs every operation per member, and the loss that
is differentiated is the sum of the members' losses, whose gradient with respect to member
k's parameters is exactly member k's own.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap


def backward_into_rows(loss: Tensor) -> None:
    """``loss.backward()`` for leaves that view rows of a ``[K, N]`` buffer.

    Such leaves are not dense, and autograd warns (once a process) that their equally strided
    gradients break its layout contract; accumulation still lands in place, in the rows. The
    warning is silenced here, for this call only.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout")
        loss.backward()


class Segment(NamedTuple):
    """Where one named parameter of a member lives in its row of the flat buffer."""

    name: str
    offset: int
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)


class StackedModule:
    """K members of one architecture, called on ``[K, B, ...]`` inputs.

    Args:
        members: the members' networks (same architecture), initialised as single runs are;
            their parameters are copied into the flat buffer. A copy of the first one is the
            architecture vmap calls (a submodule's ``channels_last`` switch is turned off:
            vmap cannot query memory formats; one member is called without vmap).
        device: where the buffers live.
        grad: whether the leaves take gradients (False for a target network).
        rows: an existing ``(data, grad, segments)`` row layout to view instead of building
            one (another class's buffers, e.g. a layout with fused layers); the members'
            parameters are then not copied.
    """

    def __init__(
        self,
        members: Sequence[nn.Module],
        device: torch.device | str = "cpu",
        grad: bool = True,
        rows: tuple[Tensor, Tensor, Sequence[Segment]] | None = None,
    ) -> None:
        if not members:
            raise ValueError("a population needs at least one member")
        named = [dict(net.named_parameters()) for net in members]
        shapes = {n: tuple(p.shape) for n, p in named[0].items()}
        if any({n: tuple(p.shape) for n, p in d.items()} != shapes for d in named):
            raise ValueError("population members must have the same architecture")
        if any(True for _ in members[0].buffers()):
            raise ValueError("stacked members cannot have buffers (batch-norm statistics)")
        self.members = len(members)
        if rows is not None:
            self.data, self.grad, segments = rows
            self.segments = list(segments)
        else:
            self.segments = []
            offset = 0
            for name, shape in shapes.items():
                self.segments.append(Segment(name, offset, shape))
                offset += math.prod(shape)
            dtype = next(iter(named[0].values())).dtype
            flat = [
                torch.cat([d[s.name].detach().reshape(-1) for s in self.segments]) for d in named
            ]
            self.data = torch.stack(flat).to(device=device, dtype=dtype).contiguous()
            self.grad = torch.zeros_like(self.data)
        self.leaves: dict[str, Tensor] = {}
        for s in sorted(self.segments, key=lambda s: list(shapes).index(s.name)):
            view = self.data[:, s.offset : s.offset + s.numel].view(self.members, *s.shape)
            if grad:
                leaf = nn.Parameter(view)
                leaf.grad = self.grad[:, s.offset : s.offset + s.numel].view_as(view)
            else:
                leaf = view
            self.leaves[s.name] = leaf
        self.module = copy.deepcopy(members[0])
        for sub in self.module.modules():
            if hasattr(sub, "channels_last") and self.members > 1:
                sub.channels_last = False
        self._call = vmap(self._one, in_dims=(0, 0))
        self._subs: dict[str, Any] = {}
        self._grad_views = [(p, p.grad) for p in self.leaves.values()] if grad else []
        """Each leaf with the view of the gradient buffer its ``.grad`` must stay."""
        if self.members == 1:  # a single run: the network itself, on views of its row
            self._grad_views = []
            for s in self.segments:
                owner, _, attr = s.name.rpartition(".")
                param = nn.Parameter(self.leaves[s.name].detach()[0], requires_grad=grad)
                if grad:
                    param.grad = self.leaves[s.name].grad[0]
                    self._grad_views.append((param, param.grad))
                setattr(self.module.get_submodule(owner), attr, param)

    def _one(self, params: dict[str, Tensor], x: Tensor) -> Any:
        return functional_call(self.module, params, (x,))

    @property
    def device(self) -> torch.device:
        """Where the buffers live."""
        return self.data.device

    def __call__(self, x: Tensor) -> Any:
        """The members' outputs ``[K, B, ...]`` for inputs ``[K, B, ...]`` (member k's in row k).

        One member (a single run) is its network called directly, its parameters views of
        its row: the same operations without the cost of vmap and ``functional_call`` (they
        doubled a small DQN's step time).
        """
        if self.members == 1:
            return _unsqueeze(self.module(x[0]))
        return self._call(self.leaves, x)

    def submodule(self, name: str) -> Any:
        """``x [K, B, ...] -> [K, B, ...]`` through the members' submodule ``name`` only.

        Built once per name (acting calls it every env step).
        """
        if name not in self._subs:
            sub = self.module.get_submodule(name)
            prefix = f"{name}."
            params = {n[len(prefix) :]: v for n, v in self.leaves.items() if n.startswith(prefix)}
            if self.members == 1:
                self._subs[name] = lambda x: _unsqueeze(sub(x[0]))
            else:
                call = vmap(lambda p, y: functional_call(sub, p, (y,)))
                self._subs[name] = lambda x: call(params, x)
        return self._subs[name]

    def zero_grad(self) -> None:
        """Zero the flat gradient buffer (the leaves' gradients are views into it)."""
        self.grad.zero_()

    def sync_grads(self) -> None:
        """Fold back any gradient autograd replaced instead of accumulating into the buffer."""
        for param, view in self._grad_views:
            if param.grad is not view:
                if param.grad is not None and param.grad.data_ptr() != view.data_ptr():
                    view.copy_(param.grad)
                param.grad = view

    def member_state_dict(self, k: int) -> dict[str, Tensor]:
        """Member k's parameters as its network's ``state_dict`` (copies)."""
        row = self.data[k].detach()
        return {
            s.name: row[s.offset : s.offset + s.numel].view(s.shape).clone() for s in self.segments
        }

    def names(self) -> list[tuple[str, int, int]]:
        """``(name, offset, numel)`` per parameter (the optimizer's per-layer telemetry)."""
        return [(s.name, s.offset, s.numel) for s in self.segments]


def _unsqueeze(out: Any) -> Any:
    """A member's outputs (a tensor or a tuple of them) with the member axis put back."""
    if isinstance(out, tuple):
        return tuple(o.unsqueeze(0) for o in out)
    return out.unsqueeze(0)
