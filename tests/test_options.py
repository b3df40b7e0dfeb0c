import pytest

from rl_rmsprop.config import RunConfig
from rl_rmsprop.options import build_parser, field_docs, parse_config


def test_flags_types_and_overrides():
    cfg = parse_config(
        [
            "--env",
            "Acrobot-v1",
            "--optimizer",
            "rmsprop:tf",
            "--centered",
            "--momentum",
            "0.9",
            "--hidden",
            "32",
            "16",
            "--seed",
            "7",
            "--no-quiet",
        ]
    )
    assert cfg.env.id == "Acrobot-v1" and cfg.run.seed == 7 and cfg.learn.hidden == (32, 16)
    assert cfg.optim.overrides() == {"lr": 7e-4, "eps": 1e-5, "momentum": 0.9, "centered": True}


def test_help_lists_every_option_with_its_docstring_and_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in [
        "--algo",
        "--env",
        "--optimizer",
        "--lr",
        "--alpha",
        "--eps",
        "--momentum",
        "--centered",
        "--seed",
        "--total-steps",
        "--num-envs",
        "--device",
        "--logdir",
        "--run-name",
        "--eval-episodes",
        "--log-every",
        "--quiet",
    ]:
        assert flag in out
    assert "Seed of the network" in out and "(default: 200000)" in out
    # choices are the argument, a switch's default reads as typed, an unset one is not shown
    assert "--algo {a2c,dqn}" in out and "--lr-schedule {constant,linear}" in out
    assert "Print only the final summary line. (default: false)" in out
    assert "None" not in out and "False" not in out and "True" not in out
    assert "Environment copies stepped together (unset: 8 for a2c," in out


def test_field_docs_come_from_the_dataclass():
    assert field_docs(RunConfig)["total_steps"].startswith("Environment steps to train for")


def test_parser_is_generated_for_every_field():
    parser = build_parser()
    dests = {a.dest for a in parser._actions}
    assert {"optim.lr", "learn.hidden", "env.id", "dqn.buffer_size", "a2c.n_steps"} <= dests


def test_a_presets_optimizer_values_go_with_its_optimizer_only():
    paper = ["--preset", "dqn-minatar", "--env", "CartPole-v1"]
    centered = {"lr": 2.5e-4, "alpha": 0.95, "eps": 0.01, "momentum": 0.95, "centered": True}
    assert parse_config(paper).optim.overrides() == centered
    assert parse_config([*paper, "--optimizer", "rmsprop"]).optim.overrides() == centered
    adam = parse_config([*paper, "--optimizer", "adam"])
    assert adam.optim.overrides() == {"lr": 2.5e-4}  # no momentum, Adam's own eps
    assert adam.dqn.buffer_size == 100_000  # the rest of the preset still applies
    assert parse_config([*paper, "--optimizer", "adam", "--eps", "0.01"]).optim.eps == 0.01
    assert parse_config([*paper, "--optimizer", "adam", "--lr", "1e-3"]).optim.lr == 1e-3


def test_finding_the_given_options_leaves_the_parse_unchanged():
    argv = ["--preset", "dqn-minatar", "--optimizer", "rmsprop:tf", "--env", "CartPole-v1"]
    cfg = parse_config(argv)
    assert cfg.optim.name == "rmsprop:tf" and cfg.run.preset == "dqn-minatar"
    assert parse_config(argv) == cfg
