"""DQN pieces for K members: the stacked TD loss's gradient, replay, exploration, targets."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from agents.dqn import Q_VALUES, TD_LOSS, QNetwork, dqn_loss, lazy_epsilon_greedy, td_targets
from agents.members import MemberGenerators, MemberQ, MemberReplay
from agents.replay import ReplayBuffer, ReplaySample
from agents.rollout import Step
from agents.stacked import StackedModule

K, B = 3, 16


def _pair(hidden=(16, 16)):
    nets = []
    for seed in range(K):
        torch.manual_seed(seed)
        nets.append(QNetwork(4, 2, hidden))
    targets = [copy.deepcopy(n) for n in nets]
    for t in targets:
        with torch.no_grad():
            for p in t.parameters():
                p.mul_(0.9)
    return nets, targets, StackedModule(nets), StackedModule(targets, grad=False)


def _batch(g):
    return ReplaySample(
        torch.randn(K, B, 4, generator=g),
        torch.randint(0, 2, (K, B), generator=g),
        torch.randn(K, B, generator=g),
        torch.randn(K, B, 4, generator=g),
        torch.rand(K, B, generator=g) < 0.2,
    )


@pytest.mark.parametrize("engine", ["numpy", "autograd"])
@pytest.mark.parametrize(("loss", "reduction"), [("huber", "mean"), ("mse", "sum")])
@pytest.mark.parametrize("double", [False, True])
def test_targets_and_gradients_are_each_members_single_network_ones(
    engine, loss, reduction, double
):
    nets, targets, online, target = _pair()
    q = MemberQ(online, target, engine)
    batch = _batch(torch.Generator().manual_seed(1))
    y = q.targets(batch, 0.97, double)
    metrics = q.gradients(batch, y, loss, reduction)
    for k in range(K):
        part = ReplaySample(*(t[k] for t in batch))
        want_y = td_targets(
            part.rewards, part.next_obs, part.terminated, targets[k], nets[k], 0.97, double=double
        )
        torch.testing.assert_close(y[k], want_y)
        nets[k].zero_grad()
        value, _ = dqn_loss(nets[k], part, want_y, loss, reduction)
        value.backward()
        want = torch.cat([p.grad.reshape(-1) for p in nets[k].parameters()])
        torch.testing.assert_close(online.grad[k], want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(metrics[TD_LOSS][k], value.detach())


def test_the_dqn_loss_of_stacked_samples_is_reduced_per_member():
    nets, _, online, _ = _pair()
    batch = _batch(torch.Generator().manual_seed(2))
    y = torch.randn(K, B)
    value, metrics = dqn_loss(online, batch, y, "huber", "sum")
    assert value.shape == (K,) and metrics[Q_VALUES].shape == (K,)
    single, _ = dqn_loss(nets[1], ReplaySample(*(t[1] for t in batch)), y[1], "huber", "sum")
    torch.testing.assert_close(value[1], single)


def test_target_updates_are_per_member_polyak_or_a_copy():
    _, _, online, target = _pair()
    q = MemberQ(online, target, "numpy")
    before = target.data.clone()
    q.update_target(0.25)
    torch.testing.assert_close(target.data, 0.75 * before + 0.25 * online.data)
    q.update_target(1.0)
    assert torch.equal(target.data, online.data)


def test_exploration_draws_what_a_single_run_draws_from_each_members_generator():
    _, _, online, target = _pair()
    q = MemberQ(online, target, "numpy")
    states = [torch.Generator().manual_seed(10 + k).get_state() for k in range(K)]
    gens = MemberGenerators(states)
    obs = torch.randn(K * 2, 4)

    def q_rows(o):
        return q.q_values(o.reshape(K, 2, 4))

    got = lazy_epsilon_greedy(q_rows, obs, 0.5, 2, gens.generators)
    for k in range(K):
        g = torch.Generator()
        g.set_state(states[k])
        want = lazy_epsilon_greedy(
            lambda o, k=k: online(o[None]).squeeze(0), obs[2 * k : 2 * k + 2], 0.5, 2, g
        )
        assert torch.equal(got[2 * k : 2 * k + 2], want)
    saved = gens.state_dict()
    first = lazy_epsilon_greedy(q_rows, obs, 1.0, 2, gens.generators)
    gens.load_state_dict(saved)
    assert torch.equal(first, lazy_epsilon_greedy(q_rows, obs, 1.0, 2, gens.generators))


def test_each_member_stores_only_its_own_valid_transitions_and_samples_its_own_buffer():
    replay = MemberReplay(2, 10, (3,), 2, torch.device("cpu"))
    obs = np.arange(12, dtype=np.float32).reshape(4, 3)
    valid = np.array([True, True, False, True])  # member 1's first env is autoresetting
    step = Step(
        obs,
        torch.tensor([0, 1, 0, 1]),
        np.ones(4),
        np.zeros(4, bool),
        np.zeros(4, bool),
        valid,
        obs + 100,
    )
    replay.add(step)
    assert replay.size.tolist() == [2, 1] and len(replay) == 1
    assert torch.equal(replay.obs[1, 0], torch.tensor([9.0, 10.0, 11.0]))
    gens = MemberGenerators([torch.Generator().manual_seed(k).get_state() for k in range(2)])
    sample = replay.sample(5, gens)
    assert sample.obs.shape == (2, 5, 3)
    assert set(sample.obs[1, :, 0].tolist()) == {9.0}
    assert set(sample.obs[0, :, 0].tolist()) <= {0.0, 3.0}
    assert torch.equal(sample.next_obs, sample.obs + 100)
    fresh = MemberReplay(2, 10, (3,), 2, torch.device("cpu"))
    fresh.load_state_dict(replay.state_dict())
    assert fresh.size.tolist() == [2, 1] and torch.equal(fresh.obs, replay.obs)


def test_a_members_rows_are_where_its_own_replay_buffer_puts_them_and_draws_the_same():
    rng = np.random.default_rng(0)
    per, steps, cap = 3, 9, 5  # wraps around, with autoreset rows dropped
    mine = MemberReplay(2, cap, (2,), per, torch.device("cpu"))
    own = [ReplayBuffer(cap, (2,), per, torch.device("cpu")) for _ in range(2)]
    for _ in range(steps):
        obs = rng.standard_normal((2 * per, 2)).astype(np.float32)
        valid = rng.random(2 * per) < 0.7
        actions = torch.from_numpy(rng.integers(0, 2, 2 * per))
        rewards, done = rng.standard_normal(2 * per), rng.random(2 * per) < 0.3
        mine.add(Step(obs, actions, rewards, done, ~done, valid, obs * 2))
        for k, b in enumerate(own):
            rows = slice(k * per, (k + 1) * per)
            b.add(obs[rows], obs[rows] * 2, actions[rows], rewards[rows], done[rows], valid[rows])
    states = [torch.Generator().manual_seed(k).get_state() for k in range(2)]
    sample = mine.sample(7, MemberGenerators(states))
    for k, b in enumerate(own):
        assert mine.pos[k] == b.pos and mine.size[k] == b.size
        g = torch.Generator()
        g.set_state(states[k])
        want = b.sample(7, g)
        assert all(torch.equal(x[k], y) for x, y in zip(sample, want, strict=True))
