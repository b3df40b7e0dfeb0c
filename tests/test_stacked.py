"""K copies of a network as one stacked module: outputs, gradients, layout, member weights."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from agents.dqn import QNetwork
from agents.networks import ActorCritic
from agents.stacked import StackedModule
from tests.conftest import ROOT


def _members(k: int, hidden=(16, 16)) -> list[QNetwork]:
    nets = []
    for seed in range(k):
        torch.manual_seed(seed)
        nets.append(QNetwork(4, 3, hidden))
    return nets


def test_outputs_and_gradient_rows_are_each_members_own():
    nets = _members(3)
    stacked = StackedModule(nets)
    x = torch.randn(3, 7, 4)
    out = stacked(x)
    (out * torch.arange(1.0, 4.0)[:, None, None]).sum().backward()
    for k, net in enumerate(nets):
        torch.testing.assert_close(out[k], net(x[k]))
        ((k + 1) * net(x[k]).sum()).backward()
        want = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
        torch.testing.assert_close(stacked.grad[k], want)


def test_the_leaves_are_views_of_the_flat_buffers():
    stacked = StackedModule(_members(2))
    stacked.data.zero_()
    assert all(float(leaf.detach().abs().sum()) == 0.0 for leaf in stacked.leaves.values())
    stacked(torch.randn(2, 5, 4)).sum().backward()
    assert float(stacked.grad.abs().sum()) > 0
    stacked.zero_grad()
    assert all(float(leaf.grad.abs().sum()) == 0.0 for leaf in stacked.leaves.values())


def test_a_member_does_not_depend_on_the_others():
    a, b = _members(3), _members(3)
    with torch.no_grad():
        b[2].layers[0].weight.mul_(5.0)
    x = torch.randn(3, 6, 4)
    out_a, out_b = StackedModule(a)(x), StackedModule(b)(x)
    assert torch.equal(out_a[:2], out_b[:2]) and not torch.equal(out_a[2], out_b[2])


def test_member_state_dict_loads_into_the_network_and_names_give_the_row_layout():
    nets = _members(2)
    stacked = StackedModule(nets)
    net = QNetwork(4, 3, (16, 16))
    net.load_state_dict(stacked.member_state_dict(1))
    assert all(
        torch.equal(p, q) for p, q in zip(net.parameters(), nets[1].parameters(), strict=True)
    )
    names = stacked.names()
    assert [n for n, _, _ in names] == [n for n, _ in nets[0].named_parameters()]
    assert names[-1][1] + names[-1][2] == stacked.data.shape[1]


def test_a_target_copy_takes_no_gradients_and_other_architectures_are_refused():
    target = StackedModule(_members(2), grad=False)
    assert not any(leaf.requires_grad for leaf in target.leaves.values())
    with pytest.raises(ValueError, match="same architecture"):
        StackedModule([QNetwork(4, 3, (16,)), QNetwork(4, 3, (8,))])
    with pytest.raises(ValueError, match="at least one"):
        StackedModule([])
    assert StackedModule([ActorCritic(4, 2)]).members == 1


_ROWS_BACKWARD = """
import sys, warnings
import torch
from agents.stacked import backward_into_rows
warnings.simplefilter("error")
data, grad = torch.zeros(2, 10), torch.zeros(2, 10)
leaf = torch.nn.Parameter(data[:, 2:6].view(2, 2, 2))
leaf.grad = grad[:, 2:6].view(2, 2, 2)
step = backward_into_rows if sys.argv[1] == "rows" else torch.Tensor.backward
step((leaf * 3).sum())
assert grad[:, 2:6].eq(3).all() and grad[:, :2].eq(0).all() and grad[:, 6:].eq(0).all()
"""


@pytest.mark.parametrize("way", ["rows", "plain"])
def test_backward_into_rows_lands_in_the_rows_without_the_layout_warning(way):
    """In a fresh process (torch warns once a process): the plain backward warns, ours not."""
    proc = subprocess.run(
        [sys.executable, "-c", _ROWS_BACKWARD, way], capture_output=True, text=True, cwd=ROOT
    )
    if way == "rows":
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode != 0 and "gradient layout" in proc.stderr
