import copy
import shutil

import pytest
import torch
from torch import nn

from rl_rmsprop.optim import RMSprop, compiled, make_optimizer

HAS_CC = shutil.which("g++") is not None or shutil.which("c++") is not None


def wide_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(64, 512), nn.Tanh(), nn.Linear(512, 512), nn.Tanh(), nn.Linear(512, 4)
    )


def train(net, opt, steps=15):
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(3))
    for s in range(steps):
        opt.zero_grad()
        (net(x) - s % 3).pow(2).mean().backward()
        opt.step()


@pytest.mark.skipif(not HAS_CC, reason="torch.compile on CPU needs a C++ compiler")
@pytest.mark.parametrize("spec,kw", [("rmsprop", dict(lr=1e-3, eps=1e-5)), ("rmsprop:graves", {})])
def test_compiled_matches_eager_and_auto_picks_it_for_large_buffers(spec, kw):
    a, b = wide_net(), wide_net()
    assert sum(p.numel() for p in a.parameters()) >= compiled.AUTO_COMPILE_MIN_NUMEL
    fused = make_optimizer(spec, a.parameters(), **kw)  # impl="auto"
    eager = make_optimizer(spec, b.parameters(), impl="eager", **kw)
    assert fused.impl == "compiled" and eager.impl == "eager"
    train(a, fused)
    train(b, eager)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-6)
    sa, sb = fused.state_dict()["state"], eager.state_dict()["state"]
    for k in sb:
        for name in sb[k]:
            torch.testing.assert_close(sa[k][name], sb[k][name], rtol=1e-4, atol=1e-8)


def test_auto_stays_eager_for_small_buffers_on_cpu():
    opt = RMSprop(nn.Linear(4, 2).parameters())
    assert opt.impl == "eager"
    # DQN's CartPole network (67k parameters): compiling would cost more than it saves.
    dqn = nn.Sequential(nn.Linear(4, 256), nn.ReLU(), nn.Linear(256, 256), nn.Linear(256, 2))
    assert RMSprop(dqn.parameters()).impl == "eager"


def test_failed_compilation_falls_back_to_eager_silently_and_correctly(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(compiled, "_compiled_kernel", lambda: broken)
    a = wide_net()
    b = copy.deepcopy(a)
    opt = RMSprop(a.parameters(), lr=1e-3, impl="compiled")
    ref = torch.optim.RMSprop(b.parameters(), lr=1e-3)
    assert opt.impl == "eager"
    train(a, opt)
    train(b, ref)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_a_kernel_that_disagrees_is_not_used(monkeypatch):
    def wrong(p, g, state, rule, hp, first):
        p.add_(1.0)

    monkeypatch.setattr(compiled, "_compiled_kernel", lambda: wrong)
    opt = RMSprop(wide_net().parameters(), impl="compiled")
    assert opt.impl == "eager"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("impl", ["eager", "compiled"])
def test_cuda_matches_cpu(impl):
    a = wide_net()
    b = copy.deepcopy(a).cuda()
    kw = dict(lr=1e-3, eps=1e-5, centered=True, momentum=0.9)
    cpu = RMSprop(a.parameters(), impl="eager", **kw)
    gpu = RMSprop(b.parameters(), impl=impl, **kw)
    if impl == "compiled":
        assert gpu.impl == "compiled"
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(3))
    for s in range(10):
        for net, opt, xx in ((a, cpu, x), (b, gpu, x.cuda())):
            opt.zero_grad()
            (net(xx) - s % 3).pow(2).mean().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb.cpu(), rtol=1e-4, atol=1e-5)
