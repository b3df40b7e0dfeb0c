"""DQN for K members at once: stacked Q-networks, per-member replay, exploration and targets.

Each member has its own replay buffer (one :class:`~agents.replay.ReplayBuffer` of its own
environments), its own torch generator for exploration coins and replay indices, and its own
target network (row k of a stacked copy). Nothing a member draws or stores depends on another
member, so changing one member's seed or learning rate changes nothing in the others.

A member's generator starts where a single run's global torch generator is after building
its network with the same seed, and draws in the single run's order (coins, random actions,
replay indices), so on the CPU engine member k of a population trains exactly as the single
run with member k's seed does (tests compare them).

The maths are the single run's: :func:`agents.dqn.td_targets` for the targets and
:func:`agents.dqn.dqn_loss` for the loss (per-member reduction), differentiated by autograd
through :class:`~agents.stacked.StackedModule`, or the CPU engine's derivative
(:func:`agents.dqn_numpy.td_gradients`) on the same leaves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .dqn import TARGET_CHUNK, dqn_loss, polyak_, td_targets
from .dqn_numpy import td_gradients
from .numpy_mlp import forward
from .replay import FrameReplayBuffer, ReplaySample
from .rollout import Step
from .stacked import StackedModule, backward_into_rows


class MemberGenerators:
    """One torch CPU generator per member, each started from a given state."""

    def __init__(self, states: Sequence[Tensor]) -> None:
        self.generators = []
        for state in states:
            g = torch.Generator()
            g.set_state(state)
            self.generators.append(g)

    def __getitem__(self, k: int) -> torch.Generator:
        return self.generators[k]

    def state_dict(self) -> list[Tensor]:
        """The generators' states."""
        return [g.get_state() for g in self.generators]

    def load_state_dict(self, states: list[Tensor]) -> None:
        """Restore :meth:`state_dict` output."""
        for g, state in zip(self.generators, states, strict=True):
            g.set_state(state)


class MemberReplay:
    """K replay buffers, one per member, each of its member's ``E`` environments, in one store.

    Member k's rows are row k of ``[K, capacity, ...]`` columns, written and sampled exactly
    as a :class:`~agents.replay.ReplayBuffer` of its own would write and sample them (the
    same positions, the same uniform draw from its filled rows), with one write per column
    for all members instead of one buffer call per member.

    Args:
        members: K.
        capacity: rows kept per member (the oldest are overwritten).
        obs_shape: shape of one observation.
        envs_per_member: E.
        device: where the storage lives and samples are returned.
        obs_dtype: dtype of stored observations.
    """

    _COLUMNS = ("obs", "next_obs", "actions", "rewards", "terminated")

    def __init__(
        self,
        members: int,
        capacity: int,
        obs_shape: tuple[int, ...],
        envs_per_member: int,
        device: torch.device,
        obs_dtype: torch.dtype = torch.float32,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.members, self.capacity, self.per = members, int(capacity), envs_per_member
        self.device = torch.device(device)
        shape = (members, self.capacity)
        self.obs = torch.zeros((*shape, *obs_shape), dtype=obs_dtype, device=self.device)
        self.next_obs = torch.zeros_like(self.obs)
        self.actions = torch.zeros(shape, dtype=torch.int64, device=self.device)
        self.rewards = torch.zeros(shape, dtype=torch.float32, device=self.device)
        self.terminated = torch.zeros(shape, dtype=torch.bool, device=self.device)
        self.pos = np.zeros(members, dtype=np.int64)
        self.size = np.zeros(members, dtype=np.int64)
        self._members = np.arange(members)[:, None]
        self._member_of_row = np.repeat(np.arange(members), envs_per_member)
        self._host = (
            {name: getattr(self, name).numpy() for name in self._COLUMNS}
            if self.device.type == "cpu"
            else {}
        )
        """NumPy views of the columns on the CPU (writes go through them)."""

    def __len__(self) -> int:
        """Rows of the emptiest member's buffer (every member can sample once this is > 0)."""
        return int(self.size.min())

    def add(self, s: Step) -> None:
        """Store each member's valid transitions of one step of the ``K * E`` envs.

        A member's valid rows go, in env order, to its next positions; with more valid rows
        than ``capacity`` only the newest survive, where writing them in order leaves them.
        """
        k, per = self.members, self.per
        valid = np.asarray(s.valid, dtype=bool).reshape(k, per)
        count = valid.sum(1)
        rows = (self.pos[:, None] + np.cumsum(valid, 1) - 1) % self.capacity
        flat = valid.reshape(-1)
        every = bool(flat.all())  # the common step: no autoreset row to drop
        if every:
            which = (self._member_of_row, rows.reshape(-1))
        else:
            which = (np.broadcast_to(self._members, (k, per))[valid], rows[valid])
        host = self.device.type == "cpu"
        for name, new in zip(
            self._COLUMNS, (s.obs, s.next_obs, s.actions, s.rewards, s.terminated), strict=True
        ):
            column = getattr(self, name)
            if host:
                values = new.numpy() if isinstance(new, Tensor) else np.asarray(new)
                self._host[name][which] = values if every else values[flat]
            else:
                values = torch.as_tensor(new if isinstance(new, Tensor) else np.asarray(new))
                index = tuple(torch.as_tensor(i, device=self.device) for i in which)
                picked = values.to(self.device)[torch.as_tensor(flat, device=self.device)]
                column[index] = picked.to(column.dtype)
        self.pos = (self.pos + count) % self.capacity
        self.size = np.minimum(self.size + count, self.capacity)

    def sample(self, batch_size: int, generators: MemberGenerators) -> ReplaySample:
        """``batch_size`` transitions per member, stacked ``[K, batch_size, ...]``.

        Member k's indices are drawn from its generator as ``ReplayBuffer.sample`` draws them.
        """
        if self.size.min() == 0:
            raise ValueError("cannot sample from an empty buffer; add transitions first")
        idx = torch.stack(
            [
                torch.randint(int(n), (batch_size,), generator=generators[k])
                for k, n in enumerate(self.size)
            ]
        ).to(self.device)
        rows = torch.arange(self.members, device=self.device)[:, None]
        return ReplaySample(
            obs=self.obs[rows, idx],
            actions=self.actions[rows, idx],
            rewards=self.rewards[rows, idx],
            next_obs=self.next_obs[rows, idx],
            terminated=self.terminated[rows, idx],
        )

    def state_dict(self) -> dict[str, Any]:
        """The filled rows and write positions (for checkpoints)."""
        top = int(self.size.max())
        rows = {name: getattr(self, name)[:, :top].cpu() for name in self._COLUMNS}
        return {"capacity": self.capacity, "pos": self.pos.copy(), "size": self.size.copy(), **rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output into a store of the same shape.

        Raises:
            ValueError: another capacity, member count or column shape.
        """
        if state["capacity"] != self.capacity or len(state["pos"]) != self.members:
            raise ValueError("the replay buffers in the checkpoint do not match this population")
        for name in self._COLUMNS:
            mine, saved = getattr(self, name), state[name]
            if saved.shape[2:] != mine.shape[2:] or saved.dtype != mine.dtype:
                raise ValueError(f"replay column {name} does not match this population")
            mine[:, : saved.shape[1]] = saved.to(self.device)
        self.pos, self.size = np.array(state["pos"]), np.array(state["size"])


class MemberFrames:
    """K frame replay buffers, one per member, with :class:`MemberReplay`'s interface.

    Each is a :class:`~agents.replay.FrameReplayBuffer` of its member's ``E`` envs (each frame
    stored once), drawing from its member's generator.

    Args:
        members: K.
        capacity: transitions kept per member.
        obs_shape: ``(S, H, W)``, the stacked observation.
        envs_per_member: E.
        device: where the storage lives and samples are returned.
    """

    def __init__(
        self,
        members: int,
        capacity: int,
        obs_shape: tuple[int, ...],
        envs_per_member: int,
        device: torch.device,
    ) -> None:
        self.buffers = [
            FrameReplayBuffer(capacity, obs_shape, envs_per_member, device) for _ in range(members)
        ]
        self.per = envs_per_member

    def __len__(self) -> int:
        """Transitions of the emptiest member's buffer."""
        return min(len(b) for b in self.buffers)

    def add(self, s: Step) -> None:
        """Store each member's step of its own ``E`` envs."""
        for k, buffer in enumerate(self.buffers):
            rows = slice(k * self.per, (k + 1) * self.per)
            buffer.add(
                s.obs[rows],
                s.next_obs[rows],
                s.actions[rows],
                s.rewards[rows],
                s.terminated[rows],
                s.valid[rows],
            )

    def sample(self, batch_size: int, generators: MemberGenerators) -> ReplaySample:
        """``batch_size`` transitions per member from its own generator, ``[K, B, ...]``."""
        draws = [b.sample(batch_size, generators[k]) for k, b in enumerate(self.buffers)]
        return ReplaySample(*(torch.stack(column) for column in zip(*draws, strict=True)))

    def state_dict(self) -> list[dict]:
        """Every member's buffer."""
        return [b.state_dict() for b in self.buffers]

    def load_state_dict(self, states: list[dict]) -> None:
        """Restore :meth:`state_dict` output."""
        for b, state in zip(self.buffers, states, strict=True):
            b.load_state_dict(state)


class MemberQ:
    """Stacked online and target Q-networks: Q-values, TD targets and the loss's gradient.

    Args:
        online: the members' Q-networks (gradients go into ``online.grad``).
        target: their target networks (no gradients), same layout.
        engine: ``numpy`` (ReLU MLPs on the CPU: :func:`agents.dqn_numpy.td_gradients`) or
            ``autograd`` (any network and device: :func:`agents.dqn.dqn_loss` per member).
    """

    def __init__(self, online: StackedModule, target: StackedModule, engine: str) -> None:
        self.online, self.target, self.engine = online, target, engine
        if engine == "numpy":  # (weight, bias) views per layer, taken once
            self._online_np = self._pairs([t.detach().numpy() for t in online.leaves.values()])
            self._target_np = self._pairs([t.numpy() for t in target.leaves.values()])
            self._grads_np = self._pairs([t.grad.numpy() for t in online.leaves.values()])

    @staticmethod
    def _pairs(arrays: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        return list(zip(arrays[::2], arrays[1::2], strict=True))

    def _numpy_q(self, layers: list[tuple[np.ndarray, np.ndarray]], obs: Tensor) -> Tensor:
        x = obs.numpy().reshape(*obs.shape[:2], -1).astype(layers[0][0].dtype, copy=False)
        return torch.from_numpy(forward(x, layers, "relu")[-1])

    def q_values(self, obs: Tensor) -> Tensor:
        """Online Q-values ``[K, B, A]`` of observations ``[K, B, ...]`` (for acting)."""
        if self.engine == "numpy":
            return self._numpy_q(self._online_np, obs)
        with torch.no_grad():
            return self.online(obs)

    def _target_q(self, obs: Tensor) -> Tensor:
        if self.engine == "numpy":
            return self._numpy_q(self._target_np, obs)
        with torch.no_grad():
            return self.target(obs)

    def targets(self, batch: ReplaySample, gamma: float, double: bool) -> Tensor:
        """:func:`agents.dqn.td_targets` per member, ``[K, B]``; Q-values in chunks of rows.

        The networks see ``TARGET_CHUNK`` rows per member at a time (as a single network's
        targets are chunked, whatever K is); the rule itself runs once over all rows.
        """
        return td_targets(
            batch.rewards,
            batch.next_obs,
            batch.terminated,
            _row_chunks(self._target_q),
            _row_chunks(self.q_values),
            gamma,
            double=double,
        )

    def gradients(
        self, batch: ReplaySample, targets: Tensor, loss: str, reduction: str
    ) -> dict[str, Tensor]:
        """Every member's TD loss; its gradient written into ``online.grad``; ``[K]`` metrics."""
        if self.engine == "numpy":
            x = batch.obs.numpy().reshape(*batch.obs.shape[:2], -1)
            x = x.astype(self._online_np[0][0].dtype, copy=False)
            metrics = td_gradients(
                x,
                self._online_np,
                self._grads_np,
                batch.actions.numpy(),
                targets,
                loss,
                reduction,
            )
            return {tag: torch.from_numpy(np.asarray(v)) for tag, v in metrics.items()}
        self.online.zero_grad()
        value, metrics = dqn_loss(self.online, batch, targets, loss, reduction)
        backward_into_rows(value.sum())
        self.online.sync_grads()
        return metrics

    def update_target(self, tau: float) -> None:
        """``target = tau * online + (1 - tau) * target`` for every member (a copy at tau 1)."""
        polyak_([(self.target.data, self.online.data)], tau)


def _row_chunks(q: Any) -> Any:
    """``q`` over ``[K, B, ...]`` inputs, evaluated ``TARGET_CHUNK`` rows per member at a time."""

    def chunked(x: Tensor) -> Tensor:
        if x.shape[1] <= TARGET_CHUNK:
            return q(x)
        parts = [q(x[:, i : i + TARGET_CHUNK]) for i in range(0, x.shape[1], TARGET_CHUNK)]
        return torch.cat(parts, 1)

    return chunked
