"""What a population's loop needs of its algorithm: networks, acting, one round of training.

:class:`~rl_rmsprop.run.population.Loop` is written once for every algorithm: it steps the
optimizer, logs, evaluates, reports and checkpoints. An algorithm here builds the members'
stacked networks (parameters in one ``[K, N]`` buffer for the optimizer), plays a round
(collecting, then calling ``loop.update(metrics)`` after each gradient), acts greedily for
evaluation, and checkpoints what it owns. The maths are the single run's, in ``agents``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from agents import dqn_numpy
from agents.dqn import lazy_epsilon_greedy, linear_epsilon
from agents.members import MemberGenerators, MemberQ
from agents.population import (
    MemberNoise,
    PopulationActorCritic,
    StackedActorCritic,
    a2c_gradients,
    sample_actions,
)
from agents.replay import ReplaySample
from agents.stacked import StackedModule
from rl_rmsprop.config import Config
from rl_rmsprop.logger import flatten
from rl_rmsprop.run.builders import build_model, build_replay
from rl_rmsprop.run.errors import UserError
from rl_rmsprop.tags import EPSILON

TargetsFn = Callable[[ReplaySample], Tensor]
"""A replay sample -> its ``[K, B]`` TD targets (target network, gamma and the rule bound in)."""


def training_batches(
    sample: Callable[[int], ReplaySample], targets_of: TargetsFn, cfg: Config
) -> Iterator[tuple[ReplaySample, Tensor]]:
    """A training round's ``gradient_steps`` minibatches with their TD targets.

    The target network is fixed during a round (it changes only while collecting), so without
    Double DQN every minibatch is drawn at once and all targets come from one forward pass:
    the same distribution as drawing them one by one, for one large matrix product instead of
    ``gradient_steps`` small ones. Double DQN's targets use the online network, which changes
    after each gradient step, so they are computed per minibatch.

    Args:
        sample: draws that many transitions of every member (``[K, n, ...]``).
        targets_of: a sample's ``[K, n]`` TD targets.
        cfg: the run's configuration (batch size, gradient steps, Double DQN).
    """
    size, steps = cfg.dqn.batch_size, cfg.dqn.gradient_steps
    if cfg.dqn.double_dqn:
        for _ in range(steps):
            batch = sample(size)
            yield batch, targets_of(batch)
        return
    big = sample(size * steps)
    targets = targets_of(big)
    for i in range(0, size * steps, size):
        yield ReplaySample(*(t[:, i : i + size] for t in big)), targets[:, i : i + size]


class A2CMembers:
    """K actor-critics trained in lockstep.

    MLPs: :class:`~agents.population.PopulationActorCritic` (the CPU engine or autograd);
    Atari's Nature CNN: :class:`~agents.population.StackedActorCritic` (autograd).
    """

    def __init__(
        self, cfg: Config, seeds: Sequence[int], env: Any, device: torch.device, engine: str
    ) -> None:
        images = len(env.single_observation_space.shape) == 3
        fits = device.type == "cpu" and not images
        if engine == "numpy" and not fits:
            raise UserError(
                "--engine numpy trains MLPs on the CPU only; use --engine auto (or autograd) "
                "for Atari or --device cuda"
            )
        engine = "numpy" if engine != "autograd" and fits else "autograd"
        nets = []
        for seed in seeds:  # each member initialised exactly as a single run with its seed
            torch.manual_seed(seed)
            nets.append(build_model(cfg, env))
        self.cfg, self.engine = cfg, engine
        stacking = StackedActorCritic if images else PopulationActorCritic
        self.model = stacking(nets, cfg.env.num_envs, device)
        self.data, self.grad = self.model.data, self.model.grad
        self.names = self.model.names()
        self.noise = MemberNoise(seeds, cfg.env.num_envs, self.model.n_actions, device)
        self.note = ""

    def round(self, loop: Any) -> None:
        """One rollout of ``--n-steps`` and one update of every member."""
        model, noise, a2c = self.model, self.noise, self.cfg.a2c
        rollout = loop.collector.collect(lambda obs: sample_actions(model, noise, obs), a2c.n_steps)
        _, metrics = a2c_gradients(model, rollout, a2c, self.cfg.learn.gamma, self.engine)
        loop.update(metrics)

    def greedy(self, obs: Tensor) -> Tensor:
        """Greedy actions ``[K * E']`` for member-major observations."""
        return self.model.logits(obs).argmax(-1).cpu()

    def member_state_dict(self, k: int) -> dict[str, Tensor]:
        """Member k's :class:`ActorCritic` ``state_dict``."""
        return self.model.member_state_dict(k)

    def state_dict(self) -> dict[str, Any]:
        """Parameters and sampling noise."""
        return {"model": self.data.detach().cpu().clone(), "noise": self.noise.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.data.copy_(state["model"])
        self.noise.load_state_dict(state["noise"])


class DQNMembers:
    """K Q-networks with their target networks, replay buffers and generators.

    Member k's network is built as a single run with seed k builds it, and its generator
    continues from the global generator's state after that, so it draws what the single
    run draws.
    """

    def __init__(
        self, cfg: Config, seeds: Sequence[int], env: Any, device: torch.device, engine: str
    ) -> None:
        nets, states = [], []
        for seed in seeds:  # as a single run builds its network (MLP or Nature CNN)
            torch.manual_seed(seed)
            nets.append(build_model(cfg, env))
            states.append(torch.get_rng_state())
        fits = dqn_numpy.supports(nets[0]) and device.type == "cpu"
        if engine == "numpy" and not fits:
            raise UserError(
                "--engine numpy trains MLPs on the CPU only; use --engine auto (or autograd) "
                "for Atari or --device cuda"
            )
        engine = "numpy" if engine != "autograd" and fits else "autograd"
        self.cfg, self.engine = cfg, engine
        self.n_actions = int(env.single_action_space.n)
        self.online = StackedModule(nets, device)
        self.target = StackedModule([copy.deepcopy(n) for n in nets], device, grad=False)
        self.data, self.grad, self.names = self.online.data, self.online.grad, self.online.names()
        self.q = MemberQ(self.online, self.target, engine)
        self.generators = MemberGenerators(states)
        self.replay, self.note = build_replay(cfg, env, device, members=len(seeds))
        self.target_updates = 0

    def round(self, loop: Any) -> None:
        """``train_freq`` env steps of every member, then ``gradient_steps`` updates.

        As a single run: epsilon by the member step, valid transitions into each member's
        buffer, target updates counted in env steps while collecting, then (after
        ``learning_starts``) minibatches of each member's buffer with their TD targets.
        """
        cfg, collector = self.cfg, loop.collector
        dqn, total = cfg.dqn, cfg.run.total_steps
        eps = 0.0
        for _ in range(max(1, dqn.train_freq // cfg.env.num_envs)):
            eps = linear_epsilon(
                collector.member_step,
                total,
                dqn.exploration_fraction,
                dqn.exploration_initial_eps,
                dqn.exploration_final_eps,
            )
            s = collector.step(
                lambda obs, e=eps: lazy_epsilon_greedy(
                    self.q_rows, obs, e, self.n_actions, self.generators.generators
                )
            )
            self.replay.add(s)
            updates = collector.member_step // dqn.target_update_interval
            if updates > self.target_updates:
                self.target_updates = updates
                self.q.update_target(dqn.tau)
        if collector.member_step < dqn.learning_starts or len(self.replay) == 0:
            return
        gamma = cfg.learn.gamma
        batches = training_batches(  # drawn as a single run draws them, per member
            lambda n: self.replay.sample(n, self.generators),
            lambda b: self.q.targets(b, gamma, dqn.double_dqn),
            cfg,
        )
        for batch, targets in batches:
            metrics = self.q.gradients(batch, targets, dqn.loss, dqn.loss_reduction)
            loop.update({**metrics, EPSILON: eps})

    def q_rows(self, obs: Tensor) -> Tensor:
        """Q-values ``[K, E', A]`` of member-major observations ``[K * E', ...]``."""
        return self.q.q_values(obs.reshape(self.online.members, -1, *obs.shape[1:]))

    def greedy(self, obs: Tensor) -> Tensor:
        """Greedy actions ``[K * E']`` for member-major observations."""
        return self.q_rows(obs).argmax(-1).reshape(-1).cpu()

    def member_state_dict(self, k: int) -> dict[str, Tensor]:
        """Member k's :class:`QNetwork` ``state_dict``."""
        return self.online.member_state_dict(k)

    def state_dict(self) -> dict[str, Any]:
        """Networks, generators, target count and (with ``--save-replay``) the buffers."""
        return {
            "model": self.data.detach().cpu().clone(),
            "target": self.target.data.cpu().clone(),
            "generators": self.generators.state_dict(),
            "target_updates": self.target_updates,
            "replay": self.replay.state_dict() if self.cfg.run.save_replay else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (a checkpoint without replay starts it empty)."""
        self.data.copy_(state["model"])
        self.target.data.copy_(state["target"])
        self.generators.load_state_dict(state["generators"])
        self.target_updates = state["target_updates"]
        if state["replay"] is not None:
            self.replay.load_state_dict(state["replay"])


ALGORITHMS = {"a2c": A2CMembers, "dqn": DQNMembers}
"""The algorithms a population trains, by ``--algo``."""


SHARED = ("optim", "run.seed", "run.logdir", "run.run_name")
"""What may differ between members; every other option is the population's."""


class PopulationError(Exception):
    """The population cannot be trained as asked (one line, exit status 2)."""


def _shared_part(cfg: Config) -> dict[str, Any]:
    flat = flatten(cfg.to_dict())
    return {k: v for k, v in flat.items() if not any(k.startswith(s) for s in SHARED)}


def check_members(cfgs: list[Config]) -> None:
    """Members may differ only in optimizer settings, seed and run folder.

    Raises:
        PopulationError: for no members or members that differ.
    """
    if not cfgs:
        raise PopulationError("a population needs at least one member")
    first = _shared_part(cfgs[0])
    for cfg in cfgs[1:]:
        other = _shared_part(cfg)
        diff = [k for k in first if first[k] != other.get(k)]
        if diff:
            raise PopulationError(
                f"population members differ in {diff[0]}; only the optimizer and seed may differ"
            )
