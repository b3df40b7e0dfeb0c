"""The [K, N] population optimizer: each row is a single run with its own settings."""

from __future__ import annotations

import pytest
import torch

from rl_rmsprop.optim import clip_grad_norm_, make_optimizer, population, statistics
from rl_rmsprop.optim.figures import CLIPPED, GRAD_VALUES, LAYER_NORM, NORM_POSTCLIP, NORM_PRECLIP
from rl_rmsprop.optim.population import PopulationOptimizer

MIXED = [
    ("rmsprop", {"lr": 7e-4, "eps": 1e-5}),
    ("rmsprop", {"lr": 3e-3, "eps": 1e-5, "alpha": 0.9}),
    ("rmsprop:tf", {"lr": 7e-4, "eps": 1e-5}),
    ("rmsprop:dqn-nature", {}),
    ("rmsprop:graves", {}),
    ("rmsprop:a3c", {}),
    ("adagrad", {"lr": 1e-2}),
    ("adagrad", {"lr": 1e-2, "lr_decay": 1e-3}),
    ("adam", {"lr": 7e-4}),
    ("adam", {"lr": 1e-3, "betas": (0.8, 0.99), "eps": 1e-5}),
    ("sgd", {"lr": 1e-2, "momentum": 0.9, "nesterov": True}),
    ("sgd", {"lr": 1e-2, "momentum": 0.9, "dampening": 0.1}),
    ("rmsprop", {"lr": 1e-3, "momentum": 0.9, "centered": True, "weight_decay": 1e-4}),
    ("adam", {"lr": 1e-3, "weight_decay": 1e-2, "decoupled_weight_decay": True}),
]


def _population(specs, n=600, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(len(specs), n, generator=g, dtype=dtype)
    grad = torch.zeros_like(data)
    return (
        data,
        grad,
        PopulationOptimizer(data, grad, specs, [("a", 0, n // 3), ("b", n // 3, n - n // 3)]),
    )


@pytest.mark.parametrize("row_by_row", [False, True])
@pytest.mark.parametrize(
    ("max_norm", "scheduled", "dtype"),
    [
        (None, False, torch.float32),
        (0.5, False, torch.float32),
        (0.5, True, torch.float32),
        (0.5, True, torch.float64),
    ],
)
def test_mixed_families_match_the_same_configurations_run_singly_bit_for_bit(
    max_norm, scheduled, dtype, row_by_row, monkeypatch
):
    """Each member steps exactly as a single run's optimizer: the tensor form rounds as the
    scalar form (coefficients derived in double precision, ops that round as torch's)."""
    if row_by_row:  # members that differ are then updated one by one (long rows' form)
        monkeypatch.setattr(population, "ROW_BY_ROW_MIN", 1)
    data, grad, opt = _population(MIXED, dtype=dtype)
    singles = [torch.nn.Parameter(data[k].clone()) for k in range(len(MIXED))]
    opts = [make_optimizer(n, [p], **o) for (n, o), p in zip(MIXED, singles, strict=True)]
    base_lrs = [o.param_groups[0]["lr"] for o in opts]
    g = torch.Generator().manual_seed(1)
    for i in range(300):
        step = torch.randn(data.shape, generator=g, dtype=dtype)
        grad.copy_(step)
        # a schedule scales every member's lr as a single run's scheduler sets its group's
        factor = 1.0 - i / 300 if scheduled else 1.0
        opt.lr_scale = factor
        norms = opt.clip_grad_norm_(max_norm) if max_norm else None
        opt.step(norms)
        for k, (p, o) in enumerate(zip(singles, opts, strict=True)):
            o.param_groups[0]["lr"] = base_lrs[k] * factor
            p.grad = step[k].clone()
            if max_norm:
                clip_grad_norm_(o, max_norm)
            o.step()
    # one block per rule: rmsprop x2, tf, dqn-nature, graves, a3c, adagrad x2 (lr decay is a
    # number, not a rule), adam x2, the two SGDs (nesterov and dampening are different rules),
    # centered rmsprop with momentum and weight decay, and AdamW
    assert [b.stop - b.start for b in opt.blocks] == [2, 1, 1, 1, 1, 2, 2, 1, 1, 1, 1]
    for k, p in enumerate(singles):
        assert torch.equal(data[k], p.detach()), (k, (data[k] - p.detach()).abs().max())
        assert not torch.equal(data[k], singles[k - 1].detach())


def test_a_row_does_not_depend_on_the_other_rows():
    specs_a = [("rmsprop", {"lr": 1e-3}), ("rmsprop", {"lr": 1e-2}), ("adam", {}), ("adam", {})]
    specs_b = [
        ("rmsprop", {"lr": 1e-3}),
        ("rmsprop", {"lr": 5e-2}),
        ("adam", {"lr": 0.1}),
        ("adam", {}),
    ]
    da, ga, oa = _population(specs_a, seed=0)
    db, gb, ob = _population(specs_b, seed=3)
    db[0], db[3] = da[0], da[3]
    g = torch.Generator().manual_seed(2)
    for _ in range(100):
        mine = torch.randn(2, da.shape[1], generator=g)
        ga.copy_(torch.randn(da.shape, generator=g))
        gb.copy_(torch.randn(da.shape, generator=g) * 10)
        ga[0], gb[0], ga[3], gb[3] = mine[0], mine[0], mine[1], mine[1]
        oa.step(oa.clip_grad_norm_(0.5))
        ob.step(ob.clip_grad_norm_(0.5))
    assert torch.equal(da[0], db[0]) and torch.equal(da[3], db[3])
    assert not torch.equal(da[1], db[1])


@pytest.mark.parametrize("row_by_row", [False, True])
@pytest.mark.parametrize("spec", ["rmsprop", "adam", "sgd"])
def test_a_block_of_alike_members_steps_as_single_runs_through_skips(spec, row_by_row, monkeypatch):
    """Seeds of one setting share a single run's scalar coefficients; once a skipped member's
    step count falls behind, the block takes the tensor form: the bits are a single run's in
    both."""
    if row_by_row:
        monkeypatch.setattr(population, "ROW_BY_ROW_MIN", 1)
    specs = [(spec, {"lr": 1e-2, "momentum": 0.9} if spec == "sgd" else {"lr": 1e-3})] * 3
    data, grad, opt = _population(specs, n=300)
    assert opt.blocks[0].shared is not None
    singles = [torch.nn.Parameter(data[k].clone()) for k in range(3)]
    opts = [
        make_optimizer(n, [p], **o, skip_nonfinite=True)
        for (n, o), p in zip(specs, singles, strict=True)
    ]
    g = torch.Generator().manual_seed(3)
    for i in range(40):
        step = torch.randn(data.shape, generator=g)
        if i == 0:
            step[:, 3] = float("nan")  # every member skips its first step (t stays 0)
        if i == 5:
            step[1, 7] = float("inf")  # member 1 skips this step (as its single run does)
        grad.copy_(step)
        opt.step()
        for k, (p, o) in enumerate(zip(singles, opts, strict=True)):
            p.grad = step[k].clone()
            o.step()
    assert opt.steps.squeeze(1).tolist() == [39, 38, 39]
    for k, p in enumerate(singles):
        assert torch.equal(data[k], p.detach()), k


def test_a_non_finite_member_is_skipped_the_others_step():
    data, grad, opt = _population([("rmsprop", {}), ("adam", {}), ("adam", {})])
    before = data.clone()
    grad.fill_(0.1)
    grad[1, 5] = float("nan")
    updated = opt.step()
    assert updated.tolist() == [True, False, True]
    assert torch.equal(data[1], before[1]) and not torch.equal(data[0], before[0])
    adam = opt.blocks[1]
    assert adam.state.exp_avg[0].abs().sum() == 0  # member 1's state untouched
    assert opt.steps.squeeze(1).tolist() == [1, 0, 1]
    assert opt.skipped.tolist() == [0, 1, 0] and opt.streak.tolist() == [0, 1, 0]
    grad.fill_(0.1)
    opt.step()
    assert opt.streak.tolist() == [0, 0, 0] and opt.steps.squeeze(1).tolist() == [2, 1, 2]
    # Adam's bias correction runs on each member's own step count: member 1 at t = 1 now
    # moves like a fresh Adam step (lr * sign), the others like their second step.
    fresh = make_optimizer("adam", [p := torch.nn.Parameter(before[1].clone())])
    p.grad = torch.full_like(p, 0.1)
    fresh.step()
    torch.testing.assert_close(data[1], p.detach())
    opt.frozen[2] = True
    frozen = data[2].clone()
    opt.step()
    assert torch.equal(data[2], frozen)


def test_statistics_are_a_single_runs_per_member():
    specs = [("rmsprop", {"lr": 7e-4, "eps": 1e-5}), ("rmsprop:tf", {"eps": 1e-5}), ("sgd", {})]
    data, grad, opt = _population(specs, n=300)
    singles = [torch.nn.Parameter(data[k].clone()) for k in range(3)]
    opts = [make_optimizer(n, [p], **o) for (n, o), p in zip(specs, singles, strict=True)]
    g = torch.Generator().manual_seed(5)
    for i in range(20):
        step = torch.randn(data.shape, generator=g)
        grad.copy_(step)
        last = i == 19
        opt.record_update = last
        norms = opt.clip_grad_norm_(0.5)
        opt.step(norms)
        figures = opt.statistics(norms, 0.5, per_param=False) if last else None
        for k, (p, o) in enumerate(zip(singles, opts, strict=True)):
            p.grad = step[k].clone()
            pre = clip_grad_norm_(o, 0.5)
            o.record_update = last
            o.step()
            if last:
                single = statistics(o, pre, 0.5, per_param=False)
                mine = figures[k]
                assert set(mine) == set(single), set(mine) ^ set(single)
                for tag, value in single.items():
                    assert mine[tag] == pytest.approx(float(value), rel=1e-4, abs=1e-9), tag
    per_param = opt.statistics()[0]
    assert {f"{LAYER_NORM}a", f"{LAYER_NORM}b"} <= set(per_param)
    # Without clipping, the norm before clipping is the norm applied, and still logged.
    assert per_param[NORM_PRECLIP] == per_param[NORM_POSTCLIP]
    assert CLIPPED not in per_param
    hist = opt.histograms(2)
    assert set(hist) == {GRAD_VALUES}  # SGD has no square average


def test_bad_specs_and_layouts():
    with pytest.raises(ValueError, match="unknown optimizer spec"):
        _population([("rmsprop", {}), ("nope", {})])
    with pytest.raises(ValueError, match="lr must be"):
        _population([("rmsprop", {"lr": -1.0})])
    with pytest.raises(ValueError, match="adjacent"):
        _population([("rmsprop", {}), ("adam", {}), ("rmsprop", {})])
    with pytest.raises(ValueError, match="one spec per row"):
        PopulationOptimizer(torch.zeros(2, 3), torch.zeros(2, 3), [("rmsprop", {})])


def test_coefficients_kept_between_steps_equal_the_ones_computed_afresh():
    from rl_rmsprop.optim.functional import coefficients

    specs = [*MIXED, ("adagrad", {"lr": 1e-2, "lr_decay": 0.01}), ("adagrad", {"lr": 5e-3})]
    specs.sort(key=lambda s: s[0])  # a family's members are adjacent
    _, grad, opt = _population(specs)
    g = torch.Generator().manual_seed(3)
    for _ in range(4):
        grad.copy_(torch.randn(grad.shape, generator=g))
        grad[2].fill_(float("nan"))  # one member skips steps: its t lags the others'
        opt.step()
        for block in opt.blocks:
            kept = opt._coeffs(block)
            fresh = opt._cast(coefficients(block.rule, block.hyper, opt.steps[block.rows]))
            for field, a, b in zip(kept._fields, kept, fresh, strict=True):
                if field == "first" and not block.rule.use_dampening:
                    continue  # read by SGD's dampened momentum only
                if isinstance(b, torch.Tensor):
                    assert torch.equal(torch.as_tensor(a).expand_as(b), b), field
                else:
                    assert a == b, field
