import math

import pytest
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


def test_minatar_cnn_is_the_papers_network_and_takes_planes_as_they_are():
    from agents.dqn import CnnQNetwork
    from agents.networks import MinAtarCNN, NatureCNN, image_torso

    torso = MinAtarCNN(4)
    assert (torso.conv.in_channels, torso.conv.out_channels, torso.conv.kernel_size) == (
        4,
        16,
        (3, 3),
    )
    assert torso.conv.stride == (1, 1) and torso.conv.padding == (0, 0)
    assert (torso.fc.in_features, torso.fc.out_features) == (16 * 8 * 8, 128)
    planes = torch.randint(0, 2, (3, 5, 4, 10, 10), dtype=torch.uint8)
    features = torso(planes)
    assert features.shape == (3, 5, 128) and (features >= 0).all()
    flat = planes.reshape(15, 4, 10, 10).float()  # no scaling of 0/1 planes
    ref = functional.relu(torso.fc(functional.relu(torso.conv(flat)).flatten(1)))
    torch.testing.assert_close(features.reshape(15, 128), ref, rtol=0, atol=0)
    # 0-255 pixels of a small image are divided by their high
    pixels = MinAtarCNN(4, input_high=255.0)
    pixels.load_state_dict(torso.state_dict())
    torch.testing.assert_close(pixels(planes * 255), features)

    q = CnnQNetwork(10, 6, image_size=(10, 10), input_high=1.0)
    assert isinstance(q.features, MinAtarCNN) and q(
        planes[:, :, :1].expand(3, 5, 10, 10, 10)
    ).shape == (3, 5, 6)
    ac = CnnActorCritic(4, 3, image_size=(10, 10), input_high=1.0)
    logits, values = ac(planes)
    assert logits.shape == (3, 5, 3) and values.shape == (3, 5)
    assert ac.act(planes[0]).shape == (5,)
    # Atari's frames keep the Nature CNN; images below 3x3 are refused
    assert isinstance(image_torso(4, (84, 84)), NatureCNN)
    assert isinstance(image_torso(4, (35, 84)), MinAtarCNN)
    with pytest.raises(ValueError, match="smaller than the MinAtar CNN's 3x3 convolution"):
        image_torso(4, (2, 10))
