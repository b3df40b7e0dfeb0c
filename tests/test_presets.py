"""Presets of OPTIMIZERS.md section 4 against their references, and make_optimizer's input checks.

Library references (torch.optim, SB3's RMSpropTFLike) run side by side with ours on a copy of
the same small MLP with real ``backward()``; references without a library are written here from
their sources (DeepMind's Lua, OPTIMIZERS.md section 3).
"""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from rl_rmsprop.optim import PRESETS, make_optimizer

STEPS = 30


def _mlp(dtype: torch.dtype, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).to(dtype)


def _batches(dtype: torch.dtype, steps: int = STEPS):
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 5, generator=gen, dtype=torch.float64).to(dtype)
        y = torch.randn(8, 3, generator=gen, dtype=torch.float64).to(dtype)
        yield x, y


def _backward(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    ((net(x) - y) ** 2).mean().backward()


def _run_side_by_side(make_ours, make_ref, dtype, steps=STEPS):
    """Train two copies of one MLP, each with real backward(), one per optimizer."""
    ours_net = _mlp(dtype)
    ref_net = copy.deepcopy(ours_net)
    ours, ref = make_ours(ours_net.parameters()), make_ref(ref_net.parameters())
    for x, y in _batches(dtype, steps):
        for net, opt in ((ours_net, ours), (ref_net, ref)):
            opt.zero_grad()
            _backward(net, x, y)
            opt.step()
    return ours_net, ours, ref_net, ref


def _check(a: torch.Tensor, b: torch.Tensor, rtol: float | None, what: str) -> None:
    """Bit for bit when ``rtol`` is None, else close to ``rtol``."""
    assert a.dtype == b.dtype, what
    if rtol is None:
        assert torch.equal(a, b), f"{what}: max diff {(a - b).abs().max().item():.3e}"
    else:
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * 1e-3, msg=what)


def _compare(ours_net, ours, ref_net, ref, *, rtol: float | None, stateless=()) -> None:
    """Parameters AND every state entry of the reference, under the reference's names.

    ``stateless``: reference entries that carry no information for this configuration (torch
    Adam's ``exp_avg`` with beta1 = 0 is just the last gradient) and that ours may leave out.
    """
    start = _mlp(next(ours_net.parameters()).dtype).parameters()
    for i, (a, b, a0) in enumerate(
        zip(ours_net.parameters(), ref_net.parameters(), start, strict=True)
    ):
        _check(a.detach(), b.detach(), rtol, f"param {i}")
        assert not torch.equal(a, a0), f"param {i} never moved"
    ours_state = ours.state_dict()["state"]
    ref_state = {i: ref.state[p] for i, p in enumerate(ref_net.parameters())}
    assert set(ref_state) <= set(ours_state)
    for i, entry in ref_state.items():
        mine = ours_state[i]
        extra = set(mine) - {"step"} - set(entry)
        assert not extra, f"param {i}: our state_dict has {sorted(extra)}, torch {sorted(entry)}"
        for key, value in entry.items():
            if key in stateless and key not in mine:
                continue
            assert key in mine, f"param {i}: our state_dict lacks {key!r} ({sorted(mine)})"
            if key == "step":
                assert float(mine["step"]) == float(value) == STEPS
                continue
            _check(mine[key], value, rtol, f"state {key} of param {i}")


# -- every preset builds and steps -------------------------------------------------------------


@pytest.mark.parametrize("spec", list(PRESETS))
def test_every_preset_builds_and_steps(spec):
    net = _mlp(torch.float32)
    before = [p.detach().clone() for p in net.parameters()]
    opt = make_optimizer(spec, net.parameters())
    group = opt.param_groups[0]
    for key, value in PRESETS[spec].defaults.items():
        assert group[key] == value, key
    for x, y in _batches(torch.float32, 3):
        opt.zero_grad()
        _backward(net, x, y)
        opt.step()
    for b, p in zip(before, net.parameters(), strict=True):
        assert torch.isfinite(p).all()
        assert not torch.equal(b, p)
    assert all(float(s["step"]) == 3 for s in opt.state_dict()["state"].values())


# -- torch.optim.RMSprop -----------------------------------------------------------------------

RMSPROP_GRID = [
    dict(),
    dict(lr=7e-4, eps=1e-5),
    dict(alpha=0.9, eps=1e-3, momentum=0.9),
    dict(centered=True),
    dict(centered=True, momentum=0.5, weight_decay=0.01),
    dict(weight_decay=0.1, maximize=True),
    dict(lr=1e-3, alpha=0.95, eps=1e-6, momentum=0.9, centered=True, maximize=True),
]


@pytest.mark.parametrize("kw", RMSPROP_GRID, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_rmsprop_equals_torch(kw, dtype):
    result = _run_side_by_side(
        lambda ps: make_optimizer("rmsprop", ps, **kw),
        lambda ps: torch.optim.RMSprop(ps, **kw, foreach=False),
        dtype,
    )
    _compare(*result, rtol=None if dtype == torch.float32 else 1e-12)


# -- SB3 RMSpropTFLike -------------------------------------------------------------------------

TF_GRID = [
    dict(centered=c, momentum=m, weight_decay=wd)
    for c, m, wd in itertools.product((False, True), (0.0, 0.9), (0.0, 0.01))
]


@pytest.mark.parametrize("kw", TF_GRID, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_rmsprop_tf_equals_sb3_rmsprop_tf_like(kw, dtype):
    sb2_compat = pytest.importorskip("stable_baselines3.common.sb2_compat.rmsprop_tf_like")
    kw = dict(kw, lr=7e-4, eps=1e-5)
    result = _run_side_by_side(
        lambda ps: make_optimizer("rmsprop:tf", ps, **kw),
        lambda ps: sb2_compat.RMSpropTFLike(ps, **kw),
        dtype,
    )
    # Bit for bit in float32 (same fused primitives in the same order), hence also in float64.
    _compare(*result, rtol=None)


# -- torch Adagrad, Adam/AdamW, SGD ------------------------------------------------------------

ADAGRAD_GRID = [
    dict(),
    dict(lr=0.1, lr_decay=0.01),
    dict(initial_accumulator_value=0.1, eps=1e-6),
    dict(lr=0.05, lr_decay=0.1, initial_accumulator_value=0.5, weight_decay=0.01, eps=1e-4),
    dict(weight_decay=0.1, maximize=True),
]
ADAM_GRID = [
    dict(),
    dict(lr=1e-2, betas=(0.8, 0.99)),
    dict(betas=(0.0, 0.9), eps=1e-4),
    dict(weight_decay=0.01),
    dict(lr=1e-2, weight_decay=0.1, maximize=True),
    dict(lr=3e-3, betas=(0.5, 0.95), eps=1e-6, weight_decay=0.05),
]
SGD_GRID = [
    dict(),
    dict(lr=1e-2, momentum=0.9),
    dict(lr=1e-2, momentum=0.9, dampening=0.5),
    dict(lr=1e-2, momentum=0.9, dampening=0.1, weight_decay=0.01),
    dict(lr=1e-2, momentum=0.9, nesterov=True),
    dict(lr=1e-2, momentum=0.5, weight_decay=0.01, maximize=True),
    dict(lr=5e-3, momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True),
    dict(lr=1e-2, weight_decay=0.1),
]


def _reference_cases():
    for kw in ADAGRAD_GRID:
        yield "adagrad", torch.optim.Adagrad, kw, {}
    for kw in ADAM_GRID:
        yield "adam", torch.optim.Adam, kw, {}
    for kw in ADAM_GRID:
        # AdamW is adam with decoupled weight decay (torch's AdamW default wd is 0.01).
        wd = dict(kw).pop("weight_decay", 0.01)
        kw = {k: v for k, v in kw.items() if k != "weight_decay"} | {"weight_decay": wd}
        yield "adam", torch.optim.AdamW, kw, {"decoupled_weight_decay": True}
    for kw in SGD_GRID:
        yield "sgd", torch.optim.SGD, kw, {}


REFERENCE_CASES = list(_reference_cases())


def _reference_id(case) -> str:
    spec, cls, kw, extra = case
    return f"{spec}-{cls.__name__}-{kw}{extra or ''}"


@pytest.mark.parametrize("case", REFERENCE_CASES, ids=_reference_id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_adagrad_adam_sgd_equal_torch(case, dtype):
    spec, cls, kw, extra = case
    result = _run_side_by_side(
        lambda ps: make_optimizer(spec, ps, **kw, **extra),
        lambda ps: cls(ps, **kw, foreach=False),
        dtype,
    )
    rtol = 1e-12 if dtype == torch.float64 else None  # float32: bit for bit
    stateless = ("exp_avg",) if kw.get("betas", (0.9,))[0] == 0 else ()
    _compare(*result, rtol=rtol, stateless=stateless)


# -- references written from their sources ----------------------------------------------------


class LuaDqnRmsprop:
    """DeepMind's NeuralQLearner.lua (Nature DQN) RMSprop, transcribed line by line.

    In the Lua, ``dw`` is the ascent direction (backward() gets the TD error as the gradient
    of the output), so ``w:add(deltas)`` descends; here dw = -grad of our loss.
    """

    def __init__(self, params, lr=2.5e-4):
        self.params = list(params)
        self.lr = lr
        self.g = [torch.zeros_like(p) for p in self.params]
        self.g2 = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        for w, g, g2 in zip(self.params, self.g, self.g2, strict=True):
            dw = -w.grad
            g.mul_(0.95).add_(dw, alpha=0.05)  # self.g:mul(0.95):add(0.05, self.dw)
            tmp = dw * dw  # self.tmp:cmul(self.dw, self.dw)
            g2.mul_(0.95).add_(tmp, alpha=0.05)  # self.g2:mul(0.95):add(0.05, self.tmp)
            tmp = g * g  # self.tmp:cmul(self.g, self.g)
            tmp = tmp * -1  # self.tmp:mul(-1)
            tmp = tmp + g2  # self.tmp:add(self.g2)
            tmp = tmp + 0.01  # self.tmp:add(0.01)
            tmp = tmp.sqrt()  # self.tmp:sqrt()
            deltas = self.lr * dw / tmp  # self.deltas:mul(0):addcdiv(self.lr, self.dw, self.tmp)
            w.add_(deltas)  # self.w:add(self.deltas)


class Section3Rmsprop:
    """OPTIMIZERS.md section 3 written out naively for the eps-in-sqrt presets."""

    def __init__(self, params, lr, alpha, eps, centered=False, momentum=0.0):
        self.params = list(params)
        self.lr, self.alpha, self.eps = lr, alpha, eps
        self.centered, self.momentum = centered, momentum
        self.v = [torch.zeros_like(p) for p in self.params]
        self.m = [torch.zeros_like(p) for p in self.params]
        self.b = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        a = self.alpha
        for i, p in enumerate(self.params):
            g = p.grad
            self.v[i] = a * self.v[i] + (1 - a) * g * g
            if self.centered:
                self.m[i] = a * self.m[i] + (1 - a) * g
                var = (self.v[i] - self.m[i] ** 2).clamp_min(0)
            else:
                var = self.v[i]
            d = torch.sqrt(var + self.eps)
            if self.momentum:
                # Graves eq. 40-41: lr inside the momentum buffer.
                self.b[i] = self.momentum * self.b[i] + self.lr * g / d
                p -= self.b[i]
            else:
                p -= self.lr * g / d


def _assert_params_close(ours_net, ref_net) -> None:
    for i, (a, b) in enumerate(zip(ours_net.parameters(), ref_net.parameters(), strict=True)):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-12, atol=1e-15, msg=f"{i}")


def _assert_moved(net, dtype) -> None:
    start = _mlp(dtype)
    deltas = [
        (a - b).abs().max() for a, b in zip(net.parameters(), start.parameters(), strict=True)
    ]
    assert min(deltas) > 0


def test_dqn_nature_equals_lua_neural_q_learner():
    dtype = torch.float64
    ours_net, ours, ref_net, ref = _run_side_by_side(
        lambda ps: make_optimizer("rmsprop:dqn-nature", ps), LuaDqnRmsprop, dtype
    )
    _assert_moved(ours_net, dtype)
    _assert_params_close(ours_net, ref_net)
    state = ours.state_dict()["state"]
    for i in range(len(ref.params)):
        # Lua's g is the mean of dw = -grad.
        torch.testing.assert_close(state[i]["grad_avg"], -ref.g[i], rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(state[i]["square_avg"], ref.g2[i], rtol=1e-12, atol=1e-15)


def test_graves_equals_section3():
    dtype = torch.float64
    ours_net, ours, ref_net, ref = _run_side_by_side(
        lambda ps: make_optimizer("rmsprop:graves", ps),
        lambda ps: Section3Rmsprop(ps, lr=1e-4, alpha=0.95, eps=1e-4, centered=True, momentum=0.9),
        dtype,
    )
    _assert_moved(ours_net, dtype)
    _assert_params_close(ours_net, ref_net)
    state = ours.state_dict()["state"]
    for i in range(len(ref.params)):
        for ours_key, mine in (
            ("square_avg", ref.v),
            ("grad_avg", ref.m),
            ("momentum_buffer", ref.b),
        ):
            torch.testing.assert_close(state[i][ours_key], mine[i], rtol=1e-12, atol=1e-15)


def test_graves_lr_sits_inside_the_momentum_buffer():
    """With lr inside the buffer, halving lr mid-run changes only future contributions."""
    net_a, net_b = _mlp(torch.float64), _mlp(torch.float64)
    ours = make_optimizer("rmsprop:graves", net_a.parameters())
    ref = Section3Rmsprop(
        net_b.parameters(), lr=1e-4, alpha=0.95, eps=1e-4, centered=True, momentum=0.9
    )
    for k, (x, y) in enumerate(_batches(torch.float64)):
        if k == 15:
            ours.param_groups[0]["lr"] = ref.lr = 5e-5
        for net, opt in ((net_a, ours), (net_b, ref)):
            opt.zero_grad()
            _backward(net, x, y)
            opt.step()
    _assert_params_close(net_a, net_b)


def test_a3c_equals_section3():
    dtype = torch.float64
    ours_net, ours, ref_net, ref = _run_side_by_side(
        lambda ps: make_optimizer("rmsprop:a3c", ps),
        lambda ps: Section3Rmsprop(ps, lr=7e-4, alpha=0.99, eps=0.1),
        dtype,
    )
    _assert_moved(ours_net, dtype)
    _assert_params_close(ours_net, ref_net)
    state = ours.state_dict()["state"]
    for i in range(len(ref.params)):
        torch.testing.assert_close(state[i]["square_avg"], ref.v[i], rtol=1e-12, atol=1e-15)
        assert set(state[i]) == {"step", "square_avg"}


# -- first-step sizes of OPTIMIZERS.md section 5 ----------------------------------------------

# |update| / lr for a scalar gradient g from fresh state, as printed in section 5.
FIRST_STEP_TABLE = {
    ("rmsprop", ()): {1e-3: "9.999", 1.0: "10", 100.0: "10"},
    ("rmsprop:tf", (("eps", 1e-5),)): {1e-3: "0.001005", 1.0: "1", 100.0: "9.951"},
    ("rmsprop:dqn-nature", ()): {1e-3: "0.01", 1.0: "4.17", 100.0: "4.588"},
    ("rmsprop:a3c", ()): {1e-3: "0.003162", 1.0: "3.015", 100.0: "9.995"},
}


def _printed_tolerance(printed: str) -> float:
    """Half a unit in the last printed digit, but never looser than 1e-3 relative."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return min(0.5 * 10.0**-decimals, 1e-3 * float(printed))


@pytest.mark.parametrize(
    ("spec", "overrides", "g", "printed"),
    [(s, o, g, v) for (s, o), row in FIRST_STEP_TABLE.items() for g, v in row.items()],
)
def test_first_step_size_matches_section5_table(spec, overrides, g, printed):
    p = nn.Parameter(torch.zeros((), dtype=torch.float64))
    opt = make_optimizer(spec, [p], **dict(overrides))
    lr = opt.param_groups[0]["lr"]
    if spec == "rmsprop":
        assert (opt.param_groups[0]["alpha"], opt.param_groups[0]["eps"]) == (0.99, 1e-8)
    p.grad = torch.tensor(g, dtype=torch.float64)
    opt.step()
    ratio = abs(p.item()) / lr
    assert p.item() < 0  # a descent step
    assert math.isclose(ratio, float(printed), rel_tol=0, abs_tol=_printed_tolerance(printed)), (
        ratio,
        printed,
    )


# -- bad input ---------------------------------------------------------------------------------


def _params():
    return nn.Linear(3, 2).parameters()


def test_unknown_spec_names_it_and_lists_the_presets():
    with pytest.raises(ValueError) as info:
        make_optimizer("rmsprop:nope", _params())
    message = str(info.value)
    assert "rmsprop:nope" in message
    for name in PRESETS:
        assert name in message


def test_unknown_keyword_is_named():
    with pytest.raises(ValueError, match="betas"):
        make_optimizer("rmsprop", _params(), betas=(0.9, 0.99))
    with pytest.raises(ValueError, match="not_a_keyword"):
        make_optimizer("sgd", _params(), not_a_keyword=1)


@pytest.mark.parametrize(
    ("spec", "name", "value"),
    [
        ("rmsprop", "lr", -1.0),
        ("rmsprop", "alpha", 1.5),
        ("rmsprop", "eps", -1.0),
        ("rmsprop", "momentum", -0.1),
        ("rmsprop", "beta1", 1.0),
        ("adam", "beta1", 1.0),
        ("rmsprop:tf", "lr", float("nan")),
        ("sgd", "dampening", 1.5),
        ("adagrad", "lr_decay", -0.1),
    ],
)
def test_out_of_range_value_names_the_argument(spec, name, value):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        make_optimizer(spec, _params(), **{name: value})


def test_betas_out_of_range_names_beta1():
    with pytest.raises(ValueError, match="beta1"):
        make_optimizer("adam", _params(), betas=(1.0, 0.999))


def test_adam_amsgrad_true_raises_and_false_is_accepted():
    with pytest.raises(ValueError, match="amsgrad"):
        make_optimizer("adam", _params(), amsgrad=True)
    make_optimizer("adam", _params(), amsgrad=False)


def test_betas_translation():
    opt = make_optimizer("adam", _params(), betas=(0.8, 0.95))
    group = opt.param_groups[0]
    assert (group["beta1"], group["alpha"]) == (0.8, 0.95)
    assert group["bias_correction"] is True


def test_keyword_given_twice_raises():
    with pytest.raises(ValueError, match=r"alpha.*given twice"):
        make_optimizer("adam", _params(), betas=(0.9, 0.99), alpha=0.9)
    with pytest.raises(ValueError, match=r"initial_square_avg.*given twice"):
        make_optimizer("adagrad", _params(), initial_accumulator_value=0.1, initial_square_avg=0.2)
