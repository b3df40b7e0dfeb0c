"""DQN populations end to end: members independent, a member trains as its single run, resume."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import StopAfter, scalars

from agents.dqn import QNetwork
from rl_rmsprop import compare, train
from rl_rmsprop.checkpoint import MODEL_FILE
from rl_rmsprop.config import parse_config
from rl_rmsprop.run.population import run_population
from rl_rmsprop.run.signals import Interrupted
from rl_rmsprop.run.single import run

SMALL = ("--hidden", "32", "32", "--learning-starts", "500", "--eval-episodes", "2")


def _cfg(root, optimizer, seed, *extra, steps=3000, **optim):
    base = parse_config(
        [
            *("--algo", "dqn", "--optimizer", optimizer, "--total-steps", str(steps)),
            *("--quiet", *SMALL, "--log-every", "10", *extra),
        ]
    )
    run_cfg = dataclasses.replace(base.run, seed=seed, logdir=str(root), run_name=f"seed-{seed}")
    return dataclasses.replace(base, run=run_cfg, optim=dataclasses.replace(base.optim, **optim))


def _model(root, seed):
    return torch.load(root / f"seed-{seed}" / MODEL_FILE)


def test_dqn_members_are_bitwise_independent_of_the_other_members(tmp_path):
    a = [_cfg(tmp_path / "a", "rmsprop", 0), _cfg(tmp_path / "a", "adam", 1, lr=3e-3)]
    b = [_cfg(tmp_path / "b", "rmsprop", 0), _cfg(tmp_path / "b", "adam", 7, lr=1e-4)]
    out_a, out_b = run_population(a), run_population(b)
    ret_a = scalars(tmp_path / "a" / "seed-0", "charts/episodic_return")
    assert len(ret_a) > 20 and ret_a == scalars(tmp_path / "b" / "seed-0", "charts/episodic_return")
    for tag in ("losses/td_loss", "grad/norm_preclip", "charts/epsilon"):
        assert scalars(tmp_path / "a" / "seed-0", tag) == scalars(tmp_path / "b" / "seed-0", tag)
    model_a, model_b = _model(tmp_path / "a", 0), _model(tmp_path / "b", 0)
    assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)
    assert out_a[0]["eval_return_mean"] == out_b[0]["eval_return_mean"]
    assert (
        _model(tmp_path / "a", 1)["layers.0.weight"]
        .ne(_model(tmp_path / "b", 7)["layers.0.weight"])
        .any()
    )


def test_a_dqn_member_trains_as_the_single_run_with_its_seed(tmp_path):
    # Bitwise: the env, the exploration coins, the replay indices and every episode (the
    # member's generator continues the single run's global one). Statistical (close, not
    # equal): the weights, since a population's optimizer takes its coefficients as [K, 1]
    # tensors, an ulp or so away from a single run's Python floats at each step.
    run_population([_cfg(tmp_path / "pop", "rmsprop", 3), _cfg(tmp_path / "pop", "rmsprop", 4)])
    run(_cfg(tmp_path / "single", "rmsprop", 3))
    mine = scalars(tmp_path / "pop" / "seed-3", "charts/episodic_return")
    assert len(mine) > 20 and mine == scalars(
        tmp_path / "single" / "seed-3", "charts/episodic_return"
    )
    losses = [v for _, v in scalars(tmp_path / "pop" / "seed-3", "losses/td_loss")]
    want = [v for _, v in scalars(tmp_path / "single" / "seed-3", "losses/td_loss")]
    assert len(losses) == len(want) > 10
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(want), rtol=1e-3, atol=1e-5)
    model, single = _model(tmp_path / "pop", 3), _model(tmp_path / "single", 3)
    for k in model:
        assert float((model[k] - single[k]).norm() / single[k].norm()) < 1e-3, k


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
        assert scalars(folder, "optim/effective_lr/mean")
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
