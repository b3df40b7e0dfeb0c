"""agents.dqn_numpy: the CPU engine's TD-loss gradient against autograd's of the reference loss.

The engine is called here on one network's parameters (views of its own tensors); the
members' path through the population's buffers is tested in test_agent_members.
"""

import numpy as np
import pytest
import torch
from conftest import assert_engine_matches_autograd

from agents.dqn import TARGET_CHUNK, TD_LOSS, CnnQNetwork, QNetwork, dqn_loss, td_targets
from agents.dqn_numpy import supports, td_gradients
from agents.numpy_mlp import forward
from agents.replay import ReplaySample
from rl_rmsprop.optim import clip_grad_norm_, make_optimizer


def _layers(model, grad=False):
    params = list(model.parameters())
    if grad:
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
    views = [(p.grad if grad else p.detach()).numpy() for p in params]
    return list(zip(views[::2], views[1::2], strict=True))


def _rows(model, obs):
    return obs.numpy().reshape(obs.shape[0], -1).astype(_layers(model)[0][0].dtype, copy=False)


def engine_gradients(model, batch, targets, loss="huber", reduction="mean"):
    """The engine on one Q-network: its gradient written into the parameters' ``.grad``."""
    x, layers, grads = _rows(model, batch.obs), _layers(model), _layers(model, grad=True)
    metrics = td_gradients(x, layers, grads, batch.actions.numpy(), targets, loss, reduction)
    return {tag: float(v) for tag, v in metrics.items()}


def engine_q(model):
    """The engine's Q-values of one network (what acting and the targets use)."""
    return lambda obs: torch.from_numpy(forward(_rows(model, obs), _layers(model), "relu")[-1])


def make_batch(rows=64, obs_dim=4, actions=2, seed=0, dtype=torch.float32) -> ReplaySample:
    """A replay sample with a few terminated rows."""
    g = torch.Generator().manual_seed(seed)
    terminated = torch.zeros(rows, dtype=torch.bool)
    terminated[::7] = True
    return ReplaySample(
        obs=torch.randn(rows, obs_dim, generator=g, dtype=dtype),
        actions=torch.randint(0, actions, (rows,), generator=g),
        rewards=torch.rand(rows, generator=g, dtype=torch.float32),
        next_obs=torch.randn(rows, obs_dim, generator=g, dtype=dtype),
        terminated=terminated,
    )


def autograd_reference(model, batch, targets, loss, reduction):
    model.zero_grad()
    value, metrics = dqn_loss(model, batch, targets, loss, reduction)
    value.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}, metrics


@pytest.mark.parametrize("hidden", [(256, 256), (16,), (8, 8, 8)])
@pytest.mark.parametrize("loss", ["huber", "mse"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gradients_and_metrics_equal_autograd(hidden, loss, reduction):
    torch.manual_seed(1)
    model = QNetwork(4, 3, hidden).double()
    batch = make_batch(rows=48, actions=3, dtype=torch.float64)
    # Errors on both sides of Huber's kink at |d| = 1.
    targets = torch.linspace(-3.0, 3.0, 48, dtype=torch.float64)
    ref, ref_metrics = autograd_reference(model, batch, targets, loss, reduction)
    model.zero_grad(set_to_none=True)  # the engine makes the .grad tensors it needs
    metrics = engine_gradients(model, batch, targets, loss, reduction)
    assert_engine_matches_autograd(model, ref, metrics, ref_metrics)


def test_huber_uses_both_branches_in_that_test():
    torch.manual_seed(1)
    model = QNetwork(4, 3, (16,)).double()
    batch = make_batch(rows=48, actions=3, dtype=torch.float64)
    q = model(batch.obs).gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1)
    error = (q - torch.linspace(-3.0, 3.0, 48, dtype=torch.float64)).abs()
    assert (error < 1).any() and (error > 1).any()


def test_float32_gradients_equal_autograd_to_rounding():
    torch.manual_seed(2)
    model = QNetwork(4, 2, (256, 256))
    batch = make_batch()
    targets = torch.randn(64)
    ref, _ = autograd_reference(model, batch, targets, "huber", "mean")
    engine_gradients(model, batch, targets, "huber", "mean")
    for name, p in model.named_parameters():
        scale = ref[name].abs().max().item()
        torch.testing.assert_close(p.grad, ref[name], rtol=1e-4, atol=1e-6 * scale, msg=name)


@pytest.mark.parametrize("double", [False, True])
@pytest.mark.parametrize("rows", [64, 3 * TARGET_CHUNK + 5])
def test_numpy_q_values_in_the_target_rule_equal_the_torch_targets(double, rows):
    torch.manual_seed(3)
    target, online = QNetwork(4, 2, (32, 32)).double(), QNetwork(4, 2, (32, 32)).double()
    batch = make_batch(rows=rows, dtype=torch.float64)
    args = (batch.rewards, batch.next_obs, batch.terminated)
    want = td_targets(*args, target, online, 0.97, double=double)
    got = td_targets(*args, engine_q(target), engine_q(online), 0.97, double=double)
    assert got.dtype == torch.float64 and got.shape == (rows,)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_integer_observations_are_cast_as_the_module_casts_them():
    torch.manual_seed(5)
    model = QNetwork(3, 2, (8,))
    obs = torch.randint(0, 5, (6, 3))
    torch.testing.assert_close(engine_q(model)(obs), model(obs).detach())


def test_training_through_the_optimizer_follows_autograd():
    """100 clipped Adam steps: the engine's network stays on autograd's."""
    torch.manual_seed(6)
    model = QNetwork(4, 2, (64, 64))
    twin = QNetwork(4, 2, (64, 64))
    twin.load_state_dict(model.state_dict())
    start = model.layers[1].weight.detach().clone()
    opt = make_optimizer("adam", model.named_parameters(), lr=1e-3)
    twin_opt = make_optimizer("adam", twin.named_parameters(), lr=1e-3)
    for i in range(100):
        batch = make_batch(seed=100 + i)
        targets = torch.randn(64, generator=torch.Generator().manual_seed(i))
        engine_gradients(model, batch, targets, "huber", "mean")  # where the optimizer put them
        clip_grad_norm_(opt, 1.0)
        opt.step()
        twin_opt.zero_grad()
        dqn_loss(twin, batch, targets)[0].backward()
        clip_grad_norm_(twin_opt, 1.0)
        twin_opt.step()
    for (name, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    # Not trivially close: the weights moved much further than the tolerance.
    assert (model.layers[1].weight - start).abs().max() > 1e-2


def test_supports_only_float_mlp_q_networks_on_the_cpu():
    assert supports(QNetwork(4, 2))
    assert supports(QNetwork(4, 2).double())
    assert not supports(QNetwork(4, 2).half())
    assert not supports(CnnQNetwork(4, 6))


def test_bad_arguments():
    model = QNetwork(4, 2, (8,))
    batch = make_batch(rows=4)
    with pytest.raises(ValueError, match="loss"):
        engine_gradients(model, batch, torch.zeros(4), "l1")
    with pytest.raises(ValueError, match="reduction"):
        engine_gradients(model, batch, torch.zeros(4), "huber", "max")
    assert np.isfinite(engine_gradients(model, batch, torch.zeros(4))[TD_LOSS])
