"""agents.a2c_numpy: the CPU engine's A2C gradient against autograd's of the reference loss.

The engine is called here on one network's parameters (K = 1, views of its own tensors); the
members' path through the population's buffers is tested in test_agent_population.
"""

import math

import pytest
import torch
from conftest import assert_engine_matches_autograd
from torch import nn

from agents.a2c import a2c_loss
from agents.a2c_numpy import a2c_gradients
from agents.networks import ActorCritic
from agents.rollout import Rollout
from rl_rmsprop.config import A2CConfig
from rl_rmsprop.optim import make_optimizer


def engine_gradients(model, rollout, hp, gamma):
    """The engine on one actor-critic: its gradient written into the parameters' ``.grad``."""
    nets = {}
    for net in ("policy", "value"):
        linears = [m for m in getattr(model, net) if isinstance(m, nn.Linear)]
        for p in (t for m in linears for t in (m.weight, m.bias)):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        layers = [(m.weight.detach().numpy()[None], m.bias.detach().numpy()[None]) for m in linears]
        grads = [(m.weight.grad.numpy()[None], m.bias.grad.numpy()[None]) for m in linears]
        nets[net] = (layers, grads)
    obs = rollout.obs.numpy()
    x = obs.reshape(1, -1, obs.shape[-1]).astype(nets["policy"][0][0][0].dtype, copy=False)
    _, metrics = a2c_gradients(x, nets, rollout, hp, gamma, 1)
    return {tag: float(v[0]) for tag, v in metrics.items()}


def make_rollout(steps=5, envs=6, obs_dim=4, actions=3, seed=0, dtype=torch.float32):
    """A rollout with a terminated, a truncated and an autoreset step in it."""
    g = torch.Generator().manual_seed(seed)
    terminated = torch.zeros(steps, envs, dtype=torch.bool)
    truncated = torch.zeros(steps, envs, dtype=torch.bool)
    valid = torch.ones(steps, envs, dtype=torch.bool)
    terminated[1, 0], valid[2, 0] = True, False
    truncated[3, 1], valid[4, 1] = True, False
    return Rollout(
        obs=torch.randn(steps + 1, envs, obs_dim, generator=g, dtype=dtype),
        actions=torch.randint(0, actions, (steps, envs), generator=g),
        rewards=torch.rand(steps, envs, generator=g, dtype=dtype),
        terminated=terminated,
        truncated=truncated,
        valid=valid,
    )


def autograd_reference(model, rollout, hp, gamma):
    model.zero_grad()
    loss, metrics = a2c_loss(model, rollout, hp, gamma)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}, metrics


@pytest.mark.parametrize("hidden", [(64, 64), (16,), (8, 8, 8)])
@pytest.mark.parametrize("ent_coef,gae_lambda", [(0.0, 1.0), (0.01, 0.95), (0.3, 0.0)])
def test_gradients_and_metrics_equal_autograd(hidden, ent_coef, gae_lambda):
    torch.manual_seed(1)
    model = ActorCritic(4, 3, hidden).double()
    rollout = make_rollout(dtype=torch.float64)
    hp = A2CConfig(ent_coef=ent_coef, gae_lambda=gae_lambda, vf_coef=0.4)
    ref, ref_metrics = autograd_reference(model, rollout, hp, 0.97)
    model.zero_grad(set_to_none=True)  # the engine makes the .grad tensors it needs
    metrics = engine_gradients(model, rollout, hp, 0.97)
    assert_engine_matches_autograd(model, ref, metrics, ref_metrics)


def test_float32_gradients_equal_autograd_to_rounding():
    torch.manual_seed(2)
    model = ActorCritic(4, 2)
    rollout = make_rollout(steps=5, envs=8, actions=2, seed=3)
    hp = A2CConfig()
    ref, _ = autograd_reference(model, rollout, hp, 0.99)
    engine_gradients(model, rollout, hp, 0.99)
    for name, p in model.named_parameters():
        scale = ref[name].abs().max().item()
        torch.testing.assert_close(p.grad, ref[name], rtol=1e-4, atol=1e-6 * scale, msg=name)


def test_nothing_from_an_autoreset_step_leaks_not_even_a_nan():
    torch.manual_seed(3)
    model = ActorCritic(4, 3, (8, 8)).double()
    rollout = make_rollout(dtype=torch.float64)
    hp = A2CConfig(ent_coef=0.1)
    engine_gradients(model, rollout, hp, 0.99)
    clean = [p.grad.clone() for p in model.parameters()]
    poisoned = rollout._replace(rewards=rollout.rewards.clone())
    poisoned.rewards[2, 0] = float("nan")  # valid[2, 0] is False
    poisoned.actions[4, 1] = (poisoned.actions[4, 1] + 1) % 3  # valid[4, 1] is False
    engine_gradients(model, poisoned, hp, 0.99)
    for before, p in zip(clean, model.parameters(), strict=True):
        assert torch.equal(before, p.grad)


def test_training_through_the_optimizer_follows_autograd():
    """50 updates through the project's RMSprop: the engine's run stays on autograd's."""
    torch.manual_seed(5)
    model = ActorCritic(4, 2)
    twin = ActorCritic(4, 2)
    twin.load_state_dict(model.state_dict())
    hp = A2CConfig()
    opt = make_optimizer("rmsprop", model.named_parameters(), lr=7e-4, eps=1e-5)
    twin_opt = make_optimizer("rmsprop", twin.named_parameters(), lr=7e-4, eps=1e-5)
    for i in range(50):
        rollout = make_rollout(steps=5, envs=8, actions=2, seed=100 + i)
        engine_gradients(model, rollout, hp, 0.99)  # views taken where the optimizer moved them
        opt.step()
        twin_opt.zero_grad()
        a2c_loss(twin, rollout, hp, 0.99)[0].backward()
        twin_opt.step()
    for (name, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_a_fresh_network_gives_finite_metrics():
    metrics = engine_gradients(ActorCritic(4, 2), make_rollout(actions=2), A2CConfig(), 0.9)
    assert all(math.isfinite(v) for v in metrics.values())
