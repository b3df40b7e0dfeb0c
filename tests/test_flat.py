import torch
from torch import nn

from rl_rmsprop.optim.flat import FlatSpace, Segment, torch_state_names
from rl_rmsprop.optim.functional import Rule


def make_space(rule=None, v0=0.0):
    rule = rule or Rule()
    torch.manual_seed(0)
    params = [
        nn.Parameter(torch.randn(3, 2)),
        nn.Parameter(torch.randn(4)),
        nn.Parameter(torch.randn(0)),
    ]
    values = [p.detach().clone() for p in params]
    space = FlatSpace(params, [0, 1, 2], ["w", "b", "empty"], rule, v0)
    return space, params, values


def test_parameters_become_views_with_their_values():
    space, params, values = make_space()
    assert space.numel == 10 and space.offsets == [0, 6, 10, 10]
    for p, v in zip(params, values, strict=True):
        assert torch.equal(p, v)
    space.data.add_(1.0)
    assert torch.equal(params[0], values[0] + 1)  # a write to the buffer is a write to the param


def test_sync_grads_adopts_foreign_gradients_and_keeps_zero_where_none():
    space, params, _ = make_space()
    assert space.sync_grads() == [False, False, False]
    params[0].grad = torch.ones(3, 2)
    active = space.sync_grads()
    assert active == [True, False, False]
    assert params[0].grad is space.grad_views[0]
    assert torch.equal(space.grad[:6], torch.ones(6)) and torch.equal(
        space.grad[6:], torch.zeros(4)
    )
    assert space.sync_grads() == [True, False, False]  # the view is kept, nothing copied
    params[0].grad = None  # the region must go back to zero so whole-buffer norms stay right
    space.sync_grads()
    assert torch.equal(space.grad, torch.zeros(10))


def test_autograd_accumulates_into_the_flat_gradient():
    space, params, _ = make_space()
    for p in params:
        p.grad = torch.zeros_like(p)
    space.sync_grads()
    (params[0].sum() + 2 * params[1].sum()).backward()
    assert params[0].grad is space.grad_views[0]
    assert torch.equal(space.grad, torch.tensor([1.0] * 6 + [2.0] * 4))


def test_segments_merge_runs_with_equal_step_counts():
    space, _, _ = make_space()
    all_on = [True, True, True]
    assert space.segments(all_on) == [Segment(0, 10, 1)]
    space.advance([True, False, True])
    assert space.steps == [1, 0, 1]
    assert space.segments(all_on) == [Segment(0, 6, 2), Segment(6, 10, 1), Segment(10, 10, 2)]
    assert space.segments([False, True, False]) == [Segment(6, 10, 1)]


def test_params_moved_is_detected():
    space, params, _ = make_space()
    assert not space.params_moved()
    params[1].data = params[1].data.clone()
    assert space.params_moved()


def test_export_import_round_trip_with_torch_names():
    rule = Rule(centered=True, use_momentum=True)
    space, _, _ = make_space(rule)
    assert space.export_state(0) == {}
    space.advance([True, True, True])
    space.state.square_avg.copy_(torch.arange(10.0))
    space.state.momentum_buffer.fill_(3.0)
    entry = space.export_state(1)
    assert set(entry) == {"step", "square_avg", "grad_avg", "momentum_buffer"}
    assert torch.equal(entry["square_avg"], torch.arange(6.0, 10.0))
    other, _, _ = make_space(rule)
    other.import_state(1, entry)
    assert other.steps == [0, 1, 0]
    assert torch.equal(other.state.square_avg[6:], torch.arange(6.0, 10.0))
    assert torch.equal(other.state.square_avg[:6], torch.zeros(6))


def test_state_names_follow_the_torch_optimizer():
    assert torch_state_names(Rule())[0] == "square_avg"
    assert torch_state_names(Rule(use_beta1=True, bias_correction=True))[0] == "exp_avg_sq"
    assert torch_state_names(Rule(sq_mode="sum"))[0] == "sum"


def test_ensure_state_adds_a_buffer_when_a_flag_turns_on():
    space, _, _ = make_space(Rule(), v0=1.0)
    assert space.state.momentum_buffer is None
    space.state.square_avg.fill_(5.0)
    space.ensure_state(Rule(use_momentum=True))
    assert torch.equal(space.state.momentum_buffer, torch.zeros(10))
    assert torch.equal(space.state.square_avg, torch.full((10,), 5.0))  # kept
