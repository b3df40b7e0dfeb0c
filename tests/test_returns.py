import math

import pytest
import torch

from agents.returns import compute_gae, masked_mean

GAMMA = 0.9


def col(*xs, dtype=torch.float64):
    """A one-env [T, 1] column."""
    return torch.tensor(xs, dtype=dtype).unsqueeze(1)


def flags(*xs):
    return torch.tensor(xs, dtype=torch.bool).unsqueeze(1)


def gae(r, v, nv, term, trunc, valid, lam, gamma=GAMMA):
    return compute_gae(r, v, nv, term, trunc, valid, gamma, lam)


# No episode end: rewards 1..4, values[t] = 0.5 (t + 1), next_values[t] = values[t + 1] and
# V(after the rollout) = 10.
NO_END = dict(
    r=col(1.0, 2.0, 3.0, 4.0),
    v=col(0.5, 1.0, 1.5, 2.0),
    nv=col(1.0, 1.5, 2.0, 10.0),
    term=flags(False, False, False, False),
    trunc=flags(False, False, False, False),
    valid=flags(True, True, True, True),
)


def test_no_episode_end_lambda_one_is_n_step_returns():
    adv, ret = gae(**NO_END, lam=1.0)
    # R3 = 4 + 0.9 * 10    = 13
    # R2 = 3 + 0.9 * 13    = 14.7
    # R1 = 2 + 0.9 * 14.7  = 15.23
    # R0 = 1 + 0.9 * 15.23 = 14.707
    torch.testing.assert_close(ret, col(14.707, 15.23, 14.7, 13.0))
    # A = R - V
    torch.testing.assert_close(adv, col(14.207, 14.23, 13.2, 11.0))


def test_no_episode_end_lambda_half():
    adv, ret = gae(**NO_END, lam=0.5)
    # delta_t = r_t + 0.9 nv_t - v_t: d0 = 1 + 0.9 - 0.5 = 1.4, d1 = 2 + 1.35 - 1 = 2.35,
    #                                 d2 = 3 + 1.8 - 1.5 = 3.3, d3 = 4 + 9 - 2 = 11
    # gamma * lambda = 0.45:
    # A3 = 11
    # A2 = 3.3 + 0.45 * 11      = 8.25
    # A1 = 2.35 + 0.45 * 8.25   = 6.0625
    # A0 = 1.4 + 0.45 * 6.0625  = 4.128125
    torch.testing.assert_close(adv, col(4.128125, 6.0625, 8.25, 11.0))
    torch.testing.assert_close(ret, col(4.628125, 7.0625, 9.75, 13.0))


def test_lambda_zero_is_one_step_td():
    adv, _ = gae(**NO_END, lam=0.0)
    torch.testing.assert_close(adv, col(1.4, 2.35, 3.3, 11.0))  # the deltas above


# An episode terminates at step 1; step 2 is the autoreset step (reset obs, reward 0); a new
# episode runs at step 3. next_values[1] = 100 is V(terminal obs) and must not be used.
TERMINATED = dict(
    r=col(1.0, 1.0, 0.0, 1.0),
    v=col(2.0, 3.0, 7.0, 4.0),
    nv=col(3.0, 100.0, 4.0, 5.0),
    term=flags(False, True, False, False),
    trunc=flags(False, False, False, False),
    valid=flags(True, True, False, True),
)


def test_terminated_no_bootstrap_and_chain_cut():
    adv, ret = gae(**TERMINATED, lam=1.0)
    # R3 = 1 + 0.9 * 5 = 5.5          A3 = 5.5 - 4 = 1.5
    # step 2 invalid                  A2 = R2 = 0
    # R1 = 1 (terminal, no bootstrap) A1 = 1 - 3 = -2
    # R0 = 1 + 0.9 * 1 = 1.9          A0 = 1.9 - 2 = -0.1
    torch.testing.assert_close(ret, col(1.9, 1.0, 0.0, 5.5))
    torch.testing.assert_close(adv, col(-0.1, -2.0, 0.0, 1.5))


def test_terminated_cuts_chain_even_if_next_step_is_marked_valid():
    adv, _ = gae(**{**TERMINATED, "valid": flags(True, True, True, True)}, lam=1.0)
    # Step 2 now counts: d2 = 0 + 0.9 * 4 - 7 = -3.4, A2 = -3.4 + 0.9 * 1.5 = -2.05.
    # Steps 0 and 1 are unchanged: the termination alone cuts the chain.
    torch.testing.assert_close(adv, col(-0.1, -2.0, -2.05, 1.5))


# Like TERMINATED but the episode is truncated at step 1: obs_2 is the true last observation,
# with V = 6, so step 1 bootstraps from next_values[1].
TRUNCATED = dict(
    r=col(1.0, 1.0, 0.0, 1.0),
    v=col(2.0, 3.0, 7.0, 4.0),
    nv=col(3.0, 6.0, 4.0, 5.0),
    term=flags(False, False, False, False),
    trunc=flags(False, True, False, False),
    valid=flags(True, True, False, True),
)


def test_truncated_bootstraps_from_next_values_and_cuts_chain():
    adv, ret = gae(**TRUNCATED, lam=1.0)
    # R3 = 1 + 0.9 * 5 = 5.5          A3 = 1.5
    # step 2 invalid                  A2 = R2 = 0
    # R1 = 1 + 0.9 * 6 = 6.4          A1 = 6.4 - 3 = 3.4   (bootstrap, not R3)
    # R0 = 1 + 0.9 * 6.4 = 6.76       A0 = 6.76 - 2 = 4.76
    torch.testing.assert_close(ret, col(6.76, 6.4, 0.0, 5.5))
    torch.testing.assert_close(adv, col(4.76, 3.4, 0.0, 1.5))


def test_truncated_lambda_half():
    adv, ret = gae(**TRUNCATED, lam=0.5)
    # d0 = 1 + 2.7 - 2 = 1.7, d1 = 1 + 5.4 - 3 = 3.4, d3 = 1 + 4.5 - 4 = 1.5
    # A1 = 3.4 (chain cut), A0 = 1.7 + 0.45 * 3.4 = 3.23
    torch.testing.assert_close(adv, col(3.23, 3.4, 0.0, 1.5))
    torch.testing.assert_close(ret, col(5.23, 6.4, 0.0, 5.5))


def test_truncated_cuts_chain_even_if_next_step_is_marked_valid():
    adv, _ = gae(**{**TRUNCATED, "valid": flags(True, True, True, True)}, lam=1.0)
    # Step 2 now counts: d2 = 0 + 0.9 * 4 - 7 = -3.4, A2 = -3.4 + 0.9 * 1.5 = -2.05.
    # Steps 0 and 1 are unchanged: the truncation alone cuts the chain.
    torch.testing.assert_close(adv, col(4.76, 3.4, -2.05, 1.5))


@pytest.mark.parametrize("case", [TERMINATED, TRUNCATED], ids=["terminated", "truncated"])
@pytest.mark.parametrize("lam", [1.0, 0.5])
def test_autoreset_step_does_not_leak(case, lam):
    adv, ret = gae(**case, lam=lam)
    for junk in (-1e6, 123.0, math.inf, math.nan):
        poisoned = {k: x.clone() for k, x in case.items()}
        for key in ("r", "v", "nv"):
            poisoned[key][2] = junk
        adv2, ret2 = gae(**poisoned, lam=lam)
        assert adv2[2].item() == 0.0 and ret2[2].item() == 0.0
        assert torch.equal(adv2, adv) and torch.equal(ret2, ret)


def test_invalid_step_cuts_chain_without_a_preceding_done():
    # Malformed mask (step 2 invalid though step 1 did not end): still nothing flows back.
    case = {**NO_END, "valid": flags(True, True, False, True)}
    adv, ret = gae(**case, lam=1.0)
    # A3 = 11; A2 = 0; A1 = d1 = 2.35; A0 = 1.4 + 0.9 * 2.35 = 3.515
    torch.testing.assert_close(adv, col(3.515, 2.35, 0.0, 11.0))
    torch.testing.assert_close(ret, col(4.015, 3.35, 0.0, 13.0))
    poisoned = {k: x.clone() for k, x in case.items()}
    poisoned["r"][2] = poisoned["v"][2] = math.nan
    adv2, ret2 = gae(**poisoned, lam=1.0)
    assert torch.equal(adv2, adv) and torch.equal(ret2, ret)


def test_terminal_value_is_ignored_even_if_not_finite():
    case = {k: x.clone() for k, x in TERMINATED.items()}
    case["nv"][1] = math.nan
    adv, _ = gae(**case, lam=1.0)
    torch.testing.assert_close(adv, col(-0.1, -2.0, 0.0, 1.5))


def test_two_envs_with_different_patterns_are_independent():
    # env 0: TERMINATED. env 1: truncated at step 0, autoreset at step 1, then two steps:
    #   rewards (2, 0, 1, 1), values (1, 9, 2, 3), next_values (4, 2, 3, 6)
    #   R3 = 1 + 0.9 * 6 = 6.4      A3 = 3.4
    #   R2 = 1 + 0.9 * 6.4 = 6.76   A2 = 4.76
    #   step 1 invalid              A1 = R1 = 0
    #   R0 = 2 + 0.9 * 4 = 5.6      A0 = 4.6
    env1 = dict(
        r=col(2.0, 0.0, 1.0, 1.0),
        v=col(1.0, 9.0, 2.0, 3.0),
        nv=col(4.0, 2.0, 3.0, 6.0),
        term=flags(False, False, False, False),
        trunc=flags(True, False, False, False),
        valid=flags(True, False, True, True),
    )
    both = {k: torch.cat([TERMINATED[k], env1[k]], dim=1) for k in env1}
    adv, ret = gae(**both, lam=1.0)
    expected_ret = torch.tensor(
        [[1.9, 5.6], [1.0, 0.0], [0.0, 6.76], [5.5, 6.4]], dtype=torch.float64
    )
    expected_adv = torch.tensor(
        [[-0.1, 4.6], [-2.0, 0.0], [0.0, 4.76], [1.5, 3.4]], dtype=torch.float64
    )
    torch.testing.assert_close(ret, expected_ret)
    torch.testing.assert_close(adv, expected_adv)
    for e, single in enumerate((TERMINATED, env1)):
        a, r = gae(**single, lam=0.7)
        a2, r2 = gae(**both, lam=0.7)
        assert torch.equal(a2[:, e : e + 1], a) and torch.equal(r2[:, e : e + 1], r)


def reference_gae(r, v, nv, term, trunc, valid, gamma, lam):
    """Plain Python loops over lists, straight from the definition."""
    n_steps, n_envs = len(r), len(r[0])
    adv = [[0.0] * n_envs for _ in range(n_steps)]
    ret = [[0.0] * n_envs for _ in range(n_steps)]
    for e in range(n_envs):
        next_adv = 0.0
        for t in reversed(range(n_steps)):
            if not valid[t][e]:
                next_adv = 0.0
                continue
            delta = r[t][e] + gamma * nv[t][e] * (1.0 - term[t][e]) - v[t][e]
            keep = not (term[t][e] or trunc[t][e]) and t + 1 < n_steps and valid[t + 1][e]
            a = delta + gamma * lam * next_adv if keep else delta
            adv[t][e], ret[t][e] = a, a + v[t][e]
            next_adv = a
    return adv, ret


def random_rollout(n_steps, n_envs, seed):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n_steps, n_envs, generator=g, dtype=torch.float64)
    v = torch.randn(n_steps, n_envs, generator=g, dtype=torch.float64)
    nv = torch.randn(n_steps, n_envs, generator=g, dtype=torch.float64)
    term = torch.rand(n_steps, n_envs, generator=g) < 0.1
    trunc = (torch.rand(n_steps, n_envs, generator=g) < 0.1) & ~term
    done = term | trunc
    # NEXT_STEP autoreset: the step after a done one is invalid and carries reward 0.
    valid = torch.ones_like(done)
    valid[1:] = ~done[:-1]
    r = torch.where(valid, r, 0.0)
    return r, v, nv, term, trunc, valid


@pytest.mark.parametrize("lam", [1.0, 0.95, 0.0])
def test_float64_random_rollout_matches_python_loop(lam):
    r, v, nv, term, trunc, valid = random_rollout(64, 5, seed=3)
    assert term.any() and trunc.any() and (~valid).any()  # the case covers every branch
    adv, ret = compute_gae(r, v, nv, term, trunc, valid, 0.99, lam)
    ref_adv, ref_ret = reference_gae(
        r.tolist(),
        v.tolist(),
        nv.tolist(),
        term.tolist(),
        trunc.tolist(),
        valid.tolist(),
        0.99,
        lam,
    )
    ref_adv = torch.tensor(ref_adv, dtype=torch.float64)
    ref_ret = torch.tensor(ref_ret, dtype=torch.float64)
    # Same operations in the same order: bit for bit, not merely close.
    torch.testing.assert_close(adv, ref_adv, rtol=0, atol=0)
    torch.testing.assert_close(ret, ref_ret, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_shape_are_preserved(dtype):
    r, v, nv, term, trunc, valid = random_rollout(7, 3, seed=0)
    adv, ret = compute_gae(r.to(dtype), v.to(dtype), nv.to(dtype), term, trunc, valid, 0.99, 0.95)
    assert adv.shape == ret.shape == (7, 3)
    assert adv.dtype == ret.dtype == dtype
    # Inputs are not modified in place.
    assert torch.equal(r, random_rollout(7, 3, seed=0)[0])


def test_empty_rollout():
    z = torch.zeros(0, 3)
    b = torch.zeros(0, 3, dtype=torch.bool)
    adv, ret = compute_gae(z, z, z, b, b, b, 0.99, 0.95)
    assert adv.shape == ret.shape == (0, 3)


def test_gradient_with_respect_to_values():
    # Callers pass detached values; if they do not, the gradient must still be the right one
    # and zero at the autoreset step.
    case = {k: x.clone() for k, x in TERMINATED.items()}
    v = case.pop("v").requires_grad_()
    _, ret = gae(v=v, **case, lam=1.0)
    ret.sum().backward()
    # R_t = A_t + V_t cancels V_t itself; R0 = d0 + 0.9 * A1 + V0 with A1 = 1 - V1 gives
    # dR0/dV1 = -0.9; nothing else depends on a value.
    torch.testing.assert_close(v.grad, col(0.0, -0.9, 0.0, 0.0))


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(r=torch.zeros(4)), "rewards must have shape"),
        (dict(v=torch.zeros(4, 2, dtype=torch.float64)), "values must have shape"),
        (dict(term=torch.zeros(4, 1)), "terminated must be a bool"),
        (dict(nv=torch.zeros(4, 1, dtype=torch.long)), "next_values must be a floating"),
        (dict(gamma=1.5), "gamma must be in"),
        (dict(lam=-0.1), "gae_lambda must be in"),
    ],
)
def test_bad_arguments_are_named(change, match):
    args = {**NO_END, "lam": 0.5, "gamma": GAMMA, **change}
    with pytest.raises(ValueError, match=match):
        gae(**args)


def test_masked_mean():
    x = torch.tensor([[1.0, math.nan], [3.0, math.inf]])
    mask = torch.tensor([[True, False], [True, False]])
    assert masked_mean(x, mask).item() == 2.0  # (1 + 3) / 2, the nan and inf are masked out
    empty = masked_mean(x, torch.zeros_like(mask))
    assert empty.item() == 0.0 and empty.dtype == x.dtype and empty.dim() == 0
    with pytest.raises(ValueError, match="mask must be a bool"):
        masked_mean(x, mask.float())
    with pytest.raises(ValueError, match="mask must have the shape"):
        masked_mean(x, mask[0])
