"""Circular replay storage for DQN, fed by ``E`` parallel environments.

Gymnasium >= 1.1 vector envs autoreset in ``NEXT_STEP`` mode: when sub-environment ``i``
returns ``terminated[i] or truncated[i]``, the observation of that step is the episode's true
last observation. The *next* ``step`` ignores ``actions[i]``, resets ``i`` and returns the first
observation of the new episode with reward 0. That step (last obs -> reset obs) is not a
transition of the environment: the collector marks it ``valid = False`` (``valid = ~prev_done``,
see ``agents.rollout``) and :meth:`ReplayBuffer.add` never stores it.

Truncation is not termination. A time limit cuts the episode without reaching a terminal state,
so the TD target must bootstrap from the next state. The buffer therefore stores ``terminated``
only: a truncated transition goes in with ``terminated = False`` and ``next_obs`` equal to what
``step`` returned together with ``truncated = True``, which under ``NEXT_STEP`` autoreset is the
real last observation (no ``final_obs`` lookup in ``info`` is needed, unlike ``SAME_STEP``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["FrameReplayBuffer", "ReplayBuffer", "ReplaySample"]


def _host_mask(valid: Tensor | np.ndarray, num_envs: int) -> np.ndarray:
    """The ``[E]`` valid mask as a host bool array (a device tensor costs one sync per step)."""
    mask = valid.cpu().numpy() if isinstance(valid, Tensor) else np.asarray(valid)
    if mask.ndim != 1 or mask.shape[0] != num_envs:
        raise ValueError(
            f"valid must have leading dimension num_envs={num_envs}, got shape {tuple(mask.shape)}"
        )
    return mask.astype(bool, copy=False)


class ReplaySample(NamedTuple):
    """A batch of ``B`` transitions drawn from a :class:`ReplayBuffer`."""

    obs: Tensor
    """``[B, *obs_shape]`` in the buffer's ``obs_dtype``."""
    actions: Tensor
    """``[B]`` int64."""
    rewards: Tensor
    """``[B]`` float32."""
    next_obs: Tensor
    """``[B, *obs_shape]``: the observation ``step`` returned (the true last one on truncation)."""
    terminated: Tensor
    """``[B]`` bool: True only for terminal states; the target does not bootstrap there."""


class ReplayBuffer:
    """Fixed-capacity, circular store of transitions from a vector env, preallocated on a device.

    Each row is one transition ``(obs, action, reward, next_obs, terminated)``. When full, new
    rows overwrite the oldest ones. ``next_obs`` is stored explicitly rather than derived from
    the following row: with ``E`` interleaved environments and autoreset steps dropped, the
    following row belongs to another env or another episode. That doubles observation memory
    (see :attr:`nbytes`), the price of never mixing episodes.

    Args:
        capacity: number of transitions (rows) kept, >= 1.
        obs_shape: shape of one observation.
        num_envs: number of parallel environments ``E`` (the leading dim of :meth:`add`), >= 1.
        device: where the storage lives and samples are returned.
        obs_dtype: dtype of stored observations (``torch.uint8`` for Atari frames).

    Raises:
        ValueError: if ``capacity`` or ``num_envs`` is < 1.

    Example::

        buffer = ReplayBuffer(10_000, (4,), num_envs=4, device=torch.device("cpu"))
        next_obs, reward, terminated, truncated, _ = env.step(actions)
        buffer.add(obs, next_obs, actions, reward, terminated, valid=~prev_done)
        prev_done, obs = terminated | truncated, next_obs
        batch = buffer.sample(32)
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        num_envs: int,
        device: torch.device,
        obs_dtype: torch.dtype = torch.float32,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.capacity = int(capacity)
        self.obs_shape = tuple(obs_shape)
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self.obs_dtype = obs_dtype
        self.obs = torch.zeros((capacity, *self.obs_shape), dtype=obs_dtype, device=self.device)
        self.next_obs = torch.zeros_like(self.obs)
        self.actions = torch.zeros(capacity, dtype=torch.int64, device=self.device)
        self.rewards = torch.zeros(capacity, dtype=torch.float32, device=self.device)
        self.terminated = torch.zeros(capacity, dtype=torch.bool, device=self.device)
        self.pos = 0
        """Row the next transition is written to."""
        self.size = 0
        """Number of filled rows (at most ``capacity``)."""

    def __len__(self) -> int:
        return self.size

    @staticmethod
    def bytes_needed(
        capacity: int, obs_shape: tuple[int, ...], obs_dtype: torch.dtype = torch.float32
    ) -> int:
        """Bytes the storage of such a buffer takes (check it before building one)."""
        obs_bytes = math.prod(obs_shape) * torch.empty((), dtype=obs_dtype).element_size()
        return int(capacity) * (2 * obs_bytes + 8 + 4 + 1)

    @property
    def nbytes(self) -> int:
        """Bytes held by the preallocated storage (all rows, filled or not).

        ``capacity * (2 * obs_bytes + 8 + 4 + 1)``: obs and next_obs, int64 action, float32
        reward, bool terminated. Constant over the buffer's life, so it can be checked against
        device memory before training starts.
        """
        tensors = (self.obs, self.next_obs, self.actions, self.rewards, self.terminated)
        return sum(t.numel() * t.element_size() for t in tensors)

    def _as_tensor(self, x: Tensor | np.ndarray, dtype: torch.dtype, name: str) -> Tensor:
        return self._leading(torch.as_tensor(x, dtype=dtype, device=self.device), name)

    def _as_array(self, x: Tensor | np.ndarray, dtype: torch.dtype, name: str) -> np.ndarray:
        """``x`` as a host array (no copy where it already is one); cast on assignment."""
        out = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
        if out.dtype == np.float64 and dtype == torch.float32:
            out = out.astype(np.float32)  # rounded as torch.as_tensor rounds
        return self._leading(out, name)

    def _leading(self, out: Any, name: str) -> Any:
        if out.ndim == 0 or out.shape[0] != self.num_envs:
            raise ValueError(
                f"{name} must have leading dimension num_envs={self.num_envs}, "
                f"got shape {tuple(out.shape)}"
            )
        return out

    def add(
        self,
        obs: Tensor | np.ndarray,
        next_obs: Tensor | np.ndarray,
        actions: Tensor | np.ndarray,
        rewards: Tensor | np.ndarray,
        terminated: Tensor | np.ndarray,
        valid: Tensor | np.ndarray,
    ) -> None:
        """Store the valid transitions of one vector-env step.

        Args:
            obs: ``[E, *obs_shape]`` observations the actions were taken in.
            next_obs: ``[E, *obs_shape]`` observations ``step`` returned (on truncation, the
                true last observation: under ``NEXT_STEP`` autoreset it is what ``step`` gave).
            actions: ``[E]`` discrete actions.
            rewards: ``[E]`` rewards.
            terminated: ``[E]`` terminal flags. Pass ``terminated`` only, never
                ``terminated | truncated``: a truncated transition must bootstrap.
            valid: ``[E]`` bool, ``~prev_done``; False rows (autoreset steps) are dropped.

        Raises:
            ValueError: if an input's leading dimension is not ``num_envs`` or an observation
                does not have ``obs_shape``.
        """
        valid_np = _host_mask(valid, self.num_envs)
        # On the CPU the rows are written through NumPy views of the storage: a step of one
        # CartPole env costs about half of what torch's indexing and conversions cost.
        host = self.device.type == "cpu"
        convert = self._as_array if host else self._as_tensor
        obs_t = convert(obs, self.obs_dtype, "obs")
        next_obs_t = convert(next_obs, self.obs_dtype, "next_obs")
        for name, t in (("obs", obs_t), ("next_obs", next_obs_t)):
            if tuple(t.shape[1:]) != self.obs_shape:
                raise ValueError(
                    f"{name} must have shape [num_envs, *{self.obs_shape}], got {tuple(t.shape)}"
                )
        # The valid mask is read on the host (the collector keeps it there; a device tensor
        # costs one sync per env step, not per env). Usually every row is valid: no gather.
        n = int(valid_np.sum())
        if n == 0:
            return
        rows_idx: Tensor | np.ndarray | None = None
        if n < self.num_envs:
            rows_idx = np.flatnonzero(valid_np)
            if not host:
                rows_idx = torch.as_tensor(rows_idx, device=self.device)

        def rows(x: Any) -> Any:
            return x if rows_idx is None else x[rows_idx]

        storage = [getattr(self, name) for name in self._COLUMNS]
        if host:
            storage = [t.numpy() for t in storage]
        new_rows = (
            rows(obs_t),
            rows(next_obs_t),
            rows(convert(actions, torch.int64, "actions")),
            rows(convert(rewards, torch.float32, "rewards")),
            rows(convert(terminated, torch.bool, "terminated")),
        )
        # More valid rows than capacity (tiny buffers): only the newest ``capacity`` survive,
        # placed where writing all ``n`` in order would have left them.
        kept = min(n, self.capacity)
        start = (self.pos + n - kept) % self.capacity
        first = min(kept, self.capacity - start)
        for column, new in zip(storage, new_rows, strict=True):
            if kept < n:
                new = new[n - kept :]
            if kept == first:
                column[start : start + kept] = new
            else:  # wrap-around: the rest goes to the front
                column[start : start + first] = new[:first]
                column[: kept - first] = new[first:]
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    _COLUMNS = ("obs", "next_obs", "actions", "rewards", "terminated")

    def state_dict(self) -> dict:
        """The filled rows and the write position (for checkpoints)."""
        rows = {name: getattr(self, name)[: self.size].cpu() for name in self._COLUMNS}
        return {"capacity": self.capacity, "pos": self.pos, "size": self.size, **rows}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output into a buffer of the same capacity and shapes.

        Raises:
            ValueError: if the capacity or a column's shape or dtype differs.
        """
        if state["capacity"] != self.capacity:
            raise ValueError(
                f"replay buffer capacity {state['capacity']} in the checkpoint, "
                f"{self.capacity} in this run"
            )
        size = state["size"]
        for name in self._COLUMNS:
            mine, saved = getattr(self, name), state[name]
            if saved.shape[1:] != mine.shape[1:] or saved.dtype != mine.dtype or len(saved) != size:
                raise ValueError(f"replay buffer column {name} does not match this run")
        for name in self._COLUMNS:
            getattr(self, name)[:size] = state[name].to(self.device)
        self.pos, self.size = state["pos"], size

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> ReplaySample:
        """Draw ``batch_size`` transitions uniformly, with replacement, from the filled rows.

        Args:
            batch_size: number of transitions, >= 1.
            generator: source of randomness for reproducible draws. Indices are drawn on the
                generator's device (a CPU generator with a CUDA buffer works) and then moved.

        Returns:
            A :class:`ReplaySample` on the buffer's device.

        Raises:
            ValueError: if the buffer is empty or ``batch_size`` < 1.
        """
        if self.size == 0:
            raise ValueError("cannot sample from an empty ReplayBuffer; add transitions first")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        index_device = self.device if generator is None else generator.device
        idx = torch.randint(self.size, (batch_size,), generator=generator, device=index_device)
        idx = idx.to(self.device)
        return ReplaySample(
            obs=self.obs[idx],
            actions=self.actions[idx],
            rewards=self.rewards[idx],
            next_obs=self.next_obs[idx],
            terminated=self.terminated[idx],
        )


class FrameReplayBuffer:
    """Replay memory for stacked frames that stores each frame once (DeepMind's layout).

    A ``[S, H, W]`` observation of a frame-stacking env shares ``S - 1`` frames with the next
    one, and ``next_obs`` is the following ``obs``. So for every env step only the newest frame
    of the returned observation is kept, in a ring per env copy, with the action, reward,
    terminal flag and the step at which the current episode's first frame was stored. A
    transition's two stacks are rebuilt from ``S + 1`` consecutive frames, the ones before the
    episode's first frame replaced by that frame, which is how ``FrameStackObservation`` pads
    (``padding_type="reset"``). The autoreset step (``valid`` False) stores its frame (the
    reset frame the next stacks start from) but is never sampled.

    Memory: ``H * W + 22`` bytes per transition (7,078 for 84x84 frames, against
    ``2 * S * H * W`` = 56,448 for a buffer that stores obs and next_obs), so 1M transitions
    take 7.1 GB.

    Same interface as :class:`ReplayBuffer`.

    Args:
        capacity: transitions kept (at least; each env copy gets ``ceil(capacity / E)``).
        obs_shape: ``(S, H, W)``, the stacked observation.
        num_envs: env copies ``E`` stepped together.
        device: where the storage lives and samples are returned.
    """

    def __init__(
        self, capacity: int, obs_shape: tuple[int, ...], num_envs: int, device: torch.device
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if len(obs_shape) != 3:
            raise ValueError(f"obs_shape must be (stack, height, width), got {obs_shape}")
        self.capacity, self.num_envs = int(capacity), int(num_envs)
        self.obs_shape = tuple(obs_shape)
        self.stack = obs_shape[0]
        self.device = torch.device(device)
        self.ring = self.ring_size(capacity, obs_shape, num_envs)
        e, r = num_envs, self.ring
        self.frames = torch.zeros((e, r, *obs_shape[1:]), dtype=torch.uint8, device=self.device)
        self.actions = torch.zeros((e, r), dtype=torch.int64, device=self.device)
        self.rewards = torch.zeros((e, r), dtype=torch.float32, device=self.device)
        self.terminated = torch.zeros((e, r), dtype=torch.bool, device=self.device)
        self.valid = torch.zeros((e, r), dtype=torch.bool, device=self.device)
        self.start = torch.zeros((e, r), dtype=torch.int64, device=self.device)
        self.steps = -1
        """Index of the newest frame (per env copy; they step together); -1 when empty."""
        self.episode_start = torch.zeros(e, dtype=torch.int64, device=self.device)
        self._valid_host = np.zeros((e, r), dtype=bool)  # for len() without a device sync
        self._valid_in_ring = 0

    @staticmethod
    def ring_size(capacity: int, obs_shape: tuple[int, ...], num_envs: int) -> int:
        """Slots per env copy: its share of ``capacity`` plus the frames a stack looks back."""
        return -(-int(capacity) // int(num_envs)) + obs_shape[0]

    @staticmethod
    def bytes_needed(capacity: int, obs_shape: tuple[int, ...], num_envs: int) -> int:
        """Bytes the storage of such a buffer takes (check it before building one)."""
        slots = num_envs * FrameReplayBuffer.ring_size(capacity, obs_shape, num_envs)
        return slots * (math.prod(obs_shape[1:]) + 8 + 4 + 1 + 1 + 8)

    @property
    def nbytes(self) -> int:
        """Bytes held by the preallocated storage."""
        tensors = (self.frames, self.actions, self.rewards, self.terminated, self.valid)
        return sum(t.numel() * t.element_size() for t in (*tensors, self.start))

    def _lowest(self) -> int:
        # Oldest step whose stack's frames (the S before it) are all still in the ring.
        return max(1, self.steps - self.ring + 1 + self.stack)

    def __len__(self) -> int:
        if self.steps < 1:
            return 0
        # Valid slots in the ring, less those too old to have their whole stack.
        oldest = max(self.steps - self.ring + 1, 0)
        too_old = np.arange(oldest, self._lowest()) % self.ring
        return self._valid_in_ring - int(self._valid_host[:, too_old].sum())

    def add(
        self,
        obs: Tensor | np.ndarray,
        next_obs: Tensor | np.ndarray,
        actions: Tensor | np.ndarray,
        rewards: Tensor | np.ndarray,
        terminated: Tensor | np.ndarray,
        valid: Tensor | np.ndarray,
    ) -> None:
        """Store one vector-env step (see :meth:`ReplayBuffer.add`); keeps ``next_obs[:, -1]``."""
        obs_t = torch.as_tensor(obs, device=self.device)
        next_t = torch.as_tensor(next_obs, device=self.device)
        for name, t in (("obs", obs_t), ("next_obs", next_t)):
            if tuple(t.shape) != (self.num_envs, *self.obs_shape):
                raise ValueError(
                    f"{name} must have shape {(self.num_envs, *self.obs_shape)}, "
                    f"got {tuple(t.shape)}"
                )
        if self.steps < 0:  # the first observation's frame: frame 0, where episode 0 starts
            self.steps = 0
            self.frames[:, 0] = obs_t[:, -1]
            self.episode_start.zero_()
        self.steps += 1
        slot = self.steps % self.ring
        valid_np = _host_mask(valid, self.num_envs)
        self._valid_in_ring += int(valid_np.sum()) - int(self._valid_host[:, slot].sum())
        self._valid_host[:, slot] = valid_np
        valid_t = torch.as_tensor(valid_np, device=self.device)
        self.frames[:, slot] = next_t[:, -1]
        self.actions[:, slot] = torch.as_tensor(actions, device=self.device).long()
        self.rewards[:, slot] = torch.as_tensor(rewards, device=self.device).float()
        self.terminated[:, slot] = torch.as_tensor(terminated, device=self.device).bool()
        self.valid[:, slot] = valid_t
        self.start[:, slot] = self.episode_start
        # An autoreset step returned the first frame of a new episode: it starts here.
        self.episode_start = torch.where(valid_t, self.episode_start, self.steps)

    def _stacks(self, env: Tensor, step: Tensor) -> tuple[Tensor, Tensor]:
        """The obs and next_obs stacks ``[B, S, H, W]`` of the transitions at ``step``."""
        back = torch.arange(-self.stack, 1, device=self.device)  # frames t - S .. t
        start = self.start[env, step % self.ring]
        idx = torch.maximum(step[:, None] + back, start[:, None]) % self.ring
        frames = self.frames[env[:, None], idx]  # [B, S + 1, H, W]
        return frames[:, :-1], frames[:, 1:]

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> ReplaySample:
        """Draw ``batch_size`` stored transitions uniformly, with replacement.

        Raises:
            ValueError: if the buffer holds no transition or ``batch_size`` < 1.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(self) == 0:
            raise ValueError("cannot sample from an empty FrameReplayBuffer; add transitions first")
        lo, hi = self._lowest(), self.steps
        index_device = self.device if generator is None else generator.device
        chosen_env, chosen_step = [], []
        need = batch_size
        while need > 0:  # rejection of the (few) autoreset slots
            n = 2 * need + 8
            env = torch.randint(self.num_envs, (n,), generator=generator, device=index_device)
            step = torch.randint(lo, hi + 1, (n,), generator=generator, device=index_device)
            env, step = env.to(self.device), step.to(self.device)
            keep = self.valid[env, step % self.ring]
            env, step = env[keep][:need], step[keep][:need]
            chosen_env.append(env)
            chosen_step.append(step)
            need -= len(env)
        env, step = torch.cat(chosen_env), torch.cat(chosen_step)
        obs, next_obs = self._stacks(env, step)
        slot = step % self.ring
        return ReplaySample(
            obs=obs,
            actions=self.actions[env, slot],
            rewards=self.rewards[env, slot],
            next_obs=next_obs,
            terminated=self.terminated[env, slot],
        )

    _COLUMNS = ("frames", "actions", "rewards", "terminated", "valid", "start")

    def state_dict(self) -> dict:
        """Everything stored, for checkpoints (``--save-replay``)."""
        cols = {name: getattr(self, name).cpu() for name in self._COLUMNS}
        meta = {"capacity": self.capacity, "steps": self.steps}
        return {**meta, "episode_start": self.episode_start.cpu(), **cols}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output into a buffer of the same shape.

        Raises:
            ValueError: if the capacity or a column's shape differs.
        """
        if state["capacity"] != self.capacity:
            raise ValueError(
                f"replay buffer capacity {state['capacity']} in the checkpoint, "
                f"{self.capacity} in this run"
            )
        for name in self._COLUMNS:
            if state[name].shape != getattr(self, name).shape:
                raise ValueError(f"replay buffer column {name} does not match this run")
        for name in self._COLUMNS:
            getattr(self, name).copy_(state[name])
        self.episode_start.copy_(state["episode_start"])
        self.steps = state["steps"]
        self._valid_host = state["valid"].numpy().copy()
        self._valid_in_ring = int(self._valid_host.sum())
