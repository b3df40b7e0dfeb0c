import pytest
import torch

from rl_rmsprop.optim.groups import PLAN_KEYS, hyper_of, rule_of, validate_group
from rl_rmsprop.optim.presets import preset_group


def test_a_preset_group_reads_as_its_rule_and_hyperparameters():
    group = preset_group("rmsprop:tf", lr=1e-3, momentum=0.9)
    rule, hyper = rule_of(group), hyper_of(group)
    assert rule.eps_in_sqrt and rule.use_momentum and not rule.centered
    assert hyper.lr == 1e-3 and hyper.momentum == 0.9 and hyper.eps == group["eps"]
    assert set(PLAN_KEYS) <= set(group)


def test_one_rule_object_per_flag_set():
    a, b = preset_group("rmsprop", lr=1e-3), preset_group("rmsprop", lr=5e-2)
    assert rule_of(a) is rule_of(b)
    assert rule_of(a) is not rule_of(preset_group("rmsprop", centered=True))


def test_a_tensor_lr_reads_as_a_float():
    group = {**preset_group("rmsprop"), "lr": torch.tensor(0.25)}
    lr = hyper_of(group).lr
    assert isinstance(lr, float) and lr == 0.25


@pytest.mark.parametrize(
    "change,message",
    [
        ({"lr": -1.0}, r"lr must be in \[0.0, inf\)"),
        ({"alpha": 1.5}, r"alpha must be in \[0.0, 1.0\]"),
        ({"beta1": 1.0}, r"beta1 must be in \[0.0, 1.0\)"),
        ({"eps": float("inf")}, "eps must be in"),
        ({"lr": torch.ones(2)}, "one-element tensor"),
        ({"momentum": True}, "momentum must be a number"),
        ({"sq_mode": "cube"}, "sq_mode must be one of"),
        ({"nesterov": True}, "nesterov=True needs momentum > 0"),
        ({"beta1": 0.9, "momentum": 0.9}, "cannot both be > 0"),
    ],
)
def test_bad_group_values_name_the_entry_and_its_range(change, message):
    group = {**preset_group("rmsprop"), **change}
    with pytest.raises(ValueError, match=message):
        validate_group(group)
