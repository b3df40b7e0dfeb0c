"""``progress.csv``: a run's scalars as a table, Stable-Baselines3's convention.

Every run folder holds one beside its TensorBoard event files, with the same scalars: one row
per logged step (a finished episode, an update's losses and figures, an evaluation), the
columns ``step`` (global env steps), ``wall_time`` (Unix seconds) and one per tag, in the
order the tags first appeared; a cell is empty where its tag was not logged in that row::

    import pandas as pd
    from rl_rmsprop.tags import EPISODIC_RETURN
    table = pd.read_csv("runs/<run-name>/progress.csv")
    table.dropna(subset=[EPISODIC_RETURN]).plot(x="step", y=EPISODIC_RETURN)

Values are written with Python's shortest round-trip ``repr`` of the float64 (event files
hold float32). A resumed run keeps the rows before the step it resumes at and appends after
them, as TensorBoard hides what an interrupted run logged after its checkpoint.
"""

from __future__ import annotations

import csv
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

FILENAME = "progress.csv"
"""The table's name in a run folder."""

STEP, WALL_TIME = "step", "wall_time"
"""The two columns every row fills."""


def _is_row(cells: list[str], width: int) -> bool:
    """Whether ``cells`` is a sound row: ``width`` cells, an integer step, numbers or blanks."""
    if len(cells) != width:
        return False
    try:
        int(cells[0])
        for cell in cells[1:]:
            if cell:
                float(cell)
    except ValueError:
        return False
    return True


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    """A table's header and its sound rows.

    A last line cut short (a write interrupted) is left out silently; any other line that is
    not a sound row (:func:`_is_row`) is left out with a ``RuntimeWarning``.
    """
    with open(path, newline="") as f:
        text = f.read()
    if not text.endswith("\n"):  # a write cut short: its line is not a row
        text = text[: text.rfind("\n") + 1]
    lines = list(csv.reader(text.splitlines()))
    if not lines:
        return [], []
    header = lines[0]
    rows = [row for row in lines[1:] if _is_row(row, len(header))]
    if len(rows) < len(lines) - 1:
        bad = len(lines) - 1 - len(rows)
        warnings.warn(f"{path}: {bad} unreadable row(s) skipped", RuntimeWarning, stacklevel=3)
    return header, rows


def _write_atomically(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(temporary, path)


class ProgressCsv:
    """Appends one run's scalars to its ``progress.csv``.

    Rows go through the file's buffer; :meth:`flush` (checkpoints call it) and :meth:`close`
    write them out. A tag not seen before adds a column: the file is rewritten once with the
    wider header (new tags appear in a run's first updates and evaluation, so this happens a
    few times while the file is small).

    Args:
        run_dir: the run folder.
        resume_step: on a resumed run, the step it resumes at: rows logged at that step or
            later are dropped and the table goes on after the rest. None: a new table.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None) -> None:
        self.path = Path(run_dir) / FILENAME
        columns: list[str] = []
        if resume_step is not None and self.path.exists():
            header, rows = _read(self.path)
            if header[:2] == [STEP, WALL_TIME]:
                columns = header[2:]
                kept = [row for row in rows if int(row[0]) < resume_step]
                _write_atomically(self.path, header, kept)
        if not columns:
            _write_atomically(self.path, [STEP, WALL_TIME], [])
        self._append(columns)

    def _append(self, columns: list[str]) -> None:
        """Go on appending rows of these tag columns to the file as it now is."""
        self.columns = columns
        self._index = {tag: i for i, tag in enumerate(columns)}
        self._file = open(self.path, "a", newline="")  # noqa: SIM115 (closed in close)
        self._writer = csv.writer(self._file)

    def _widen(self, tags: list[str]) -> None:
        self._file.close()
        header, rows = _read(self.path)
        pad = [""] * len(tags)
        _write_atomically(self.path, [*header, *tags], [row + pad for row in rows])
        self._append(self.columns + tags)

    def row(self, values: Mapping[str, float], step: int, wall_time: float | None = None) -> None:
        """Append one row: ``values`` (tag -> number) logged at ``step``."""
        new = [tag for tag in values if tag not in self._index]
        if new:
            self._widen(new)
        cells = [""] * len(self.columns)
        index = self._index
        for tag, value in values.items():
            cells[index[tag]] = repr(float(value))
        wall = time.time() if wall_time is None else wall_time
        self._writer.writerow([step, repr(wall), *cells])

    def flush(self) -> None:
        """Write the buffered rows to the file."""
        self._file.flush()

    def close(self) -> None:
        """Write what is buffered and close the file."""
        if not self._file.closed:
            self._file.close()


def read_progress(
    run_dir: Path, tags: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """The series of ``tags`` in a run folder's ``progress.csv``; None if it has none.

    Returns:
        ``{tag: (steps, values)}``, int64 and float64 arrays in row order, for each wanted
        tag that is a column (NaN cells are kept: a diverged run logs them).
    """
    path = Path(run_dir) / FILENAME
    if not path.is_file():
        return None
    header, rows = _read(path)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for tag in tags:
        if tag not in header[2:]:
            continue
        column = header.index(tag)
        cells = [(row[0], row[column]) for row in rows if row[column]]
        steps = np.array([int(s) for s, _ in cells], dtype=np.int64)
        values = np.array([float(v) for _, v in cells], dtype=np.float64)
        out[tag] = (steps, values)
    return out


__all__ = ["FILENAME", "STEP", "WALL_TIME", "ProgressCsv", "read_progress"]
