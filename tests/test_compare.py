import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import alive, children, cli, ctrl_c, start_cli, wait_for
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

from rl_rmsprop.compare import (
    main,
)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--optimizers", "rmsporp"], "unknown optimizer spec 'rmsporp'"),
        (["--optimizers", "adam(lr=-1)"], "adam(lr=-1)"),
        (["--optimizers", "adam(lr=1"], "unbalanced"),
        (["--seeds", "two"], "--seeds 'two'"),
        (["--seed", "3"], "use --seeds"),
        (["--optimizer", "adam"], "use --optimizers"),
        (["--env", "CartPol-v1"], "CartPole-v1"),
        (["--workers", "0"], "--workers must be >= 1"),
        (["--seeds", "4294967296,1"], "each in [0, 4294967295]"),
        (["--seeds", "100000000"], "at most 10,000 seeds"),
        (["--optimizers", "rmsprop,adam,sgd,adagrad", "--seeds", "2600"], "over the 10,000 runs"),
        (["--optimizers", "rmsprop,rmsprop(lr=7e-4)"], "are the same optimizer under --algo a2c"),
        (["--optimizers", "adam,adam(beta1=0.9,alpha=0.999)"], "are the same optimizer"),
        pytest.param(
            ["--device", "cuda"],
            "no CUDA device is available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present"),
        ),
        pytest.param(
            ["--algo", "dqn", "--env", "PongNoFrameskip-v4", "--vectorization", "native"],
            "frame replay",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("ale_py") is None, reason="needs the atari extra"
            ),
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, argv, needle):
    assert main([*argv, "--logdir", str(tmp_path / "runs"), "--total-steps", "100"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_bad_train_option_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--total-steps", "-5", "--logdir", str(tmp_path)])
    assert exc.value.code == 2
    assert "--total-steps must be > 0" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_small_study_end_to_end_and_rerun_skips_finished_pairs(tmp_path, capsys):
    argv = [
        *("--optimizers", "rmsprop,adam(lr=1e-3)", "--seeds", "2", "--workers", "2"),
        *("--logdir", str(tmp_path), "--name", "t", "--total-steps", "2000"),
        *("--eval-episodes", "1", "--log-every", "5"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    study = tmp_path / "compare-t"
    assert "4/4" in out and "ETA" in out
    assert "rmsprop" in out and "adam(lr=0.001)" in out
    assert "significance: too few seeds to tell" in out  # 2 seeds: no claim either way
    for folder in ("rmsprop", "adam__lr=0.001"):
        for seed in (0, 1):
            run = study / folder / f"seed-{seed}"
            summary = json.loads((run / "summary.json").read_text())
            assert summary["total_steps"] >= 2000
            config = json.loads((run / "config.json").read_text())
            assert config["run"]["seed"] == seed
            assert config["optim"]["name"] == folder.split("__")[0]
    config = json.loads((study / "adam__lr=0.001" / "seed-0" / "config.json").read_text())
    assert config["optim"]["lr"] == 1e-3

    report = json.loads((study / "summary.json").read_text())
    rows = {r["label"]: r for r in report["optimizers"]}
    assert set(rows) == {"rmsprop", "adam(lr=0.001)"}
    for row in rows.values():
        assert row["runs"] == 2 and row["failed"] == 0
        assert row["final_ci_low"] <= row["final_iqm"] <= row["final_ci_high"]
        assert 0 < row["auc"] < 1 and row["sps"] > 0
    csv_lines = (study / "summary.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith("label,")
    for png in ("curves.png", "optim.png"):
        data = (study / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000

    # The TensorBoard report: each optimizer's IQM run ends at the table's final IQM.
    for label, folder in (("rmsprop", "rmsprop"), ("adam(lr=0.001)", "adam__lr=0.001")):
        acc = EventAccumulator(str(study / "iqm" / folder), size_guidance={"scalars": 0})
        acc.Reload()
        last = acc.Scalars("compare-t/return")[-1]
        assert last.step == 2000
        assert last.value == pytest.approx(rows[label]["final_iqm"], rel=1e-6)
        low, high = acc.Scalars("compare-t/return/lower"), acc.Scalars("compare-t/return/upper")
        assert len(low) == len(high) == len(acc.Scalars("compare-t/return"))
    acc = EventAccumulator(str(study))
    acc.Reload()
    (event,) = acc.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    series = [c.margin.series[0] for cat in layout.category for c in cat.chart]
    # written last to first, as TensorBoard draws them: the return chart is shown first
    assert series[-1].value == "compare-t/return" and len(series) == 4
    assert all(m.lower == m.value + "/lower" and m.upper == m.value + "/upper" for m in series)
    for run in study.glob("*/seed-*"):  # the study's experiment is the only one
        acc = EventAccumulator(str(run))
        acc.Reload()
        tags = set(acc.PluginTagToContent("hparams"))
        assert tags == {"_hparams_/session_start_info", "_hparams_/session_end_info"}

    # Re-running skips the finished pairs; a pair whose run did not finish is redone.
    unfinished = study / "rmsprop" / "seed-1"
    (unfinished / "summary.json").unlink()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "skipping 3 finished run(s); 1 to run" in out and "1/1 rmsprop seed 1" in out
    assert (unfinished / "summary.json").exists()

    # The same name with other train options is refused.
    assert main([*argv, "--gamma", "0.9"]) == 2
    assert "other train options" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--optimizers", "adam(lr=1e-3"], "unbalanced '('"),
        (["--optimizers", "rmsprop", "--seed", "1"], "use --seeds"),
    ],
)
def test_bad_specs_through_the_real_cli(tmp_path, argv, needle):

    proc = subprocess.run(
        [sys.executable, "-m", "rl_rmsprop.compare", *argv, "--logdir", "runs"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error:") and proc.stderr.count("\n") == 1
    assert needle in proc.stderr
    assert list(tmp_path.iterdir()) == []


STUDY = ["--optimizers", "rmsprop,adam", "--seeds", "2", "--total-steps", "30000"]


STUDY += ["--checkpoint-every", "2000", "--eval-episodes", "1", "--workers", "2"]


def _checkpointed(study):
    return [p.parent.parent for p in study.glob("*/seed-*/checkpoints/step-*.pt")]


@pytest.mark.parametrize("mode", ["--no-population", "--population"])
@pytest.mark.slow
def test_ctrl_c_stops_a_study_in_seconds_keeps_checkpoints_and_the_same_command_resumes(
    tmp_path, mode
):
    argv = [*STUDY, mode, "--logdir", str(tmp_path), "--name", "s"]
    study = tmp_path / "compare-s"
    proc = start_cli("compare", argv)
    if mode == "--no-population":
        wait_for(lambda: len(set(_checkpointed(study))) >= 2, what="two runs' checkpoints")
    else:
        wait_for(lambda: any((study / "populations").glob("*.pt")), what="a population checkpoint")
    ctrl_c(proc)
    start = time.monotonic()
    _, err = proc.communicate(timeout=120)
    assert time.monotonic() - start < 30
    assert proc.returncode == 130, err
    assert err.count("\n") == 1 and err.startswith("interrupted: ") and "Traceback" not in err
    assert "--name s to continue" in err
    assert not children(proc.pid)
    again = cli("compare", argv)
    assert again.returncode == 0, again.stderr
    runs = sorted(study.glob("*/seed-*/summary.json"))
    assert len(runs) == 4
    resumed = [r for r in runs if len(list(r.parent.glob("events.out.tfevents.*"))) == 2]
    assert resumed, "no run continued from its checkpoint"
    for summary in runs:
        assert json.loads(summary.read_text())["total_steps"] >= 30000


@pytest.mark.parametrize("mode", ["--no-population", "--population"])
def test_a_killed_study_leaves_no_worker_behind(tmp_path, mode):
    argv = [*STUDY, mode, "--total-steps", "10000000", "--logdir", str(tmp_path), "--name", "k"]
    proc = start_cli("compare", argv)
    study = tmp_path / "compare-k"
    if mode == "--no-population":
        wait_for(lambda: len(set(_checkpointed(study))) >= 2, what="two runs' checkpoints")
    else:
        wait_for(lambda: any((study / "populations").glob("*.pt")), what="a population checkpoint")
    workers = children(proc.pid)
    assert len(workers) >= 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    wait_for(lambda: not any(alive(w) for w in workers), timeout=20, what="the workers to exit")


def test_sigterm_stops_a_study_as_ctrl_c_does(tmp_path):
    argv = [*STUDY, "--no-population", "--logdir", str(tmp_path), "--name", "t"]
    proc = start_cli("compare", argv)
    wait_for(lambda: len(set(_checkpointed(tmp_path / "compare-t"))) >= 2, what="checkpoints")
    proc.terminate()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.startswith("interrupted: ") and err.count("\n") == 1
