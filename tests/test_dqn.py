import math
from typing import NamedTuple

import pytest
import torch
from torch import Tensor, nn

from agents.dqn import (
    Q_VALUES,
    TD_LOSS,
    QNetwork,
    dqn_loss,
    epsilon_greedy,
    linear_epsilon,
    polyak_update,
    td_targets,
)

# Tabular Q-networks over 3 one-hot states and 2 actions: Q(s) = W[:, s], so every Q-value is
# a weight we set by hand.
#            s0       s1       s2
TARGET_Q = [[1.0, 3.0], [5.0, 2.0], [4.0, 6.0]]  # max: 3, 5, 6
ONLINE_Q = [[2.0, 0.0], [0.0, 1.0], [7.0, -1.0]]  # argmax: 0, 1, 0
GAMMA = 0.5


class Batch(NamedTuple):
    obs: Tensor
    actions: Tensor
    rewards: Tensor
    next_obs: Tensor
    terminated: Tensor


def table_net(q_table: list[list[float]]) -> nn.Linear:
    net = nn.Linear(3, 2, bias=False).double()
    with torch.no_grad():
        net.weight.copy_(torch.tensor(q_table, dtype=torch.float64).T)
    return net


def one_hot(*states: int) -> Tensor:
    return torch.eye(3, dtype=torch.float64)[list(states)]


def test_table_net_returns_the_table():
    assert table_net(TARGET_Q)(one_hot(0, 1, 2)).tolist() == TARGET_Q


# Three transitions into s0, s1, s2 with rewards 1, -1, 0.5. The first is a truncation (stored
# with terminated=False, so it bootstraps), the second a true termination.
REWARDS = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
NEXT_OBS = one_hot(0, 1, 2)
TERMINATED = torch.tensor([False, True, False])


def test_td_targets_plain():
    y = td_targets(REWARDS, NEXT_OBS, TERMINATED, table_net(TARGET_Q), gamma=GAMMA)
    # y0 = 1 + 0.5 * max(1, 3)   = 2.5   (truncated: bootstraps)
    # y1 = -1                            (terminated: no bootstrap, max 5 ignored)
    # y2 = 0.5 + 0.5 * max(4, 6) = 3.5
    torch.testing.assert_close(y, torch.tensor([2.5, -1.0, 3.5], dtype=torch.float64))
    assert not y.requires_grad


def test_td_targets_double():
    y = td_targets(
        REWARDS,
        NEXT_OBS,
        TERMINATED,
        table_net(TARGET_Q),
        table_net(ONLINE_Q),
        gamma=GAMMA,
        double=True,
    )
    # Online argmax: s0 -> a0, s1 -> a1, s2 -> a0; the target net evaluates those actions.
    # y0 = 1 + 0.5 * Q_target(s0, a0) = 1 + 0.5 * 1 = 1.5
    # y1 = -1                           (terminated)
    # y2 = 0.5 + 0.5 * Q_target(s2, a0) = 0.5 + 0.5 * 4 = 2.5
    torch.testing.assert_close(y, torch.tensor([1.5, -1.0, 2.5], dtype=torch.float64))


def test_truncation_bootstraps_and_termination_does_not():
    net = table_net(TARGET_Q)
    truncated = td_targets(REWARDS[:1], NEXT_OBS[:1], torch.tensor([False]), net, gamma=GAMMA)
    terminated = td_targets(REWARDS[:1], NEXT_OBS[:1], torch.tensor([True]), net, gamma=GAMMA)
    assert truncated.item() == 2.5  # 1 + 0.5 * 3
    assert terminated.item() == 1.0  # the reward alone


def test_terminal_successor_with_nonfinite_q_gives_the_reward():
    # A terminal state's Q is never trained; inf there must not turn the target into nan.
    # A lookup rather than table_net: in a matmul, 0 * inf would spread nan to every state.
    table = torch.tensor([[math.inf, math.nan], [5.0, 2.0], [4.0, 6.0]], dtype=torch.float64)

    class Lookup(nn.Module):
        def forward(self, obs: Tensor) -> Tensor:
            return table[obs.argmax(-1)]

    net = Lookup()
    y = td_targets(REWARDS, NEXT_OBS, torch.tensor([True, True, False]), net, gamma=GAMMA)
    torch.testing.assert_close(y, torch.tensor([1.0, -1.0, 3.5], dtype=torch.float64))


def test_td_targets_accepts_float_terminated():
    y = td_targets(REWARDS, NEXT_OBS, TERMINATED.double(), table_net(TARGET_Q), gamma=GAMMA)
    torch.testing.assert_close(y, torch.tensor([2.5, -1.0, 3.5], dtype=torch.float64))


def test_td_targets_bad_arguments():
    net = table_net(TARGET_Q)
    with pytest.raises(ValueError, match="online_net"):
        td_targets(REWARDS, NEXT_OBS, TERMINATED, net, double=True)
    with pytest.raises(ValueError, match="gamma"):
        td_targets(REWARDS, NEXT_OBS, TERMINATED, net, gamma=1.5)


# Loss batch: states s0, s1, s2 with actions 1, 0, 1 under ONLINE_Q, so Q(s, a) = 0, 0, -1.
# Targets -0.5, 3, 1 give errors Q - y = 0.5, -3, -2: one in Huber's quadratic zone, two in the
# linear zone.
LOSS_BATCH = Batch(
    obs=one_hot(0, 1, 2),
    actions=torch.tensor([1, 0, 1]),
    rewards=REWARDS,
    next_obs=NEXT_OBS,
    terminated=TERMINATED,
)
LOSS_TARGETS = torch.tensor([-0.5, 3.0, 1.0], dtype=torch.float64)
# Huber per sample: 0.5 * 0.5^2 = 0.125, |-3| - 0.5 = 2.5, |-2| - 0.5 = 1.5 -> sum 4.125
# MSE per sample:   0.25, 9, 4                                             -> sum 13.25
LOSS_SUMS = {"huber": 4.125, "mse": 13.25}


@pytest.mark.parametrize("loss", ["huber", "mse"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_dqn_loss_values(loss, reduction):
    value, metrics = dqn_loss(table_net(ONLINE_Q), LOSS_BATCH, LOSS_TARGETS, loss, reduction)
    expected = LOSS_SUMS[loss] / (3 if reduction == "mean" else 1)  # sum = mean * B
    assert value.item() == pytest.approx(expected, rel=1e-12)
    assert metrics[TD_LOSS].item() == pytest.approx(expected, rel=1e-12)
    assert metrics[Q_VALUES].item() == pytest.approx(-1 / 3, rel=1e-12)  # (0+0-1)/3
    assert not any(m.requires_grad for m in metrics.values())


def test_dqn_loss_sum_is_mean_times_batch():
    net = table_net(ONLINE_Q)
    mean, _ = dqn_loss(net, LOSS_BATCH, LOSS_TARGETS, reduction="mean")
    total, _ = dqn_loss(net, LOSS_BATCH, LOSS_TARGETS, reduction="sum")
    assert total.item() == pytest.approx(3 * mean.item(), rel=1e-12)


@pytest.mark.parametrize(
    ("loss", "reduction", "dq"),
    [
        # Huber: dL/dQ = error clipped to [-1, 1]: 0.5, -1, -1; divided by B = 3 for the mean.
        ("huber", "mean", [0.5 / 3, -1 / 3, -1 / 3]),
        ("huber", "sum", [0.5, -1.0, -1.0]),
        # MSE: dL/dQ = 2 * error: 1, -6, -4.
        ("mse", "sum", [1.0, -6.0, -4.0]),
        ("mse", "mean", [1 / 3, -2.0, -4 / 3]),
    ],
)
def test_dqn_loss_gradient_reaches_only_taken_actions(loss, reduction, dq):
    net = table_net(ONLINE_Q)
    value, _ = dqn_loss(net, LOSS_BATCH, LOSS_TARGETS, loss, reduction)
    value.backward()
    # W[a, s] is Q(s, a); the taken pairs are (s0, a1), (s1, a0), (s2, a1), all else zero.
    expected = torch.zeros(2, 3, dtype=torch.float64)
    expected[1, 0], expected[0, 1], expected[1, 2] = dq
    torch.testing.assert_close(net.weight.grad, expected)


def test_dqn_loss_bad_arguments():
    net = table_net(ONLINE_Q)
    with pytest.raises(ValueError, match="loss"):
        dqn_loss(net, LOSS_BATCH, LOSS_TARGETS, loss="l1")
    with pytest.raises(ValueError, match="reduction"):
        dqn_loss(net, LOSS_BATCH, LOSS_TARGETS, reduction="none")


# 1000 steps, decay over the first 10% (100 steps) from 1.0 to 0.05: slope -0.95 / 100 per step.
@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 1.0),
        (25, 0.7625),  # 1 - 25 * 0.0095
        (50, 0.525),  # 1 - 50 * 0.0095 (the middle of the decay)
        (99, 0.0595),  # 1 - 99 * 0.0095
        (100, 0.05),  # end of the decay
        (500, 0.05),
        (1000, 0.05),
        (5000, 0.05),  # past total_steps
    ],
)
def test_linear_epsilon(step, expected):
    assert linear_epsilon(step, 1000, 0.1, 1.0, 0.05) == pytest.approx(expected, abs=1e-12)


def test_linear_epsilon_zero_fraction_is_end_throughout():
    assert linear_epsilon(0, 1000, 0.0, 1.0, 0.05) == 0.05


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(step=-1), "step"),
        (dict(total_steps=0), "total_steps"),
        (dict(fraction=1.5), "fraction"),
        (dict(start=1.1), "start"),
        (dict(end=-0.1), "end"),
    ],
)
def test_linear_epsilon_bad_arguments(kwargs, name):
    args = dict(step=0, total_steps=1000, fraction=0.1, start=1.0, end=0.05) | kwargs
    with pytest.raises(ValueError, match=name):
        linear_epsilon(**args)


N_DRAWS = 10_000
# Every row prefers action 2 of 4.
Q_ROWS = torch.tensor([0.0, 1.0, 3.0, 2.0]).repeat(N_DRAWS, 1)


def action_frequencies(epsilon: float) -> Tensor:
    generator = torch.Generator().manual_seed(0)
    actions = epsilon_greedy(Q_ROWS, epsilon, generator)
    assert actions.shape == (N_DRAWS,)
    return torch.bincount(actions, minlength=4) / N_DRAWS


def test_epsilon_greedy_zero_is_argmax():
    q = torch.tensor([[0.0, 2.0, 1.0], [5.0, -1.0, 0.0], [0.0, 0.0, 9.0]])
    assert epsilon_greedy(q, 0.0).tolist() == [1, 0, 2]


def test_epsilon_greedy_one_is_uniform():
    # Binomial standard deviation sqrt(0.25 * 0.75 / 10_000) = 0.0043; 0.02 is ~4.6 of them.
    freqs = action_frequencies(1.0)
    torch.testing.assert_close(freqs, torch.full((4,), 0.25), atol=0.02, rtol=0)


def test_epsilon_greedy_half_mixes_per_row():
    # The random action is uniform over all 4, greedy included:
    # P(greedy) = 0.5 + 0.5 / 4 = 0.625, each other action 0.5 / 4 = 0.125.
    freqs = action_frequencies(0.5)
    torch.testing.assert_close(freqs, torch.tensor([0.125, 0.125, 0.625, 0.125]), atol=0.02, rtol=0)


def test_epsilon_greedy_is_reproducible_with_a_generator():
    assert torch.equal(action_frequencies(0.3), action_frequencies(0.3))


def test_epsilon_greedy_bad_epsilon():
    with pytest.raises(ValueError, match="epsilon"):
        epsilon_greedy(Q_ROWS, 1.5)


def net_with_buffers(fill: float) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    with torch.no_grad():
        for t in [*net.parameters(), net[1].running_mean, net[1].running_var]:
            t.fill_(fill)
    net[1].num_batches_tracked.fill_(int(fill) if math.isfinite(fill) else 99)
    return net


def test_polyak_tau_one_copies_exactly():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    online(torch.randn(8, 2))  # moves the batch-norm statistics away from their init
    target = net_with_buffers(math.nan)  # a hard copy must not be mixed with the old values
    polyak_update(target, online, 1.0)
    for t, o in zip(target.state_dict().values(), online.state_dict().values(), strict=True):
        assert torch.equal(t, o)


def test_polyak_tau_half_averages_parameters_and_buffers():
    target, online = net_with_buffers(0.0), net_with_buffers(4.0)
    polyak_update(target, online, 0.5)
    # Floating tensors: 0.5 * 4 + 0.5 * 0 = 2; num_batches_tracked (integer) is copied: 4.
    state = target.state_dict()
    assert state.pop("1.num_batches_tracked").item() == 4
    for name, value in state.items():
        assert torch.equal(value, torch.full_like(value, 2.0)), name
    # The online network is untouched.
    assert all((p == 4.0).all() for p in online.parameters())


def test_polyak_tau_quarter():
    target, online = net_with_buffers(1.0), net_with_buffers(5.0)
    polyak_update(target, online, 0.25)
    # 0.25 * 5 + 0.75 * 1 = 2
    assert all(torch.equal(p, torch.full_like(p, 2.0)) for p in target.parameters())
    assert torch.equal(target[1].running_var, torch.full((3,), 2.0))


def test_polyak_keeps_requires_grad_and_identity():
    target, online = net_with_buffers(0.0), net_with_buffers(1.0)
    before = [id(p) for p in target.parameters()]
    polyak_update(target, online, 0.5)
    assert [id(p) for p in target.parameters()] == before
    assert all(p.requires_grad for p in target.parameters())


def test_polyak_bad_arguments():
    with pytest.raises(ValueError, match="tau"):
        polyak_update(net_with_buffers(0.0), net_with_buffers(1.0), 1.5)
    with pytest.raises(ValueError, match="differ"):
        polyak_update(nn.Linear(2, 3), nn.Linear(2, 4), 0.5)
    with pytest.raises(ValueError, match="differ"):
        polyak_update(nn.Linear(2, 3), nn.Linear(2, 3, bias=False), 0.5)


def test_qnetwork_shapes_and_layers():
    net = QNetwork(4, 2, hidden=(256, 256))
    assert net(torch.zeros(5, 4)).shape == (5, 2)
    assert net(torch.zeros(0, 4)).shape == (0, 2)
    shapes = [tuple(p.shape) for p in net.parameters()]
    assert shapes == [(256, 4), (256,), (256, 256), (256,), (2, 256), (2,)]


def test_qnetwork_is_relu():
    # One hidden unit with weight 1, bias 0, output weight 1: Q = relu(x).
    net = QNetwork(1, 1, hidden=(1,))
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.fill_(1.0)
            layer.bias.zero_()
    assert net(torch.tensor([[-2.0], [3.0]])).tolist() == [[0.0], [3.0]]


def test_qnetwork_uses_default_pytorch_init():
    # SB3's DQN keeps nn.Linear's default init: same seed, same weights as plain Linears.
    torch.manual_seed(0)
    net = QNetwork(4, 2, hidden=(8,))
    torch.manual_seed(0)
    ref = [nn.Linear(4, 8), nn.Linear(8, 2)]
    for layer, r in zip(net.layers, ref, strict=True):
        assert torch.equal(layer.weight, r.weight)
        assert torch.equal(layer.bias, r.bias)


def test_qnetwork_casts_integer_obs():
    net = QNetwork(3, 2)
    obs = torch.tensor([[1, 0, 2]], dtype=torch.uint8)
    torch.testing.assert_close(net(obs), net(obs.float()))


def test_qnetwork_bad_arguments():
    with pytest.raises(ValueError, match="obs_dim"):
        QNetwork(0, 2)
    with pytest.raises(ValueError, match="n_actions"):
        QNetwork(4, 0)


def test_qnetwork_plugs_into_targets_and_loss():
    torch.manual_seed(0)
    online, target = QNetwork(4, 3), QNetwork(4, 3)
    polyak_update(target, online, 1.0)
    obs, next_obs = torch.randn(6, 4), torch.randn(6, 4)
    terminated = torch.tensor([False, True, False, False, True, False])
    y = td_targets(torch.ones(6), next_obs, terminated, target, online, 0.99, double=True)
    batch = Batch(obs, torch.tensor([0, 1, 2, 0, 1, 2]), torch.ones(6), next_obs, terminated)
    loss, _ = dqn_loss(online, batch, y)
    loss.backward()
    assert all(p.grad is not None for p in online.parameters())
    assert all(p.grad is None for p in target.parameters())


def test_polyak_matches_sb3_bit_for_bit():
    sb3_utils = pytest.importorskip("stable_baselines3.common.utils")
    torch.manual_seed(0)
    online, target = QNetwork(4, 3, (16,)), QNetwork(4, 3, (16,))
    expected = QNetwork(4, 3, (16,))
    expected.load_state_dict(target.state_dict())
    sb3_utils.polyak_update(online.parameters(), expected.parameters(), 0.005)
    polyak_update(target, online, 0.005)
    for t, e in zip(target.parameters(), expected.parameters(), strict=True):
        assert torch.equal(t, e)


def test_linear_epsilon_matches_sb3():
    sb3_utils = pytest.importorskip("stable_baselines3.common.utils")
    schedule = sb3_utils.LinearSchedule(1.0, 0.05, 0.1)  # was get_linear_fn
    for step in [0, 1, 37, 50, 99, 100, 101, 640, 1000]:
        expected = schedule(1.0 - step / 1000)  # SB3 passes progress_remaining
        assert linear_epsilon(step, 1000, 0.1, 1.0, 0.05) == pytest.approx(expected, abs=1e-15)


def test_lazy_epsilon_greedy_matches_and_skips_the_network_when_all_explore():
    from agents.dqn import lazy_epsilon_greedy

    calls = []

    def q_fn(obs):
        calls.append(len(obs))
        return Q_ROWS[: len(obs)]

    obs = torch.zeros(len(Q_ROWS), 4)
    for epsilon in (0.0, 0.3, 0.7):
        a = lazy_epsilon_greedy(
            q_fn, obs, epsilon, Q_ROWS.shape[1], torch.Generator().manual_seed(5)
        )
        b = epsilon_greedy(Q_ROWS, epsilon, torch.Generator().manual_seed(5))
        assert torch.equal(a, b)
    assert len(calls) == 3
    actions = lazy_epsilon_greedy(q_fn, obs, 1.0, Q_ROWS.shape[1], torch.Generator().manual_seed(5))
    assert len(calls) == 3  # every row explored: no Q-values computed
    assert ((actions >= 0) & (actions < Q_ROWS.shape[1])).all()


@pytest.mark.parametrize("double", [False, True])
def test_targets_of_many_rows_are_computed_in_chunks_with_the_same_values(double):
    import agents.dqn as dqn

    torch.manual_seed(0)
    target, online = QNetwork(4, 3, (32, 32)), QNetwork(4, 3, (32, 32))
    rows = 2 * dqn.TARGET_CHUNK + 37
    next_obs = torch.randn(rows, 4)
    rewards, terminated = torch.randn(rows), torch.rand(rows) < 0.1
    calls = []
    target.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[0]))
    got = dqn.td_targets(rewards, next_obs, terminated, target, online, 0.9, double=double)
    assert calls == [dqn.TARGET_CHUNK, dqn.TARGET_CHUNK, 37]
    with torch.no_grad():
        q = target(next_obs)
        if double:
            v = q.gather(-1, online(next_obs).argmax(-1, keepdim=True)).squeeze(-1)
        else:
            v = q.amax(-1)
    expected = rewards + 0.9 * v.masked_fill(terminated, 0.0)
    torch.testing.assert_close(got, expected)
