"""Population training end to end: independent members, run folders, the CLIs, learning."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import (
    FakeTerminal,
    StopAfter,
    default_sigint,
    member_config,
    results_table,
    scalars,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata

from agents.a2c import POLICY_LOSS, VALUE_LOSS, a2c_loss
from agents.networks import ActorCritic
from agents.population import PopulationActorCritic
from agents.rollout import Rollout
from rl_rmsprop import compare, train
from rl_rmsprop.checkpoint import MODEL_FILE, NORMALIZATION_FILE
from rl_rmsprop.optim import clip_grad_norm_, make_optimizer
from rl_rmsprop.optim.figures import NONFINITE_SKIPPED, NORM_PRECLIP, SQ_AVG
from rl_rmsprop.optim.population import PopulationOptimizer
from rl_rmsprop.options import parse_config
from rl_rmsprop.run.errors import UserError
from rl_rmsprop.run.members import PopulationError, check_members
from rl_rmsprop.run.population import run_population
from rl_rmsprop.run.signals import Interrupted
from rl_rmsprop.run.single import run
from rl_rmsprop.study import runs as study_runs
from rl_rmsprop.tags import EPISODIC_RETURN, EVAL_MEAN, SPS


def _cfg(tmp_path, optimizer, seed, *extra, steps=4000):
    argv = [
        *("--optimizer", optimizer, "--total-steps", str(steps), "--quiet"),
        *("--eval-episodes", "2", "--log-every", "10", "--histogram-every", "50"),
        *extra,
    ]
    return member_config(tmp_path / optimizer.split("(")[0].replace(":", "-"), seed, argv)


def _with(cfg, **optim):
    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, **optim))


def test_members_are_bitwise_independent_of_the_other_members(tmp_path):
    # Members 0 and 3 are the same in both populations; the others differ in lr and seed.
    a = [
        _cfg(tmp_path / "a", "rmsprop", 0),
        _with(_cfg(tmp_path / "a", "rmsprop", 1), lr=3e-3),
        _cfg(tmp_path / "a", "adam", 0),
        _cfg(tmp_path / "a", "adam", 2),
    ]
    b = [
        _cfg(tmp_path / "b", "rmsprop", 0),
        _with(_cfg(tmp_path / "b", "rmsprop", 5), lr=1e-4),
        _with(_cfg(tmp_path / "b", "adam", 3), lr=1e-2),
        _cfg(tmp_path / "b", "adam", 2),
    ]
    out_a, out_b = run_population(a), run_population(b)
    for i in (0, 3):
        dir_a, dir_b = a[i].run.logdir, b[i].run.logdir
        ret_a = scalars(f"{dir_a}/seed-{a[i].run.seed}", EPISODIC_RETURN)
        ret_b = scalars(f"{dir_b}/seed-{b[i].run.seed}", EPISODIC_RETURN)
        assert len(ret_a) > 20 and ret_a == ret_b
        model_a = torch.load(f"{dir_a}/seed-{a[i].run.seed}/{MODEL_FILE}")
        model_b = torch.load(f"{dir_b}/seed-{b[i].run.seed}/{MODEL_FILE}")
        assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)
        assert out_a[i]["eval_return_mean"] == out_b[i]["eval_return_mean"]
    # the members that differ did train differently
    assert out_a[1]["episodic_return_mean100"] != out_b[1]["episodic_return_mean100"]


def test_an_a2c_member_trains_as_the_single_run_with_its_seed(tmp_path):
    # Bitwise: a single run draws its action noise as the member of its seed does, the CPU
    # engine's gradient and the clipping norm are its single run's, and so is the step: every
    # episode, loss, gradient norm and the final weights. (The optim/* figures are reductions
    # over the population's row layout, close but not bitwise.)
    run_population([_cfg(tmp_path / "pop", "rmsprop", 3), _cfg(tmp_path / "pop", "rmsprop", 4)])
    run(_cfg(tmp_path / "single", "rmsprop", 3))
    mine, single = (
        tmp_path / "pop" / "rmsprop" / "seed-3",
        tmp_path / "single" / "rmsprop" / "seed-3",
    )
    tags = (
        EPISODIC_RETURN,
        POLICY_LOSS,
        VALUE_LOSS,
        NORM_PRECLIP,
    )
    for tag in tags:
        ours = scalars(mine, tag)
        assert len(ours) >= 10 and ours == scalars(single, tag), tag
    a, b = torch.load(mine / MODEL_FILE), torch.load(single / MODEL_FILE)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_mixed_families_in_one_population_match_the_same_configurations_run_singly():
    specs = [
        ("rmsprop", {"lr": 7e-4, "eps": 1e-5}),
        ("rmsprop:tf", {"lr": 7e-4, "eps": 1e-5}),
        ("adagrad", {"lr": 1e-2, "eps": 1e-5}),
        ("adam", {"lr": 7e-4, "eps": 1e-5}),
        ("sgd", {"lr": 1e-2, "momentum": 0.9}),
    ]
    envs, steps, cfg = 4, 5, parse_config([])
    nets = []
    for seed in range(len(specs)):
        torch.manual_seed(seed)
        nets.append(ActorCritic(4, 2))
    pop = PopulationActorCritic(nets, envs)
    names = [(s.name, s.offset, s.numel) for s in pop.segments]
    pop_opt = PopulationOptimizer(pop.data, pop.grad, specs, names)
    singles = [
        make_optimizer(n, net.named_parameters(), **o)
        for (n, o), net in zip(specs, nets, strict=True)
    ]
    g = torch.Generator().manual_seed(0)
    k = len(specs)
    for _ in range(50):
        done = torch.rand(steps, k * envs, generator=g) < 0.1
        rollout = Rollout(
            obs=torch.randn(steps + 1, k * envs, 4, generator=g),
            actions=torch.randint(0, 2, (steps, k * envs), generator=g),
            rewards=torch.ones(steps, k * envs),
            terminated=done,
            truncated=torch.zeros_like(done),
            valid=torch.ones_like(done),
        )
        losses, _ = a2c_loss(pop, rollout, cfg.a2c, 0.99, mean=pop.member_mean)
        pop.zero_grad()
        losses.sum().backward()
        pop.sync_grads()
        pop_opt.step(pop_opt.clip_grad_norm_(0.5))
        for i, (net, opt) in enumerate(zip(nets, singles, strict=True)):
            part = Rollout(*(x[:, i * envs : (i + 1) * envs] for x in rollout))
            loss, _ = a2c_loss(net, part, cfg.a2c, 0.99)
            opt.zero_grad()
            loss.backward()
            clip_grad_norm_(opt, 0.5)
            opt.step()
    for i, net in enumerate(nets):
        mine = pop.member_state_dict(i)
        for name, p in net.named_parameters():
            # Close, not equal: the stacked network's batched products sum in another order
            # than a single network's, so the gradients differ in the last bits (the
            # optimizer step itself is bitwise a single run's: tests/test_optim_population.py).
            torch.testing.assert_close(mine[name], p.detach(), rtol=1e-4, atol=1e-5)
            assert not torch.equal(p.detach(), dict(nets[i - 1].named_parameters())[name])


def test_member_folders_have_a_single_runs_layout(tmp_path):
    cfgs = [_cfg(tmp_path, "rmsprop", 1), _cfg(tmp_path, "adam", 1)]
    summaries = run_population(cfgs)
    single = run(_cfg(tmp_path / "single", "rmsprop", 1, "--checkpoint-every", "0"))
    single_dir = tmp_path / "single" / "rmsprop" / "seed-1"
    for cfg, summary in zip(cfgs, summaries, strict=True):
        run_dir = tmp_path / cfg.run.logdir.split("/")[-1] / "seed-1"
        assert json.loads((run_dir / "config.json").read_text()) == json.loads(
            json.dumps(cfg.to_dict())
        )
        assert json.loads((run_dir / "summary.json").read_text()) == summary
        assert set(single) <= set(summary) and summary["total_steps"] == 4000
        assert summary["population"]["members"] == 2
        mine, theirs = EventAccumulator(str(run_dir)), EventAccumulator(str(single_dir))
        mine.Reload()
        theirs.Reload()
        tags = set(theirs.Tags()["scalars"]) - {SPS}
        if cfg.optim.name == "adam":  # Adam has no extra telemetry; same tags
            tags -= {t for t in tags if t.startswith(SQ_AVG)} - set(mine.Tags()["scalars"])
        assert tags <= set(mine.Tags()["scalars"])
        assert set(theirs.Tags()["histograms"]) == set(mine.Tags()["histograms"])
        assert mine.Tags()["tensors"]  # hparams and the config text
        state = torch.load(run_dir / MODEL_FILE)
        ActorCritic(4, 2).load_state_dict(state)


def test_members_must_share_everything_but_optimizer_and_seed(tmp_path):
    a = _cfg(tmp_path, "rmsprop", 0)
    with pytest.raises(PopulationError, match=r"differ in learn\.gamma"):
        check_members([a, _cfg(tmp_path, "adam", 1, "--gamma", "0.9")])
    with pytest.raises(PopulationError, match=r"differ in env\.normalize"):
        check_members([a, _cfg(tmp_path, "rmsprop", 1, "--normalize")])
    check_members([_cfg(tmp_path, "rmsprop", 0, "--normalize", "--capture-video")])


def test_a_member_whose_gradients_stay_non_finite_stops_the_others_finish(
    tmp_path, monkeypatch, capsys
):
    original = PopulationOptimizer.clip_grad_norm_

    def poisoned(self, max_norm):
        self.grad[1, 0] = float("nan")  # member 1 always has a NaN gradient
        return original(self, max_norm)

    monkeypatch.setattr(PopulationOptimizer, "clip_grad_norm_", poisoned)
    argv = [
        "--population",
        "3",
        "--total-steps",
        "2000",
        "--max-nonfinite",
        "5",
        "--log-every",
        "1",
    ]
    status = train.main([*argv, "--logdir", str(tmp_path), "--run-name", "p", "--quiet"])
    assert status == 1
    err = capsys.readouterr().err
    assert "member seed 2: stopped at step 200" in err and "diverged" in err
    summary = json.loads((tmp_path / "p" / "population.json").read_text())
    assert [("error" in s) for s in summary["summaries"]] == [False, True, False]
    assert not (tmp_path / "p" / "seed-2" / "summary.json").exists()
    assert (tmp_path / "p" / "seed-3" / "summary.json").exists()
    skipped = scalars(tmp_path / "p" / "seed-2", NONFINITE_SKIPPED)
    assert skipped[-1] == (200, 5.0)  # logged up to its last update, nothing after
    assert scalars(tmp_path / "p" / "seed-3", NONFINITE_SKIPPED)[-1] == (2000, 0.0)


def test_train_population_cli(tmp_path, capsys):
    argv = ["--population", "3", "--total-steps", "3000", "--seed", "4", "--eval-episodes", "3"]
    assert train.main([*argv, "--logdir", str(tmp_path), "--run-name", "pop"]) == 0
    out = capsys.readouterr()
    assert "done: 3 members x 3,000 steps" in out.out and "aggregate SPS" in out.out
    assert "population" in out.err and "steps per member" in out.err
    folder = tmp_path / "pop"
    names = sorted(p.name for p in folder.iterdir())
    assert names[1:] == ["population.json", "seed-4", "seed-5", "seed-6"]
    assert names[0].startswith("events.out.tfevents.")  # the HParams experiment of the members
    acc = EventAccumulator(str(folder))
    acc.Reload()
    infos = metadata.parse_experiment_plugin_data(
        acc.PluginTagToContent("hparams")[metadata.EXPERIMENT_TAG]
    ).hparam_infos
    assert {i.name for i in infos if i.differs} == {"optim.name", "run.seed"}
    data = json.loads((folder / "population.json").read_text())
    assert data["members"] == 3 and len(data["summaries"]) == 3
    assert data["summaries"][0]["eval_return_mean"] is not None
    for k in (4, 5, 6):
        assert json.loads((folder / f"seed-{k}" / "config.json").read_text())["run"]["seed"] == k


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--population", "-1"], "--population must be in [0, 10,000]"),
        (
            [
                "--population",
                "2",
                "--algo",
                "dqn",
                "--env",
                "PongNoFrameskip-v4",
                "--vectorization",
                "native",
            ],
            "frame replay",
        ),
        (["--population", "2", "--env", "CartPol-v1"], "CartPole-v1"),
        (["--population", "2", "--optimizer", "rmsprop", "--lr", "-1"], "lr"),
    ],
)
def test_bad_population_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, argv, needle):
    logdir = tmp_path / "runs"
    with pytest.raises(SystemExit) if "-1" in argv else _nothing() as exc:
        status = train.main([*argv, "--logdir", str(logdir), "--total-steps", "100"])
    status = exc.value.code if exc is not None else status
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error:") and needle in err and err.count("\n") == 1
    assert not logdir.exists()


class _nothing:  # noqa: N801 (a null context manager that yields None)
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_train_population_normalizes_each_member_with_its_own_statistics(tmp_path, capsys):
    argv = ["--population", "2", "--normalize", "--total-steps", "400", "--eval-episodes", "1"]
    assert train.main([*argv, "--logdir", str(tmp_path), "--run-name", "p", "--quiet"]) == 0
    stats = [torch.load(tmp_path / "p" / f"seed-{k}" / NORMALIZATION_FILE) for k in (1, 2)]
    assert not torch.equal(stats[0]["mean"], stats[1]["mean"])


def test_an_existing_population_folder_is_refused(tmp_path, capsys):
    (tmp_path / "pop").mkdir()
    argv = ["--population", "2", "--logdir", str(tmp_path), "--run-name", "pop"]
    assert train.main(argv) == 2
    assert "already exists" in capsys.readouterr().err


def test_compare_in_population_mode_gives_the_same_report_whatever_the_chunking(tmp_path, capfd):
    args = [
        *("--optimizers", "rmsprop,adam(lr=3e-3)", "--seeds", "2", "--total-steps", "3000"),
        *("--logdir", str(tmp_path), "--eval-episodes", "2"),
    ]
    assert compare.main([*args, "--name", "one", "--workers", "1"]) == 0
    out_one = capfd.readouterr().out
    assert "population mode" in out_one
    # Two populations through the real CLI: a fresh interpreter, so its workers are forked
    # (see compare.start_method), against the same runs trained in this process.
    two = [*args, "--name", "two", "--workers", "2", "--population"]
    cli = subprocess.run(
        [sys.executable, "-m", "rl_rmsprop.compare", *two], capture_output=True, text=True
    )
    assert cli.returncode == 0, cli.stderr
    out_two = cli.stdout
    assert "population 1/2" in out_two and "population 2/2" in out_two
    # the populations' env steps arrive as they train: 100% is shown before a run is reported
    for out in (out_one, out_two):
        full = out.index("100.0%  12,000/12,000 env steps")
        assert full < out.index("1/4 ") and "ETA n/a" not in out[out.index("1/4 ") :]
    assert results_table(out_one) == results_table(out_two)
    for name in ("one", "two"):
        study = tmp_path / f"compare-{name}"
        summary = json.loads((study / "summary.json").read_text())
        assert summary["mode"] == "population" and summary["aggregate_sps"] > 0
        assert [o["runs"] - o["failed"] for o in summary["optimizers"]] == [2, 2]
        for png in ("curves.png", "optim.png"):
            assert (study / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # re-running finds every run finished
    assert compare.main([*args, "--name", "one", "--workers", "1"]) == 0
    assert "skipping 4 finished run(s); 0 to run" in capfd.readouterr().out


def test_a_normalized_study_trains_as_populations_each_member_with_its_statistics(tmp_path, capsys):
    args = ["--env", "Acrobot-v1", "--normalize", "--optimizers", "rmsprop", "--seeds", "2"]
    args += ["--total-steps", "1000", "--logdir", str(tmp_path), "--eval-episodes", "1"]
    assert compare.main([*args, "--workers", "1", "--name", "n"]) == 0
    assert "population mode: runs batched in 1 process(es)" in capsys.readouterr().out
    study = tmp_path / "compare-n"
    assert json.loads((study / "summary.json").read_text())["mode"] == "population"
    stats = [torch.load(study / "rmsprop" / f"seed-{k}" / NORMALIZATION_FILE) for k in (0, 1)]
    assert stats[0]["count"] == stats[1]["count"] > 0  # each member saw its own 1,000 steps
    assert not torch.equal(stats[0]["mean"], stats[1]["mean"])
    assert compare.main([*args, "--workers", "1", "--name", "p", "--no-population"]) == 0
    assert "one run each (--no-population)" in capsys.readouterr().out


@pytest.mark.slow
def test_a_population_solves_cartpole_as_reliably_as_single_runs(tmp_path, capsys):
    """The default A2C config, seeds 1-5, 200k steps: population mode vs one process per run."""
    args = [
        *("--optimizers", "rmsprop", "--seeds", "1,2,3,4,5", "--total-steps", "200000"),
        *("--logdir", str(tmp_path), "--eval-episodes", "5", "--workers", "2"),
    ]
    assert compare.main([*args, "--name", "pop", "--population"]) == 0
    assert compare.main([*args, "--name", "proc", "--no-population"]) == 0
    capsys.readouterr()

    def solved(name):
        rows = json.loads((tmp_path / f"compare-{name}" / "summary.json").read_text())
        return rows["optimizers"][0]["solved"]

    assert solved("pop") >= solved("proc")
    assert solved("pop") >= 4


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_population_trains_on_cuda_like_on_the_cpu(tmp_path):
    cpu = [_cfg(tmp_path / "cpu", "rmsprop", 0), _cfg(tmp_path / "cpu", "adam", 1)]
    gpu = [
        dataclasses.replace(
            c,
            run=dataclasses.replace(
                c.run, device="cuda", logdir=str(tmp_path / "gpu" / c.optim.name)
            ),
        )
        for c in cpu
    ]
    out_cpu, out_gpu = run_population(cpu), run_population(gpu)
    for a, b in zip(out_cpu, out_gpu, strict=True):
        assert b["total_steps"] == a["total_steps"] and b["eval_return_mean"] is not None
        state = torch.load(f"{b['run_dir']}/{MODEL_FILE}", map_location="cpu")
        assert all(torch.isfinite(t).all() for t in state.values())


def test_a_population_trains_by_autograd_when_asked(tmp_path, capsys):
    argv = ["--population", "2", "--total-steps", "2000", "--engine", "autograd"]
    argv += ["--eval-episodes", "0", "--logdir", str(tmp_path), "--run-name", "g"]
    assert train.main(argv) == 0
    assert "autograd gradients" in capsys.readouterr().err
    losses = scalars(tmp_path / "g" / "seed-2", VALUE_LOSS)
    assert losses and all(math.isfinite(value) for _, value in losses)


def test_periodic_evaluation_and_a_population_of_one(tmp_path):
    argv = ["--population", "1", "--total-steps", "3000", "--eval-every", "1000"]
    assert (
        train.main([*argv, "--eval-episodes", "2", "--logdir", str(tmp_path), "--run-name", "p"])
        == 0
    )
    evals = scalars(tmp_path / "p" / "seed-1", EVAL_MEAN)
    assert [step for step, _ in evals] == [1000, 2000, 3000]
    summary = json.loads((tmp_path / "p" / "seed-1" / "summary.json").read_text())
    reached = [step for step, value in evals if value >= 475.0]
    assert summary["eval_solved_at_step"] == (reached[0] if reached else None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_population_on_cuda_without_a_gpu_is_refused(tmp_path, capsys):
    argv = ["--population", "2", "--device", "cuda", "--logdir", str(tmp_path / "runs")]
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.slow
def test_a_signal_checkpoints_a_population_and_resume_finishes_it(tmp_path, signum):
    argv = ["--population", "3", "--total-steps", "60000", "--logdir", str(tmp_path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rl_rmsprop.train", *argv, "--run-name", "p", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 60
    while not list((tmp_path / "p").glob("seed-*/events.out.*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # training
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert "checkpoint written" in err and f"--resume {tmp_path / 'p'}" in err
    assert "Traceback" not in err and (tmp_path / "p" / "checkpoint.pt").exists()
    assert not list((tmp_path / "p").glob("seed-*/summary.json"))
    assert train.main(["--resume", str(tmp_path / "p"), "--quiet"]) == 0
    data = json.loads((tmp_path / "p" / "population.json").read_text())
    assert [s["total_steps"] for s in data["summaries"]] == [60000] * 3
    assert not (tmp_path / "p" / "checkpoint.pt").exists()  # finished: nothing to resume
    assert train.main(["--resume", str(tmp_path / "p")]) == 2  # finished


def test_population_resume_refuses_other_options(tmp_path, capsys):
    argv = ["--population", "2", "--total-steps", "2000", "--logdir", str(tmp_path)]
    assert train.main([*argv, "--run-name", "p", "--quiet"]) == 0
    capsys.readouterr()
    assert train.main(["--resume", str(tmp_path / "p"), "--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "--lr cannot be changed" in err and err.count("\n") == 1


def test_eval_epsilon_randomises_only_the_evaluation(tmp_path):
    greedy = run_population([_cfg(tmp_path / "g", "rmsprop", 3, steps=20000)])[0]
    noisy = run_population(
        [_cfg(tmp_path / "n", "rmsprop", 3, "--eval-epsilon", "1.0", steps=20000)]
    )[0]
    assert noisy["episodic_return_mean100"] == greedy["episodic_return_mean100"]  # same training
    assert noisy["eval_return_mean"] < greedy["eval_return_mean"]  # random actions play worse


def test_an_interrupted_population_resumes_to_the_uninterrupted_result(tmp_path):
    def cfgs(root):
        extra = ("--checkpoint-every", "1000", "--log-every", "5")
        return [
            _cfg(root, "rmsprop", 0, *extra, steps=6000),
            _cfg(root, "adam", 1, *extra, steps=6000),
        ]

    whole = run_population(cfgs(tmp_path / "whole"))
    ckpt = tmp_path / "cut" / "population.pt"
    with pytest.raises(Interrupted) as stop:
        run_population(cfgs(tmp_path / "cut"), checkpoint=ckpt, stop=StopAfter(80))
    assert stop.value.step == 81 * 40 and ckpt.exists()  # after the 81st update
    resumed = run_population(cfgs(tmp_path / "cut"), checkpoint=ckpt)
    for a, b, cfg in zip(whole, resumed, cfgs(tmp_path), strict=True):
        for key in ("total_steps", "updates", "episodic_return_mean100", "eval_return_mean"):
            assert a[key] == b[key], key
        name = f"{cfg.optim.name.replace(':', '-')}/seed-{cfg.run.seed}"
        dir_a, dir_b = tmp_path / "whole" / name, tmp_path / "cut" / name
        model_a, model_b = torch.load(dir_a / MODEL_FILE), torch.load(dir_b / MODEL_FILE)
        assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)
        assert len(list(dir_b.glob("events.out.*"))) == 2
        for tag in (EPISODIC_RETURN, VALUE_LOSS):
            assert scalars(dir_a, tag) == scalars(dir_b, tag)  # no doubled points
    other = [_cfg(tmp_path / "cut", "rmsprop", 5, steps=6000)]
    with pytest.raises(UserError, match="another population"):
        run_population(other, checkpoint=ckpt)


def test_an_interrupted_compare_population_resumes_from_its_checkpoint(
    tmp_path, monkeypatch, capsys
):
    args = [
        *("--optimizers", "rmsprop,adam", "--seeds", "2", "--total-steps", "6000"),
        *("--checkpoint-every", "1000", "--logdir", str(tmp_path), "--workers", "1"),
    ]
    assert compare.main([*args, "--name", "whole"]) == 0
    whole = capsys.readouterr().out

    class StopLater(StopAfter):
        def __init__(self) -> None:
            super().__init__(60)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    with monkeypatch.context() as patch:
        patch.setattr(study_runs, "StopSignals", StopLater)  # where _train_chunk finds it
        assert compare.main([*args, "--name", "cut"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert len(list((tmp_path / "compare-cut" / "populations").glob("*.pt"))) == 1
    assert compare.main([*args, "--name", "cut"]) == 0
    resumed = capsys.readouterr().out
    assert "; resumed at step 2,440" in resumed  # from the checkpoint, not from scratch
    assert results_table(whole) == results_table(resumed)
    assert not list((tmp_path / "compare-cut" / "populations").glob("*.pt"))  # finished


def test_a_population_draws_a_live_line_on_a_terminal_and_plain_lines_elsewhere(tmp_path):
    def loud(cfg):
        return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, quiet=False))

    terminal = FakeTerminal()
    run_population([loud(_cfg(tmp_path / "t", "rmsprop", k, steps=2000)) for k in (1, 2)], terminal)
    text = terminal.getvalue()
    assert "\r[####################]      2,000/2,000 steps per member (100.0%)" in text
    assert text.endswith("\n")  # the line is ended before anything else is printed
    plain = io.StringIO()
    run_population([loud(_cfg(tmp_path / "p", "rmsprop", k, steps=2000)) for k in (1, 2)], plain)
    lines = [ln for ln in plain.getvalue().splitlines() if "aggregate SPS" in ln]
    assert "\r" not in plain.getvalue()
    assert 5 <= len(lines) <= 11
    assert lines[-1].startswith("     2,000/2,000 steps per member (100.0%)")
