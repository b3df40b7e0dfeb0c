"""What ends a command: one line, exit 2 for bad input (nothing written), 1 for a failure during
training (a folder that --resume continues, or nothing)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
from pathlib import Path

import pytest
from conftest import assert_one_line, cli

from rl_rmsprop import train

SHORT = ["--total-steps", "800", "--eval-episodes", "1", "--quiet"]


@pytest.mark.parametrize(
    ("env", "algo", "shape"),
    [
        ("DictObs-v0", "a2c", [5]),  # Box(2) + one-hot of Discrete(3)
        ("TupleObs-v0", "a2c", [7]),  # one-hot of Discrete(4) + MultiBinary(3)
        ("DiscreteObs-v0", "a2c", [5]),  # one-hot
        ("DiscreteObs-v0", "dqn", [5]),
        ("ImagesHWC-v0", "a2c", [3, 40, 40]),  # channels moved first, for the CNN
        ("ImagesHWC-v0", "dqn", [3, 40, 40]),
    ],
)
def test_observation_spaces_that_can_be_supported_are(tmp_path, fake_envs, env, algo, shape):
    argv = [*SHORT, "--env", f"tests.fake_envs:{env}", "--algo", algo, "--logdir", str(tmp_path)]
    if algo == "dqn":
        argv += ["--learning-starts", "200", "--buffer-size", "1000", "--gradient-steps", "4"]
    assert train.main([*argv, "--run-name", "r"]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["total_steps"] >= 800 and summary["eval_return_mean"] is not None
    from envs import make_vector_env

    built = make_vector_env(f"tests.fake_envs:{env}", 2, 0)
    assert list(built.single_observation_space.shape) == shape
    built.close()


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ("SequenceObs-v0", "which the agents cannot take"),
        ("TinyImages-v0", "smaller than the MinAtar CNN's 3x3 convolution"),
    ],
)
def test_observation_spaces_that_cannot_are_one_line_and_nothing_written(
    tmp_path, capsys, fake_envs, env, needle
):
    argv = [*SHORT, "--env", f"tests.fake_envs:{env}", "--logdir", str(tmp_path / "runs")]
    assert train.main(argv) == 2
    assert_one_line(capsys.readouterr().err, needle)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--seed", "-1"], "--seed must be in [0, 4294967295]"),
        (["--seed", "4294967296"], "--seed must be in [0, 4294967295]"),
        (["--seed", "4294967295", "--population", "3"], "for every member"),
        (["--algo", "dqn", "--gradient-steps", "0"], "--gradient-steps must be >= 1"),
        (["--threads", "100000"], "--threads must be in [0,"),
        (["--lr", "inf"], "--lr must be a finite number > 0"),
        (["--lr", "nan"], "--lr must be a finite number > 0"),
        (["--lr", "0"], "--lr must be a finite number > 0"),
        (["--num-envs", "1000", "--total-steps", "20"], "less than one rollout"),
        (["--algo", "dqn", "--num-envs", "64", "--total-steps", "20"], "less than one step"),
        (["--population", "20000"], "--population must be in [0, 10,000]"),
    ],
)
def test_out_of_range_values_are_one_line_exit_2_and_nothing_written(
    tmp_path, capsys, argv, needle
):
    with pytest.raises(SystemExit) as exit_info:
        train.main([*SHORT, *argv, "--logdir", str(tmp_path / "runs")])
    assert exit_info.value.code == 2
    assert_one_line(capsys.readouterr().err, needle)
    assert not (tmp_path / "runs").exists()


def test_a_learning_rate_that_overflows_stops_with_a_true_line(tmp_path):
    argv = ["--lr", "1e30", "--total-steps", "20000", "--logdir", str(tmp_path), "--quiet"]
    done = cli("train", [*argv, "--run-name", "nockpt", "--checkpoint-every", "100000"])
    assert done.returncode == 1
    assert_one_line(done.stderr, "non-finite gradients", "no checkpoint was written")
    assert "Warning" not in done.stderr and (tmp_path / "nockpt" / "config.json").exists()
    done = cli("train", [*argv, "--run-name", "ckpt", "--checkpoint-every", "1000"])
    assert done.returncode == 1
    assert_one_line(done.stderr, "non-finite gradients", f"with --resume {tmp_path / 'ckpt'}")


def test_an_env_that_raises_in_step_ends_the_run_with_one_line(tmp_path, fake_envs):
    argv = [*SHORT, "--env", "tests.fake_envs:RaisesInStep-v0", "--logdir", str(tmp_path)]
    done = cli("train", [*argv, "--run-name", "early"])
    assert done.returncode == 1
    assert_one_line(
        done.stderr,
        "the environment raised RuntimeError in step (the simulator lost its licence server)",
        "nothing was kept",
    )
    assert not (tmp_path / "early").exists()
    done = cli("train", [*argv, "--run-name", "late", "--checkpoint-every", "200"])
    assert done.returncode == 1
    assert_one_line(done.stderr, "licence server", f"--resume {tmp_path / 'late'}")
    assert list((tmp_path / "late" / "checkpoints").glob("step-*.pt"))


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return apply


@pytest.mark.slow
def test_a_full_disk_stops_the_run_with_one_line_and_the_run_resumes(tmp_path):
    # Every file may grow to 200 kB: the checkpoints (~115 kB) fit, the event file outgrows it.
    argv = ["--total-steps", "400000", "--checkpoint-every", "5000", "--logdir", str(tmp_path)]
    argv += ["--run-name", "r", "--quiet", "--histogram-every", "50"]
    done = cli("train", argv, preexec_fn=_limit_file_size(200_000))
    assert done.returncode == 1
    assert_one_line(done.stderr, "cannot write", "File too large", f"--resume {tmp_path / 'r'}")
    resumed = cli("train", ["--resume", str(tmp_path / "r"), "--total-steps", "60000"])
    assert resumed.returncode == 0, resumed.stderr


def _make_read_only(folder: Path) -> None:
    """Make ``folder`` unwritable for this user: permissions, or immutable for root."""
    for path in [folder, *folder.rglob("*")]:
        if os.geteuid() != 0:
            path.chmod(0o555 if path.is_dir() else 0o444)
            continue
        # root ignores permissions but not the immutable attribute, where the file system has it
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            _make_writable(folder)
            pytest.skip(f"root, and no immutable attribute here ({done.stderr.strip()})")


def _make_writable(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        else:
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_a_read_only_run_folder_is_refused_at_resume_and_left_as_it_was(tmp_path):
    argv = [*SHORT, "--logdir", str(tmp_path), "--run-name", "r", "--checkpoint-every", "400"]
    assert cli("train", argv).returncode == 0
    run_dir = tmp_path / "r"
    before = sorted((str(p), p.stat().st_mtime_ns) for p in run_dir.rglob("*"))
    _make_read_only(run_dir)
    try:
        done = cli("train", ["--resume", str(run_dir), "--total-steps", "1600"])
    finally:
        _make_writable(run_dir)
    assert done.returncode == 2
    assert_one_line(done.stderr, f"cannot write in {run_dir}", "writable")
    assert sorted((str(p), p.stat().st_mtime_ns) for p in run_dir.rglob("*")) == before


def test_a_resume_under_a_changed_config_json_is_refused(tmp_path, capsys):
    assert train.main([*SHORT, "--logdir", str(tmp_path), "--run-name", "r"]) == 0
    config = tmp_path / "r" / "config.json"
    data = json.loads(config.read_text())
    data["optim"]["name"] = "adam"
    config.write_text(json.dumps(data))
    capsys.readouterr()
    assert train.main(["--resume", str(tmp_path / "r"), "--total-steps", "1600"]) == 2
    assert_one_line(
        capsys.readouterr().err,
        "config.json was changed since checkpoint checkpoint.pt was written",
        "name 'rmsprop' in the checkpoint vs 'adam' in config.json",
    )


def test_an_env_that_raises_in_a_population_ends_it_with_one_line(tmp_path, fake_envs):
    argv = [*SHORT, "--env", "tests.fake_envs:RaisesInStep-v0", "--population", "2"]
    done = cli("train", [*argv, "--total-steps", "3000", "--logdir", str(tmp_path)])
    assert done.returncode == 1
    err = done.stderr.splitlines()[-1]
    assert err.startswith("error: the environment raised RuntimeError in step")
    assert "Traceback" not in done.stderr and err.endswith("nothing was kept")
    assert list(tmp_path.iterdir()) == []
