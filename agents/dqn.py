"""DQN: the Q-network, TD targets, the TD loss, epsilon-greedy exploration, target updates.

Pure functions around one small module; the training loop lives elsewhere. The defaults match
Stable-Baselines3's DQN (ReLU MLP with PyTorch's default init, Huber loss, mean reduction,
linear epsilon schedule, Polyak/hard target updates). The Nature-DQN preset differs in one place
that matters for the optimizer: DeepMind's gradient is a SUM over the batch (``reduction="sum"``),
see ``OPTIMIZERS.md`` section 1.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from .networks import image_torso

LOSSES = ("huber", "mse")
REDUCTIONS = ("mean", "sum")


TD_LOSS, Q_VALUES = "losses/td_loss", "losses/q_values"
TAGS: dict[str, tuple[str, str]] = {
    TD_LOSS: ("scalar", "the TD loss of a minibatch (Huber or squared error, as reduced)"),
    Q_VALUES: ("scalar", "mean Q(s, a) of the minibatch's actions"),
}
"""DQN's metrics: (kind, meaning) per tag."""


class DQNBatch(Protocol):
    """What the loss reads from a replay sample (any NamedTuple with these fields fits).

    ``obs``/``next_obs`` are ``[B, ...]``, ``actions`` ``[B]`` integer, ``rewards`` ``[B]``,
    ``terminated`` ``[B]`` bool (True only for a real termination, never for truncation).
    """

    @property
    def obs(self) -> Tensor: ...  # noqa: D102

    @property
    def actions(self) -> Tensor: ...  # noqa: D102

    @property
    def rewards(self) -> Tensor: ...  # noqa: D102

    @property
    def next_obs(self) -> Tensor: ...  # noqa: D102

    @property
    def terminated(self) -> Tensor: ...  # noqa: D102


class QNetwork(nn.Module):
    """ReLU MLP from a flat observation to one Q-value per action (SB3's DQN ``MlpPolicy``).

    SB3 builds its DQN Q-network with ReLU and leaves PyTorch's default Linear init in place
    (it applies the orthogonal init to A2C/PPO only), so this does not use ``networks.mlp``.
    SB3's default ``net_arch`` is [64, 64]; the rl-baselines3-zoo CartPole preset uses [256, 256].

    Args:
        obs_dim: size of the flattened observation.
        n_actions: number of discrete actions.
        hidden: hidden layer widths.
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        if obs_dim < 1:
            raise ValueError(f"obs_dim must be >= 1, got {obs_dim}")
        if n_actions < 1:
            raise ValueError(f"n_actions must be >= 1, got {n_actions}")
        sizes = [obs_dim, *hidden, n_actions]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))

    def forward(self, obs: Tensor) -> Tensor:
        """Q-values ``[B, n_actions]`` of observations ``[B, obs_dim]``.

        Integer observations are cast to the weights' dtype (SB3's ``preprocess_obs`` does the
        same for Box spaces). The layers are called functionally: action selection runs this
        every env step, where ``Module.__call__``'s cost per layer shows.
        """
        x = obs if obs.is_floating_point() else obs.to(self.layers[0].weight.dtype)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = F.linear(x, layer.weight, layer.bias)
            if i < last:
                x = F.relu(x)
        return x


class CnnQNetwork(nn.Module):
    """Q-network on images: a CNN (:func:`~agents.networks.image_torso`) and a linear layer.

    On Atari frames the Nature CNN (Mnih et al.); on MinAtar's planes the MinAtar paper's
    network, whose head keeps PyTorch's default initialisation as the paper's code does.

    Args:
        in_channels: stacked frames (or planes) per observation.
        n_actions: number of discrete actions.
        image_size: ``(H, W)`` of the frames.
        input_high: the observations' largest value (255 for pixels, 1 for planes).
    """

    def __init__(
        self,
        in_channels: int,
        n_actions: int,
        image_size: tuple[int, int] = (84, 84),
        input_high: float = 255.0,
    ) -> None:
        super().__init__()
        self.features = image_torso(in_channels, image_size, input_high)
        self.head = nn.Linear(self.features.fc.out_features, n_actions)

    def forward(self, obs: Tensor) -> Tensor:
        """Q-values ``[..., n_actions]`` of ``uint8`` images ``[..., C, H, W]``."""
        return self.head(self.features(obs))


TARGET_CHUNK = 1024
"""Rows per forward pass when targets are computed for many transitions at once: a chunk's
activations stay in cache, where all rows at once do not and much smaller chunks pay per-call
overhead (docs/benchmarks.md, "Figures moved from the code")."""


def _in_chunks(net: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``net(x)``, evaluated ``TARGET_CHUNK`` rows at a time when ``x`` has more rows."""
    if x.shape[0] <= TARGET_CHUNK:
        return net(x)
    return torch.cat([net(x[i : i + TARGET_CHUNK]) for i in range(0, x.shape[0], TARGET_CHUNK)])


@torch.no_grad()
def td_targets(
    rewards: Tensor,
    next_obs: Tensor,
    terminated: Tensor,
    target_net: Callable[[Tensor], Tensor],
    online_net: Callable[[Tensor], Tensor] | None = None,
    gamma: float = 0.99,
    double: bool = False,
) -> Tensor:
    """One-step TD targets ``[B]``, without gradient.

    Plain DQN (Mnih et al. 2015): ``y = r + gamma * (1 - terminated) * max_a Q_target(s', a)``.
    Double DQN (van Hasselt et al. 2016): the online network picks the action and the target
    network evaluates it, ``y = r + gamma * (1 - terminated) * Q_target(s', argmax_a Q(s', a))``,
    which removes most of max's overestimation bias.

    A truncated transition (time limit) is stored with ``terminated=False`` and so bootstraps:
    the state after it still has value, the episode was only cut off (SB3's
    ``handle_timeout_termination``, SB3 #633). The autoreset transition that Gymnasium >= 1.0
    emits after an episode end must never reach the buffer; that is the buffer's job.

    Args:
        rewards: ``[B]`` rewards.
        next_obs: ``[B, ...]`` successor observations.
        terminated: ``[B]`` bool (or 0/1) true termination flags.
        target_net: the target Q-network (or any observations -> Q-values function, e.g. the
            NumPy engine's).
        online_net: the online Q-network (likewise); required when ``double``.
        gamma: discount factor in [0, 1].
        double: use the Double-DQN target.

    Returns:
        ``[B]`` targets in the Q-values' dtype.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if double and online_net is None:
        raise ValueError("online_net is required when double=True")
    next_q = _in_chunks(target_net, next_obs)
    if double:
        assert online_net is not None  # checked above; narrows the type
        best = _in_chunks(online_net, next_obs).argmax(-1, keepdim=True)
        next_v = next_q.gather(-1, best).squeeze(-1)
    else:
        next_v = next_q.amax(-1)
    # masked_fill rather than (1 - terminated) * next_v: a terminal successor's Q is never
    # trained, so it may be inf or nan, and 0 * inf would poison the target.
    next_v = next_v.masked_fill(terminated.bool(), 0.0)
    return rewards.to(next_v.dtype) + gamma * next_v


def dqn_loss(
    q_net: nn.Module,
    batch: DQNBatch,
    targets: Tensor,
    loss: str = "huber",
    reduction: str = "mean",
) -> tuple[Tensor, dict[str, Tensor]]:
    """The TD loss between ``Q(s, a)`` of the taken actions and ``targets``, and its metrics.

    ``"huber"`` is ``smooth_l1`` with delta 1: quadratic for |error| <= 1, linear beyond, so the
    gradient per sample is the error clipped to [-1, 1], which is the Nature paper's "error
    clipping" and SB3's default. ``"mse"`` is the squared error.

    ``reduction="mean"`` (SB3, CleanRL) averages over the batch; ``"sum"`` adds it up as
    DeepMind's Lua code did. The Nature-DQN optimizer preset (lr 2.5e-4, eps 0.01 inside the
    square root) assumes ``"sum"``: a mean loss scales the gradient by 1/B, and with eps inside
    the sqrt that is only equivalent with eps / B^2 (``OPTIMIZERS.md`` section 1).

    Args:
        q_net: the online Q-network, ``[B, ...] -> [B, n_actions]``.
        batch: replay sample with ``obs`` and ``actions`` (see ``DQNBatch``).
        targets: ``[B]`` TD targets (from ``td_targets``, no gradient).
        loss: ``"huber"`` or ``"mse"``.
        reduction: ``"mean"`` or ``"sum"`` over the batch.

    Returns:
        The scalar loss and detached metrics ``losses/td_loss`` and ``losses/q_values`` (the
        mean of ``Q(s, a)``); ``[K]`` of each for a batch of K members' samples (``[K, B]``
        actions, a stacked ``q_net``), reduced per member.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    q = q_net(batch.obs)
    q_taken = q.gather(-1, batch.actions.long().unsqueeze(-1)).squeeze(-1)
    targets = targets.to(q_taken.dtype)
    # A batch of K members' samples ([K, B]) is reduced per member: [K] losses.
    per_member = q_taken.dim() > 1
    how = "none" if per_member else reduction
    if loss == "huber":
        value = F.smooth_l1_loss(q_taken, targets, reduction=how, beta=1.0)
    else:
        value = F.mse_loss(q_taken, targets, reduction=how)
    if per_member:
        value = value.mean(-1) if reduction == "mean" else value.sum(-1)
    metrics = {TD_LOSS: value.detach(), Q_VALUES: q_taken.detach().mean(-1)}
    return value, metrics


def linear_epsilon(step: int, total_steps: int, fraction: float, start: float, end: float) -> float:
    """Epsilon by SB3's ``LinearSchedule``: ``start`` -> ``end`` linearly, then ``end``.

    ``eps = start + (step / total_steps) * (end - start) / fraction`` while
    ``step / total_steps < fraction``, else ``end``. ``fraction = 0`` means ``end`` throughout.

    Args:
        step: environment steps taken so far (>= 0).
        total_steps: the run's total environment steps (> 0).
        fraction: share of the run over which epsilon decays, in [0, 1].
        start: epsilon at step 0, in [0, 1].
        end: epsilon after the decay, in [0, 1].
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    for name, value in (("start", start), ("end", end)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    progress = step / total_steps
    if progress >= fraction:
        return end
    return start + progress * (end - start) / fraction


def epsilon_greedy(
    q_values: Tensor, epsilon: float, generator: torch.Generator | None = None
) -> Tensor:
    """Per-row epsilon-greedy actions ``[...]`` from Q-values ``[..., n_actions]``.

    Each row independently takes a uniformly random action (possibly the greedy one) with
    probability ``epsilon``, else its argmax. SB3 and CleanRL toss one coin for all envs of a
    vector env; independent coins decorrelate the envs' exploration, and the marginal per env is
    the same.

    Args:
        q_values: ``[..., n_actions]`` Q-values.
        epsilon: exploration probability in [0, 1].
        generator: random generator on ``q_values``' device, for reproducible draws.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    greedy = q_values.argmax(-1)
    shape, device = greedy.shape, q_values.device
    # torch.rand is in [0, 1), so epsilon 0 never explores and epsilon 1 always does.
    explore = torch.rand(shape, generator=generator, device=device) < epsilon
    random = torch.randint(q_values.shape[-1], shape, generator=generator, device=device)
    return torch.where(explore, random, greedy)


def lazy_epsilon_greedy(
    q_fn: Callable[[Tensor], Tensor],
    obs: Tensor,
    epsilon: float,
    n_actions: int,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> Tensor:
    """``epsilon_greedy(q_fn(obs), epsilon)`` that skips the network when every row explores.

    Early in training epsilon is near 1 and most steps are random; computing a CNN's Q-values
    for them (milliseconds on a CPU) would be wasted. The coins and random actions are drawn on
    the CPU first, in :func:`epsilon_greedy`'s order, so with the same CPU generator both give
    the same actions.

    Members: with one generator per member (a population's K), ``obs`` holds the members'
    rows one member after another, and member k draws its rows' coins and random actions
    from generator k in that order, what a single run with that generator draws. ``q_fn``
    takes ``obs`` as given and returns the Q-values of every row, in the same order.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    one = generator is None or isinstance(generator, torch.Generator)
    generators = [generator] if one else list(generator)
    per = obs.shape[0] // len(generators)
    explore, random = [], []
    for g in generators:
        explore.append(torch.rand(per, generator=g) < epsilon)
        random.append(torch.randint(n_actions, (per,), generator=g))
    explore_t, random_t = torch.cat(explore), torch.cat(random)
    if bool(explore_t.all()):
        return random_t.to(obs.device)
    greedy = q_fn(obs).argmax(-1).reshape(-1)
    return torch.where(explore_t.to(greedy.device), random_t.to(greedy.device), greedy)


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``target = tau * online + (1 - tau) * target`` in place, parameters and buffers.

    Reproduces SB3's ``polyak_update`` (``mul_(1 - tau)`` then ``add_(alpha=tau)``). Members
    update their targets through :func:`polyak_` on the whole ``[K, N]`` rows, one pair of
    tensors, so no per-tensor loop costs anything in training. ``tau = 1`` is the
    hard copy of Nature DQN and SB3's default, done with ``copy_`` so that it is exact even if the
    target holds inf or nan. Floating buffers (batch-norm statistics) follow ``tau`` like the
    parameters; integer buffers (``num_batches_tracked``) cannot be averaged and are copied.

    Args:
        target: the target network, updated in place.
        online: the online network, same architecture.
        tau: interpolation weight in [0, 1].
    """
    pairs = [
        *_aligned(target.named_parameters(), online.named_parameters()),
        *_aligned(target.named_buffers(), online.named_buffers()),
    ]
    polyak_(pairs, tau)


@torch.no_grad()
def polyak_(pairs: Sequence[tuple[Tensor, Tensor]], tau: float) -> None:
    """:func:`polyak_update` on ``(target, online)`` tensor pairs (e.g. flat ``[K, N]`` rows)."""
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}")
    for t, o in pairs:
        if t.is_floating_point() and tau != 1.0:
            t.mul_(1.0 - tau).add_(o, alpha=tau)
        else:
            t.copy_(o)


def _aligned(
    target_items: Iterable[tuple[str, Tensor]], online_items: Iterable[tuple[str, Tensor]]
) -> list[tuple[Tensor, Tensor]]:
    """Zip named tensors of two modules, checking that names and shapes agree."""
    t_items, o_items = list(target_items), list(online_items)
    t_names, o_names = [n for n, _ in t_items], [n for n, _ in o_items]
    if t_names != o_names:
        raise ValueError(f"target and online differ in tensors: {t_names} vs {o_names}")
    for (name, t), (_, o) in zip(t_items, o_items, strict=True):
        if t.shape != o.shape:
            raise ValueError(
                f"target and online differ in shape at {name!r}: {tuple(t.shape)} vs "
                f"{tuple(o.shape)}"
            )
    return [(t, o) for (_, t), (_, o) in zip(t_items, o_items, strict=True)]
