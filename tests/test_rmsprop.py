import copy
import itertools
import subprocess
import sys

import pytest
import torch
from torch import nn

from rl_rmsprop.optim import RMSprop, make_optimizer


def small_net(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)
    ).to(dtype)


def batch(dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(24, 5, generator=g, dtype=dtype)


def loss_fn(net, x, step):
    # The target moves with the step so gradients keep changing sign and size.
    return (net(x) - torch.sin(torch.tensor(float(step)))).pow(2).mean()


def run(net, opt, steps, dtype=torch.float64, set_to_none=False, start=0):
    x = batch(dtype)
    for s in range(start, start + steps):
        opt.zero_grad(set_to_none=set_to_none)
        loss_fn(net, x, s).backward()
        opt.step()


def assert_same(net_a, opt_a, net_b, opt_b, rtol=0.0):
    for pa, pb in zip(net_a.parameters(), net_b.parameters(), strict=True):
        if rtol:
            torch.testing.assert_close(pa, pb, rtol=rtol, atol=0)
        else:
            assert torch.equal(pa, pb)
    sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sb:
        for name, value in sb[k].items():
            assert name in sa[k], name
            if rtol and name != "step":
                torch.testing.assert_close(sa[k][name], value, rtol=rtol, atol=1e-300)
            else:
                assert torch.equal(sa[k][name], value), (k, name)


GRID = list(
    itertools.product(
        [0.9, 0.99],  # alpha
        [1e-8, 1e-3],  # eps
        [0.0, 0.9],  # momentum
        [False, True],  # centered
        [0.0, 0.01],  # weight_decay
        [False, True],  # maximize
    )
)


@pytest.mark.parametrize("alpha,eps,momentum,centered,weight_decay,maximize", GRID)
def test_float64_grid_matches_torch(alpha, eps, momentum, centered, weight_decay, maximize):
    kw = dict(
        lr=1e-2,
        alpha=alpha,
        eps=eps,
        momentum=momentum,
        centered=centered,
        weight_decay=weight_decay,
        maximize=maximize,
    )
    a, b = small_net(), small_net()
    ours, ref = RMSprop(a.parameters(), **kw), torch.optim.RMSprop(b.parameters(), **kw)
    run(a, ours, 35)
    run(b, ref, 35)
    assert_same(a, ours, b, ref, rtol=1e-12)


@pytest.mark.parametrize("centered,momentum", [(False, 0.0), (True, 0.0), (True, 0.9)])
def test_float32_bit_identical_with_torch(centered, momentum):
    kw = dict(lr=7e-4, eps=1e-5, centered=centered, momentum=momentum, weight_decay=1e-3)
    a, b = small_net(torch.float32), small_net(torch.float32)
    ours, ref = RMSprop(a.parameters(), **kw), torch.optim.RMSprop(b.parameters(), **kw)
    run(a, ours, 40, torch.float32)
    run(b, ref, 40, torch.float32)
    assert_same(a, ours, b, ref)


def test_parameters_live_in_one_flat_buffer():
    net = small_net()
    opt = RMSprop(net.parameters())
    (space,) = opt.spaces
    ptr, size = space.data.data_ptr(), space.data.element_size()
    offset = 0
    for p in net.parameters():
        assert p.data_ptr() == ptr + offset * size
        offset += p.numel()
    run(net, opt, 2)
    for p, view in zip(net.parameters(), space.grad_views, strict=True):
        assert p.grad is view


def test_several_param_groups_with_their_own_hyperparameters():
    a, b = small_net(), small_net()

    def groups(net):
        return [
            {"params": net[0].parameters(), "lr": 1e-3, "centered": True},
            {"params": net[2].parameters(), "momentum": 0.5, "alpha": 0.9},
            {"params": net[4].parameters(), "weight_decay": 0.1, "eps": 1e-4},
        ]

    ours, ref = RMSprop(groups(a), lr=1e-2), torch.optim.RMSprop(groups(b), lr=1e-2)
    assert len(ours.spaces) == 3
    run(a, ours, 30)
    run(b, ref, 30)
    assert_same(a, ours, b, ref, rtol=1e-12)


def test_lr_scheduler_changes_lr_like_torch():
    a, b = small_net(), small_net()
    ours, ref = RMSprop(a.parameters(), lr=1e-2), torch.optim.RMSprop(b.parameters(), lr=1e-2)
    scheds = [torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9) for o in (ours, ref)]
    x = batch()
    for s in range(20):
        for net, opt, sched in zip((a, b), (ours, ref), scheds, strict=True):
            opt.zero_grad()
            loss_fn(net, x, s).backward()
            opt.step()
            sched.step()
    assert ours.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.9**20)
    assert_same(a, ours, b, ref, rtol=1e-12)


class WithExtras(nn.Module):
    """A network with an unused parameter, a frozen one and a zero-size one last."""

    def __init__(self):
        super().__init__()
        self.body = small_net()
        self.unused = nn.Parameter(torch.ones(4, dtype=torch.float64))
        self.frozen = nn.Parameter(torch.ones(3, dtype=torch.float64), requires_grad=False)
        self.empty = nn.Parameter(torch.zeros(0, dtype=torch.float64))

    def forward(self, x):
        return self.body(x) + self.frozen.sum() + self.empty.sum()


@pytest.mark.parametrize("spec", ["rmsprop", "adam"])
def test_none_frozen_and_zero_size_parameters(spec):
    kw = dict(lr=1e-2, momentum=0.9, weight_decay=0.1) if spec == "rmsprop" else dict(lr=1e-2)
    torch_cls = torch.optim.RMSprop if spec == "rmsprop" else torch.optim.Adam
    a, b = WithExtras(), WithExtras()
    ours, ref = make_optimizer(spec, a.parameters(), **kw), torch_cls(b.parameters(), **kw)
    run(a, ours, 25)
    run(b, ref, 25)
    assert_same(a, ours, b, ref, rtol=1e-12)
    assert torch.equal(a.unused, torch.ones(4, dtype=torch.float64))
    assert torch.equal(a.frozen, torch.ones(3, dtype=torch.float64))
    assert a.unused.grad is None and a.frozen.grad is None


def test_gradient_that_comes_and_goes_keeps_per_parameter_step_counts():
    """Adam's bias correction uses each parameter's own step count, as torch does."""
    a, b = small_net(), small_net()
    ours, ref = (
        make_optimizer("adam", a.parameters(), lr=1e-2),
        torch.optim.Adam(b.parameters(), lr=1e-2),
    )
    x = batch()
    for s in range(30):
        for net, opt in ((a, ours), (b, ref)):
            opt.zero_grad(set_to_none=True)
            loss_fn(net, x, s).backward()
            if s % 3 == 0:
                net[2].weight.grad = None  # this layer sits out every third step
            opt.step()
    assert_same(a, ours, b, ref, rtol=1e-12)
    state = ours.state_dict()["state"]
    assert state[2]["step"].item() == 20 and state[0]["step"].item() == 30


def test_zero_grad_set_to_none_and_replaced_grads():
    a, b = small_net(), small_net()
    ours, ref = RMSprop(a.parameters(), lr=1e-2), torch.optim.RMSprop(b.parameters(), lr=1e-2)
    run(a, ours, 10, set_to_none=True)
    run(b, ref, 10, set_to_none=True)
    assert_same(a, ours, b, ref)
    x = batch()
    for net, opt in ((a, ours), (b, ref)):
        opt.zero_grad()
        loss_fn(net, x, 99).backward()
        for p in net.parameters():
            p.grad = p.grad.clone() * 2  # user code replaces the gradient tensor
        opt.step()
    assert_same(a, ours, b, ref)
    run(a, ours, 5, start=100)
    run(b, ref, 5, start=100)
    assert_same(a, ours, b, ref)


def test_module_moved_after_construction_is_repacked():
    a, b = small_net(), small_net()
    ours, ref = RMSprop(a.parameters(), lr=1e-2), torch.optim.RMSprop(b.parameters(), lr=1e-2)
    run(a, ours, 5)
    run(b, ref, 5)
    for p in a.parameters():
        p.data = p.data.clone()  # what .to(other_device) does
    run(a, ours, 5, start=5)
    run(b, ref, 5, start=5)
    assert_same(a, ours, b, ref)
    assert ours.spaces[0].data.data_ptr() == next(a.parameters()).data_ptr()


def test_add_param_group_after_construction():
    a, b = small_net(), small_net()
    ours = RMSprop(a[0].parameters(), lr=1e-2)
    ref = torch.optim.RMSprop(b[0].parameters(), lr=1e-2)
    run(a, ours, 3)
    run(b, ref, 3)
    ours.add_param_group({"params": [*a[2].parameters(), *a[4].parameters()], "centered": True})
    ref.add_param_group({"params": [*b[2].parameters(), *b[4].parameters()], "centered": True})
    run(a, ours, 10, start=3)
    run(b, ref, 10, start=3)
    assert_same(a, ours, b, ref, rtol=1e-12)


@pytest.mark.parametrize("momentum,centered", [(0.0, False), (0.9, True)])
def test_state_dict_round_trip_continues_identically(momentum, centered):
    kw = dict(lr=1e-2, momentum=momentum, centered=centered)
    a = small_net()
    opt_a = RMSprop(a.parameters(), **kw)
    run(a, opt_a, 10)
    saved_net, saved_opt = copy.deepcopy(a.state_dict()), copy.deepcopy(opt_a.state_dict())
    run(a, opt_a, 10, start=10)

    b = small_net(seed=5)
    b.load_state_dict(saved_net)
    opt_b = RMSprop(b.parameters(), lr=0.5)  # hyperparameters come back from the state
    opt_b.load_state_dict(saved_opt)
    assert opt_b.param_groups[0]["lr"] == 1e-2
    run(b, opt_b, 10, start=10)
    assert_same(a, opt_a, b, opt_b)


def test_state_dict_uses_torch_names_and_loads_torch_state():
    a, b = small_net(), small_net()
    kw = dict(lr=1e-2, momentum=0.9, centered=True)
    ours, ref = RMSprop(a.parameters(), **kw), torch.optim.RMSprop(b.parameters(), **kw)
    run(b, ref, 10)
    a.load_state_dict(b.state_dict())
    ours.load_state_dict(ref.state_dict())
    assert set(ours.state_dict()["state"][0]) == {
        "step",
        "square_avg",
        "grad_avg",
        "momentum_buffer",
    }
    run(a, ours, 10, start=10)
    run(b, ref, 10, start=10)
    assert_same(a, ours, b, ref)


def test_load_state_dict_of_another_network_is_refused():
    opt = RMSprop(small_net().parameters())
    other = nn.Linear(3, 3).double()
    opt_other = RMSprop(other.parameters())
    run_other = (other(torch.randn(2, 3, dtype=torch.float64)) ** 2).sum()
    run_other.backward()
    opt_other.step()
    with pytest.raises(ValueError):
        opt.load_state_dict(opt_other.state_dict())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_params_keep_float32_state(dtype):
    torch.manual_seed(0)
    net = nn.Linear(8, 4).to(dtype)
    ref = nn.Linear(8, 4)
    ref.load_state_dict({k: v.float() for k, v in net.state_dict().items()})
    opt = RMSprop(net.parameters(), lr=1e-3, eps=1e-8)
    opt_ref = RMSprop(ref.parameters(), lr=1e-3, eps=1e-8)
    assert opt.spaces[0].state.square_avg.dtype == torch.float32
    x = torch.randn(16, 8)
    for _ in range(20):
        for m, o in ((net, opt), (ref, opt_ref)):
            o.zero_grad()
            m(x.to(m.weight.dtype)).float().square().mean().backward()
            o.step()
    torch.testing.assert_close(net.weight.float(), ref.weight, rtol=0, atol=2e-2)
    # The float16 trap: eps = 1e-8 is 0 in float16 and a zero gradient gives 0/0 = NaN there.
    opt.zero_grad()
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    fresh = RMSprop(net.parameters(), lr=1e-3, eps=1e-8)
    fresh.step()
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_skip_nonfinite_leaves_everything_untouched_and_counts():
    net = small_net()
    opt = RMSprop(net.parameters(), lr=1e-2, momentum=0.9, centered=True, skip_nonfinite=True)
    run(net, opt, 5)
    params = [p.clone() for p in net.parameters()]
    state = copy.deepcopy(opt.state_dict())
    opt.zero_grad()
    loss_fn(net, batch(), 5).backward()
    next(net.parameters()).grad[0, 0] = float("inf")
    opt.step()
    assert opt.nonfinite_skipped == 1
    assert all(torch.equal(a, b) for a, b in zip(params, net.parameters(), strict=True))
    after = opt.state_dict()["state"]
    for k, entry in state["state"].items():
        for name, value in entry.items():
            assert torch.equal(after[k][name], value)
    run(net, opt, 1, start=6)
    assert opt.nonfinite_skipped == 1
    assert not torch.equal(params[0], next(net.parameters()))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_host_finite_check_finds_any_nonfinite_and_passes_huge_finite(bad, dtype):
    net = small_net().to(dtype)
    opt = RMSprop(net.parameters(), lr=1e-2, skip_nonfinite=True)
    params = list(net.parameters())
    for i, p in enumerate(params):  # one non-finite element, in each parameter in turn
        for q in params:
            q.grad = torch.zeros_like(q)
        p.grad.view(-1)[-1] = bad
        opt.step()
        assert opt.nonfinite_skipped == i + 1
    # Finite gradients whose squares (and sum) overflow are still finite: not skipped.
    big = torch.finfo(dtype).max / 2
    for q in params:
        q.grad = torch.full_like(q, big)
    opt.step()
    assert opt.nonfinite_skipped == len(params) and opt.nonfinite_streak == 0


def test_device_mode_skips_without_a_sync_and_undoes_the_step():
    net = small_net()
    opt = RMSprop(net.parameters(), lr=1e-2, momentum=0.9, centered=True, skip_nonfinite="device")
    twin_net = copy.deepcopy(net)
    twin = RMSprop(twin_net.parameters(), lr=1e-2, momentum=0.9, centered=True)
    run(net, opt, 3)
    run(twin_net, twin, 3)
    params = [p.clone() for p in net.parameters()]
    state = copy.deepcopy(opt.state_dict())
    for _ in range(2):  # two bad steps in a row
        opt.zero_grad()
        loss_fn(net, batch(), 5).backward()
        next(net.parameters()).grad[0, 0] = float("nan")
        opt.step()
    assert isinstance(opt._skipped, torch.Tensor)  # counted on the device
    assert opt.nonfinite_skipped == 2 and opt.nonfinite_streak == 2
    assert all(torch.equal(a, b) for a, b in zip(params, net.parameters(), strict=True))
    after = opt.state_dict()["state"]
    for k, entry in state["state"].items():
        for name, value in entry.items():
            if name != "step":  # step counts advance in device mode (documented)
                assert torch.equal(after[k][name], value), name
    # The next good step is the step the twin (never fed NaN) takes: training goes on unharmed.
    run(net, opt, 1, start=3)
    run(twin_net, twin, 1, start=3)
    assert opt.nonfinite_skipped == 2 and opt.nonfinite_streak == 0
    for a, b in zip(net.parameters(), twin_net.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="skip_nonfinite"):
        RMSprop(net.parameters(), skip_nonfinite="yes")


def test_without_skip_an_inf_gradient_poisons_the_state_like_torch():
    net = small_net()
    opt = RMSprop(net.parameters(), lr=1e-2)
    opt.zero_grad()
    loss_fn(net, batch(), 0).backward()
    next(net.parameters()).grad[0, 0] = float("inf")
    opt.step()
    assert not torch.isfinite(opt.spaces[0].state.square_avg).all()
    assert opt.nonfinite_skipped == 0


def test_step_hooks_and_closure():
    net = small_net()
    opt = RMSprop(net.parameters())
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    x = batch()

    def closure():
        opt.zero_grad()
        loss = loss_fn(net, x, 0)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert calls == ["pre", "post"]
    assert isinstance(loss, torch.Tensor) and loss.item() > 0


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(lr=-1.0), "lr"),
        (dict(alpha=1.5), "alpha"),
        (dict(eps=-1e-8), "eps"),
        (dict(momentum=-0.5), "momentum"),
        (dict(weight_decay=float("nan")), "weight_decay"),
        (dict(sq_mode="cube"), "sq_mode"),
        (dict(impl="magic"), "impl"),
        (dict(nesterov=True), "nesterov"),
        (dict(beta1=0.9, momentum=0.9), "beta1"),
        (dict(lr="fast"), "lr"),
    ],
)
def test_bad_hyperparameters_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RMSprop(small_net().parameters(), **kwargs)


def test_creating_stepping_and_checkpointing_does_not_import_torchdynamo():
    # torch's Optimizer imports torch._dynamo (~1 s) the first time a wrapped method runs.
    code = (
        "import sys, torch\n"
        "from rl_rmsprop.optim import make_optimizer\n"
        "m = torch.nn.Linear(3, 2)\n"
        "opt = make_optimizer('rmsprop', m.parameters(), lr=0.1)\n"
        "opt.add_param_group({'params': [torch.nn.Parameter(torch.ones(2))]})\n"
        "m(torch.ones(1, 3)).sum().backward()\n"
        "opt.step()\n"
        "opt.zero_grad()\n"
        "opt.load_state_dict(opt.state_dict())\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
