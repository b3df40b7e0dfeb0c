import errno
import hashlib
import io
import json
import os
import random
import struct
from collections import deque

import numpy as np
import pytest
import torch
from conftest import assert_one_line, cli

from agents.rollout import Episode
from rl_rmsprop.checkpoint import (
    MAGIC,
    CheckpointError,
    UnsafeCheckpoint,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    resume_candidates,
    save_checkpoint,
    write_json_atomic,
)


def test_save_and_load(tmp_path):
    save_checkpoint({"w": torch.arange(3), "n": 7}, tmp_path / "c.pt")
    state = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(state["w"], torch.arange(3)) and state["n"] == 7
    write_json_atomic({"a": 1}, tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": 1}


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"v": 1}, path)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        save_checkpoint({"v": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert load_checkpoint(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_what_is_not_plain_data_is_refused_before_anything_is_written(tmp_path):
    class Thing:
        pass

    with pytest.raises(TypeError, match="Thing cannot go into a checkpoint"):
        save_checkpoint({"v": [1, {"deep": Thing()}]}, tmp_path / "c.pt")
    assert list(tmp_path.iterdir()) == []


def test_truncated_at_random_offsets_or_flipped_bytes_is_refused(tmp_path):
    good = tmp_path / "good.pt"
    weights = torch.randn(1000)
    save_checkpoint({"w": weights}, good)
    data = good.read_bytes()
    rng = random.Random(0)
    bad = tmp_path / "bad.pt"
    for cut in [0, 5, 30, 60, *rng.sample(range(61, len(data)), 20)]:
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"truncated|not an rl_rmsprop checkpoint"):
            load_checkpoint(bad)
    for offset in rng.sample(range(100, len(data)), 10):
        corrupt = bytearray(data)
        corrupt[offset] ^= 0xFF
        bad.write_bytes(bytes(corrupt))
        with pytest.raises(CheckpointError, match="corrupt"):
            load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"w": 1}, bad)  # a plain torch file is not one of ours
    with pytest.raises(CheckpointError, match="not an rl_rmsprop checkpoint"):
        load_checkpoint(bad)
    assert torch.equal(load_checkpoint(good)["w"], weights)  # the intact file still loads


def test_periodic_checkpoints_are_listed_by_step_and_pruned(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    for step in (900, 20_000, 100, 5_000):
        save_checkpoint({"step": step}, checkpoint_path(tmp_path, step))
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(tmp_path)] == [
        100,
        900,
        5_000,
        20_000,
    ]
    prune_checkpoints(tmp_path, keep=2)
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(tmp_path)] == [5_000, 20_000]
    prune_checkpoints(tmp_path, keep=0)  # 0 keeps all
    assert len(list_checkpoints(tmp_path)) == 2


def test_resume_candidates_are_the_final_checkpoint_then_the_newest_periodic_ones(tmp_path):
    assert resume_candidates(tmp_path / "missing") == []
    checkpoint_path(tmp_path, 0).parent.mkdir()
    for step in (100, 2000, 300):
        save_checkpoint({"step": step}, checkpoint_path(tmp_path, step))
    assert [p.name for p in resume_candidates(tmp_path)] == [
        checkpoint_path(tmp_path, s).name for s in (2000, 300, 100)
    ]
    save_checkpoint({"step": 2500}, tmp_path / "checkpoint.pt")
    assert resume_candidates(tmp_path)[0] == tmp_path / "checkpoint.pt"


class _Payload:
    """What a forged checkpoint carries: unpickling it runs a shell command."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def forge(path, marker) -> None:
    """A file with our header and a valid checksum whose payload would run code."""
    buffer = io.BytesIO()
    torch.save({"format": 2, "model": _Payload(marker)}, buffer)
    payload = buffer.getvalue()
    header = MAGIC + struct.pack("<Q32s", len(payload), hashlib.sha256(payload).digest())
    path.write_bytes(header + payload)


def test_a_forged_checkpoint_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    forge(tmp_path / "c.pt", marker)
    with pytest.raises(UnsafeCheckpoint, match="would run as code"):
        load_checkpoint(tmp_path / "c.pt")
    assert not marker.exists()


@pytest.mark.slow
def test_resuming_from_a_forged_checkpoint_is_one_line_exit_2_and_runs_nothing(tmp_path):
    argv = ["--total-steps", "400", "--eval-episodes", "0", "--quiet"]
    done = cli("train", [*argv, "--logdir", str(tmp_path), "--run-name", "r"])
    assert done.returncode == 0, done.stderr
    marker = tmp_path / "pwned"
    forge(tmp_path / "r" / "checkpoint.pt", marker)
    for extra in ([], ["--total-steps", "800"]):
        resumed = cli("train", ["--resume", str(tmp_path / "r"), *extra])
        assert resumed.returncode == 2
        assert_one_line(resumed.stderr, "would run as code", "--trust-checkpoint")
    assert not marker.exists()
    assert (tmp_path / "r" / "checkpoint.pt").exists()  # refused, not deleted


def test_checkpoints_hold_only_plain_data(tmp_path):
    state = {
        "array": np.arange(6, dtype=np.float32).reshape(2, 3),
        "bits": np.array([True, False]),
        "scalars": (np.float64(0.5), np.int64(3), np.bool_(True)),
        "episodes": [Episode(100, 12.5, 40)],
        "recent": deque([1.0, 2.0], maxlen=100),
        "rng": np.random.get_state(),
        "python": random.getstate(),
        "tensor": torch.ones(2, dtype=torch.float64),
        "big": 2**127 + 1,
    }
    save_checkpoint(state, tmp_path / "c.pt")
    data = (tmp_path / "c.pt").read_bytes()[len(MAGIC) + 40 :]
    torch.load(io.BytesIO(data), weights_only=True)  # plain data: no allow-list needed
    back = load_checkpoint(tmp_path / "c.pt")
    assert back["array"].dtype == np.float32 and np.array_equal(back["array"], state["array"])
    assert back["bits"].dtype == bool and back["bits"].tolist() == [True, False]
    assert [type(v) for v in back["scalars"]] == [np.float64, np.int64, np.bool_]
    assert back["scalars"] == state["scalars"] and back["big"] == 2**127 + 1
    assert back["episodes"] == [(100, 12.5, 40, 0)] and back["recent"] == [1.0, 2.0]
    np.random.set_state(back["rng"])
    random.setstate(back["python"])


def test_an_older_pickled_checkpoint_loads_only_when_trusted(tmp_path):
    buffer = io.BytesIO()
    torch.save({"format": 1, "obs": np.zeros(3)}, buffer)  # numpy pickled as objects
    payload = buffer.getvalue()
    header = MAGIC + struct.pack("<Q32s", len(payload), hashlib.sha256(payload).digest())
    (tmp_path / "old.pt").write_bytes(header + payload)
    with pytest.raises(UnsafeCheckpoint):
        load_checkpoint(tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt", trust=True)["obs"].tolist() == [0.0, 0.0, 0.0]
