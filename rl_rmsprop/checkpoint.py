"""Checkpoints written atomically and verified on load.

Every file is written to a temporary file in the same folder, fsynced, then renamed over the
target: a reader finds the previous file or the complete new one, never half of one. A
checkpoint file is a short header (magic, payload length, SHA-256 of the payload) followed by
the ``torch.save`` payload, so a truncated or corrupted file is refused with a clear message
instead of loading wrong numbers.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import struct
import tempfile
from pathlib import Path
from typing import Any

import torch

MAGIC = b"rl_rmsprop checkpoint v1\n"
_HEADER = struct.Struct("<Q32s")  # payload length, sha256 digest
CHECKPOINT_DIR = "checkpoints"
"""Sub-folder of a run folder holding its periodic checkpoints."""
_NAME = re.compile(r"step-(\d+)\.pt")


class CheckpointError(Exception):
    """A checkpoint that is missing, truncated, corrupt or does not belong to the run."""


def _atomic_write(path: Path, write: Any) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(data: Any, path: Path) -> None:
    """Write ``data`` as indented JSON, atomically."""
    payload = (json.dumps(data, indent=2) + "\n").encode()
    _atomic_write(path, lambda f: f.write(payload))


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` atomically with a header that lets :func:`load_checkpoint` verify it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = MAGIC + _HEADER.pack(len(payload), hashlib.sha256(payload).digest())

    def write(f: Any) -> None:
        f.write(header)
        f.write(payload)

    _atomic_write(path, write)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`save_checkpoint` (tensors on the CPU).

    The payload holds Python objects (the environments' state, counters), so it is unpickled
    with ``weights_only=False``: load only checkpoints your own runs wrote.

    Raises:
        CheckpointError: if the file is missing, truncated, corrupt or not a checkpoint.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path} ({e.strerror})") from None
    if not data.startswith(MAGIC):
        raise CheckpointError(f"{path} is not an rl_rmsprop checkpoint (or its header is damaged)")
    start = len(MAGIC) + _HEADER.size
    if len(data) < start:
        raise CheckpointError(f"checkpoint {path} is truncated")
    length, digest = _HEADER.unpack_from(data, len(MAGIC))
    payload = data[start:]
    if len(payload) != length:
        raise CheckpointError(
            f"checkpoint {path} is truncated ({len(payload):,} of {length:,} payload bytes)"
        )
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"checkpoint {path} is corrupt (checksum mismatch)")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except Exception as e:  # a verified payload that torch cannot read: another version
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__})") from None


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """Where the checkpoint of env step ``step`` goes."""
    return Path(run_dir) / CHECKPOINT_DIR / f"step-{step:012d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """A run folder's periodic checkpoints, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(_NAME.fullmatch(p.name).group(1)))


FINAL_CHECKPOINT = "checkpoint.pt"
"""A run folder's final checkpoint (a population's only one, while it runs)."""


def resume_candidates(run_dir: Path) -> list[Path]:
    """The checkpoints a run can resume from, in the order to try them.

    The final ``checkpoint.pt`` first, then the periodic ones, newest first.
    """
    final = Path(run_dir) / FINAL_CHECKPOINT
    return [p for p in (final, *reversed(list_checkpoints(run_dir))) if p.exists()]


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` periodic checkpoints (``keep`` <= 0 keeps all)."""
    if keep <= 0:
        return
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
