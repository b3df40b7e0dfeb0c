"""Checkpoints written atomically and verified on load.

Every file is written to a temporary file in the same folder, fsynced, then renamed over the
target: a reader finds the previous file or the complete new one, never half of one. A
checkpoint file is a short header (magic, payload length, SHA-256 of the payload) followed by
the ``torch.save`` payload, so a truncated or corrupted file is refused with a clear message
instead of loading wrong numbers.

Loading a checkpoint runs no code: the payload is read with ``torch.load(weights_only=True)``,
which accepts tensors, numbers, strings and plain containers only. The state is written in
that form (:func:`to_plain`: NumPy arrays as tensors, named tuples as tuples), environments
as data (:func:`pack_env`). The checksum detects damage, not forgery: a file that would need
the full unpickler (an older checkpoint format, or a crafted one) is refused unless the user
says they trust it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import struct
import tempfile
import warnings
from collections import deque
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import torch

from envs.state import EnvStateError, env_state, load_env_state

MAGIC = b"rl_rmsprop checkpoint v1\n"
_HEADER = struct.Struct("<Q32s")  # payload length, sha256 digest
CHECKPOINT_DIR = "checkpoints"
"""Sub-folder of a run folder holding its periodic checkpoints."""
_NAME = re.compile(r"step-(\d+)\.pt")


FORMAT = 2
"""Checkpoint format: 2 holds plain data only (1, before 2026-12, pickled objects)."""
TRUST_HINT = "pass --trust-checkpoint only if you wrote this checkpoint yourself"


class CheckpointError(Exception):
    """A checkpoint that is missing, truncated, corrupt or does not belong to the run."""


class UnsafeCheckpoint(CheckpointError):  # noqa: N818 (a refusal, reported as one line)
    """A checkpoint whose payload would need the full unpickler, which can run code."""


_ARRAY = "__ndarray__"
_SCALAR = "__npscalar__"


def to_plain(obj: Any) -> Any:
    """``obj`` in the form ``torch.load(weights_only=True)`` reads: tensors and plain data.

    NumPy arrays become tensors (tagged, so :func:`from_plain` gives arrays back), NumPy
    scalars numbers, named tuples tuples, deques lists.

    Raises:
        TypeError: for an object that is not data (a programming error: find what put it in).
    """
    if isinstance(obj, np.generic):  # before float: np.float64 is a float subclass
        return {_SCALAR: obj.item(), "dtype": obj.dtype.str}
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, torch.Tensor)):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError("an object array cannot go into a checkpoint")
        return {_ARRAY: torch.from_numpy(np.ascontiguousarray(obj).copy())}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(to_plain(v) for v in obj)
    if isinstance(obj, (list, deque)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, (torch.dtype, torch.device)):
        return str(obj)
    raise TypeError(f"a {type(obj).__name__} cannot go into a checkpoint (not plain data)")


def from_plain(obj: Any) -> Any:
    """Undo :func:`to_plain`: tagged tensors become NumPy arrays and scalars again."""
    if isinstance(obj, dict):
        if _ARRAY in obj and len(obj) == 1:
            return obj[_ARRAY].numpy().copy()
        if _SCALAR in obj and set(obj) == {_SCALAR, "dtype"}:
            return np.dtype(obj["dtype"]).type(obj[_SCALAR])
        return {k: from_plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(from_plain(v) for v in obj)
    if isinstance(obj, list):
        return [from_plain(v) for v in obj]
    return obj


def pack_env(env: Any) -> dict[str, Any]:
    """An environment for a checkpoint: as data where it can be, else pickled (inert bytes).

    The pickled form is kept for ``--trust-checkpoint`` (async workers and emulators are not
    data); a resume that does not trust it rebuilds the environments instead.
    """
    try:
        return {"data": env_state(env)}
    except EnvStateError as e:
        why = str(e)
    try:
        pickled: bytes | None = cloudpickle.dumps(env)
    except Exception:  # async workers (pipes, processes) and some native envs do not pickle
        pickled = None
    return {"data": None, "why": why, "pickled": pickled}


def unpack_env(env: Any, saved: Any, trust: bool) -> tuple[Any, str | None]:
    """The environment to continue with, and why the continuation is not exact (None if it is).

    ``env`` is a freshly built env of the run; ``saved`` what :func:`pack_env` wrote (or, in
    a trusted format-1 checkpoint, the pickled bytes). A pickled env is unpickled only with
    ``trust``; ``env`` is closed when it is replaced.
    """
    if isinstance(saved, dict) and saved.get("data") is not None:
        try:
            load_env_state(env, saved["data"])
            return env, None
        except EnvStateError as e:
            return env, str(e)
    pickled = saved.get("pickled") if isinstance(saved, dict) else saved
    why = saved.get("why") if isinstance(saved, dict) else None
    if pickled is None:
        return env, f"the environments could not be saved ({why or 'not data, not picklable'})"
    if not trust:
        return env, (
            "the environments were saved only in pickled form, which loading would run as "
            f"code; {TRUST_HINT} to restore them"
        )
    env.close()
    return pickle.loads(pickled), None


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
    """Write ``state`` (as :func:`to_plain` data) atomically, with a header to verify it."""
    buffer = io.BytesIO()
    torch.save(to_plain(state), buffer)
    payload = buffer.getvalue()
    header = MAGIC + _HEADER.pack(len(payload), hashlib.sha256(payload).digest())

    def write(f: Any) -> None:
        f.write(header)
        f.write(payload)

    _atomic_write(path, write)


def save_weights(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """Write a network's state dict atomically as a plain ``torch.save`` file.

    It loads with ``torch.load(path, weights_only=True)`` in any PyTorch program.
    """
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buffer)
    _atomic_write(path, lambda f: f.write(buffer.getvalue()))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a :func:`save_weights` file (nothing in it can run code).

    Raises:
        CheckpointError: the file is missing, unreadable or not a dict of tensors.
    """
    try:
        with warnings.catch_warnings():  # torch's notes on a foreign file's pickle protocol
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except Exception as e:  # a truncated, corrupt or foreign file: torch raises many kinds
        raise CheckpointError(f"{path} is not a weights file ({type(e).__name__})") from None
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path} is not a weights file (not a dict of tensors)")
    return data


def load_checkpoint(path: Path, trust: bool = False) -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`save_checkpoint` (tensors on the CPU).

    The payload is read with ``torch.load(weights_only=True)``: nothing in it can run code.
    A payload that needs the full unpickler (format 1, or a forged file) is read only with
    ``trust``.

    Raises:
        UnsafeCheckpoint: the payload needs the full unpickler and ``trust`` is False.
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
        return from_plain(torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True))
    except pickle.UnpicklingError:
        if not trust:
            raise UnsafeCheckpoint(
                f"checkpoint {path} holds Python objects that loading would run as code (an "
                f"older checkpoint format, or a forged file), so it was not loaded; {TRUST_HINT}"
            ) from None
    except Exception as e:  # a verified payload that torch cannot read: another version
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__})") from None
    try:  # trusted: the full unpickler, for checkpoints of format 1
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except Exception as e:
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
MODEL_FILE = "model.pt"
"""A finished run's network weights alone (:func:`save_weights`), for evaluation and reuse."""
NORMALIZATION_FILE = "normalization.pt"
"""A finished ``--normalize`` run's observation statistics (``mean``, ``var``, ``count``)."""
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
