"""Networks: MLPs with Stable-Baselines3's orthogonal initialisation, and the actor-critic."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812


def mlp(sizes: Sequence[int], out_gain: float) -> nn.Sequential:
    """Tanh MLP with orthogonal weights (gain sqrt(2) hidden, ``out_gain`` last), zero biases.

    The initialisation is SB3's ``ortho_init`` for A2C/PPO, so runs start where SB3's do.
    """
    layers: list[nn.Module] = []
    pairs = list(itertools.pairwise(sizes))
    for i, (a, b) in enumerate(pairs):
        linear = nn.Linear(a, b)
        last = i == len(pairs) - 1
        nn.init.orthogonal_(linear.weight, gain=out_gain if last else math.sqrt(2))
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if not last:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Separate policy and value MLPs over a flat observation (SB3's A2C ``MlpPolicy``).

    Args:
        obs_dim: size of the flattened observation.
        n_actions: number of discrete actions.
        hidden: hidden widths of each of the two MLPs.
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        self.policy = mlp([obs_dim, *hidden, n_actions], out_gain=0.01)
        self.value = mlp([obs_dim, *hidden, 1], out_gain=1.0)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Action logits ``[..., n_actions]`` and state values ``[...]``."""
        return run_mlp(self.policy, obs), run_mlp(self.value, obs).squeeze(-1)

    @torch.no_grad()
    def logits(self, obs: Tensor) -> Tensor:
        """The policy's action logits only (no value)."""
        return run_mlp(self.policy, obs)

    @torch.no_grad()
    def act(self, obs: Tensor, greedy: bool = False) -> Tensor:
        """Sample actions (or take the most likely with ``greedy``)."""
        logits = run_mlp(self.policy, obs)
        if greedy:
            return logits.argmax(-1)
        return sample_categorical(logits)


def sample_categorical(logits: Tensor) -> Tensor:
    """One sample per row of ``logits`` by the Gumbel-max trick: argmax(logits - log E).

    E ~ Exponential(1), so -log E is Gumbel distributed and the argmax is a draw from
    softmax(logits): the distribution of ``Categorical(logits=...).sample()`` at a quarter of
    its cost (three ops, no distribution object); this runs every env step.
    """
    return (logits - torch.empty_like(logits).exponential_().log()).argmax(-1)


def run_mlp(net: nn.Sequential, x: Tensor) -> Tensor:
    """``net(x)`` for a Linear/Tanh stack without ``Module.__call__`` (hooks are not run).

    The call machinery costs about a third of a 64-wide MLP's forward on a batch of 8
    observations, and the actor runs every env step.
    """
    for layer in net:
        is_linear = isinstance(layer, nn.Linear)
        x = F.linear(x, layer.weight, layer.bias) if is_linear else torch.tanh(x)
    return x


MIN_IMAGE_SIZE = 36
"""Smallest image side the Nature CNN's convolutions fit (84 -> 20 -> 9 -> 7; 36 -> 8 -> 3 -> 1)."""


class NatureCNN(nn.Module):
    """The convolutional torso of DeepMind's Nature DQN (Mnih et al. 2015).

    ``uint8`` frames ``[..., C, H, W]`` (84 x 84 for Atari) are divided by 255 here (they
    stay ``uint8`` in the env and the replay memory). Conv 32x8x8 stride 4, 64x4x4 stride 2,
    64x3x3 stride 1, each followed by ReLU, then a 512-unit ReLU layer. Orthogonal
    initialisation with gain sqrt(2) and zero biases, as SB3's ``NatureCNN`` under
    ``ortho_init``.

    Args:
        in_channels: stacked frames per observation.
        out_features: width of the last layer.
        image_size: ``(H, W)``, each at least :data:`MIN_IMAGE_SIZE`.

    Raises:
        ValueError: an image smaller than the convolutions' receptive field.
    """

    def __init__(
        self, in_channels: int = 4, out_features: int = 512, image_size: tuple[int, int] = (84, 84)
    ) -> None:
        super().__init__()
        if min(image_size) < MIN_IMAGE_SIZE:
            raise ValueError(
                f"images of {image_size[0]}x{image_size[1]} are smaller than the Nature CNN's "
                f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} minimum"
            )
        side = [(n - 8) // 4 + 1 for n in image_size]  # after each convolution
        side = [(n - 4) // 2 + 1 for n in side]
        side = [n - 2 for n in side]
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.fc = nn.Linear(64 * side[0] * side[1], out_features)
        self.channels_last = True
        """Train on channels-last activations on the CPU (off where that cannot be asked for,
        e.g. inside ``torch.func.vmap``: :class:`agents.stacked.StackedModule`)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.orthogonal_(module.weight, gain=math.sqrt(2))
                nn.init.zeros_(module.bias)

    def forward(self, obs: Tensor) -> Tensor:
        """Features ``[..., out_features]`` of frames ``[..., C, H, W]``."""
        lead = obs.shape[:-3]
        x = obs.reshape(-1, *obs.shape[-3:]).to(self.fc.weight.dtype) / 255.0
        if self.channels_last and x.device.type == "cpu" and torch.is_grad_enabled():
            # Channels-last activations take oneDNN's convolution kernels: forward plus
            # backward is faster on the CPU (the forward alone is not, so acting keeps the
            # default layout). The weights
            # and their gradients stay contiguous, as the optimizer's flat buffers need.
            x = x.contiguous(memory_format=torch.channels_last)
        return F.relu(self.fc(self.convs(x))).reshape(*lead, -1)


MINATAR_KERNEL = 3
"""Side of the MinAtar CNN's one convolution (stride 1, no padding)."""


class MinAtarCNN(nn.Module):
    """The torso of the MinAtar paper's networks (Young and Tian 2019), for small images.

    One 3x3 convolution of 16 channels, stride 1, no padding, then ReLU, then a 128-unit ReLU
    layer: a quarter of the Nature CNN's 64 filters and 512 units. The input is divided by
    ``input_high``: MinAtar's 0/1 planes go in as they are, 0-255 pixels as fractions.
    PyTorch's default initialisation, as the paper's code leaves it.

    Args:
        in_channels: planes per observation (MinAtar: 4 to 10, one per kind of object).
        out_features: width of the last layer.
        image_size: ``(H, W)``, each at least :data:`MINATAR_KERNEL` (MinAtar: 10 x 10).
        input_high: the largest value of the input (the observation space's high).

    Raises:
        ValueError: an image smaller than the convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_features: int = 128,
        image_size: tuple[int, int] = (10, 10),
        input_high: float = 1.0,
    ) -> None:
        super().__init__()
        if min(image_size) < MINATAR_KERNEL:
            raise ValueError(
                f"images of {image_size[0]}x{image_size[1]} are smaller than the MinAtar CNN's "
                f"{MINATAR_KERNEL}x{MINATAR_KERNEL} convolution"
            )
        side = [n - MINATAR_KERNEL + 1 for n in image_size]
        self.conv = nn.Conv2d(in_channels, 16, MINATAR_KERNEL, stride=1)
        self.fc = nn.Linear(16 * side[0] * side[1], out_features)
        self.input_high = float(input_high)

    def forward(self, obs: Tensor) -> Tensor:
        """Features ``[..., out_features]`` of images ``[..., C, H, W]``."""
        lead = obs.shape[:-3]
        x = obs.reshape(-1, *obs.shape[-3:]).to(self.fc.weight.dtype)
        if self.input_high != 1.0:
            x = x / self.input_high
        x = F.relu(self.conv(x)).flatten(1)
        return F.relu(self.fc(x)).reshape(*lead, -1)


def image_torso(
    in_channels: int, image_size: tuple[int, int], input_high: float = 255.0
) -> NatureCNN | MinAtarCNN:
    """The CNN for images of this size: the Nature CNN from 36 x 36 up, else MinAtar's.

    Atari's 84 x 84 frames get DeepMind's Nature CNN (which divides by 255), MinAtar's
    10 x 10 planes the MinAtar paper's (which divides by ``input_high``: 1 for planes). Its
    ``fc.out_features`` is the width of the features.

    Raises:
        ValueError: an image smaller than MinAtar's 3 x 3 convolution.
    """
    if min(image_size) >= MIN_IMAGE_SIZE:
        return NatureCNN(in_channels, image_size=image_size)
    return MinAtarCNN(in_channels, image_size=image_size, input_high=input_high)


class CnnActorCritic(nn.Module):
    """Actor-critic on images: one CNN (:func:`image_torso`) shared by a policy and a value head.

    On Atari frames it is SB3's A2C ``CnnPolicy`` (the Nature CNN); on MinAtar's planes the
    MinAtar paper's torso. The heads are linear, initialised orthogonally with gains 0.01
    (policy) and 1 (value), as SB3's.

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
        width = self.features.fc.out_features
        self.policy = nn.Linear(width, n_actions)
        self.value = nn.Linear(width, 1)
        for head, gain in ((self.policy, 0.01), (self.value, 1.0)):
            nn.init.orthogonal_(head.weight, gain=gain)
            nn.init.zeros_(head.bias)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Action logits ``[..., n_actions]`` and state values ``[...]``."""
        z = self.features(obs)
        return self.policy(z), self.value(z).squeeze(-1)

    @torch.no_grad()
    def logits(self, obs: Tensor) -> Tensor:
        """The policy's action logits only (no value)."""
        return self.policy(self.features(obs))

    @torch.no_grad()
    def act(self, obs: Tensor, greedy: bool = False) -> Tensor:
        """Sample actions (or take the most likely with ``greedy``)."""
        logits = self.policy(self.features(obs))
        return logits.argmax(-1) if greedy else sample_categorical(logits)
