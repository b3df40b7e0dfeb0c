import math

import pytest
import torch

from agents.a2c import ENTROPY, POLICY_LOSS, VALUE_LOSS, a2c_loss
from agents.networks import ActorCritic
from agents.rollout import Rollout
from rl_rmsprop.config import A2CConfig


def make_rollout(steps=6, envs=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    terminated = torch.zeros(steps, envs, dtype=torch.bool)
    terminated[2, 0] = True
    valid = torch.ones(steps, envs, dtype=torch.bool)
    valid[3, 0] = False
    return Rollout(
        obs=torch.randn(steps + 1, envs, 4, generator=g),
        actions=torch.randint(0, 2, (steps, envs), generator=g),
        rewards=torch.ones(steps, envs),
        terminated=terminated,
        truncated=torch.zeros(steps, envs, dtype=torch.bool),
        valid=valid,
    )


def test_loss_ignores_the_autoreset_step_and_has_gradients():
    torch.manual_seed(0)
    model = ActorCritic(4, 2, (8, 8))
    hp = A2CConfig(ent_coef=0.01)
    rollout = make_rollout()
    loss, metrics = a2c_loss(model, rollout, hp, 0.99)
    loss.backward()
    assert set(metrics) == {POLICY_LOSS, VALUE_LOSS, ENTROPY}
    assert all(p.grad is not None for p in model.parameters())
    # Changing what happens on the invalid (autoreset) step changes nothing.
    changed = rollout._replace(
        actions=rollout.actions.clone().index_put_(
            (torch.tensor(3), torch.tensor(0)), torch.tensor(1 - int(rollout.actions[3, 0]))
        ),
        rewards=rollout.rewards.clone().index_put_(
            (torch.tensor(3), torch.tensor(0)), torch.tensor(-100.0)
        ),
    )
    loss2, _ = a2c_loss(model, changed, hp, 0.99)
    assert torch.equal(loss.detach(), loss2.detach())


def test_loss_combines_terms_with_their_coefficients():
    torch.manual_seed(0)
    model = ActorCritic(4, 2, (8, 8))
    rollout = make_rollout()
    hp = A2CConfig(vf_coef=0.25, ent_coef=0.1)
    loss, m = a2c_loss(model, rollout, hp, 0.99)
    expected = m[POLICY_LOSS] + 0.25 * m[VALUE_LOSS] - 0.1 * m[ENTROPY]
    torch.testing.assert_close(loss.detach(), expected)


def _fixed_model(logits, values):
    """A 'network' that returns the given logits [T + 1, 1, A] and values [T + 1, 1]."""

    def model(obs):
        return logits, values

    return model


@pytest.mark.parametrize("terminal", [False, True])
def test_loss_terms_equal_hand_computed_values(terminal):
    """Two steps of one env, gamma 0.5, lambda 1, worked out by hand.

    Policies: step 0 p = (1/2, 1/2), action 0; step 1 p = (3/4, 1/4), action 1. Values
    V(s0) = 1, V(s1) = 2, V(s2) = 4; rewards 1, 1. Bootstrapped: R1 = 1 + 0.5 * 4 = 3,
    R0 = 1 + 0.5 * 3 = 2.5, so A = (1.5, 1). Terminal at step 1: R1 = 1, R0 = 1.5, A = (0.5, -1).
    """
    logits = torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]], [[0.0, 0.0]]], dtype=torch.float64)
    values = torch.tensor([[1.0], [2.0], [4.0]], dtype=torch.float64)
    terminated = torch.tensor([[False], [terminal]])
    rollout = Rollout(
        obs=torch.zeros(3, 1, 4, dtype=torch.float64),
        actions=torch.tensor([[0], [1]]),
        rewards=torch.ones(2, 1, dtype=torch.float64),
        terminated=terminated,
        truncated=torch.zeros(2, 1, dtype=torch.bool),
        valid=torch.ones(2, 1, dtype=torch.bool),
    )
    hp = A2CConfig(ent_coef=0.1, vf_coef=0.25, gae_lambda=1.0)
    loss, m = a2c_loss(_fixed_model(logits, values), rollout, hp, 0.5)
    adv = (0.5, -1.0) if terminal else (1.5, 1.0)
    log_p = (math.log(0.5), math.log(0.25))
    policy = -(adv[0] * log_p[0] + adv[1] * log_p[1]) / 2
    value = (adv[0] ** 2 + adv[1] ** 2) / 2  # (R - V)^2 = A^2
    entropy = (math.log(2.0) - (0.75 * math.log(0.75) + 0.25 * math.log(0.25))) / 2
    assert m[POLICY_LOSS].item() == pytest.approx(policy, rel=1e-12)
    assert m[VALUE_LOSS].item() == pytest.approx(value, rel=1e-12)
    assert m[ENTROPY].item() == pytest.approx(entropy, rel=1e-12)
    assert loss.item() == pytest.approx(policy + 0.25 * value - 0.1 * entropy, rel=1e-12)
