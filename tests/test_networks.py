import math

import torch

from agents.networks import ActorCritic, mlp


def test_mlp_uses_sb3_orthogonal_init():
    torch.manual_seed(0)
    net = mlp([4, 64, 64, 2], out_gain=0.01)
    w0, w_last = net[0].weight, net[-1].weight
    # Orthogonal rows scaled by the gain: W W^T = gain^2 I for a wide-to-narrow layer.
    torch.testing.assert_close(w_last @ w_last.T, 0.01**2 * torch.eye(2), atol=1e-7, rtol=0)
    torch.testing.assert_close(w0.T @ w0, 2 * torch.eye(4), atol=1e-5, rtol=0)
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in net if hasattr(m, "bias"))
    assert math.isclose(float(net[2].weight.detach().norm() ** 2), 2 * 64, rel_tol=1e-5)


def test_actor_critic_shapes_and_greedy_actions():
    model = ActorCritic(4, 3, (16, 16))
    logits, values = model(torch.randn(5, 7, 4))
    assert logits.shape == (5, 7, 3) and values.shape == (5, 7)
    obs = torch.randn(10, 4)
    assert torch.equal(model.act(obs, greedy=True), model.policy(obs).argmax(-1))
    assert model.act(obs).shape == (10,)


def test_sample_categorical_has_the_right_distribution():
    from agents.networks import sample_categorical

    torch.manual_seed(0)
    logits = torch.tensor([[0.0, 1.0, 2.0], [5.0, -5.0, 0.0]]).log_softmax(-1)
    draws = torch.stack([sample_categorical(logits) for _ in range(20000)])
    for row in range(2):
        freq = torch.bincount(draws[:, row], minlength=3).float() / len(draws)
        torch.testing.assert_close(freq, logits[row].exp(), atol=0.015, rtol=0)
