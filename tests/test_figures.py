"""The figures both optimizers log, on one run's 1-d buffers and on K members' rows."""

from __future__ import annotations

import pytest
import torch

from rl_rmsprop.optim.figures import (
    CLIPPED,
    EFF_P50,
    EFF_P95,
    EPS_DOMINATED,
    GRAD_VALUES,
    LAYER_NORM,
    NORM_POSTCLIP,
    NORM_PRECLIP,
    SQ_AVG,
    SQ_AVG_MAX,
    clip_coefficient,
    count_skips,
    gradient_figures,
    histogram_samples,
    layer_figures,
    quantiles,
    sorted_floats,
    state_figures,
    update_ratio,
)


def test_rows_get_the_figures_each_row_gets_alone():
    """A member's figures are those of its row taken as one run's buffer, bit for bit."""
    g = torch.Generator().manual_seed(3)
    v = torch.rand(4, 500, generator=g)
    eff = torch.rand(4, 500, generator=g)
    dominated = torch.rand(4, 500, generator=g) < 0.1
    grad = torch.randn(4, 500, generator=g)
    before = torch.randn(4, 500, generator=g)
    layers = [("w", 0, 300), ("b", 300, 200)]
    rows = state_figures(v, eff, dominated)
    rows |= layer_figures(grad, layers)
    rows["ratio"] = update_ratio(before + grad, before)
    assert set(rows) >= {SQ_AVG_MAX, EFF_P95, f"{LAYER_NORM}b"}
    for k in range(4):
        alone = state_figures(v[k], eff[k], dominated[k])
        alone |= layer_figures(grad[k], layers)
        alone["ratio"] = update_ratio(before[k] + grad[k], before[k])
        assert set(alone) == set(rows)
        for tag, value in alone.items():
            assert value.shape == ()
            torch.testing.assert_close(rows[tag][k], value, rtol=0, atol=0, msg=tag)
    # Hand-computed on one row.
    assert float(rows[EPS_DOMINATED][0]) == pytest.approx(dominated[0].float().mean().item())
    torch.testing.assert_close(rows[f"{LAYER_NORM}w"][1], grad[1, :300].norm())


def test_without_a_square_average_no_sq_avg_figures():
    eff = torch.full((2, 1), 0.01)
    out = state_figures(None, eff, torch.zeros(2, 1, dtype=torch.bool))
    assert not any(tag.startswith(SQ_AVG) for tag in out)
    assert out[EFF_P50].tolist() == pytest.approx([0.01, 0.01])
    assert out[EPS_DOMINATED].tolist() == [0.0, 0.0]


def test_clip_coefficient_is_torchs_rule():
    norms = torch.tensor([0.25, 1.0, 4.0])
    coef = clip_coefficient(norms, 1.0)
    torch.testing.assert_close(coef, torch.tensor([1.0, 1.0 / (1.0 + 1e-6), 1.0 / (4.0 + 1e-6)]))
    for k, n in enumerate(norms):  # torch's own clip on a vector of that norm
        x = torch.nn.Parameter(torch.zeros(4))
        x.grad = torch.tensor([n.item(), 0.0, 0.0, 0.0])
        torch.nn.utils.clip_grad_norm_([x], 1.0)
        assert x.grad[0].item() == pytest.approx((n * coef[k]).item(), rel=1e-7)


def test_count_skips_counts_all_and_in_a_row_for_ints_and_rows():
    skipped, streak = 0, 0
    for bad in (1, 1, 0, 1):
        skipped, streak = count_skips(skipped, streak, bad)
    assert (skipped, streak) == (3, 1)
    skipped, streak = torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long)
    for bad in ([1, 0, 1], [1, 0, 0], [1, 1, 1]):
        skipped, streak = count_skips(skipped, streak, torch.tensor(bad))
    assert skipped.tolist() == [3, 1, 2] and streak.tolist() == [3, 1, 1]


def test_gradient_figures_with_and_without_clipping():
    post = torch.tensor([0.5, 0.5])
    pre = torch.tensor([0.2, 3.0])
    clipped = gradient_figures(post, pre, 0.5)
    assert clipped[CLIPPED].tolist() == [0.0, 1.0]
    assert clipped[NORM_PRECLIP] is pre
    plain = gradient_figures(post)
    assert set(plain) == {NORM_POSTCLIP, NORM_PRECLIP}
    assert plain[NORM_PRECLIP] is post


def test_histogram_samples_are_strided_and_on_the_cpu():
    grad = torch.arange(1000.0)
    out = histogram_samples(grad, None, max_elements=100)
    assert set(out) == {GRAD_VALUES}
    assert out[GRAD_VALUES].numel() == 100 and torch.isin(out[GRAD_VALUES], grad).all()
    out = histogram_samples(grad, grad.double() + 1)
    assert out[SQ_AVG].dtype == torch.float32 and out[SQ_AVG][0] == 1.0


@pytest.mark.parametrize("shape", [(67_074,), (5, 1001), (16, 900), (3,), (2,), (1,)])
@pytest.mark.parametrize("kind", ["uniform", "normal", "wide", "ties", "infinite", "zeros"])
def test_quantiles_are_torch_quantile_bit_for_bit(shape, kind):
    g = torch.Generator().manual_seed(len(shape) * 100 + shape[-1])
    x = {
        "uniform": lambda: torch.rand(shape, generator=g),
        "normal": lambda: torch.randn(shape, generator=g),
        "wide": lambda: torch.randn(shape, generator=g).mul(40).exp(),  # denormals to huge
        "ties": lambda: torch.randint(-3, 3, shape, generator=g).float(),
        "infinite": lambda: torch.randn(shape, generator=g).clamp(-1, 1).div(0.0),
        "zeros": lambda: torch.randn(shape, generator=g).sign().mul(0.0),  # +0 and -0
    }[kind]()
    qs = (0.0, 0.05, 0.5, 0.95, 1.0)
    want = torch.quantile(x, torch.tensor(qs), dim=-1)
    torch.testing.assert_close(quantiles(x, qs), want, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(sorted_floats(x), torch.sort(x, dim=-1).values, rtol=0, atol=0)


def test_quantiles_of_values_with_a_nan_are_nan():
    x = torch.rand(1000)
    x[10] = float("nan")
    assert torch.isnan(quantiles(x, (0.05, 0.5))).all()
