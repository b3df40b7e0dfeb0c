"""python -m rl_rmsprop.evaluate: a finished run's policy played again, and its bad input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from rl_rmsprop.evaluate import main as evaluate
from rl_rmsprop.train import main as train
from tests.conftest import assert_one_line

QUIET = ["--quiet", "--eval-every", "0", "--checkpoint-every", "0"]


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Finished runs: A2C and DQN on CartPole, normalized A2C on Acrobot, a population."""
    logdir = tmp_path_factory.mktemp("runs")
    base = [*QUIET, "--logdir", str(logdir)]
    assert train([*base, "--total-steps", "20000", "--run-name", "a2c"]) == 0
    dqn = ["--algo", "dqn", "--total-steps", "3000", "--learning-starts", "500"]
    assert train([*base, *dqn, "--run-name", "dqn", "--eval-episodes", "4"]) == 0
    norm = ["--env", "Acrobot-v1", "--normalize", "--total-steps", "4000"]
    assert train([*base, *norm, "--run-name", "norm", "--eval-episodes", "3"]) == 0
    pop = ["--population", "2", "--total-steps", "4000", "--seed", "5"]
    assert train([*base, *pop, "--run-name", "pop", "--eval-episodes", "4"]) == 0
    return logdir


@pytest.mark.parametrize("run", ["a2c", "dqn", "norm", "pop/seed-6"])
def test_a_finished_run_evaluates_to_its_summarys_figure(runs, run, capsys):
    folder = runs / run
    summary = json.loads((folder / "summary.json").read_text())
    before = _listing(folder)
    capsys.readouterr()
    assert evaluate([str(folder)]) == 0
    out = capsys.readouterr().out
    # the same env seeds, episodes and weights as the run's final evaluation: the same figure
    want = f"eval {summary['eval_return_mean']:.1f} +- {summary['eval_return_std']:.1f} over"
    assert out.startswith(want), (out, summary)
    assert _listing(folder) == before  # nothing written
    weights = torch.load(folder / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in weights.values())


def test_episodes_epsilon_and_seed_are_the_users(runs, capsys):
    assert evaluate([str(runs / "a2c"), "--episodes", "3", "--seed", "7", "--epsilon", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "over 3 episodes of CartPole-v1 (epsilon 0.5; env copies seeded 7 + 10000 + i)" in out


def test_video_writes_mp4s_beside_the_runs_own_and_nothing_else(runs, tmp_path, capsys):
    pytest.importorskip("moviepy", reason="--video needs moviepy (the video extra)")
    folder = tmp_path / "a2c"
    shutil.copytree(runs / "a2c", folder)
    before = _listing(folder)
    assert evaluate([str(folder), "--episodes", "2", "--video"]) == 0
    assert f"videos in {folder / 'videos'}" in capsys.readouterr().out
    new = sorted(set(_listing(folder)) - set(before))
    assert new[0] == "videos" and len(new) == 3, new
    assert all(n.startswith("videos/evaluate-") and n.endswith(".mp4") for n in new[1:])


def _broken(kind, runs, tmp_path):
    folder = tmp_path / "run"
    if kind == "missing":
        return folder
    if kind == "population":
        return runs / "pop"
    shutil.copytree(runs / "a2c", folder)
    if kind == "foreign":
        (folder / "config.json").write_text('{"name": "not ours"}')
    elif kind == "no-model":
        (folder / "model.pt").unlink()
    elif kind == "corrupt":
        (folder / "model.pt").write_bytes(b"\x80not a torch file")
    elif kind == "other-net":
        shutil.copy(runs / "dqn" / "model.pt", folder / "model.pt")
    return folder


@pytest.mark.parametrize(
    ("kind", "extra", "needles"),
    [
        ("missing", [], ["is not a folder", "finished run"]),
        ("population", [], ["is a population", "seed-5"]),
        ("foreign", [], ["config.json that is not ours"]),
        ("no-model", [], ["no model.pt", "--resume"]),
        ("corrupt", [], ["is not a weights file"]),
        ("other-net", [], ["does not fit the network"]),
        ("ok", ["--episodes", "0"], ["--episodes must be >= 1"]),
        ("ok", ["--epsilon", "2"], ["--epsilon must be in [0, 1]"]),
        ("ok", ["--device", "cuda"], ["no CUDA device"]),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    runs, tmp_path, kind, extra, needles, capsys
):
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("a GPU is here: --device cuda is valid")
    folder = _broken(kind, runs, tmp_path)
    before = _listing(tmp_path) + _listing(runs)
    capsys.readouterr()
    assert evaluate([str(folder), *extra]) == 2
    assert_one_line(capsys.readouterr().err, *needles)
    assert _listing(tmp_path) + _listing(runs) == before
