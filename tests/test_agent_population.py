"""The batched actor-critic: equal to its members run one by one, independent members."""

from __future__ import annotations

import pytest
import torch

from agents.a2c import ENTROPY, VALUE_LOSS, a2c_loss
from agents.networks import ActorCritic
from agents.population import (
    MemberNoise,
    PopulationActorCritic,
    a2c_gradients,
    autograd_a2c_gradients,
    numpy_a2c_gradients,
    sample_actions,
)
from agents.rollout import Rollout


class Hyper:
    gae_lambda = 0.95
    ent_coef = 0.01
    vf_coef = 0.5


def _members(seeds, hidden=(64, 64), obs_dim=4, n_actions=2):
    nets = []
    for s in seeds:
        torch.manual_seed(s)
        nets.append(ActorCritic(obs_dim, n_actions, hidden))
    return nets


def _rollout(k, envs, t=5, obs_dim=4, n_actions=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = k * envs
    done = torch.rand(t, n, generator=g) < 0.15
    return Rollout(
        obs=torch.randn(t + 1, n, obs_dim, generator=g),
        actions=torch.randint(0, n_actions, (t, n), generator=g),
        rewards=torch.ones(t, n),
        terminated=done & (torch.rand(t, n, generator=g) < 0.7),
        truncated=done & (torch.rand(t, n, generator=g) >= 0.7),
        valid=torch.rand(t, n, generator=g) > 0.1,
    )


def _member(rollout, k, envs):
    return Rollout(*(x[:, k * envs : (k + 1) * envs] for x in rollout))


@pytest.mark.parametrize("hidden", [(64, 64), (32,), (16, 8, 8)])
def test_forward_and_gradients_equal_the_members_run_singly(hidden):
    seeds, envs = [0, 1, 2], 4
    nets = _members(seeds, hidden, obs_dim=3, n_actions=3)
    pop = PopulationActorCritic(nets, envs)
    rollout = _rollout(len(seeds), envs, obs_dim=3, n_actions=3)
    logits, values = pop(rollout.obs)
    losses, metrics = a2c_loss(pop, rollout, Hyper, 0.99, mean=pop.member_mean)
    pop.zero_grad()
    losses.sum().backward()
    pop.sync_grads()
    assert losses.shape == (3,) and metrics[ENTROPY].shape == (3,)
    for k, net in enumerate(nets):
        rows = slice(k * envs, (k + 1) * envs)
        single_logits, single_values = net(rollout.obs[:, rows])
        torch.testing.assert_close(logits[:, rows], single_logits, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(values[:, rows], single_values, rtol=1e-5, atol=1e-6)
        loss, single_metrics = a2c_loss(net, _member(rollout, k, envs), Hyper, 0.99)
        torch.testing.assert_close(losses[k], loss, rtol=1e-5, atol=1e-6)
        for tag, value in single_metrics.items():
            torch.testing.assert_close(metrics[tag][k], value, rtol=1e-5, atol=1e-6)
        net.zero_grad()
        loss.backward()
        named = dict(net.named_parameters())
        for seg in pop.segments:
            mine = pop.grad[k, seg.offset : seg.offset + seg.numel].view(seg.shape)
            torch.testing.assert_close(mine, named[seg.name].grad, rtol=1e-4, atol=1e-6)


def test_a_members_outputs_and_gradients_do_not_depend_on_the_others():
    envs = 4
    a = PopulationActorCritic(_members([7, 1, 2]), envs)
    b = PopulationActorCritic(_members([7, 5, 9]), envs)
    ra, rb = _rollout(3, envs, seed=1), _rollout(3, envs, seed=2)
    mine = slice(0, envs)
    rb = Rollout(*(torch.cat([x[:, mine], y[:, envs:]], 1) for x, y in zip(ra, rb, strict=True)))
    out = []
    for pop, rollout in ((a, ra), (b, rb)):
        losses, _ = a2c_loss(pop, rollout, Hyper, 0.99, mean=pop.member_mean)
        pop.zero_grad()
        losses.sum().backward()
        out.append((pop(rollout.obs)[0][:, mine], losses[0], pop.grad[0].clone()))
    for x, y in zip(*out, strict=True):
        assert torch.equal(x, y)


def test_numpy_acting_path_equals_the_torch_path_and_follows_updates():
    pop = PopulationActorCritic(_members([0, 1, 2, 3]), 8)
    obs = torch.randn(32, 4)
    torch.testing.assert_close(pop.logits(obs), pop._torch_logits(obs), rtol=1e-5, atol=1e-6)
    pop.data.mul_(1.5)  # the optimizer updates the buffer in place; the views must follow
    torch.testing.assert_close(pop.logits(obs), pop._torch_logits(obs), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pop.logits(obs), pop(obs[None])[0][0], rtol=1e-5, atol=1e-6)


def test_member_state_dict_loads_into_an_actor_critic():
    nets = _members([3, 4])
    pop = PopulationActorCritic(nets, 2)
    pop.data[1].add_(0.25)
    restored = ActorCritic(4, 2)
    restored.load_state_dict(pop.member_state_dict(1))
    for name, p in restored.named_parameters():
        torch.testing.assert_close(p, dict(nets[1].named_parameters())[name] + 0.25)


def test_replaced_gradients_are_folded_back_into_the_buffer():
    pop = PopulationActorCritic(_members([0, 1]), 2)
    leaf = pop.leaves["policy.4.weight"]
    leaf.grad = torch.full_like(leaf, 2.0)  # e.g. code that assigns .grad
    pop.sync_grads()
    seg = next(s for s in pop.segments if s.name == "policy.4.weight")
    assert (pop.grad[:, seg.offset : seg.offset + seg.numel] == 2.0).all()
    assert leaf.grad.data_ptr() == pop.grad[:, seg.offset :].data_ptr()


def test_member_noise_is_per_member():
    a = MemberNoise([4, 1], 3, 2, torch.device("cpu"), chunk=8)
    b = MemberNoise([4, 9], 3, 2, torch.device("cpu"), chunk=8)
    for _ in range(20):  # crosses chunk refills
        na, nb = a.step(), b.step()
        assert torch.equal(na[:3], nb[:3]) and not torch.equal(na[3:], nb[3:])
    pop = PopulationActorCritic(_members([0, 1]), 3)
    actions = sample_actions(pop, a, torch.randn(6, 4))
    assert actions.shape == (6,) and set(actions.tolist()) <= {0, 1}


def test_numpy_action_sampling_draws_what_the_torch_path_draws():
    nets = _members([0, 1, 2], n_actions=3)
    pop = PopulationActorCritic(nets, 4)
    a = MemberNoise([5, 6, 7], 4, 3, torch.device("cpu"), chunk=4)
    b = MemberNoise([5, 6, 7], 4, 3, torch.device("cpu"), chunk=4)
    g = torch.Generator().manual_seed(0)
    for _ in range(13):  # crosses chunk refills
        obs = torch.randn(12, 4, generator=g)
        mine = sample_actions(pop, a, obs)  # the CPU takes the NumPy path
        theirs = (pop._torch_logits(obs) - b.step()).argmax(-1)
        assert mine.dtype == theirs.dtype == torch.int64
        assert torch.equal(mine, theirs)
    tied = torch.zeros(1, 12, 3)  # equal values: both take the first
    assert torch.equal(tied.argmax(-1), torch.from_numpy(tied.numpy().argmax(-1)))


def test_members_must_share_an_architecture():
    with pytest.raises(ValueError, match="same architecture"):
        PopulationActorCritic([ActorCritic(4, 2), ActorCritic(4, 2, (32, 32))], 2)
    with pytest.raises(ValueError, match="at least one member"):
        PopulationActorCritic([], 2)


@pytest.mark.parametrize("engine", [autograd_a2c_gradients, numpy_a2c_gradients])
@pytest.mark.parametrize("hidden", [(64, 64), (32,), (16, 8, 8)])
@pytest.mark.parametrize("ent_coef", [0.0, 0.01])
def test_engines_write_autograds_gradient_of_the_one_loss(hidden, ent_coef, engine):
    class Hp(Hyper):
        pass

    Hp.ent_coef = ent_coef
    seeds, envs = [0, 1, 2], 4
    pop = PopulationActorCritic(_members(seeds, hidden, obs_dim=3, n_actions=3), envs)
    rollout = _rollout(len(seeds), envs, obs_dim=3, n_actions=3, seed=4)
    losses, metrics = a2c_loss(pop, rollout, Hp, 0.99, mean=pop.member_mean)
    pop.zero_grad()
    losses.sum().backward()
    reference = pop.grad.clone()
    pop.grad.fill_(float("nan"))  # every entry must be written (autograd: zeroed first)
    mine, my_metrics = engine(pop, rollout, Hp, 0.99)
    torch.testing.assert_close(mine, losses.detach())
    for tag, value in metrics.items():
        torch.testing.assert_close(my_metrics[tag], value.detach())
    torch.testing.assert_close(pop.grad, reference, rtol=1e-5, atol=1e-7)
    assert reference.abs().max() > 1e-3


def test_numpy_gradients_keep_a_diverged_member_to_itself_and_do_not_warn():
    """A member whose parameters overflowed gets non-finite figures; the others are untouched."""
    import warnings

    seeds, envs = [0, 1, 2], 4
    rollout = _rollout(len(seeds), envs, seed=5)
    healthy = PopulationActorCritic(_members(seeds), envs)
    losses, _ = numpy_a2c_gradients(healthy, rollout, Hyper, 0.99)
    reference = healthy.grad.clone()
    broken = PopulationActorCritic(_members(seeds), envs)
    broken.data[1] = float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NumPy's overflow warnings would reach the console
        broken_losses, metrics = numpy_a2c_gradients(broken, rollout, Hyper, 0.99)
    assert not torch.isfinite(broken_losses[1])
    for k in (0, 2):
        assert torch.equal(broken.grad[k], reference[k])
        assert broken_losses[k] == losses[k]
    assert torch.isfinite(metrics[VALUE_LOSS][[0, 2]]).all()


def test_auto_engine_is_numpy_on_the_cpu_and_autograd_when_asked():
    seeds, envs = [0, 1], 3
    pop = PopulationActorCritic(_members(seeds), envs)
    rollout = _rollout(len(seeds), envs, seed=6)
    results = {}
    for engine in ("auto", "numpy", "autograd"):
        losses, _ = a2c_gradients(pop, rollout, Hyper, 0.99, engine)
        results[engine] = (losses, pop.grad.clone())
    # auto on the CPU is the NumPy engine, bit for bit; autograd agrees to rounding.
    assert torch.equal(results["auto"][1], results["numpy"][1])
    torch.testing.assert_close(results["autograd"][1], results["numpy"][1], rtol=1e-5, atol=1e-7)
    assert not torch.equal(results["autograd"][1], torch.zeros_like(pop.grad))


def test_a_members_clipped_update_is_its_single_runs_bit_for_bit():
    """Given the same rollout, member 0 of two computes the gradient of a population of one,
    clips it by the norm torch.optim's way gives the single network (summed in its parameter
    order, though the row keeps the two first layers side by side) and takes the step of the
    RMSprop class on that network: the same bits."""
    from rl_rmsprop.optim import clip_grad_norm_, make_optimizer
    from rl_rmsprop.optim.population import PopulationOptimizer

    nets = _members([3, 4])
    pop = PopulationActorCritic(nets, 8)
    names = pop.names()
    assert [n for n, _, _ in names] == [n for n, _ in nets[0].named_parameters()]
    assert [o for _, o, _ in names] != sorted(o for _, o, _ in names)  # not the row's order
    spec = ("rmsprop", {"lr": 7e-4, "eps": 1e-5})
    opt = PopulationOptimizer(pop.data, pop.grad, [spec, spec], names)
    single_net = nets[0]
    single = PopulationActorCritic([single_net], 8)  # the engine on a population of one
    single_opt = make_optimizer(spec[0], single_net.named_parameters(), **spec[1])
    for i in range(5):
        rollout = _rollout(2, 8, seed=i)
        numpy_a2c_gradients(pop, rollout, Hyper, 0.99)
        norms = opt.clip_grad_norm_(0.5)
        opt.step(norms)
        params = dict(single_net.named_parameters())
        for name, offset, n in single.names():  # the single network's weights, in the row
            single.data[0, offset : offset + n] = params[name].detach().reshape(-1)
        numpy_a2c_gradients(single, Rollout(*(x[:, :8] for x in rollout)), Hyper, 0.99)
        for name, offset, n in single.names():
            params[name].grad = single.grad[0, offset : offset + n].view_as(params[name]).clone()
        norm = clip_grad_norm_(single_opt, 0.5)
        single_opt.step()
        assert float(norms[0]) == float(norm), i
    mine = pop.member_state_dict(0)
    for name, p in single_net.named_parameters():
        assert torch.equal(mine[name], p.detach()), name
