import math

import torch
from torch.nn import functional

from agents.networks import ActorCritic, CnnActorCritic, mlp


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


def test_cnn_training_pass_matches_the_default_layout_and_keeps_gradients_contiguous():
    # With grad enabled on the CPU the frames go channels-last (oneDNN's kernels); the
    # result and the gradients must be those of the plain NCHW computation.
    torch.manual_seed(0)
    model = CnnActorCritic(4, 6).double()
    frames = torch.randint(0, 256, (3, 5, 4, 84, 84), dtype=torch.uint8)
    layouts = []
    model.features.convs[0].register_forward_hook(
        lambda _m, _i, out: layouts.append(out.is_contiguous(memory_format=torch.channels_last))
    )
    logits, values = model(frames)
    (logits.square().sum() + values.sum()).backward()
    assert layouts == [True]
    fast = [p.grad.clone() for p in model.parameters()]
    assert all(p.grad.is_contiguous() and p.is_contiguous() for p in model.parameters())

    model.zero_grad()
    x = frames.reshape(-1, 4, 84, 84).double() / 255.0
    assert x.is_contiguous()  # NCHW
    z = functional.relu(model.features.fc(model.features.convs(x))).reshape(3, 5, -1)
    ref_logits, ref_values = model.policy(z), model.value(z).squeeze(-1)
    (ref_logits.square().sum() + ref_values.sum()).backward()
    torch.testing.assert_close(logits, ref_logits, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(values, ref_values, rtol=1e-10, atol=1e-12)
    for got, want in zip(fast, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    with torch.no_grad():  # acting: the default layout, same numbers
        torch.testing.assert_close(model(frames)[0], logits.detach(), rtol=1e-10, atol=1e-12)
    assert layouts == [True, False, False]
