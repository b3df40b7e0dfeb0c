import errno
import json
import os
import random

import pytest
import torch

from rl_rmsprop.checkpoint import (
    CheckpointError,
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
