"""The functional rule on ``[K, N]`` populations with ``[K, 1]`` hyperparameters and step counts.

A population row must behave exactly like a single run with that row's hyperparameters, and
rows must never influence each other. Also: the centered variance is clamped at 0 (torch NaNs),
and SGD's first-step dampening works per row through the ``[K, 1]`` ``first`` tensor.
"""

from __future__ import annotations

import pytest
import torch

from rl_rmsprop.optim.functional import Hyper, Rule, coefficients, init_state, update_

K, N, STEPS = 3, 64, 30


def _grads(dtype: torch.dtype, seed: int = 0, steps: int = STEPS) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # Rows on different scales so that the rows' states differ a lot.
    scale = torch.tensor([[1.0], [0.05], [20.0]], dtype=torch.float64)
    return (torch.randn(steps, K, N, generator=gen, dtype=torch.float64) * scale).to(dtype)


def _p0(dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(123)
    return torch.randn(K, N, generator=gen, dtype=torch.float64).to(dtype)


def _column(values, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype).reshape(-1, 1)


def _row_hyper(hyper: Hyper, k: int) -> Hyper:
    """Row k of a population Hyper, still as [1, 1] tensors."""
    return Hyper(*(h[k : k + 1] for h in hyper))


def _float_hyper(hyper: Hyper, k: int) -> Hyper:
    """Row k of a population Hyper as Python floats (the torch-exact scalar path)."""
    return Hyper(*(float(h[k]) for h in hyper))


def _run_tensor(rule, hyper, p0, grads, v0=0.0, t0=None):
    """Run the tensor-coefficient path; t is a [rows, 1] int64 step count."""
    p = p0.clone()
    state = init_state(p, rule, v0)
    t = torch.zeros(p.shape[0], 1, dtype=torch.int64) if t0 is None else t0.clone()
    for g in grads:
        t = t + 1
        update_(p, g, state, rule, coefficients(rule, hyper, t))
    return p, state


def _run_float(rule, hyper, p0, grads, v0=0.0, t0=0):
    """Run the Python-float path on a [N] buffer with an int step count."""
    p = p0.clone()
    state = init_state(p, rule, v0)
    t = t0
    for g in grads:
        t += 1
        update_(p, g, state, rule, coefficients(rule, hyper, t))
    return p, state


def _assert_states(a, b, *, exact: bool, rtol: float = 1e-12) -> None:
    for name, x, y in zip(a._fields, a, b, strict=True):
        assert (x is None) == (y is None), name
        if x is None:
            continue
        if exact:
            assert torch.equal(x, y), name
        else:
            torch.testing.assert_close(x, y, rtol=rtol, atol=1e-300, msg=name)


# Populations: (rule, hyper columns, v0). Rows differ in every hyperparameter the rule uses.
CASES = {
    "lr-only": (
        Rule(),
        dict(lr=[1e-2, 3e-3, 5e-4], alpha=[0.99] * 3, eps=[1e-8] * 3),
        0.0,
    ),
    "centered-alpha-eps-momentum": (
        Rule(centered=True, use_momentum=True),
        dict(
            lr=[1e-2] * 3, alpha=[0.9, 0.99, 0.95], eps=[1e-8, 1e-3, 0.1], momentum=[0.0, 0.5, 0.9]
        ),
        0.0,
    ),
    "tf-centered-eps-in-sqrt-lr-in-momentum": (
        Rule(
            eps_in_sqrt=True,
            centered=True,
            grad_avg_lerp=False,
            use_momentum=True,
            lr_in_momentum=True,
            weight_decay=True,
        ),
        dict(
            lr=[7e-4, 1e-2, 1e-4],
            alpha=[0.99, 0.9, 0.95],
            eps=[1e-5, 1e-2, 1e-4],
            momentum=[0.9, 0.0, 0.5],
            weight_decay=[0.0, 0.01, 0.1],
        ),
        1.0,
    ),
    "adam-bias-correction": (
        Rule(bias_correction=True, use_beta1=True, weight_decay=True, decoupled_weight_decay=True),
        dict(
            lr=[1e-3, 1e-2, 3e-4],
            alpha=[0.999, 0.99, 0.9],
            eps=[1e-8, 1e-6, 1e-3],
            beta1=[0.9, 0.5, 0.0],
            weight_decay=[0.01, 0.0, 0.1],
        ),
        0.0,
    ),
    "adagrad-lr-decay": (
        Rule(sq_mode="sum"),
        dict(lr=[1e-2, 1e-1, 1e-3], alpha=[1.0] * 3, eps=[1e-10] * 3, lr_decay=[0.0, 0.1, 0.01]),
        0.1,
    ),
    "sgd-nesterov": (
        Rule(sq_mode="none", use_momentum=True, nesterov=True, maximize=True),
        dict(lr=[1e-3, 1e-2, 1e-1], alpha=[0.0] * 3, eps=[0.0] * 3, momentum=[0.9, 0.5, 0.1]),
        0.0,
    ),
}


def _hyper(columns: dict, dtype=torch.float64) -> Hyper:
    full = dict(weight_decay=[0.0] * K, momentum=[0.0] * K, dampening=[0.0] * K)
    full |= dict(beta1=[0.0] * K, lr_decay=[0.0] * K)
    full |= columns
    return Hyper(**{k: _column(v, dtype) for k, v in full.items()})


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_population_rows_equal_single_runs(case, dtype):
    rule, columns, v0 = CASES[case]
    hyper = _hyper(columns, dtype)  # tensor coefficients in the state's dtype, as compiled.py
    # The rows really differ in their hyperparameters.
    assert any(len(set(v)) == K for v in columns.values())
    grads, p0 = _grads(dtype), _p0(dtype)

    pop_p, pop_state = _run_tensor(rule, hyper, p0, grads, v0)
    assert torch.isfinite(pop_p).all()
    assert not torch.equal(pop_p, p0)
    for k in range(K):
        row_p, row_state = _run_tensor(
            rule, _row_hyper(hyper, k), p0[k : k + 1], grads[:, k : k + 1], v0
        )
        assert torch.equal(pop_p[k : k + 1], row_p), f"row {k}"
        pop_row_state = type(pop_state)(*(None if s is None else s[k : k + 1] for s in pop_state))
        _assert_states(pop_row_state, row_state, exact=True)


@pytest.mark.parametrize("case", list(CASES))
def test_population_rows_close_to_float_path(case):
    rule, columns, v0 = CASES[case]
    hyper = _hyper(columns)
    grads, p0 = _grads(torch.float64), _p0(torch.float64)
    pop_p, pop_state = _run_tensor(rule, hyper, p0, grads, v0)
    for k in range(K):
        ref_p, ref_state = _run_float(rule, _float_hyper(hyper, k), p0[k], grads[:, k], v0)
        torch.testing.assert_close(pop_p[k], ref_p, rtol=1e-12, atol=1e-300)
        pop_row_state = type(pop_state)(*(None if s is None else s[k] for s in pop_state))
        _assert_states(pop_row_state, ref_state, exact=False)


@pytest.mark.parametrize("case", list(CASES))
def test_nan_in_one_row_does_not_touch_the_others(case):
    rule, columns, v0 = CASES[case]
    hyper = _hyper(columns, torch.float32)
    grads, p0 = _grads(torch.float32), _p0(torch.float32)
    clean_p, clean_state = _run_tensor(rule, hyper, p0, grads, v0)

    poisoned = grads.clone()
    poisoned[10, 2, 5] = float("nan")
    poisoned[11, 2, :] = float("inf")
    dirty_p, dirty_state = _run_tensor(rule, hyper, p0, poisoned, v0)

    # The poison did reach row 2 ...
    assert not torch.isfinite(dirty_p[2]).all()
    # ... and rows 0 and 1 are bit for bit what they were without it.
    assert torch.equal(dirty_p[:2], clean_p[:2])
    for name, a, b in zip(clean_state._fields, clean_state, dirty_state, strict=True):
        if a is not None:
            assert torch.equal(a[:2], b[:2]), name


def test_centered_variance_is_clamped_where_torch_goes_nan():
    """Constant gradients: v - m^2 rounds below 0 in float32 after ~1,200 steps (alpha 0.99)."""
    steps = 1500
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(1000, generator=gen)
    lr, alpha, eps = 1e-3, 0.99, 1e-8

    ref = torch.zeros_like(g, requires_grad=True)
    torch_opt = torch.optim.RMSprop(
        [ref], lr=lr, alpha=alpha, eps=eps, centered=True, foreach=False
    )
    rule, hyper = Rule(centered=True), Hyper(lr=lr, alpha=alpha, eps=eps)
    p = torch.zeros_like(g)
    state = init_state(p, rule)
    first_nan = None
    for t in range(1, steps + 1):
        ref.grad = g.clone()
        torch_opt.step()
        update_(p, g, state, rule, coefficients(rule, hyper, t))
        if first_nan is None:
            if torch.isfinite(ref).all():
                # Identical to torch, bit for bit, for as long as torch is finite.
                assert torch.equal(p, ref.detach()), f"step {t}"
            else:
                first_nan = t

    # The trap is real: torch went NaN, because its v - m^2 went negative.
    assert first_nan is not None and first_nan > 500
    torch_state = torch_opt.state[ref]
    var = torch_state["square_avg"].addcmul(
        torch_state["grad_avg"], torch_state["grad_avg"], value=-1
    )
    assert (var < 0).any()
    # Ours stays finite everywhere and equals torch on every element torch kept finite.
    assert torch.isfinite(p).all()
    finite = torch.isfinite(ref.detach())
    assert 0 < (~finite).sum() < finite.sum()
    assert torch.equal(p[finite], ref.detach()[finite])


def test_sgd_dampening_first_step_per_row():
    """Rows at different step counts: the [K, 1] ``first`` tensor picks b = g only where t == 1."""
    rule = Rule(sq_mode="none", use_momentum=True, use_dampening=True, weight_decay=True)
    columns = dict(
        lr=[1e-2, 1e-3, 1e-1],
        alpha=[0.0] * 3,
        eps=[0.0] * 3,
        momentum=[0.9, 0.5, 0.8],
        dampening=[0.1, 0.5, 0.9],
        weight_decay=[0.0, 1e-2, 1e-3],
    )
    hyper = _hyper(columns)
    t0 = torch.tensor([[0], [3], [0]])  # rows 0 and 2 start fresh; row 1 is already at t = 3
    grads, p0 = _grads(torch.float64, steps=10), _p0(torch.float64)

    # Row 1 continues from a non-zero buffer, as it would after 3 steps.
    pop_p = p0.clone()
    pop_state = init_state(pop_p, rule)
    pop_state.momentum_buffer.copy_(grads[0])
    t = t0.clone()
    first_flags = []
    for g in grads:
        t = t + 1
        c = coefficients(rule, hyper, t)
        first_flags.append(c.first.flatten().tolist())
        update_(pop_p, g, pop_state, rule, c)
    assert first_flags[0] == [True, False, True]
    assert all(flags == [False, False, False] for flags in first_flags[1:])

    for k in range(K):
        p = p0[k].clone()
        state = init_state(p, rule)
        state.momentum_buffer.copy_(grads[0, k])
        step = int(t0[k])
        for g in grads[:, k]:
            step += 1
            update_(p, g, state, rule, coefficients(rule, _float_hyper(hyper, k), step))
        # Tensor and float coefficients round differently (1 ulp), a wrong first-step choice
        # would be off by the factor 1 - dampening.
        torch.testing.assert_close(pop_p[k], p, rtol=1e-12, atol=1e-300, msg=f"row {k}")
        torch.testing.assert_close(
            pop_state.momentum_buffer[k], state.momentum_buffer, rtol=1e-12, atol=1e-300
        )


def test_sgd_dampening_first_step_matches_torch():
    """The scalar path itself is torch.optim.SGD's: b = g at the first step, undamped."""
    rule = Rule(sq_mode="none", use_momentum=True, use_dampening=True)
    hyper = Hyper(lr=1e-2, alpha=0.0, eps=0.0, momentum=0.9, dampening=0.5)
    grads, p0 = _grads(torch.float64, steps=5), _p0(torch.float64)[0]
    ref = p0.clone().requires_grad_(True)
    torch_opt = torch.optim.SGD([ref], lr=1e-2, momentum=0.9, dampening=0.5, foreach=False)
    p = p0.clone()
    state = init_state(p, rule)
    for t, g in enumerate(grads[:, 0], start=1):
        ref.grad = g.clone()
        torch_opt.step()
        update_(p, g, state, rule, coefficients(rule, hyper, t))
        torch.testing.assert_close(p, ref.detach(), rtol=1e-12, atol=1e-300)
        buf = torch_opt.state[ref]["momentum_buffer"]
        torch.testing.assert_close(state.momentum_buffer, buf, rtol=1e-12, atol=1e-300)
        if t == 1:
            assert torch.equal(state.momentum_buffer, g)


@pytest.mark.parametrize(
    "kind",
    ["rmsprop", "rmsprop_centered", "adam", "adagrad"],
)
def test_denormal_square_averages_give_torchs_bits(kind):
    """Parameters whose gradient stopped (dead units) take the floored square root, same bits."""
    from rl_rmsprop.optim.presets import make_optimizer

    n = 4096
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(n, generator=gen) * 1e-3 for _ in range(3)]
    for g in grads:
        g[: n // 2] = 0  # half the parameters get no gradient
    p_ours = torch.nn.Parameter(torch.randn(n, generator=gen))
    p_ref = torch.nn.Parameter(p_ours.detach().clone())
    if kind == "rmsprop_centered":
        ours = make_optimizer("rmsprop", [p_ours], lr=1e-3, eps=1e-8, centered=True, impl="eager")
        ref = torch.optim.RMSprop([p_ref], lr=1e-3, eps=1e-8, centered=True)
    elif kind == "rmsprop":
        ours = make_optimizer("rmsprop", [p_ours], lr=1e-3, eps=1e-8, impl="eager")
        ref = torch.optim.RMSprop([p_ref], lr=1e-3, eps=1e-8)
    elif kind == "adam":
        ours = make_optimizer("adam", [p_ours], lr=1e-3, eps=1e-8, impl="eager")
        ref = torch.optim.Adam([p_ref], lr=1e-3, eps=1e-8, foreach=False)
    else:
        ours = make_optimizer("adagrad", [p_ours], lr=1e-2, eps=1e-10, impl="eager")
        ref = torch.optim.Adagrad([p_ref], lr=1e-2, eps=1e-10, foreach=False)
    # The first step fills the state; then the dead half's square averages are put where
    # they decay to, the denormal floats (and some exact zeros), in both optimizers.
    for opt, p in ((ours, p_ours), (ref, p_ref)):
        p.grad = grads[0].clone()
        opt.step()
    (space,) = ours.spaces
    name = {"adam": "exp_avg_sq", "adagrad": "sum"}.get(kind, "square_avg")
    for v in (space.state.square_avg, ref.state[p_ref][name]):
        v[: n // 2 : 2] = 1e-40
        v[1 : n // 2 : 2] = 0.0
    assert torch.equal(space.state.square_avg, ref.state[p_ref][name])
    for g in grads[1:]:
        for opt, p in ((ours, p_ours), (ref, p_ref)):
            p.grad = g.clone()
            opt.step()
    assert torch.equal(p_ours.detach(), p_ref.detach())


def test_the_square_root_floor_is_off_where_it_could_change_a_bit():
    from rl_rmsprop.optim.functional import _sqrt_floor

    v = torch.zeros(4)
    plain = Rule(sq_mode="ema")
    tiny = torch.finfo(torch.float32).tiny

    def coeffs(eps, rule=plain, t=1):
        return coefficients(rule, Hyper(lr=1e-3, alpha=0.99, eps=eps), t)

    assert _sqrt_floor(v, plain, coeffs(1e-8)) == tiny
    assert _sqrt_floor(v, plain, coeffs(0.0)) == 0.0  # sqrt(v) itself is the denominator
    assert _sqrt_floor(v, plain, coeffs(1e-30)) == 0.0  # sqrt(tiny) is not below its ulp
    in_sqrt = Rule(sq_mode="ema", eps_in_sqrt=True)
    assert _sqrt_floor(v, in_sqrt, coeffs(1e-8, in_sqrt)) == 0.0
    # Tensor coefficients (a population's rows): the floor is per row, off where it could
    # change a bit.
    eps_rows = torch.tensor([[1e-8], [1e-30], [0.0]], dtype=torch.float64)
    per_row = coefficients(plain, Hyper(lr=1e-3, alpha=0.99, eps=eps_rows), 1)
    floor = _sqrt_floor(torch.zeros(3, 4), plain, per_row)
    assert floor.dtype == torch.float32
    assert floor.flatten().tolist() == [tiny, 0.0, 0.0]


def test_a_populations_floored_denominator_has_the_bits_of_the_plain_formula():
    from rl_rmsprop.optim.functional import State, denominator

    tiny = torch.finfo(torch.float32).tiny
    v = torch.tensor([0.0, tiny / 2**20, tiny / 3, tiny, 1e-30, 1e-20]).repeat(2, 1)
    eps_rows = torch.tensor([[1e-8], [1e-5]], dtype=torch.float64)
    plain = Rule(sq_mode="ema")
    c = coefficients(plain, Hyper(lr=1e-3, alpha=0.99, eps=eps_rows), 5)
    got = denominator(State(v.clone(), None, None, None), plain, c)
    assert torch.equal(got, v.sqrt() + c.eps.to(torch.float32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("t", [1, 1000])
def test_floored_denominator_equals_torchs_formula_on_tiny_variances(dtype, t):
    from rl_rmsprop.optim.functional import State, denominator

    info = torch.finfo(dtype)
    v = torch.tensor(
        [0.0, info.tiny / 3, info.tiny / 1e6, info.tiny, info.tiny * 7, 1e-20], dtype=dtype
    )
    v = v.repeat(3)
    for rule, hyper in (
        (Rule(sq_mode="ema"), Hyper(lr=1e-3, alpha=0.99, eps=1e-8)),
        (
            Rule(sq_mode="ema", use_beta1=True, bias_correction=True),
            Hyper(lr=1e-3, alpha=0.999, eps=1e-8),
        ),
        (Rule(sq_mode="sum"), Hyper(lr=1e-2, alpha=0.0, eps=1e-10)),
    ):
        c = coefficients(rule, hyper, t)
        state = State(v.clone(), None, None, None)
        expected = v.sqrt()
        if rule.bias_correction:
            expected = expected / c.bias_correction2**0.5
        expected = expected + c.eps
        assert torch.equal(denominator(state, rule, c), expected), rule
