import pytest

from rl_rmsprop.config import Config
from rl_rmsprop.options import parse_config


def test_defaults_are_the_zoo_a2c_cartpole_settings():
    cfg = parse_config([])
    assert cfg.env.id == "CartPole-v1" and cfg.env.num_envs == 8
    assert cfg.a2c.n_steps == 5 and cfg.learn.gamma == 0.99 and cfg.a2c.gae_lambda == 1.0
    assert cfg.a2c.ent_coef == 0.0 and cfg.a2c.vf_coef == 0.5 and cfg.learn.max_grad_norm == 0.5
    assert cfg.learn.hidden == (64, 64)
    assert cfg.optim.name == "rmsprop" and cfg.optim.lr == 7e-4 and cfg.optim.eps == 1e-5
    assert cfg.optim.overrides() == {"lr": 7e-4, "eps": 1e-5}


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
        (["--impl", "compiled"], "no compiled kernel"),
    ],
)
def test_bad_values_exit_2_with_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and err.startswith("error:") and err.count("\n") == 1
