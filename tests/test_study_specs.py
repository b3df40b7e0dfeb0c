"""study.specs: optimizer specs and seeds as compare reads them."""

from __future__ import annotations

import pytest

from rl_rmsprop.study.specs import (
    OptimizerSpec,
    StudyError,
    parse_seeds,
    parse_specs,
)


def test_parse_specs_with_overrides():
    specs = parse_specs("rmsprop, rmsprop:tf ,adam(lr=1e-3, eps=1e-5),rmsprop(centered=true)")
    assert specs == [
        OptimizerSpec("rmsprop"),
        OptimizerSpec("rmsprop:tf"),
        OptimizerSpec("adam", (("lr", 1e-3), ("eps", 1e-5))),
        OptimizerSpec("rmsprop", (("centered", True),)),
    ]
    assert specs[2].label == "adam(lr=0.001,eps=1e-05)"
    assert specs[1].folder == "rmsprop-tf"
    assert specs[2].folder == "adam__lr=0.001__eps=1e-05"
    assert parse_specs("sgd(momentum=0.9,initial-square-avg=1)")[0].overrides == (
        ("momentum", 0.9),
        ("initial_square_avg", 1),
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("adam(lr=1e-3", "unbalanced '('"),
        ("adam)", "unbalanced ')'"),
        ("adam(lr)", "is not key=value"),
        ("adam(learning_rate=1)", "unknown option 'learning_rate'"),
        ("adam(lr=fast)", "is not a number"),
        ("rmsprop,rmsprop", "given twice"),
        ("rmsprop,,adam", "cannot parse ''"),
        ("rms prop", "cannot parse"),
    ],
)
def test_bad_specs_name_the_problem(text, needle):
    with pytest.raises(StudyError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        parse_specs(text)


def test_parse_seeds():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("3,7,11") == [3, 7, 11]
    for bad in ("0", "x", "1,1", "-1,2"):
        with pytest.raises(StudyError):
            parse_seeds(bad)


def test_a_presets_optimizer_values_go_to_its_optimizer_in_a_study(tmp_path):
    from rl_rmsprop.study.specs import build_pairs

    specs = parse_specs("rmsprop,adam,rmsprop:dqn-nature")
    train = ["--preset", "dqn-minatar", "--env", "CartPole-v1"]
    pairs = build_pairs(specs, [0], train, tmp_path / "study")
    optims = {p.spec.name: p.cfg.optim for p in pairs}
    assert optims["rmsprop"].momentum == 0.95 and optims["rmsprop"].centered
    assert optims["adam"].overrides() == {"lr": 2.5e-4}
    assert optims["rmsprop:dqn-nature"].overrides() == {"lr": 2.5e-4}
    assert not (tmp_path / "study").exists()
