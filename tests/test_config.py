import pytest

from rl_rmsprop.config import Config, RunConfig, build_parser, field_docs, parse_config


def test_defaults_are_the_zoo_a2c_cartpole_settings():
    cfg = parse_config([])
    assert cfg.env.id == "CartPole-v1" and cfg.env.num_envs == 8
    assert cfg.a2c.n_steps == 5 and cfg.learn.gamma == 0.99 and cfg.a2c.gae_lambda == 1.0
    assert cfg.a2c.ent_coef == 0.0 and cfg.a2c.vf_coef == 0.5 and cfg.learn.max_grad_norm == 0.5
    assert cfg.learn.hidden == (64, 64)
    assert cfg.optim.name == "rmsprop" and cfg.optim.lr == 7e-4 and cfg.optim.eps == 1e-5
    assert cfg.optim.overrides() == {"lr": 7e-4, "eps": 1e-5}


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


def test_unset_options_take_the_algorithm_defaults():
    dqn = parse_config(["--algo", "dqn"])
    assert dqn.env.num_envs == 1 and dqn.optim.lr == 5e-4 and dqn.optim.eps is None
    assert dqn.learn.hidden == (256, 256) and dqn.learn.max_grad_norm == 10.0
    assert dqn.dqn.batch_size == 64 and dqn.dqn.train_freq == 256 and dqn.dqn.gradient_steps == 128
    mine = parse_config(["--algo", "dqn", "--num-envs", "4", "--max-grad-norm", "1"])
    assert mine.env.num_envs == 4 and mine.learn.max_grad_norm == 1.0


def test_json_round_trip():
    cfg = parse_config(["--hidden", "8", "8", "--lr", "0.01"])
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_a_config_json_with_the_engine_under_a2c_still_loads():
    """Runs written before the engine was shared kept it in the a2c section."""
    old = parse_config(["--engine", "autograd"]).to_dict()
    old["a2c"]["engine"] = old["learn"].pop("engine")
    cfg = Config.from_dict(old)
    assert cfg.learn.engine == "autograd" and cfg == parse_config(["--engine", "autograd"])


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--total-steps", "0"], "--total-steps"),
        (["--num-envs", "0"], "--num-envs"),
        (["--gamma", "1.5"], "--gamma"),
        (["--device", "tpu"], "--device"),
        (["--lr", "fast"], "--lr"),
        (["--no-such-flag"], "--no-such-flag"),
    ],
)
def test_bad_values_exit_2_with_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and err.startswith("error:") and err.count("\n") == 1


def test_parser_is_generated_for_every_field():
    parser = build_parser()
    dests = {a.dest for a in parser._actions}
    assert {"optim.lr", "learn.hidden", "env.id", "dqn.buffer_size", "a2c.n_steps"} <= dests
