import torch

from agents.a2c import a2c_loss
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
    assert set(metrics) == {"losses/policy_loss", "losses/value_loss", "losses/entropy"}
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
    expected = m["losses/policy_loss"] + 0.25 * m["losses/value_loss"] - 0.1 * m["losses/entropy"]
    torch.testing.assert_close(loss.detach(), expected)
