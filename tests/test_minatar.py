"""MinAtar's games through make_vector_env, the presets, populations and a learning test."""

from __future__ import annotations

import importlib.util
import json
import warnings

import gymnasium
import numpy as np
import pytest
import torch
from conftest import assert_one_line, member_config, scalars

from envs import EnvError, make_vector_env
from envs.minatar import MINATAR_GAMES, MINATAR_INSTALL, is_minatar
from rl_rmsprop import compare, train
from rl_rmsprop.checkpoint import MODEL_FILE
from rl_rmsprop.options import parse_config
from rl_rmsprop.run.population import run_population
from rl_rmsprop.tags import EPISODIC_RETURN

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("minatar") is None,
    reason=f"the minatar extra is not installed ({MINATAR_INSTALL})",
)

CHANNELS = {"Asterix": 4, "Breakout": 4, "Freeway": 7, "Seaquest": 10, "SpaceInvaders": 6}
MINIMAL_ACTIONS = {"Asterix": 5, "Breakout": 3, "Freeway": 3, "Seaquest": 6, "SpaceInvaders": 4}


@pytest.mark.parametrize("game", MINATAR_GAMES)
def test_each_game_is_a_vector_env_of_uint8_planes_channels_first(game):
    env = make_vector_env(f"MinAtar/{game}-v1", 3, seed=4)
    c = CHANNELS[game]
    assert env.single_observation_space == gymnasium.spaces.Box(0, 1, (c, 10, 10), np.uint8)
    assert env.single_action_space.n == MINIMAL_ACTIONS[game]
    obs, _ = env.reset(seed=4)
    assert obs.shape == (3, c, 10, 10) and obs.dtype == np.uint8
    assert set(np.unique(obs)) <= {0, 1} and obs.any()
    # each copy is the game itself, seeded seed + copy, its [10, 10, C] planes transposed
    raw = [gymnasium.make(f"MinAtar/{game}-v1") for _ in range(3)]
    frames = [r.reset(seed=4 + i)[0] for i, r in enumerate(raw)]
    rng = np.random.default_rng(0)
    for _ in range(8):
        for i in range(3):
            np.testing.assert_array_equal(obs[i], frames[i].transpose(2, 0, 1).astype(np.uint8))
        actions = rng.integers(0, MINIMAL_ACTIONS[game], size=3)
        obs, _, terminated, truncated, _ = env.step(actions)
        steps = [r.step(int(a)) for r, a in zip(raw, actions, strict=True)]
        frames = [s[0] for s in steps]
        if (terminated | truncated).any():
            break
    env.close()


def test_v0_has_the_six_actions_the_paper_played_and_ids_are_recognised():
    env = make_vector_env("MinAtar/Breakout-v0", 1, seed=0)
    assert env.single_action_space.n == 6
    env.close()
    assert is_minatar("MinAtar/Breakout-v1") and not is_minatar("ALE/Breakout-v5")
    with warnings.catch_warnings():  # the ids are registered once (no "overriding" warning)
        warnings.simplefilter("error")
        make_vector_env("MinAtar/Breakout-v1", 1, seed=0).close()


def test_same_seed_same_games_other_seed_other_games():
    def play(seed):
        env = make_vector_env("MinAtar/Asterix-v1", 2, seed=seed)
        frames = [env.reset(seed=seed)[0]]
        for t in range(60):
            frames.append(env.step(np.array([t % 5, (t * 3) % 5]))[0])
        env.close()
        return np.stack(frames)

    assert np.array_equal(play(1), play(1))
    assert not np.array_equal(play(1), play(2))


def test_without_the_extra_the_message_names_it(monkeypatch, capsys, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a, **k: None if name == "minatar" else real_find_spec(name, *a, **k),
    )
    for env_id in [k for k in gymnasium.registry if k.startswith("MinAtar/")]:
        monkeypatch.delitem(gymnasium.registry, env_id)
    with pytest.raises(EnvError) as excinfo:
        make_vector_env("MinAtar/Breakout-v1", 1, 0)
    message = str(excinfo.value)
    assert "\n" not in message and "MinAtar/Breakout-v1" in message
    assert "MinAtar extra" in message and MINATAR_INSTALL in message
    argv = ["--env", "MinAtar/Breakout-v1", "--logdir", str(tmp_path / "runs"), "--quiet"]
    assert train.main(argv) == 2
    assert_one_line(capsys.readouterr().err, "MinAtar extra", MINATAR_INSTALL)
    assert not (tmp_path / "runs").exists()


def test_presets_are_the_papers_dqn_and_a2c_on_its_network():
    dqn = parse_config(["--preset", "dqn-minatar", "--env", "MinAtar/Breakout-v0"])
    assert dqn.run.algo == "dqn" and dqn.run.total_steps == 5_000_000
    optim = {"name": "rmsprop", "lr": 2.5e-4, "alpha": 0.95, "eps": 0.01}
    assert {k: getattr(dqn.optim, k) for k in optim} == optim
    assert dqn.optim.centered and dqn.optim.momentum == 0.95
    assert (dqn.dqn.buffer_size, dqn.dqn.batch_size, dqn.dqn.learning_starts) == (
        100_000,
        32,
        5_000,
    )
    assert (dqn.dqn.train_freq, dqn.dqn.gradient_steps, dqn.dqn.target_update_interval) == (
        1,
        1,
        1_000,
    )
    assert dqn.dqn.exploration_fraction * dqn.run.total_steps == 100_000
    assert dqn.dqn.exploration_final_eps == 0.1 and dqn.learn.max_grad_norm == 0.0
    assert (dqn.dqn.loss, dqn.dqn.loss_reduction) == ("huber", "mean")
    a2c = parse_config(["--preset", "a2c-minatar", "--env", "MinAtar/Breakout-v1"])
    assert (a2c.run.algo, a2c.env.num_envs, a2c.optim.name) == ("a2c", 16, "rmsprop:tf")
    # a flag still overrides a preset
    assert parse_config(["--preset", "dqn-minatar", "--lr", "1e-3"]).optim.lr == 1e-3


def test_dqn_replay_stores_one_byte_a_cell(tmp_path):
    from rl_rmsprop.run.builders import build_replay

    cfg = parse_config(["--preset", "dqn-minatar", "--env", "MinAtar/Seaquest-v1"])
    env = make_vector_env("MinAtar/Seaquest-v1", 1, 0)
    buffer, note = build_replay(cfg, env, torch.device("cpu"), members=1)
    env.close()
    assert "0.20 GB" in note  # 100,000 x 2 observations x 1,000 bytes, and the rest
    assert buffer.obs.shape == (1, 100_000, 10, 10, 10) and buffer.obs.dtype == torch.uint8
    assert buffer.next_obs.dtype == torch.uint8


def _member(tmp_path, algo, optimizer, seed, steps):
    extra = ["--algo", algo, "--optimizer", optimizer, "--total-steps", str(steps)]
    if algo == "dqn":
        extra += ["--learning-starts", "200", "--train-freq", "4", "--gradient-steps", "1"]
        extra += ["--buffer-size", "2000", "--target-update-interval", "200"]
    argv = [
        *extra,
        *("--env", "MinAtar/Breakout-v1", "--quiet", "--eval-episodes", "2"),
        *("--log-every", "10", "--histogram-every", "0", "--eval-every", "0"),
    ]
    return member_config(tmp_path / optimizer.replace(":", "-"), seed, argv)


@pytest.mark.parametrize(("algo", "steps"), [("a2c", 4000), ("dqn", 1500)])
def test_population_members_on_planes_do_not_depend_on_the_other_members(tmp_path, algo, steps):
    # Members 0 and 2 are the same in both populations; member 1 differs in optimizer and seed.
    a = [_member(tmp_path / "a", algo, o, s, steps) for o, s in [("rmsprop", 0), ("adam", 1)]]
    b = [_member(tmp_path / "b", algo, o, s, steps) for o, s in [("rmsprop", 0), ("sgd", 7)]]
    a.append(_member(tmp_path / "a", algo, "rmsprop:tf", 2, steps))
    b.append(_member(tmp_path / "b", algo, "rmsprop:tf", 2, steps))
    out_a, out_b = run_population(a), run_population(b)
    for i in (0, 2):
        dir_a = f"{a[i].run.logdir}/{a[i].run.run_name}"
        dir_b = f"{b[i].run.logdir}/{b[i].run.run_name}"
        returns = scalars(dir_a, EPISODIC_RETURN)
        assert len(returns) > 10 and returns == scalars(dir_b, EPISODIC_RETURN)
        model_a, model_b = torch.load(f"{dir_a}/{MODEL_FILE}"), torch.load(f"{dir_b}/{MODEL_FILE}")
        assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)
        assert out_a[i]["eval_return_mean"] == out_b[i]["eval_return_mean"]
    assert scalars(f"{a[1].run.logdir}/seed-1", EPISODIC_RETURN) != scalars(
        f"{b[1].run.logdir}/seed-7", EPISODIC_RETURN
    )


def test_compare_runs_a_minatar_study_as_populations(tmp_path, capsys):
    argv = [
        *("--env", "MinAtar/Breakout-v1", "--preset", "a2c-minatar", "--total-steps", "8000"),
        *("--optimizers", "rmsprop,adam", "--seeds", "2", "--workers", "1"),
        *("--logdir", str(tmp_path), "--name", "m", "--eval-episodes", "2"),
    ]
    assert compare.main(argv) == 0
    out = capsys.readouterr().out
    assert "population mode" in out or "population 1/1" in out
    summary = json.loads((tmp_path / "compare-m" / "summary.json").read_text())
    assert summary["mode"] == "population" and summary["env"] == "MinAtar/Breakout-v1"
    assert [r["runs"] - r["failed"] for r in summary["optimizers"]] == [2, 2]


def test_a_resumed_run_ends_where_the_uninterrupted_run_does(tmp_path):
    """The games' state (their RandomState, boards, timers) goes into checkpoints as data."""
    argv = [
        *("--env", "MinAtar/SpaceInvaders-v1", "--preset", "a2c-minatar", "--eval-episodes", "1"),
        *("--logdir", str(tmp_path), "--quiet"),
    ]
    assert train.main([*argv, "--total-steps", "8000", "--run-name", "resumed"]) == 0
    assert train.main(["--resume", str(tmp_path / "resumed"), "--total-steps", "16000"]) == 0
    assert train.main([*argv, "--total-steps", "16000", "--run-name", "whole"]) == 0
    resumed = torch.load(tmp_path / "resumed" / MODEL_FILE)
    whole = torch.load(tmp_path / "whole" / MODEL_FILE)
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)
    assert scalars(tmp_path / "resumed", EPISODIC_RETURN) == scalars(
        tmp_path / "whole", EPISODIC_RETURN
    )


@pytest.mark.slow
def test_a2c_learns_minatar_breakout_where_a_random_policy_does_not(tmp_path):
    """The a2c-minatar preset, seed 1, 300k frames: greedy play clearly beats random play.

    A uniformly random policy scores about 0.4 a game on MinAtar Breakout (measured below).
    """
    env = make_vector_env("MinAtar/Breakout-v1", 8, seed=0)
    env.reset(seed=0)
    games = []
    while len(games) < 200:
        *_, info = env.step(env.action_space.sample())
        if "episode" in info:
            games += info["episode"]["r"][info["_episode"]].tolist()
    env.close()
    random_mean = float(np.mean(games))
    assert random_mean < 1.0
    argv = [
        *("--env", "MinAtar/Breakout-v1", "--preset", "a2c-minatar", "--seed", "1"),
        *("--total-steps", "300000", "--eval-episodes", "20", "--eval-every", "0"),
        *("--logdir", str(tmp_path), "--run-name", "r", "--quiet"),
    ]
    assert train.main(argv) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["eval_return_mean"] >= 2.0 > 2 * random_mean
    assert summary["episodic_return_mean100"] >= 2.0


def test_minatar_runs_evaluate_every_100k_frames_by_default():
    assert parse_config(["--env", "MinAtar/Breakout-v1"]).run.eval_every == 100_000
    assert parse_config(["--preset", "dqn-minatar"]).run.eval_every == 10_000  # CartPole's
    given = ["--env", "MinAtar/Breakout-v1", "--eval-every", "5000"]
    assert parse_config(given).run.eval_every == 5_000
