"""Telemetry from the flat buffers, checked against the same figures computed the slow way."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rl_rmsprop.optim import clip_grad_norm_, histograms, make_optimizer, statistics
from rl_rmsprop.optim.figures import (
    CLIPPED,
    EFF_MEAN,
    EFF_P05,
    EFF_P50,
    EFF_P95,
    EFFECTIVE_LR,
    EPS_DOMINATED,
    GRAD_VALUES,
    LAYER_NORM,
    LR,
    NONFINITE_SKIPPED,
    NORM_POSTCLIP,
    NORM_PRECLIP,
    SQ_AVG,
    SQ_AVG_MAX,
    SQ_AVG_MEAN,
    SQ_AVG_MIN,
    UPDATE_RATIO,
)

QUANTILES = (0.05, 0.5, 0.95)


def _net(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 2)
    ).to(dtype)


def _batch(k: int, dtype: torch.dtype = torch.float32):
    gen = torch.Generator().manual_seed(k)
    x = torch.randn(16, 4, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randn(16, 2, generator=gen, dtype=torch.float64).to(dtype)
    return x, y


def _backward(net: nn.Module, k: int, scale: float = 1.0) -> None:
    x, y = _batch(k, next(net.parameters()).dtype)
    (scale * ((net(x) - y) ** 2).mean()).backward()


def _close(actual, expected, rtol: float = 1e-6, what: str = "") -> None:
    actual = torch.as_tensor(actual, dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=0.0, msg=what)


# -- clip_grad_norm_ ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "rtol"), [(torch.float32, 1e-6), (torch.float64, 1e-12)], ids=["float32", "float64"]
)
@pytest.mark.parametrize("max_norm", [0.5, 1e6], ids=["clipped", "unclipped"])
def test_clip_grad_norm_matches_torch(dtype, rtol, max_norm):
    ours_net = _net(dtype)
    ref_net = copy.deepcopy(ours_net)
    opt = make_optimizer("rmsprop", ours_net.named_parameters())
    for net in (ours_net, ref_net):
        _backward(net, 0, scale=10.0)

    ours_norm = clip_grad_norm_(opt, max_norm)
    ref_norm = torch.nn.utils.clip_grad_norm_(ref_net.parameters(), max_norm)

    assert ref_norm.item() > 0.5  # so the "clipped" case really clips
    assert ours_norm.dim() == 0
    _close(ours_norm, ref_norm, rtol, "pre-clip norm")
    for (name, a), b in zip(ours_net.named_parameters(), ref_net.parameters(), strict=True):
        _close(a.grad, b.grad, rtol, name)
    post = torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in ours_net.parameters()]))
    if max_norm < ref_norm.item():
        _close(post, max_norm, 1e-5, "post-clip norm")
    # The step applies the clipped gradients (ours live in the flat buffer): a torch RMSprop
    # given copies of them takes the same step from the same parameters.
    for a, b in zip(ours_net.parameters(), ref_net.parameters(), strict=True):
        b.grad = a.grad.clone()
    ref_opt = torch.optim.RMSprop(ref_net.parameters(), foreach=False)
    opt.step()
    ref_opt.step()
    for a, b in zip(ours_net.parameters(), ref_net.parameters(), strict=True):
        assert torch.equal(a.detach(), b.detach())


# -- statistics() ------------------------------------------------------------------------------


def _denominator(entry: dict, eps: float, eps_in_sqrt: bool) -> torch.Tensor:
    """The denominator from one parameter's state_dict entry, by hand."""
    var = entry["square_avg"]
    if "grad_avg" in entry:
        var = (var - entry["grad_avg"] ** 2).clamp_min(0)
    return torch.sqrt(var + eps) if eps_in_sqrt else torch.sqrt(var) + eps


def _eps_dominated(entry: dict, eps: float, eps_in_sqrt: bool) -> torch.Tensor:
    var = entry["square_avg"]
    if "grad_avg" in entry:
        var = (var - entry["grad_avg"] ** 2).clamp_min(0)
    return var < eps if eps_in_sqrt else torch.sqrt(var) < eps


STATS_CASES = {
    "rmsprop-eps-outside": ("rmsprop", dict(lr=1e-2, eps=1e-3)),
    "rmsprop-centered-momentum": ("rmsprop", dict(lr=1e-2, eps=1e-3, centered=True, momentum=0.9)),
    "a3c-eps-inside": ("rmsprop:a3c", dict(eps=1e-8)),
    "dqn-nature-centered-eps-inside": ("rmsprop:dqn-nature", dict(eps=1e-8)),
    "tf-v0-one": ("rmsprop:tf", dict(lr=7e-4, eps=1e-5)),
}


def _train(spec: str, kw: dict, steps: int = 5, tiny: str = "2.bias"):
    """A few real steps; the parameter named ``tiny`` gets 1e-6-sized gradients."""
    net = _net()
    opt = make_optimizer(spec, net.named_parameters(), **kw)
    params = dict(net.named_parameters())
    before = None
    preclip = None
    for k in range(steps):
        opt.zero_grad()
        _backward(net, k)
        params[tiny].grad.mul_(1e-6)
        if k == steps - 1:
            preclip = clip_grad_norm_(opt, 0.1)
            opt.record_update = True
            before = {n: p.detach().clone() for n, p in net.named_parameters()}
        opt.step()
    return net, opt, before, preclip


@pytest.mark.parametrize("case", list(STATS_CASES))
def test_statistics_match_slow_computation(case):
    spec, kw = STATS_CASES[case]
    net, opt, before, preclip = _train(spec, kw)
    out = statistics(opt, preclip_norm=preclip, max_norm=0.1)
    group = opt.param_groups[0]
    lr, eps, eps_in_sqrt = group["lr"], group["eps"], group["eps_in_sqrt"]
    named = list(net.named_parameters())

    expected_keys = {
        NORM_POSTCLIP,
        NORM_PRECLIP,
        CLIPPED,
        *(f"{LAYER_NORM}{name}" for name, _ in named),
        LR,
        SQ_AVG_MEAN,
        SQ_AVG_MIN,
        SQ_AVG_MAX,
        EFF_MEAN,
        EFF_P05,
        EFF_P50,
        EFF_P95,
        UPDATE_RATIO,
        EPS_DOMINATED,
        NONFINITE_SKIPPED,
    }
    assert set(out) == expected_keys

    # Gradients: the clipped gradient that was applied, per parameter under its own name.
    grads = torch.cat([p.grad.reshape(-1).double() for _, p in named])
    _close(out[NORM_POSTCLIP], grads.norm(), 1e-6, "postclip")
    _close(out[NORM_POSTCLIP], 0.1, 1e-5, "postclip is max_norm")
    assert out[NORM_PRECLIP] is preclip
    assert preclip.item() > 0.1
    assert float(out[CLIPPED]) == 1.0
    for name, p in named:
        _close(out[f"{LAYER_NORM}{name}"], torch.linalg.vector_norm(p.grad.double()), 1e-6, name)

    assert out[LR] == lr

    # Square average, straight from the state_dict.
    state = opt.state_dict()["state"]
    entries = [state[i] for i in range(len(named))]
    v = torch.cat([e["square_avg"].reshape(-1) for e in entries]).double()
    _close(out[SQ_AVG_MEAN], v.mean(), 1e-6, "sq mean")
    _close(out[SQ_AVG_MIN], v.min(), 1e-6, "sq min")
    _close(out[SQ_AVG_MAX], v.max(), 1e-6, "sq max")

    # Effective lr = lr / denominator per element, the denominator recomputed from the state.
    d = torch.cat([_denominator(e, eps, eps_in_sqrt).reshape(-1) for e in entries])
    eff = lr / d
    _close(out[EFF_MEAN], eff.double().mean(), 1e-5, "eff mean")
    for q, key in zip(QUANTILES, ("p05", "p50", "p95"), strict=True):
        _close(out[f"{EFFECTIVE_LR}/{key}"], torch.quantile(eff, q), 1e-5, key)

    # Update/param ratio from copies taken by hand before the step.
    upd = torch.cat([(p.detach() - before[n]).reshape(-1) for n, p in named]).double()
    ref = torch.cat([before[n].reshape(-1) for n, _ in named]).double()
    _close(out[UPDATE_RATIO], upd.norm() / ref.norm(), 1e-5, "ratio")

    dominated = torch.cat([_eps_dominated(e, eps, eps_in_sqrt).reshape(-1) for e in entries])
    # float32 fraction: one element more or less out of ~250 would be off by 0.4%.
    _close(out[EPS_DOMINATED], dominated.double().mean(), 1e-6, "eps-dominated")
    assert float(out[NONFINITE_SKIPPED]) == 0.0

    # The copy for the ratio is freed after being read, and only recorded when asked for.
    assert UPDATE_RATIO not in statistics(opt)


def test_eps_dominated_fraction_is_neither_none_nor_all():
    """The tiny-gradient bias makes some elements eps-dominated and the others not."""
    for spec, kw in STATS_CASES.values():
        if spec == "rmsprop:tf":
            continue  # v0 = 1 keeps every variance far above eps
        _, opt, _, _ = _train(spec, kw)
        fraction = float(statistics(opt)[EPS_DOMINATED])
        assert 0.0 < fraction < 0.5, (spec, kw, fraction)


def test_statistics_without_clipping_or_per_param():
    net = _net()
    opt = make_optimizer("rmsprop", net.named_parameters())
    _backward(net, 0)
    norm = clip_grad_norm_(opt, 1e6)
    opt.step()
    out = statistics(opt, preclip_norm=norm, max_norm=1e6, per_param=False)
    assert float(out[CLIPPED]) == 0.0
    assert not any(k.startswith(LAYER_NORM) for k in out)
    _close(out[NORM_PRECLIP], out[NORM_POSTCLIP], 1e-6)
    out = statistics(opt)
    # A run that does not clip still logs the norm before clipping: the norm it applied.
    assert out[NORM_PRECLIP] is out[NORM_POSTCLIP]
    assert CLIPPED not in out


def test_statistics_sgd_has_no_square_average():
    net = _net()
    opt = make_optimizer("sgd", net.named_parameters(), lr=0.05, momentum=0.9)
    for k in range(3):
        opt.zero_grad()
        _backward(net, k)
        opt.step()
    out = statistics(opt)
    assert not any(k.startswith(SQ_AVG) for k in out)
    assert UPDATE_RATIO not in out
    assert out[LR] == 0.05
    # No denominator: the effective lr is lr everywhere and nothing is eps-dominated.
    for key in ("mean", "p05", "p50", "p95"):
        _close(out[f"{EFFECTIVE_LR}/{key}"], 0.05, 1e-6, key)
    assert float(out[EPS_DOMINATED]) == 0.0
    grads = torch.cat([p.grad.reshape(-1).double() for p in net.parameters()])
    _close(out[NORM_POSTCLIP], grads.norm(), 1e-6)
    assert {k for k in out if k.startswith(LAYER_NORM)} == {
        f"{LAYER_NORM}{n}" for n, _ in net.named_parameters()
    }
    assert set(histograms(opt)) == {GRAD_VALUES}


def test_nonfinite_skipped_is_reported():
    net = _net()
    opt = make_optimizer("rmsprop", net.named_parameters(), skip_nonfinite=True)
    _backward(net, 0)
    opt.step()
    before = [p.detach().clone() for p in net.parameters()]
    sq_before = opt.state_dict()["state"][0]["square_avg"].clone()
    opt.zero_grad()
    _backward(net, 1)
    next(net.parameters()).grad[0, 0] = float("inf")
    opt.step()
    out = statistics(opt)
    assert float(out[NONFINITE_SKIPPED]) == 1.0
    assert all(torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))
    assert torch.equal(opt.state_dict()["state"][0]["square_avg"], sq_before)


def test_histograms_keys_and_samples():
    net = _net()
    opt = make_optimizer("rmsprop", net.named_parameters())
    _backward(net, 0)
    opt.step()
    hist = histograms(opt)
    assert set(hist) == {SQ_AVG, GRAD_VALUES}
    state = opt.state_dict()["state"]
    named = list(net.named_parameters())
    v = torch.cat([state[i]["square_avg"].reshape(-1) for i in range(len(named))])
    g = torch.cat([p.grad.reshape(-1) for _, p in named])
    assert torch.equal(hist[SQ_AVG], v)
    assert torch.equal(hist[GRAD_VALUES], g)
    small = histograms(opt, max_elements=50)
    assert 0 < small[GRAD_VALUES].numel() <= 50
    assert torch.isin(small[GRAD_VALUES], g).all()


def test_statistics_on_a_float64_network():
    net = _net(torch.float64)
    opt = make_optimizer("rmsprop", net.named_parameters())
    _backward(net, 0)
    opt.step()
    out = statistics(opt)
    grads = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
    _close(out[NORM_POSTCLIP], grads.norm(), 1e-12, "postclip")
    for name, p in net.named_parameters():
        _close(out[f"{LAYER_NORM}{name}"], p.grad.norm(), 1e-12, name)
