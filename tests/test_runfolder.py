"""Run and study folders: names, what --force may delete, the lock, stale temp files."""

from __future__ import annotations

import json
import os

import pytest
from conftest import assert_one_line, cli, start_cli, wait_for

from rl_rmsprop import compare, train
from rl_rmsprop.config import name_problem
from rl_rmsprop.run.errors import UserError
from rl_rmsprop.run.folders import (
    FolderLock,
    remove_stale_temp_files,
    replace_run_folder,
    run_folder_problem,
)

SHORT = ["--total-steps", "400", "--eval-episodes", "0", "--quiet"]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "is empty"),
        (".", "is not a folder name"),
        ("..", "is not a folder name"),
        ("a/b", "path separator"),
        ("/etc", "path separator"),
        ("../outside", "path separator"),
        ("a\\b", "path separator"),
        ("tab\there", "control character"),
        ("nul\x00", "control character"),
        ("é" * 101, "longer than 200 bytes"),
    ],
)
def test_a_name_that_is_not_one_folder_name_is_refused(name, problem):
    assert problem in name_problem(name)


@pytest.mark.parametrize("name", ["run-1", "a2c__rmsprop__1", "ünïcødé", ".hidden", "x" * 200])
def test_one_folder_name_is_accepted(name):
    assert name_problem(name) is None


@pytest.mark.parametrize("name", [".", "..", "../outside", "/tmp/abs", "a/b", ""])
def test_train_refuses_a_bad_run_name_and_touches_nothing(tmp_path, capsys, name):
    logdir = tmp_path / "runs"
    (logdir / "other").mkdir(parents=True)
    (logdir / "other" / "keep.txt").write_text("mine")
    (tmp_path / "outside").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        train.main([*SHORT, "--logdir", str(logdir), "--run-name", name, "--force"])
    assert exit_info.value.code == 2
    assert_one_line(capsys.readouterr().err, "--run-name")
    assert (logdir / "other" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "runs"]
    assert list((tmp_path / "outside").iterdir()) == []


@pytest.mark.parametrize("name", ["../x", "a/b", "", "..", "bad\nname"])
def test_compare_refuses_a_bad_study_name_and_writes_nothing(tmp_path, capsys, name):
    logdir = tmp_path / "runs"
    argv = ["--seeds", "1", "--optimizers", "rmsprop", *SHORT, "--logdir", str(logdir)]
    assert compare.main([*argv, "--name", name]) == 2
    assert_one_line(capsys.readouterr().err, "--name")
    assert list(tmp_path.iterdir()) == []


def test_compare_refuses_a_folder_of_the_users_under_its_study_name(tmp_path, capsys):
    mine = tmp_path / "compare-x"
    mine.mkdir()
    (mine / "thesis.tex").write_text("do not touch")
    argv = ["--seeds", "1", "--optimizers", "rmsprop", *SHORT, "--logdir", str(tmp_path)]
    assert compare.main([*argv, "--name", "x"]) == 2
    assert_one_line(capsys.readouterr().err, "is not a study", "another --name")
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]


def test_force_replaces_our_run_and_says_so(tmp_path, capsys):
    argv = [*SHORT, "--logdir", str(tmp_path), "--run-name", "r"]
    assert train.main(argv) == 0
    assert train.main([*argv, "--force"]) == 0
    err = capsys.readouterr().err
    assert f"--force: replaced the run folder {tmp_path / 'r'}" in err
    assert (tmp_path / "r" / "summary.json").exists()


@pytest.mark.parametrize(
    ("setup", "problem"),
    [
        ("user-file", "holds 'notes.txt', which no run writes"),
        ("no-config", "holds no config.json"),
        ("foreign-config", "holds a config.json that is not ours"),
        ("symlink", "is a symbolic link"),
        ("user-subfolder", "holds 'data', which no run writes"),
    ],
)
def test_force_refuses_a_folder_that_is_not_one_of_our_runs(tmp_path, capsys, setup, problem):
    logdir = tmp_path / "runs"
    argv = [*SHORT, "--logdir", str(logdir), "--run-name", "r"]
    assert train.main(argv) == 0
    run_dir, elsewhere = logdir / "r", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("precious")
    if setup == "user-file":
        (run_dir / "notes.txt").write_text("my notes")
    elif setup == "no-config":
        (run_dir / "config.json").unlink()
    elif setup == "foreign-config":
        (run_dir / "config.json").write_text(json.dumps({"model": "resnet"}))
    elif setup == "symlink":
        os.rename(run_dir, tmp_path / "moved")
        run_dir.symlink_to(elsewhere)
    else:
        (run_dir / "data").mkdir()
    before = sorted(p.name for p in run_dir.iterdir())
    capsys.readouterr()
    assert train.main([*argv, "--force"]) == 2
    assert_one_line(capsys.readouterr().err, "--force replaces only a run folder of ours", problem)
    assert sorted(p.name for p in run_dir.iterdir()) == before
    assert (elsewhere / "precious.txt").read_text() == "precious"


def test_a_population_folder_is_ours_with_its_members(tmp_path):
    argv = [*SHORT, "--logdir", str(tmp_path), "--run-name", "pop", "--population", "2"]
    assert train.main(argv) == 0
    assert run_folder_problem(tmp_path / "pop") is None
    (tmp_path / "pop" / "seed-1" / "mine.csv").write_text("1,2")
    assert "seed-1, which holds 'mine.csv'" in run_folder_problem(tmp_path / "pop")
    with pytest.raises(UserError):
        replace_run_folder(tmp_path / "pop")
    assert (tmp_path / "pop" / "seed-1" / "mine.csv").exists()


def test_the_lock_admits_one_holder_and_is_gone_after_release(tmp_path):
    busy = f"in use by another process \\(pid {os.getpid()}\\)"
    with FolderLock(tmp_path), pytest.raises(UserError, match=busy):
        FolderLock(tmp_path).acquire()
    assert not (tmp_path / ".lock").exists()
    FolderLock(tmp_path).acquire().release()


@pytest.mark.slow
def test_a_resume_of_a_run_that_is_still_training_is_refused(tmp_path):
    run_dir = tmp_path / "r"
    argv = ["--total-steps", "10000000", "--checkpoint-every", "2000", "--quiet"]
    proc = start_cli("train", [*argv, "--logdir", str(tmp_path), "--run-name", "r"])
    try:
        wait_for(lambda: any((run_dir / "checkpoints").glob("step-*.pt")), what="a checkpoint")
        second = cli("train", ["--resume", str(run_dir)])
        assert second.returncode == 2
        assert_one_line(second.stderr, f"{run_dir} is in use by another process (pid {proc.pid})")
    finally:
        proc.terminate()
        proc.communicate(timeout=120)
    assert proc.returncode == 143  # SIGTERM: stopped with a checkpoint
    resumed = cli("train", ["--resume", str(run_dir), "--total-steps", "4000"])
    assert resumed.returncode == 0, resumed.stderr


def test_stale_temp_files_of_an_interrupted_write_are_removed_on_resume(tmp_path, capsys):
    argv = [*SHORT, "--logdir", str(tmp_path), "--run-name", "r", "--checkpoint-every", "200"]
    assert train.main(argv) == 0
    run_dir = tmp_path / "r"
    stale = [run_dir / ".checkpoint.pt.k2j4h.tmp", run_dir / "checkpoints" / ".step-1.pt.x.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 100_000)
    assert train.main(["--resume", str(run_dir), "--total-steps", "800"]) == 0
    assert not any(p.exists() for p in stale)
    assert run_folder_problem(run_dir) is None


def test_only_our_temp_files_are_removed(tmp_path):
    for name in (".checkpoint.pt.a.tmp", "keep.tmp", ".keep", "notes.txt"):
        (tmp_path / name).write_text("x")
    assert remove_stale_temp_files(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep", "keep.tmp", "notes.txt"]
