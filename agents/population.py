"""Many actor-critics in one process: K members' networks batched over a ``[K, N]`` buffer.

Member k's parameters are row k of one flat ``[K, N]`` buffer and its gradients row k of
another, so one optimizer step over ``[K, N]`` trains every member at once. The forward pass
is a handful of batched matrix products (``torch.baddbmm``) whatever K is: for small MLPs K
members cost little more than one.

Members never influence each other: every operation is per member (batched products,
per-member reductions), each member has its own action-sampling generator, and the loss that
is differentiated is the sum of the members' losses, whose gradient with respect to member
k's parameters is exactly member k's own gradient.

Layouts: the environments are member-major (env ``k * E + e`` is member k's env e), so
observations ``[..., K * E, obs_dim]`` go in and logits ``[..., K * E, n_actions]`` come out,
the shapes the single-run :class:`~agents.networks.ActorCritic` has with ``K * E`` envs. The
A2C loss and GAE therefore run unchanged; only their means are taken per member
(:meth:`PopulationActorCritic.member_mean`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .a2c import a2c_loss
from .a2c_numpy import a2c_gradients as stacked_a2c_gradients
from .a2c_numpy import to_member_major
from .networks import ActorCritic
from .numpy_mlp import forward
from .rollout import Collector, Episode, Rollout
from .stacked import Segment, StackedModule, backward_into_rows


def _layout(net: ActorCritic) -> tuple[list[Segment], list[tuple[str, list[str]]]]:
    """The row layout and the leaves (fused tensors) built over it.

    The first layers of the policy and value MLPs read the same input, so their weights (and
    biases) are adjacent in the row and act as one ``[2H, in]`` layer: one product instead of
    two. The other layers are leaves of their own.
    """
    params = dict(net.named_parameters())
    first = [("policy.0.weight", "value.0.weight"), ("policy.0.bias", "value.0.bias")]
    order: list[str] = [name for pair in first for name in pair]
    order += [n for n in params if n not in order]
    segments, offset = [], 0
    for name in order:
        shape = tuple(params[name].shape)
        segments.append(Segment(name, offset, shape))
        offset += params[name].numel()
    leaves = [("first.weight", list(first[0])), ("first.bias", list(first[1]))]
    leaves += [(n, [n]) for n in order[4:]]
    return segments, leaves


class MemberMajor:
    """Layout helpers for K members' actor-critics over member-major envs (``k * E + e``).

    Subclasses set ``members`` (K), ``envs_per_member`` (E), ``obs_dims`` (1 for flat
    observations, 3 for image stacks) and the flat ``data`` and ``grad`` buffers.
    """

    members: int
    envs_per_member: int
    obs_dims: int = 1
    data: Tensor
    """``[K, N]`` parameters."""
    grad: Tensor
    """``[K, N]`` gradients (every leaf's gradient is a view into it)."""

    @property
    def device(self) -> torch.device:
        """Where the buffers live."""
        return self.data.device

    def zero_grad(self) -> None:
        """Zero the flat gradient buffer."""
        self.grad.zero_()

    def _to_members(self, obs: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        """``[..., K * E, *obs]`` -> ``[K, L * E, *obs]`` (and the leading shape)."""
        event = obs.shape[obs.dim() - self.obs_dims :]
        lead = obs.shape[: obs.dim() - self.obs_dims]
        per_member = lead[-1] // self.members
        x = obs.reshape(-1, self.members, per_member, *event)
        return x.transpose(0, 1).reshape(self.members, -1, *event), lead

    def _from_members(self, y: Tensor, lead: tuple[int, ...]) -> Tensor:
        """``[K, L * E, ...]`` -> ``[..., K * E, ...]``."""
        rest = y.shape[2:]
        y = y.reshape(self.members, -1, lead[-1] // self.members, *rest).transpose(0, 1)
        return y.reshape(*lead, *rest)

    def member_mean(self, x: Tensor, mask: Tensor) -> Tensor:
        """Per-member mean of ``x [T, K * E]`` over the entries where ``mask`` is True: ``[K]``.

        Masked-out entries are selected away (a nan there does not leak); a member with no
        valid entry gets 0.
        """
        t = x.shape[0]
        shape = (t, self.members, self.envs_per_member)
        total = torch.where(mask, x, x.new_zeros(())).view(shape).sum((0, 2))
        count = mask.view(shape).sum((0, 2)).clamp(min=1).to(x.dtype)
        return total / count


class StackedActorCritic(MemberMajor):
    """K actor-critics of any architecture (the Nature CNN's on Atari), vmapped; autograd only.

    The same interface as :class:`PopulationActorCritic` for the loss, acting and the
    optimizer; the forward pass is each member's own ``forward``
    (:class:`~agents.stacked.StackedModule`).

    Args:
        members: the members' networks (e.g. :class:`~agents.networks.CnnActorCritic`).
        envs_per_member: E.
        device: where the buffers live.
    """

    obs_dims = 3

    def __init__(
        self, members: Sequence[nn.Module], envs_per_member: int, device: torch.device | str
    ) -> None:
        self.stacked = StackedModule(members, device)
        self.members, self.envs_per_member = len(members), envs_per_member
        self.data, self.grad, self.segments = (
            self.stacked.data,
            self.stacked.grad,
            self.stacked.segments,
        )
        self.n_actions = members[0].policy.out_features

    def names(self) -> list[tuple[str, int, int]]:
        """``(name, offset, numel)`` per parameter (the network's own order and layout)."""
        return self.stacked.names()

    def sync_grads(self) -> None:
        """Fold any replaced gradient back into the buffer."""
        self.stacked.sync_grads()

    def __call__(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``[..., K * E, A]`` and values ``[..., K * E]`` of ``[..., K * E, C, H, W]``."""
        x, lead = self._to_members(obs)
        logits, values = self.stacked(x)
        return self._from_members(logits, lead), self._from_members(values, lead)

    @torch.no_grad()
    def logits(self, obs: Tensor) -> Tensor:
        """Action logits ``[K * E, A]`` (for acting)."""
        return self(obs)[0]

    def member_state_dict(self, k: int) -> dict[str, Tensor]:
        """Member k's network ``state_dict``."""
        return self.stacked.member_state_dict(k)


class PopulationActorCritic(MemberMajor):
    """K :class:`~agents.networks.ActorCritic` members trained in lockstep.

    Args:
        members: the members' networks (same architecture), initialised as single runs are;
            their parameters are copied into the flat buffer.
        envs_per_member: E, the environments of each member (the layout of observations).
        device: where the buffers live.
    """

    def __init__(
        self,
        members: Sequence[ActorCritic],
        envs_per_member: int,
        device: torch.device | str = "cpu",
    ) -> None:
        if not members:
            raise ValueError("a population needs at least one member")
        shapes = [tuple(p.shape) for p in members[0].parameters()]
        if any([tuple(p.shape) for p in net.parameters()] != shapes for net in members):
            raise ValueError("population members must have the same architecture")
        self.members, self.envs_per_member = len(members), envs_per_member
        self.segments, leaves = _layout(members[0])
        self._order = [name for name, _ in members[0].named_parameters()]
        self.n_actions = members[0].policy[-1].out_features
        self.layers = sum(isinstance(m, nn.Linear) for m in members[0].policy)
        dtype = next(members[0].parameters()).dtype
        rows = []
        for net in members:
            named = dict(net.named_parameters())
            rows.append(torch.cat([named[s.name].detach().reshape(-1) for s in self.segments]))
        self.data = torch.stack(rows).to(device=device, dtype=dtype).contiguous()
        self.grad = torch.zeros_like(self.data)
        by_name = {s.name: s for s in self.segments}
        self.leaves: dict[str, nn.Parameter] = {}
        self._grad_views: list[tuple[nn.Parameter, Tensor]] = []
        self._policy_np: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._engine_np: dict[str, Any] | None = None
        """The CPU engine's NumPy views of the weights and gradients (made on first use)."""
        self.stacked = StackedModule(members, device, rows=(self.data, self.grad, self.segments))
        """The members' own ``ActorCritic.forward``, vmapped over views of the same rows."""
        for leaf, parts in leaves:
            segs = [by_name[p] for p in parts]
            start, stop = segs[0].offset, segs[-1].offset + segs[-1].numel
            shape = (self.members, sum(s.shape[0] for s in segs), *segs[0].shape[1:])
            param = nn.Parameter(self.data[:, start:stop].view(shape))
            param.grad = self.grad[:, start:stop].view(shape)
            self.leaves[leaf] = param
            self._grad_views.append((param, param.grad))

    def names(self) -> list[tuple[str, int, int]]:
        """``(name, offset, numel)`` per parameter in an :class:`ActorCritic`'s own order.

        The row keeps the two first layers side by side (one product); listed in the single
        network's order, the optimizer sums a member's gradient norm as a single run does.
        """
        by_name = {s.name: s for s in self.segments}
        return [(n, by_name[n].offset, by_name[n].numel) for n in self._order]

    def sync_grads(self) -> None:
        """Fold back any gradient autograd replaced instead of accumulating into the buffer.

        Autograd accumulates in place into an existing ``.grad``; should a leaf's gradient be
        a new tensor anyway (e.g. set to None by other code), it is copied into its view.
        """
        for param, view in self._grad_views:
            if param.grad is not view:
                view.copy_(param.grad if param.grad is not None else torch.zeros_like(view))
                param.grad = view
        self.stacked.sync_grads()

    def __call__(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``[..., K * E, A]`` and values ``[..., K * E]`` (member-major envs, any E).

        Each member's own ``ActorCritic.forward``, vmapped over the members
        (:class:`~agents.stacked.StackedModule`); autograd's gradients land in ``grad``.
        """
        x, lead = self._to_members(obs.to(self.data.dtype))
        logits, values = self.stacked(x)
        return self._from_members(logits, lead), self._from_members(values, lead)

    def logits(self, obs: Tensor) -> Tensor:
        """Action logits only, ``[K * E, A]`` for observations ``[K * E, d]`` (any E).

        On the CPU the policy runs in NumPy on views of the parameter buffer (no autograd
        is needed to act, and NumPy's batched products cost about half of torch's at
        these sizes); elsewhere in torch.
        """
        if self.data.device.type == "cpu" and obs.dim() == 2:
            return torch.from_numpy(self.numpy_logits(obs.numpy()))
        with torch.no_grad():
            return self._torch_logits(obs)

    def _torch_logits(self, obs: Tensor) -> Tensor:
        x, lead = self._to_members(obs.to(self.data.dtype))
        return self._from_members(self.stacked.submodule("policy")(x), lead)

    def numpy_logits(self, obs: np.ndarray) -> np.ndarray:
        """:meth:`logits` in NumPy, for CPU observations ``[K * E, d]``."""
        if self._policy_np is None:  # [K, in, out] views of the weights, [K, out] biases
            w, b = self.leaves["first.weight"].detach(), self.leaves["first.bias"].detach()
            width = w.shape[1] // 2
            layers = [(w[:, :width], b[:, :width])]
            for i in range(1, self.layers):
                name = f"policy.{2 * i}"
                layers.append((self.leaves[f"{name}.weight"], self.leaves[f"{name}.bias"]))
            self._policy_np = [
                (w.detach().transpose(1, 2).numpy(), b.detach().numpy()) for w, b in layers
            ]
        z = obs.astype(self._policy_np[0][0].dtype, copy=False).reshape(
            self.members, -1, obs.shape[-1]
        )
        logits = forward(z, self._policy_np, "tanh", transposed=True)[-1]
        return logits.reshape(obs.shape[0], -1)

    def member_state_dict(self, k: int) -> dict[str, Tensor]:
        """Member k's parameters as an :class:`ActorCritic` ``state_dict`` (copies)."""
        return self.stacked.member_state_dict(k)


class MemberNoise:
    """Gumbel noise for sampling actions, from one generator per member.

    Member k's noise comes only from generator k (seeded with member k's seed), drawn in
    chunks of ``chunk`` steps, so it never depends on the other members.

    Args:
        seeds: one seed per member.
        envs_per_member: E.
        n_actions: actions per env.
        device: where the noise is drawn.
        chunk: env steps drawn at once.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        envs_per_member: int,
        n_actions: int,
        device: torch.device,
        chunk: int = 256,
    ) -> None:
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.shape = (len(seeds), chunk, envs_per_member, n_actions)
        self.buffer = torch.empty(self.shape, device=device)
        self.next = chunk

    def state_dict(self) -> dict[str, Any]:
        """Generator states and the unused part of the drawn noise (for checkpoints)."""
        return {
            "generators": [g.get_state() for g in self.generators],
            "buffer": self.buffer.clone(),
            "next": self.next,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        for g, g_state in zip(self.generators, state["generators"], strict=True):
            g.set_state(g_state)
        self.buffer.copy_(state["buffer"])
        self.next = state["next"]

    def _next_step(self) -> int:
        """The buffer's index of the next env step's noise (drawing a new chunk when needed)."""
        if self.next == self.shape[1]:
            for k, gen in enumerate(self.generators):
                self.buffer[k].exponential_(generator=gen)
            self.buffer.log_()
            self.next = 0
        self.next += 1
        return self.next - 1

    def step(self) -> Tensor:
        """``log E`` with ``E ~ Exponential(1)`` for one env step, ``[K * E, A]``."""
        return self.buffer[:, self._next_step()].reshape(-1, self.shape[-1])

    def step_numpy(self) -> np.ndarray:
        """:meth:`step` as a NumPy array (a CPU buffer only): the same values, drawn alike."""
        return self.buffer.numpy()[:, self._next_step()].reshape(-1, self.shape[-1])


def sample_actions(model: Any, noise: MemberNoise, obs: Tensor) -> Tensor:
    """One action per env by the Gumbel-max trick: argmax(logits - log E), ``[K * E]``.

    ``model`` gives ``logits(obs)``, and on the CPU ``numpy_logits`` where it has them (a
    population's or a single run's CPU engine): then the subtraction runs in NumPy (the same float32
    subtraction, and argmax takes the first of equal values as torch's does), which is cheaper
    (docs/benchmarks.md, "Figures moved from the code"). A single run is one member: its noise is a
    ``MemberNoise`` of its own seed, so it draws what a population member with that seed draws.
    """
    numpy_logits = getattr(model, "numpy_logits", None)
    if numpy_logits is not None and obs.device.type == "cpu" and obs.dim() == 2:
        return torch.from_numpy((numpy_logits(obs.numpy()) - noise.step_numpy()).argmax(-1))
    with torch.no_grad():
        return (model.logits(obs) - noise.step()).argmax(-1)


class PopulationCollector(Collector):
    """A :class:`~agents.rollout.Collector` over member-major envs that knows whose episode ended.

    ``global_step`` counts the steps of all ``K * E`` envs; :attr:`member_step` is each
    member's own count. Finished episodes are ``(member, Episode)`` pairs whose step is the
    member's step.

    Args:
        env: a :class:`envs.population.PopulationEnv` (seeded per member at its reset; its
            info says which episodes ended).
        members: K.
        device: where observation tensors go.
    """

    def __init__(self, env: Any, members: int, device: torch.device) -> None:
        self.members = members
        self.member_finished: list[tuple[int, Episode]] = []
        self.last_episodes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        """Env indices, returns and lengths of the episodes that ended at the last step."""
        super().__init__(env, 0, device)
        self.envs_per_member = self.num_envs // members

    @property
    def member_step(self) -> int:
        """Env steps each member has taken."""
        return self.global_step // self.members

    def _record(self, info: dict[str, Any]) -> None:
        self.last_episodes = ended, returns, lengths = info["episodes"]
        if not len(ended):
            return
        step, per_member = self.member_step, self.envs_per_member
        for i, r, length in zip(ended.tolist(), returns.tolist(), lengths.tolist(), strict=True):
            self.member_finished.append((i // per_member, Episode(step, r, length, i % per_member)))

    def pop_member_episodes(self) -> list[tuple[int, Episode]]:
        """``(member, episode)`` for the episodes finished since the last call."""
        out, self.member_finished = self.member_finished, []
        return out


def a2c_gradients(
    model: PopulationActorCritic, rollout: Rollout, hp: Any, gamma: float, engine: str = "auto"
) -> tuple[Tensor, dict[str, Tensor]]:
    """Every member's A2C loss and its gradient, written into ``model.grad``.

    The loss is :func:`agents.a2c.a2c_loss` with per-member means. ``engine``: ``autograd``
    differentiates it (any device); ``numpy`` is the batched CPU engine
    (:func:`numpy_a2c_gradients`, checked against autograd by the tests); ``auto`` takes
    NumPy on the CPU, autograd elsewhere.

    Returns:
        ``[K]`` losses and the ``losses/*`` metrics as ``[K]`` tensors.
    """
    if engine == "numpy" or (engine == "auto" and model.device.type == "cpu"):
        return numpy_a2c_gradients(model, rollout, hp, gamma)
    return autograd_a2c_gradients(model, rollout, hp, gamma)


def autograd_a2c_gradients(
    model: PopulationActorCritic, rollout: Rollout, hp: Any, gamma: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`agents.a2c.a2c_loss` per member, differentiated by autograd into ``model.grad``.

    The members' losses are summed before the backward pass: member k's parameters appear
    in member k's loss only, so each row of the gradient is that member's own.

    Returns:
        ``[K]`` losses and the ``losses/*`` metrics as ``[K]`` tensors.
    """
    model.zero_grad()
    losses, metrics = a2c_loss(model, rollout, hp, gamma, mean=model.member_mean)
    backward_into_rows(losses.sum())
    model.sync_grads()
    return losses.detach(), metrics


def numpy_a2c_gradients(
    model: PopulationActorCritic, rollout: Rollout, hp: Any, gamma: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """The batched CPU engine (:func:`agents.a2c_numpy.a2c_gradients`) on a CPU population.

    It reads NumPy views of the ``[K, N]`` parameter buffer and writes into views of the
    gradient buffer: each network is a stacked MLP whose first layer is its half of the fused
    first layer. At a population's sizes (a few dozen rows per member, 64-wide layers)
    torch's per-operation dispatch costs about as much as the arithmetic, which NumPy's
    stacked products avoid.

    Returns:
        ``[K]`` losses and the ``losses/*`` metrics as ``[K]`` tensors.
    """
    k = model.members
    if model._engine_np is None:  # views of the buffers, made once (the buffers stay put)
        weights = {name: leaf.detach().numpy() for name, leaf in model.leaves.items()}
        grads = {name: leaf.grad.numpy() for name, leaf in model.leaves.items()}
        width = weights["first.weight"].shape[1] // 2
        nets = {}
        for net, cols in (("policy", slice(0, width)), ("value", slice(width, None))):
            names = [f"{net}.{2 * i}" for i in range(1, model.layers)]
            layers = [(weights["first.weight"][:, cols], weights["first.bias"][:, cols])]
            layers += [(weights[f"{n}.weight"], weights[f"{n}.bias"]) for n in names]
            net_grads = [(grads["first.weight"][:, cols], grads["first.bias"][:, cols])]
            net_grads += [(grads[f"{n}.weight"], grads[f"{n}.bias"]) for n in names]
            nets[net] = (layers, net_grads)
        model._engine_np = nets
    dtype = model.data.numpy().dtype
    x = to_member_major(rollout.obs.numpy().astype(dtype, copy=False), k)  # [K, (T + 1) E, d]
    losses, metrics = stacked_a2c_gradients(x, model._engine_np, rollout, hp, gamma, k)
    return torch.from_numpy(losses), {tag: torch.from_numpy(v) for tag, v in metrics.items()}
