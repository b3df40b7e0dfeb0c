"""Run and study folders: safe names, what ``--force`` may replace, a lock, stale temp files.

Nothing here deletes what is not ours. A run or study name is one path component inside
``--logdir``; ``--force`` replaces a folder only when every entry in it is something a run
writes (and its ``config.json`` or ``population.json`` reads as ours); a run folder is
trained by one process at a time (an advisory lock on ``<run>/.lock``); temp files that an
interrupted atomic write left behind are removed when the folder's owner next opens it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from rl_rmsprop.config import Config
from rl_rmsprop.run.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; a second trainer is not detected there
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"
"""In a run, population or study folder: held (``flock``) by the process that writes it."""

_RUN_FILES = {
    "config.json",
    "summary.json",
    "population.json",
    "progress.csv",
    "checkpoint.pt",
    "model.pt",
    "normalization.pt",
    LOCK_FILE,
}
_STUDY_FILES = {"study.json", "summary.json", "summary.csv", "curves.png", "optim.png", LOCK_FILE}
_EVENTS = "events.out.tfevents."
_CHECKPOINT = re.compile(r"step-\d+\.pt")
_MEMBER = re.compile(r"seed-\d+")


def _is_temp(name: str) -> bool:
    """A temp file of ours: ``checkpoint._atomic_write`` names them ``.<target>.<random>.tmp``."""
    return name.startswith(".") and name.endswith(".tmp")


def _entry_is_ours(entry: Path, files: set[str]) -> bool:
    name = entry.name
    if entry.is_symlink():
        return False
    if entry.is_dir():
        if name == "checkpoints":
            return all(
                p.is_file() and (_CHECKPOINT.fullmatch(p.name) or _is_temp(p.name))
                for p in entry.iterdir()
            )
        if name == "videos":
            return all(p.is_file() and p.suffix in (".mp4", ".json") for p in entry.iterdir())
        return False
    return name in files or name.startswith(_EVENTS) or _is_temp(name)


def _check_config(data: dict) -> None:
    """Raise unless ``data`` is a whole configuration of ours (every section, no other key)."""
    sections = {f.name for f in dataclasses.fields(Config)}
    if set(data) != sections:
        raise ValueError("not our sections")
    Config.from_dict(data)  # TypeError for a key that is not one of our options


def run_folder_problem(path: Path) -> str | None:
    """Why ``path`` is not recognisably a run folder of ours (None if it is one).

    A run folder holds a ``config.json`` that reads as our configuration and nothing but
    what a run writes; a population folder holds a ``population.json`` and member run
    folders ``seed-<k>``.
    """
    if path.is_symlink():
        return "is a symbolic link"
    if not path.is_dir():
        return "is not a folder"
    population = path / "population.json"
    try:
        if population.is_file():
            _check_config(json.loads(population.read_text())["config"])
        else:
            _check_config(json.loads((path / "config.json").read_text()))
    except FileNotFoundError:
        return "holds no config.json"
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return "holds a config.json that is not ours"
    for entry in sorted(path.iterdir()):
        if population.is_file() and _MEMBER.fullmatch(entry.name) and not entry.is_symlink():
            problem = run_folder_problem(entry)
            if problem:
                return f"holds {entry.name}, which {problem}"
        elif not _entry_is_ours(entry, _RUN_FILES):
            return f"holds {entry.name!r}, which no run writes"
    return None


def study_folder_problem(path: Path) -> str | None:
    """Why an existing ``path`` is not a compare study folder of ours (None if it is one)."""
    if path.is_symlink():
        return "is a symbolic link"
    if not path.is_dir():
        return "is not a folder"
    if not (path / "study.json").is_file():
        return "holds no study.json"
    return None


def replace_run_folder(path: Path) -> str:
    """``--force``: delete the run folder at ``path`` if it is ours; returns what was replaced.

    Raises:
        UserError: ``path`` is not recognisably one of our run folders (nothing is deleted).
    """
    problem = run_folder_problem(path)
    if problem:
        raise UserError(
            f"--force replaces only a run folder of ours, and {path} {problem}; move or "
            "remove it yourself, or choose another --run-name"
        )
    files = sum(1 for p in path.rglob("*") if p.is_file())
    try:
        shutil.rmtree(path)
    except OSError as e:
        raise UserError(f"--force: cannot remove {path} ({e.strerror}); remove it yourself") from e
    return f"--force: replaced the run folder {path} ({files} files)"


def remove_stale_temp_files(folder: Path) -> int:
    """Delete the temp files an interrupted atomic write left in a folder of ours.

    Only the owner of the folder's lock calls this, so no write of another process is
    under way. Returns how many were removed.
    """
    removed = 0
    for where in (folder, folder / "checkpoints", folder / "populations"):
        if not where.is_dir():
            continue
        for p in where.iterdir():
            if _is_temp(p.name) and p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)
                removed += 1
    return removed


class FolderLock:
    """An exclusive advisory lock on ``<folder>/.lock`` for as long as it is held.

    Two processes that write the same run (two ``--resume`` of one folder, a resume while
    the run still trains) would corrupt each other's checkpoints and events; the second one
    is refused instead. The lock goes with the process: a killed run leaves no stale lock
    (its ``.lock`` file may stay, unlocked, and the next owner takes it). The file is
    removed on release; an owner checks after locking that the file it locked is still the
    one at the path, so a release never lets two owners in.

    Args:
        folder: the run, population or study folder (it must exist).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(
                f"cannot write in {self.folder} ({e.strerror}); make it writable or copy the "
                "run to a writable --logdir"
            ) from None

    def acquire(self) -> FolderLock:
        """Take the lock.

        Raises:
            UserError: another process holds it, or the folder is not writable.
        """
        while True:
            fd = self._open()
            if fcntl is None:
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise UserError(
                    f"{self.folder} is in use by another process (pid {owner}); wait for it to "
                    "finish or stop it first"
                ) from None
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # the owner before us removed it meanwhile: lock the new one
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            os.close(fd)
            raise UserError(
                f"cannot write in {self.folder} ({e.strerror}); free space or make it writable"
            ) from None
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and let go of the lock."""
        if self._fd is not None:
            with contextlib.suppress(OSError):  # the folder itself may be gone (--force)
                self.path.unlink()
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def run_name(cfg: Config) -> str:
    """The run folder name: ``--run-name`` or env__algo__optimizer__seed__time."""
    if cfg.run.run_name:
        return cfg.run.run_name
    opt = cfg.optim.name.replace(":", "-")
    return (
        f"{cfg.env.id.replace('/', '-')}__{cfg.run.algo}__{opt}__{cfg.run.seed}__{int(time.time())}"
    )


def run_folder(cfg: Config) -> Path:
    """The run's folder: ``--logdir`` / the run name."""
    return Path(cfg.run.logdir) / run_name(cfg)


def make_run_dir(cfg: Config) -> Path:
    """Create the run folder, refusing an existing one or an unwritable one.

    With ``--force`` an existing folder is replaced if it is one of our runs (and the line
    that says so is printed); anything else is refused and left as it is.
    """
    path = run_folder(cfg)
    replaced = None
    if path.exists() or path.is_symlink():
        if not cfg.run.force:
            raise UserError(
                f"run folder {path} already exists; choose another --run-name, continue it "
                f"with --resume {path}, or replace it with --force"
            )
        replaced = replace_run_folder(path)
    try:
        path.mkdir(parents=True)
    except FileExistsError:  # made by another process since the check
        raise UserError(f"run folder {path} was just created by another process") from None
    except OSError as e:
        raise UserError(f"cannot create {path} ({e.strerror}); choose a writable --logdir") from e
    if replaced:
        print(replaced, file=sys.stderr)
    return path
