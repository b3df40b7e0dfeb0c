"""rl_rmsprop.hparams: rl-baselines3-zoo's settings as option defaults (--hparams zoo)."""

from __future__ import annotations

import pytest

from rl_rmsprop.hparams import lr_schedule, missing, zoo_data, zoo_options, zoo_settings
from rl_rmsprop.options import parse_config
from tests.conftest import assert_one_line


def _usable() -> list[tuple[str, str]]:
    data = zoo_data()
    return [
        (algo, env_id)
        for algo in ("a2c", "dqn")
        for env_id in data[algo]
        if missing(zoo_settings(algo, env_id)) is None
    ]


def test_the_data_file_names_its_source_and_every_asked_env():
    data = zoo_data()
    assert "rl-baselines3-zoo" in data["source"]["repository"]
    assert len(data["source"]["commit"]) == 40
    wanted = {"CartPole-v1", "Acrobot-v1", "MountainCar-v0", "LunarLander-v3"}
    for algo in ("a2c", "dqn"):
        assert set(data[algo]) == wanted
        for entry in data[algo].values():
            assert {"mean", "std"} <= set(entry["published"])


@pytest.mark.parametrize(("algo", "env_id"), _usable())
def test_every_usable_entry_becomes_a_valid_config_with_the_zoos_values(algo, env_id):
    cfg = parse_config(["--hparams", "zoo", "--algo", algo, "--env", env_id])
    settings = zoo_settings(algo, env_id)
    assert cfg.run.total_steps == int(settings["n_timesteps"])
    assert cfg.optim.name == ("adam" if algo == "dqn" else "rmsprop")
    if isinstance(settings["learning_rate"], str):  # the zoo's lin_<x>
        assert cfg.learn.lr_schedule == "linear"
        assert settings["learning_rate"] == f"lin_{cfg.optim.lr:.5f}".rstrip("0")
    else:
        assert (cfg.optim.lr, cfg.learn.lr_schedule) == (settings["learning_rate"], "constant")
    assert cfg.learn.gamma == settings["gamma"]
    assert cfg.learn.hidden == tuple(settings["net_arch"])
    assert cfg.env.num_envs == settings["n_envs"]
    if algo == "dqn":
        for key in ("batch_size", "buffer_size", "learning_starts", "target_update_interval"):
            assert getattr(cfg.dqn, key) == settings[key], key
        assert cfg.dqn.exploration_final_eps == settings["exploration_final_eps"]
        assert cfg.optim.eps is None  # Adam's own
    else:
        assert cfg.a2c.ent_coef == settings["ent_coef"] and cfg.optim.eps == 1e-5
        assert cfg.env.normalize == settings.get("normalize", False)


def test_flags_override_the_zoo_and_minus_one_gradient_steps_follow_the_round():
    cfg = parse_config(["--hparams", "zoo", "--algo", "dqn", "--env", "Acrobot-v1"])
    assert cfg.dqn.train_freq == 4 and cfg.dqn.gradient_steps == 4  # SB3's -1
    argv = ["--hparams", "zoo", "--algo", "dqn", "--env", "Acrobot-v1", "--optimizer", "rmsprop"]
    cfg = parse_config([*argv, "--lr", "1e-3", "--num-envs", "3"])
    assert (cfg.optim.name, cfg.optim.lr, cfg.dqn.batch_size) == ("rmsprop", 1e-3, 128)
    assert cfg.dqn.gradient_steps == 3  # one round is one step of 3 envs
    cfg = parse_config(["--algo", "dqn", "--train-freq", "256", "--gradient-steps", "-1"])
    assert cfg.dqn.gradient_steps == 256
    assert zoo_options("dqn", "CartPole-v1")["dqn.gradient_steps"] == 128


def test_the_zoos_normalized_settings_train_as_populations():
    cfg = parse_config(["--hparams", "zoo", "--env", "Acrobot-v1", "--population", "2"])
    assert cfg.env.normalize and cfg.run.population == 2


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--hparams", "zoo", "--env", "Pendulum-v1"], ["no a2c settings", "--list-hparams"]),
        (["--hparams", "zoo", "--preset", "dqn-nature"], ["give one"]),
        (["--algo", "dqn", "--gradient-steps", "-2"], ["--gradient-steps", "-1"]),
    ],
)
def test_what_the_zoo_cannot_give_is_one_line_and_exit_2(argv, needles, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(argv)
    assert exit_info.value.code == 2
    assert_one_line(capsys.readouterr().err, *needles)


def test_schedules_the_zoo_names_are_read_and_others_are_named_as_missing():
    assert lr_schedule("lin_0.00083") == ("linear", 0.00083)
    assert lr_schedule("exp_0.1") is None and lr_schedule("lin_fast") is None
    assert "exp_0.1" in missing({"learning_rate": "exp_0.1"})
    assert missing({"learning_rate": "lin_7e-4"}) is None


def test_list_hparams_shows_every_entry_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(["--list-hparams"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert zoo_data()["source"]["commit"][:10] in out
    for algo in ("a2c", "dqn"):
        for env_id in zoo_data()[algo]:
            assert f"{algo} {env_id}:" in out
    assert "not usable yet" not in out  # every entry, A2C on LunarLander's lin_ included
