import itertools

import numpy as np
import pytest
import torch
from torch import nn

from agents.numpy_mlp import backward, cpu_float, forward


def weights(linears):
    """NumPy views ``[(weight, bias), ...]`` of linear layers."""
    return [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in linears]


def mlp(sizes, activation):
    act = nn.Tanh if activation == "tanh" else nn.ReLU
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers).double()


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("sizes", [(4, 16, 16, 3), (5, 7, 2), (3, 2)])
def test_forward_and_backward_equal_autograd(activation, sizes):
    torch.manual_seed(0)
    net = mlp(sizes, activation)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    layers = weights(linears)
    x = torch.randn(10, sizes[0], dtype=torch.float64)
    d_out = torch.randn(6, sizes[-1], dtype=torch.float64)  # only the first 6 rows count
    out = net(x)
    out[:6].backward(d_out)
    outs = forward(x.numpy(), layers, activation)
    np.testing.assert_allclose(outs[-1], out.detach().numpy(), rtol=1e-12, atol=1e-12)
    grads = [(np.zeros_like(w), np.zeros_like(b)) for w, b in layers]
    backward(x.numpy(), outs, layers, d_out.numpy(), grads, activation)
    for m, (g_w, g_b) in zip(linears, grads, strict=True):
        np.testing.assert_allclose(g_w, m.weight.grad.numpy(), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(g_b, m.bias.grad.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_backward_of_stacked_members_is_each_members_own(activation):
    rng = np.random.default_rng(0)
    k, sizes, rows = 3, (4, 8, 5, 2), 6
    layers = [
        (rng.standard_normal((k, b, a)), rng.standard_normal((k, b)))
        for a, b in itertools.pairwise(sizes)
    ]
    x = rng.standard_normal((k, rows + 2, sizes[0]))  # the last two rows take no part
    d_out = rng.standard_normal((k, rows, sizes[-1]))
    outs = []
    z = x
    for i, (w, b) in enumerate(layers):  # forward per member's stack
        z = np.matmul(z, w.swapaxes(-1, -2)) + b[:, None, :]
        if i < len(layers) - 1:
            z = np.tanh(z) if activation == "tanh" else np.maximum(z, 0)
        outs.append(z)
    stacked = [(np.zeros_like(w), np.zeros_like(b)) for w, b in layers]
    backward(x, outs, layers, d_out, stacked, activation)
    for m in range(k):
        mine = [(np.zeros_like(w[m]), np.zeros_like(b[m])) for w, b in layers]
        own = [(w[m], b[m]) for w, b in layers]
        backward(x[m], [o[m] for o in outs], own, d_out[m], mine, activation)
        for (g_w, g_b), (s_w, s_b) in zip(mine, stacked, strict=True):
            np.testing.assert_array_equal(s_w[m], g_w)
            np.testing.assert_array_equal(s_b[m], g_b)


def test_relu_passes_no_gradient_through_units_that_are_off():
    net = mlp((2, 3, 1), "relu")
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]]))
        net[0].bias.zero_()
        net[2].weight.fill_(1.0)
    x = np.array([[2.0, 5.0]])
    layers = weights([net[0], net[2]])
    outs = forward(x, layers, "relu")
    grads = [(np.zeros_like(w), np.zeros_like(b)) for w, b in layers]
    backward(x, outs, layers, np.ones((1, 1)), grads, "relu")
    # Unit 0 is on (2), unit 1 off (-2), unit 2 exactly at 0 (off, as in torch).
    np.testing.assert_array_equal(grads[0][0], [[2.0, 5.0], [0.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(grads[0][1], [1.0, 0.0, 0.0])


def test_cpu_float():
    assert cpu_float([torch.zeros(2), torch.zeros(2, dtype=torch.float64)])
    assert not cpu_float([torch.zeros(2, dtype=torch.float16)])
    assert not cpu_float([torch.zeros(2, dtype=torch.int64)])
