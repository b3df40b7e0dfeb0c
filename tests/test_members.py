"""DQN populations end to end: members independent, a member trains as its single run, resume."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import StopAfter, member_config, scalars

from agents.a2c import VALUE_LOSS
from agents.dqn import TD_LOSS, CnnQNetwork, QNetwork
from agents.networks import CnnActorCritic
from rl_rmsprop import compare, train
from rl_rmsprop.checkpoint import MODEL_FILE, NORMALIZATION_FILE
from rl_rmsprop.optim.figures import EFF_MEAN, NORM_PRECLIP, SQ_AVG_MEAN
from rl_rmsprop.options import parse_config
from rl_rmsprop.run.population import run_population
from rl_rmsprop.run.signals import Interrupted
from rl_rmsprop.run.single import run
from rl_rmsprop.tags import EPISODIC_RETURN, EPSILON, EVAL_MEAN

SMALL = ("--hidden", "32", "32", "--learning-starts", "500", "--eval-episodes", "2")


def _cfg(root, optimizer, seed, *extra, steps=3000, **optim):
    argv = [
        *("--algo", "dqn", "--optimizer", optimizer, "--total-steps", str(steps)),
        *("--quiet", *SMALL, "--log-every", "10", *extra),
    ]
    cfg = member_config(root, seed, argv)
    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, **optim))


def _model(root, seed):
    return torch.load(root / f"seed-{seed}" / MODEL_FILE)


@pytest.mark.slow
def test_dqn_members_are_bitwise_independent_of_the_other_members(tmp_path):
    a = [_cfg(tmp_path / "a", "rmsprop", 0), _cfg(tmp_path / "a", "adam", 1, lr=3e-3)]
    b = [_cfg(tmp_path / "b", "rmsprop", 0), _cfg(tmp_path / "b", "adam", 7, lr=1e-4)]
    alone = [_cfg(tmp_path / "c", "rmsprop", 0)]  # a population of one
    out_a, out_b, out_c = run_population(a), run_population(b), run_population(alone)
    ret_a = scalars(tmp_path / "a" / "seed-0", EPISODIC_RETURN)
    assert len(ret_a) > 20
    for other in ("b", "c"):
        assert ret_a == scalars(tmp_path / other / "seed-0", EPISODIC_RETURN)
        for tag in (TD_LOSS, NORM_PRECLIP, EPSILON):
            assert scalars(tmp_path / "a" / "seed-0", tag) == scalars(
                tmp_path / other / "seed-0", tag
            )
        model_a, model_o = _model(tmp_path / "a", 0), _model(tmp_path / other, 0)
        assert all(torch.equal(model_a[k], model_o[k]) for k in model_a)
    assert (
        out_a[0]["eval_return_mean"] == out_b[0]["eval_return_mean"] == out_c[0]["eval_return_mean"]
    )
    assert (
        _model(tmp_path / "a", 1)["layers.0.weight"]
        .ne(_model(tmp_path / "b", 7)["layers.0.weight"])
        .any()
    )


def test_a_dqn_member_trains_as_the_single_run_with_its_seed(tmp_path):
    # Bitwise, all of it: the env, the exploration coins, the replay indices and every episode
    # (the member's generator continues the single run's global one), the losses, gradient
    # and optimizer figures, and the final weights (the population's optimizer rounds as the
    # single run's, its [K, 1] coefficients derived as the single run's Python floats).
    run_population([_cfg(tmp_path / "pop", "rmsprop", 3), _cfg(tmp_path / "pop", "rmsprop", 4)])
    run(_cfg(tmp_path / "single", "rmsprop", 3))
    for tag in (
        EPISODIC_RETURN,
        TD_LOSS,
        NORM_PRECLIP,
        SQ_AVG_MEAN,
    ):
        mine = scalars(tmp_path / "pop" / "seed-3", tag)
        assert len(mine) > 20 and mine == scalars(tmp_path / "single" / "seed-3", tag), tag
    model, single = _model(tmp_path / "pop", 3), _model(tmp_path / "single", 3)
    assert model.keys() == single.keys()
    for k in model:
        assert torch.equal(model[k], single[k]), k


def test_a_normalized_member_trains_as_the_normalized_single_run_with_its_seed(tmp_path):
    # With --normalize each member steps its own run's env, its statistics its own: member 3
    # of two is the single run with seed 3, bitwise, statistics and all.
    extra = ("--normalize", "--env", "Acrobot-v1")
    run_population([_cfg(tmp_path / "pop", "rmsprop", k, *extra, steps=2000) for k in (3, 4)])
    run(_cfg(tmp_path / "single", "rmsprop", 3, *extra, steps=2000))
    for tag in (EPISODIC_RETURN, TD_LOSS, EVAL_MEAN):
        mine = scalars(tmp_path / "pop" / "seed-3", tag)
        assert mine and mine == scalars(tmp_path / "single" / "seed-3", tag), tag
    model, single = _model(tmp_path / "pop", 3), _model(tmp_path / "single", 3)
    assert all(torch.equal(model[k], single[k]) for k in model)
    stats = [torch.load(tmp_path / r / "seed-3" / NORMALIZATION_FILE) for r in ("pop", "single")]
    assert all(torch.equal(stats[0][k], stats[1][k]) for k in ("mean", "var", "count"))
    other = torch.load(tmp_path / "pop" / "seed-4" / NORMALIZATION_FILE)
    assert not torch.equal(other["mean"], stats[0]["mean"])


def test_a_population_records_each_members_evaluation_in_its_own_folder(tmp_path):
    pytest.importorskip("moviepy", reason="--capture-video needs moviepy (the video extra)")
    extra = ("--capture-video", "--eval-episodes", "1")
    run_population([_cfg(tmp_path, "rmsprop", k, *extra, steps=600) for k in (0, 1)])
    for k in (0, 1):
        videos = sorted((tmp_path / f"seed-{k}" / "videos").glob("*.mp4"))
        assert [v.name for v in videos] == ["rl-video-episode-0.mp4"]


def test_an_interrupted_dqn_population_resumes_to_the_uninterrupted_result(tmp_path):
    def cfgs(root):
        extra = ("--checkpoint-every", "512", "--save-replay")
        return [_cfg(root, "rmsprop", 0, *extra), _cfg(root, "adam", 1, *extra)]

    whole = run_population(cfgs(tmp_path / "whole"))
    ckpt = tmp_path / "cut" / "population.pt"
    with pytest.raises(Interrupted):
        run_population(cfgs(tmp_path / "cut"), checkpoint=ckpt, stop=StopAfter(6))
    resumed = run_population(cfgs(tmp_path / "cut"), checkpoint=ckpt)
    for a, b in zip(whole, resumed, strict=True):
        for key in ("total_steps", "updates", "episodic_return_mean100", "eval_return_mean"):
            assert a[key] == b[key], key
    for seed in (0, 1):
        model_a, model_b = _model(tmp_path / "whole", seed), _model(tmp_path / "cut", seed)
        assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)


def test_train_dqn_population_cli_writes_single_run_folders(tmp_path, capsys):
    argv = ["--algo", "dqn", "--population", "3", "--total-steps", "2000", *SMALL]
    assert train.main([*argv, "--logdir", str(tmp_path), "--run-name", "p"]) == 0
    assert "3 members (rmsprop x3) of dqn on CartPole-v1" in capsys.readouterr().err
    for seed in (1, 2, 3):
        folder = tmp_path / "p" / f"seed-{seed}"
        QNetwork(4, 2, (32, 32)).load_state_dict(torch.load(folder / MODEL_FILE))
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["total_steps"] >= 2000 and summary["eval_return_mean"] is not None
        assert scalars(folder, EFF_MEAN)
    data = json.loads((tmp_path / "p" / "population.json").read_text())
    assert len(data["summaries"]) == 3


def test_compare_trains_a_dqn_study_as_populations(tmp_path, capsys):
    args = ["--algo", "dqn", "--optimizers", "rmsprop,adam", "--seeds", "2"]
    args += ["--total-steps", "1500", "--logdir", str(tmp_path), *SMALL, "--workers", "1"]
    assert compare.main(args) == 0
    assert "population mode" in capsys.readouterr().out
    summary = json.loads(next(tmp_path.glob("compare-*/summary.json")).read_text())
    assert summary["mode"] == "population"
    assert [o["runs"] - o["failed"] for o in summary["optimizers"]] == [2, 2]


def test_a_dqn_population_trains_by_autograd_of_the_one_loss_when_asked(tmp_path, capsys):
    # The autograd engine (the one on CUDA) differentiates agents.dqn.dqn_loss through the
    # vmapped network: the same episodes as the NumPy engine while no update has changed
    # the networks (the Q-values agree to rounding, so the greedy actions agree).
    numpy_run = [_cfg(tmp_path / "numpy", "rmsprop", 0, steps=1500)]
    autograd_run = [_cfg(tmp_path / "autograd", "rmsprop", 0, "--engine", "autograd", steps=1500)]
    run_population(numpy_run)
    out = run_population(autograd_run)
    assert "autograd gradients" in capsys.readouterr().err and out[0]["total_steps"] >= 1500
    first = scalars(tmp_path / "numpy" / "seed-0", EPISODIC_RETURN)
    second = scalars(tmp_path / "autograd" / "seed-0", EPISODIC_RETURN)
    early = [e for e in first if e[0] <= 500]
    assert early and early == [e for e in second if e[0] <= 500]
    assert scalars(tmp_path / "autograd" / "seed-0", TD_LOSS)


def _atari(root, seed, **optim):
    return _cfg(
        root,
        "rmsprop:dqn-nature",
        seed,
        *("--preset", "dqn-nature", "--env", "PongNoFrameskip-v4", "--buffer-size", "2000"),
        *("--learning-starts", "200", "--eval-episodes", "0", "--log-every", "5"),
        steps=500,
        **optim,
    )


@pytest.mark.slow
def test_atari_dqn_members_train_on_frames_independently(tmp_path, capsys):
    # Stacked Nature CNNs (vmap of CnnQNetwork), one frame replay per member: member 0 is
    # bitwise the same whatever member 1's seed and lr.
    a = [_atari(tmp_path / "a", 0), _atari(tmp_path / "a", 1)]
    b = [_atari(tmp_path / "b", 0), _atari(tmp_path / "b", 5, lr=1e-3)]
    run_population(a)
    assert "of dqn on PongNoFrameskip-v4" in capsys.readouterr().err
    run_population(b)
    losses = scalars(tmp_path / "a" / "seed-0", TD_LOSS)
    assert len(losses) > 10 and losses == scalars(tmp_path / "b" / "seed-0", TD_LOSS)
    model_a, model_b = _model(tmp_path / "a", 0), _model(tmp_path / "b", 0)
    assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)
    CnnQNetwork(4, 6).load_state_dict(model_a)
    other_a, other_b = _model(tmp_path / "a", 1), _model(tmp_path / "b", 5)
    assert not torch.equal(other_a["head.weight"], other_b["head.weight"])


@pytest.mark.slow
def test_atari_a2c_members_train_on_frames_independently(tmp_path):
    # Stacked CnnActorCritics (vmap), each member's copies seeded as its own: member 0 is
    # bitwise the same whatever member 1's seed and lr.
    def cfg(root, seed, **optim):
        base = parse_config(
            [
                *("--preset", "a2c-atari", "--env", "PongNoFrameskip-v4", "--num-envs", "2"),
                *("--total-steps", "400", "--eval-episodes", "0", "--log-every", "1", "--quiet"),
            ]
        )
        run_cfg = dataclasses.replace(
            base.run, seed=seed, logdir=str(root), run_name=f"seed-{seed}"
        )
        return dataclasses.replace(
            base, run=run_cfg, optim=dataclasses.replace(base.optim, **optim)
        )

    run_population([cfg(tmp_path / "a", 0), cfg(tmp_path / "a", 1)])
    run_population([cfg(tmp_path / "b", 0), cfg(tmp_path / "b", 4, lr=1e-3)])
    losses = scalars(tmp_path / "a" / "seed-0", VALUE_LOSS)
    assert len(losses) == 40 and losses == scalars(tmp_path / "b" / "seed-0", VALUE_LOSS)
    model_a, model_b = _model(tmp_path / "a", 0), _model(tmp_path / "b", 0)
    assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)
    CnnActorCritic(4, 6).load_state_dict(model_a)
    assert not torch.equal(
        _model(tmp_path / "a", 1)["policy.weight"], _model(tmp_path / "b", 4)["policy.weight"]
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_dqn_population_trains_on_cuda(tmp_path):
    cfgs = [
        _cfg(tmp_path, "rmsprop", 0, "--device", "cuda", steps=1500),
        _cfg(tmp_path, "adam", 1, "--device", "cuda", steps=1500),
    ]
    for out in run_population(cfgs):
        assert out["total_steps"] >= 1500 and out["eval_return_mean"] is not None
        state = torch.load(f"{out['run_dir']}/{MODEL_FILE}", map_location="cpu")
        assert all(torch.isfinite(t).all() for t in state.values())
