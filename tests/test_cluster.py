"""compare --backend ray on a local Ray instance, and on a two-node cluster on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray  # the dev extra installs it
from conftest import alive, assert_one_line, cli, results_table, start_cli, wait_for

from rl_rmsprop import compare
from rl_rmsprop.cluster import SHIP_ROOT, connect


@pytest.fixture(scope="module")
def local_ray():
    connect(ray, None)  # the local instance compare --backend ray starts
    yield ray
    ray.shutdown()


def test_a_local_instance_without_its_token_is_refused_before_anything_is_written(tmp_path):
    # Ray binds every interface; with RAY_AUTH_MODE=disabled anyone on the network could run
    # code on the local instance (a fresh interpreter: this one has a Ray instance already).
    logdir = tmp_path / "runs"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    done = cli("compare", [*STUDY, "--backend", "ray", "--logdir", str(logdir)], env=env)
    assert done.returncode == 2
    assert_one_line(done.stderr, "listens on every network interface", "RAY_AUTH_MODE=disabled")
    assert not logdir.exists()


STUDY = ["--optimizers", "rmsprop,adam", "--seeds", "2", "--eval-episodes", "2"]


def _files(run_dir: Path) -> list[str]:
    """The run folder's entries, event files by kind (their names hold a time and a pid)."""
    kind = "events.out.tfevents"
    return sorted(kind if p.name.startswith(kind) else p.name for p in run_dir.iterdir())


def _runs(study: Path) -> dict[str, dict]:
    return {
        str(p.parent.relative_to(study)): json.loads(p.read_text())
        for p in sorted(study.glob("*/seed-*/summary.json"))
    }


@pytest.mark.parametrize("mode", ["--no-population", "--population"])
@pytest.mark.slow
def test_a_study_on_ray_has_the_local_backends_outputs(tmp_path, local_ray, capfd, mode):
    args = [*STUDY, "--total-steps", "3000", "--logdir", str(tmp_path), mode]
    assert compare.main([*args, "--name", "local"]) == 0
    local = capfd.readouterr().out
    assert compare.main([*args, "--name", "ray", "--backend", "ray"]) == 0
    on_ray = capfd.readouterr().out
    assert "Ray" in on_ray.splitlines()[0] and "local Ray instance" in on_ray.splitlines()[0]
    assert results_table(on_ray) == results_table(local)
    runs_local, runs_ray = _runs(tmp_path / "compare-local"), _runs(tmp_path / "compare-ray")
    assert sorted(runs_local) == sorted(runs_ray) and len(runs_ray) == 4
    for name, summary in runs_ray.items():
        for key in ("total_steps", "episodic_return_mean100", "eval_return_mean", "updates"):
            assert summary[key] == runs_local[name][key]
        assert _files(tmp_path / "compare-local" / name) == _files(tmp_path / "compare-ray" / name)
    study = json.loads((tmp_path / "compare-ray" / "summary.json").read_text())
    assert study["backend"] == "ray"
    for png in ("curves.png", "optim.png"):
        assert (tmp_path / "compare-ray" / png).read_bytes()[:4] == b"\x89PNG"


def test_runs_are_shipped_back_when_nodes_share_no_file_system(tmp_path, local_ray, capfd):
    args = [*STUDY, "--total-steps", "2000", "--logdir", str(tmp_path), "--no-population"]
    assert compare.main([*args, "--name", "ship", "--backend", "ray", "--ray-ship-runs"]) == 0
    capfd.readouterr()
    runs = _runs(tmp_path / "compare-ship")
    assert len(runs) == 4
    for name, summary in runs.items():
        assert summary["run_dir"].startswith(str(SHIP_ROOT))  # written on the node's disk
        run_dir = tmp_path / "compare-ship" / name
        assert (run_dir / "config.json").exists() and list(run_dir.glob("events.out.*"))
    assert not (SHIP_ROOT / "compare-ship").exists() or not any(
        (SHIP_ROOT / "compare-ship").rglob("summary.json")
    )


def _kill_the_task_after_its_first_checkpoint(run_dir: Path, killed: list[int]) -> None:
    _kill_when(lambda: bool(list((run_dir / "checkpoints").glob("step-*.pt"))), killed)


@pytest.mark.parametrize("retries", [2, 0])
@pytest.mark.slow
def test_a_killed_worker_is_retried_and_the_run_resumes_from_its_checkpoint(
    tmp_path, local_ray, capfd, retries
):
    name = f"kill{retries}"
    args = [
        *("--optimizers", "rmsprop", "--seeds", "1", "--total-steps", "40000"),
        *("--checkpoint-every", "4000", "--eval-episodes", "1", "--no-population"),
        *("--logdir", str(tmp_path)),
    ]
    run_dir = tmp_path / f"compare-{name}" / "rmsprop" / "seed-0"
    killed: list[int] = []
    killer = threading.Thread(
        target=_kill_the_task_after_its_first_checkpoint, args=(run_dir, killed)
    )
    killer.start()
    status = compare.main(
        [*args, "--name", name, "--backend", "ray", "--ray-retries", str(retries)]
    )
    killer.join()
    out = capfd.readouterr().out
    assert killed, "the run finished before it could be killed"
    study = json.loads((tmp_path / f"compare-{name}" / "summary.json").read_text())
    if retries == 0:  # it keeps failing: reported, not dropped
        assert status == 1 and study["optimizers"][0]["failed"] == 1
        assert "failed: rmsprop seed 0: failed after 1 attempt(s)" in out
        assert list((run_dir / "checkpoints").glob("step-*.pt"))  # resumable later
        return
    assert status == 0 and study["optimizers"][0]["failed"] == 0
    # resumed (a second event file, opened at the checkpoint's step), not started again
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert compare.main([*args, "--name", "uninterrupted"]) == 0
    capfd.readouterr()
    alone = tmp_path / "compare-uninterrupted" / "rmsprop" / "seed-0" / "summary.json"
    uninterrupted = json.loads(alone.read_text())
    for key in ("total_steps", "updates", "episodic_return_mean100", "solved_at_step"):
        assert resumed[key] == uninterrupted[key]


def test_without_ray_the_backend_gives_the_install_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    logdir = tmp_path / "runs"
    status = compare.main([*STUDY, "--backend", "ray", "--logdir", str(logdir)])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("error: --backend ray needs Ray") and 'pip install -e ".[ray]"' in err
    assert not logdir.exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--ray-address", "auto"], "--ray-address needs --backend ray"),
        (["--ray-ship-runs"], "--ray-ship-runs needs --backend ray"),
        (["--ray-retries", "5"], "--ray-retries needs --backend ray"),
        (["--backend", "ray", "--ray-retries", "-1"], "--ray-retries must be >= 0"),
    ],
)
def test_ray_options_need_the_ray_backend(tmp_path, capsys, argv, needle):
    status = compare.main([*STUDY, *argv, "--logdir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert status == 2 and needle in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_an_unreachable_cluster_is_one_line_exit_2_and_writes_nothing(tmp_path):
    # a fresh interpreter: this one has the local Ray instance of the other tests
    logdir = tmp_path / "runs"
    argv = [*STUDY, "--backend", "ray", "--ray-address", "127.0.0.1:1", "--logdir", str(logdir)]
    done = subprocess.run(
        [sys.executable, "-m", "rl_rmsprop.compare", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: cannot reach the Ray cluster at 127.0.0.1:1")
    assert not logdir.exists()


def _kill_when(condition, killed: list[int]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if condition():
            for pid in os.listdir("/proc"):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                except (OSError, ValueError):
                    continue
                if cmd.startswith(b"ray::ray_task"):
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
                    return
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_population_task_resumes_from_the_populations_checkpoint(
    tmp_path, local_ray, capfd
):
    args = [
        *("--optimizers", "rmsprop,adam", "--seeds", "1", "--total-steps", "60000"),
        *("--checkpoint-every", "5000", "--eval-episodes", "1", "--population"),
        *("--workers", "1", "--logdir", str(tmp_path)),
    ]
    populations = tmp_path / "compare-ray" / "populations"
    killed: list[int] = []
    killer = threading.Thread(
        target=_kill_when, args=(lambda: any(populations.glob("*.pt")), killed)
    )
    killer.start()
    status = compare.main([*args, "--name", "ray", "--backend", "ray"])
    killer.join()
    on_ray = capfd.readouterr().out
    assert killed and status == 0
    assert not any(populations.glob("*.pt"))  # removed once the population finished
    for run_dir in (tmp_path / "compare-ray").glob("*/seed-0"):
        assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2  # resumed, not restarted
    assert compare.main([*args, "--name", "local"]) == 0
    assert results_table(capfd.readouterr().out) == results_table(on_ray)


@pytest.mark.slow
def test_a_two_node_cluster_runs_the_study_on_its_workers_and_survives_losing_one(tmp_path):
    """Runs execute on the worker nodes, a killed node's run resumes on the other, and every
    run folder comes back with --ray-ship-runs (see tests/ray_two_nodes.py)."""
    script = Path(__file__).with_name("ray_two_nodes.py")
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=script.parent.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    out = result["out"]
    assert result["status"] == 0, out
    assert result["killed"] == [result["workers"][0]], "the node was not killed mid-study"
    finished = [line for line in out.splitlines() if "rmsprop seed" in line]
    assert len(finished) == 2 and all("return" in line for line in finished), out
    nodes = [line.rsplit("on Ray node ", 1)[1].split()[0] for line in finished]
    # the head has no CPUs and the first worker was killed: both runs end on the second
    assert nodes == [result["workers"][1]] * 2, out
    study = tmp_path / "compare-two" / "rmsprop"
    resumed = []
    for run_dir in sorted(study.glob("seed-*")):  # shipped back: a whole run folder each
        assert (run_dir / "config.json").exists() and (run_dir / "summary.json").exists()
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["total_steps"] >= 60000
        resumed.append(len(list(run_dir.glob("events.out.tfevents.*"))) == 2)
    assert len(resumed) == 2 and any(resumed), "the killed node's run did not resume"


def _ray_tasks() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(
                b"ray::ray_task"
            ):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_killing_the_driver_of_a_local_instance_stops_its_runs(tmp_path):
    # a fresh interpreter with a Ray instance of its own; Ray ties that instance to its driver
    argv = [*STUDY, "--total-steps", "10000000", "--checkpoint-every", "2000", "--no-population"]
    proc = start_cli("compare", [*argv, "--backend", "ray", "--logdir", str(tmp_path)])
    wait_for(
        lambda: any(tmp_path.glob("compare-*/*/seed-*/checkpoints/step-*.pt")),
        timeout=180,
        what="a checkpoint",
    )
    tasks = _ray_tasks()
    assert tasks
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    wait_for(lambda: not any(alive(t) for t in tasks), timeout=60, what="the Ray tasks to exit")
