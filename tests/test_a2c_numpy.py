import math

import numpy as np
import pytest
import torch

from agents.a2c import a2c_loss
from agents.a2c_numpy import NumpyA2C, gae, supports
from agents.networks import ActorCritic, CnnActorCritic
from agents.population import MemberNoise, sample_actions
from agents.returns import compute_gae
from agents.rollout import Rollout
from rl_rmsprop.config import A2CConfig
from rl_rmsprop.optim import make_optimizer


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
    metrics = NumpyA2C(model).gradients(rollout, hp, 0.97)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[name], rtol=1e-10, atol=1e-13, msg=name)
    for tag, value in ref_metrics.items():
        assert metrics[tag] == pytest.approx(float(value), rel=1e-12, abs=1e-14)


def test_float32_gradients_equal_autograd_to_rounding():
    torch.manual_seed(2)
    model = ActorCritic(4, 2)
    rollout = make_rollout(steps=5, envs=8, actions=2, seed=3)
    hp = A2CConfig()
    ref, _ = autograd_reference(model, rollout, hp, 0.99)
    NumpyA2C(model).gradients(rollout, hp, 0.99)
    for name, p in model.named_parameters():
        scale = ref[name].abs().max().item()
        torch.testing.assert_close(p.grad, ref[name], rtol=1e-4, atol=1e-6 * scale, msg=name)


def test_nothing_from_an_autoreset_step_leaks_not_even_a_nan():
    torch.manual_seed(3)
    model = ActorCritic(4, 3, (8, 8)).double()
    rollout = make_rollout(dtype=torch.float64)
    hp = A2CConfig(ent_coef=0.1)
    engine = NumpyA2C(model)
    engine.gradients(rollout, hp, 0.99)
    clean = [p.grad.clone() for p in model.parameters()]
    poisoned = rollout._replace(rewards=rollout.rewards.clone())
    poisoned.rewards[2, 0] = float("nan")  # valid[2, 0] is False
    poisoned.actions[4, 1] = (poisoned.actions[4, 1] + 1) % 3  # valid[4, 1] is False
    engine.gradients(poisoned, hp, 0.99)
    for before, p in zip(clean, model.parameters(), strict=True):
        assert torch.equal(before, p.grad)


def test_gae_equals_compute_gae():
    rollout = make_rollout(steps=7, envs=5, seed=4)
    g = torch.Generator().manual_seed(5)
    values, next_values = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    args = (rollout.rewards, values, next_values, rollout.terminated, rollout.truncated)
    for lam in (1.0, 0.9, 0.0):
        adv, ret = compute_gae(*args, rollout.valid, 0.99, lam)
        adv_np, ret_np = gae(*(t.numpy() for t in args), rollout.valid.numpy(), 0.99, lam)
        np.testing.assert_allclose(adv_np, adv.numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ret_np, ret.numpy(), rtol=1e-6, atol=1e-6)


def test_acting_in_numpy_draws_what_the_model_draws_from_the_same_noise():
    torch.manual_seed(4)
    model = ActorCritic(4, 3, (16, 16))
    with torch.no_grad():  # logits of a useful size, so draws depend on them
        model.policy[-1].weight.mul_(100)
    engine = NumpyA2C(model)
    obs = torch.randn(50, 8, 4)
    noise = [MemberNoise([10], 8, 3, torch.device("cpu")) for _ in range(2)]
    mine = torch.stack([sample_actions(engine, noise[0], o) for o in obs])
    theirs = torch.stack([sample_actions(model, noise[1], o) for o in obs])
    assert torch.equal(mine, theirs) and len(set(mine.flatten().tolist())) == 3
    greedy = torch.stack([engine.logits(o).argmax(-1) for o in obs])
    assert torch.equal(greedy, torch.stack([model.act(o, True) for o in obs]))


def test_training_through_the_optimizer_follows_autograd():
    """50 updates through the project's RMSprop: the engine's run stays on autograd's."""
    torch.manual_seed(5)
    model = ActorCritic(4, 2)
    twin = ActorCritic(4, 2)
    twin.load_state_dict(model.state_dict())
    hp = A2CConfig()
    engine = NumpyA2C(model)
    engine.logits(torch.zeros(8, 4))  # views taken now; the optimizer then moves the storage
    ptr = model.policy[0].weight.data_ptr()
    opt = make_optimizer("rmsprop", model.named_parameters(), lr=7e-4, eps=1e-5)
    assert model.policy[0].weight.data_ptr() != ptr
    twin_opt = make_optimizer("rmsprop", twin.named_parameters(), lr=7e-4, eps=1e-5)
    for i in range(50):
        rollout = make_rollout(steps=5, envs=8, actions=2, seed=100 + i)
        engine.gradients(rollout, hp, 0.99)
        opt.step()
        twin_opt.zero_grad()
        a2c_loss(twin, rollout, hp, 0.99)[0].backward()
        twin_opt.step()
    for (name, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_views_follow_parameters_that_move():
    torch.manual_seed(6)
    model = ActorCritic(4, 2, (8,))
    engine = NumpyA2C(model)
    obs = torch.randn(8, 4)
    engine.logits(obs)
    with torch.no_grad():
        for p in model.policy.parameters():
            p.data = torch.zeros_like(p)  # new storage
        model.policy[-1].bias.data = torch.tensor([0.0, 1.0])
    assert torch.equal(engine.logits(obs).argmax(-1), torch.ones(8, dtype=torch.long))
    # A .grad replaced by other code is written, not the stale one.
    rollout = make_rollout(steps=5, envs=8, actions=2)
    engine.gradients(rollout, A2CConfig(), 0.99)
    fresh = torch.zeros_like(model.value[0].weight)
    model.value[0].weight.grad = fresh
    engine.gradients(rollout, A2CConfig(), 0.99)
    assert fresh.abs().sum() > 0


def test_supports_only_float_mlp_actor_critics_on_the_cpu():
    assert supports(ActorCritic(4, 2))
    assert supports(ActorCritic(4, 2).double())
    assert not supports(ActorCritic(4, 2).half())
    assert not supports(CnnActorCritic(4, 6))
    with pytest.raises(ValueError, match="MLP"):
        NumpyA2C(CnnActorCritic(4, 6))
    metrics = NumpyA2C(ActorCritic(4, 2)).gradients(make_rollout(actions=2), A2CConfig(), 0.9)
    assert all(math.isfinite(v) for v in metrics.values())
