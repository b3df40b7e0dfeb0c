"""Checkpoints written atomically: a temporary file in the same folder, fsync, then rename.

A reader never sees a half-written checkpoint: it finds the previous file or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


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


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save(obj, path)`` that leaves either the old file or the complete new one."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def write_json_atomic(data: Any, path: Path) -> None:
    """Write ``data`` as indented JSON, atomically."""
    payload = (json.dumps(data, indent=2) + "\n").encode()
    _atomic_write(path, lambda f: f.write(payload))
