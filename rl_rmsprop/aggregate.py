"""Statistics over runs: IQM, stratified bootstrap intervals, learning curves on a common grid.

What ``compare`` reports follows Agarwal et al., "Deep RL at the Edge of the Statistical
Precipice" (NeurIPS 2021, the ``rliable`` library): the interquartile mean (IQM) of per-run
scores, robust to a single outlier seed yet less noisy than the median, with a percentile
confidence interval from a stratified bootstrap (runs are resampled with replacement within
each task, never across tasks).
"""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError
from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.types_pb2 import DT_DOUBLE, DT_FLOAT

from rl_rmsprop.logger import masked_crc32c_many

__all__ = [
    "RunCurves",
    "bootstrap_ci",
    "curve_on_grid",
    "event_files",
    "iqm",
    "iqm_band",
    "normalized_auc",
    "read_scalars",
    "step_grid",
]


def iqm(scores: np.ndarray | Sequence[float], axis: int = 0) -> np.ndarray | float:
    """Interquartile mean: the mean of the middle half of the scores along ``axis``.

    ``floor(n / 4)`` scores are cut from each end, as ``scipy.stats.trim_mean(x, 0.25)`` and
    rliable do: for 8 scores the mean of the middle 4, for 5 the middle 3, for fewer than 4
    the plain mean.

    Args:
        scores: the scores; NaN is not allowed.
        axis: the axis the runs lie along.

    Raises:
        ValueError: on an empty axis.
    """
    x = np.sort(np.asarray(scores, dtype=np.float64), axis=axis)
    n = x.shape[axis]
    if n == 0:
        raise ValueError("iqm of no scores")
    cut = n // 4
    middle = np.take(x, np.arange(cut, n - cut), axis=axis)
    out = middle.mean(axis=axis)
    return float(out) if np.ndim(out) == 0 else out


def bootstrap_ci(
    scores: np.ndarray | Sequence[float],
    statistic=iqm,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Percentile confidence interval of ``statistic`` by a stratified bootstrap over runs.

    Args:
        scores: ``[runs]`` or ``[runs, tasks]``, or ``[runs, tasks, points]`` for a curve per
            run; each task's runs are resampled with replacement on their own (the strata),
            and the statistic is taken over runs (axis 0) and then averaged over tasks.
        statistic: a function of ``(array, axis=0)``, :func:`iqm` by default.
        reps: bootstrap resamples.
        confidence: the interval's coverage.
        seed: the resampling generator's seed (reports are reproducible).

    Returns:
        ``(low, high)``, floats for ``[runs]`` and ``[runs, tasks]`` input, ``[points]``
        arrays for curves.
    """
    x = np.asarray(scores, dtype=np.float64)
    curve = x.ndim == 3
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim == 2:
        x = x[:, :, None]
    runs, tasks, _ = x.shape
    rng = np.random.default_rng(seed)
    # idx[r, i, t]: which run stands in for run i of task t in resample r.
    idx = rng.integers(0, runs, size=(reps, runs, tasks))
    resampled = np.take_along_axis(x[None], idx[..., None], axis=1)  # [reps, runs, tasks, pts]
    stats = np.asarray(statistic(np.moveaxis(resampled, 1, 0), axis=0))  # [reps, tasks, pts]
    stats = stats.mean(axis=1)  # over tasks
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail], axis=0)
    if curve:
        return low, high
    return float(low[0]), float(high[0])


def iqm_band(runs: np.ndarray, reps: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A curve's IQM over runs and its 95% bootstrap band: ``(centre, low, high)``, ``[points]``.

    ``runs`` is ``[runs, points]``; a point where any run has no value (NaN, e.g. before its
    first logged figure) is NaN in all three.
    """
    runs = np.asarray(runs, dtype=np.float64)
    whole = np.isfinite(runs).all(axis=0)
    centre, low, high = (np.full(runs.shape[1], np.nan) for _ in range(3))
    if whole.any():
        part = runs[:, whole]
        centre[whole] = iqm(part, axis=0)
        low[whole], high[whole] = bootstrap_ci(part[:, None, :], reps=reps)
    return centre, low, high


def step_grid(total_steps: int, points: int = 100) -> np.ndarray:
    """``points`` env-step positions evenly spaced up to ``total_steps`` (the first > 0)."""
    return np.linspace(total_steps / points, total_steps, points)


def curve_on_grid(
    steps: np.ndarray, values: np.ndarray, grid: np.ndarray, window: int = 20
) -> np.ndarray:
    """At each grid step, the mean of the last ``window`` values logged at or before it.

    Args:
        steps: ``[n]`` env steps at which the values were logged (e.g. episode ends), sorted.
        values: ``[n]`` the values (e.g. episodic returns).
        grid: the steps to evaluate at.
        window: how many of the latest values are averaged (1: the latest value).

    Returns:
        ``[len(grid)]``, NaN before the first value.
    """
    steps, values = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    count = np.searchsorted(steps, grid, side="right")  # values logged up to each grid step
    csum = np.concatenate([[0.0], np.cumsum(values)])
    first = np.maximum(count - window, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (csum[count] - csum[first]) / (count - first)
    return np.where(count > 0, out, np.nan)


def normalized_auc(curve: np.ndarray, scale: float) -> float:
    """Area under a learning curve on an even grid, as a fraction of ``scale`` over the run.

    The mean of the curve's grid values divided by ``scale`` (the env's reward threshold):
    1.0 means the run was at the threshold from its first step, 0.5 that it averaged half of
    it. Grid points before the first finished episode count as 0.
    """
    return float(np.nan_to_num(np.asarray(curve, dtype=np.float64), nan=0.0).mean() / scale)


_HEADER = struct.Struct("<QI")  # TFRecord: data length, masked CRC-32C of the length's 8 bytes
_CRC = struct.Struct("<I")  # after the data: masked CRC-32C of the data
_FLOAT, _DOUBLE = struct.Struct("<f"), struct.Struct("<d")


def event_files(run_dir: Path) -> list[Path]:
    """The event files directly in ``run_dir``, in the order TensorBoard reads them.

    TensorBoard's directory loader takes every file whose name contains ``tfevents``
    (except ``*.profile-empty`` placeholders), sorted by name, each read to its end before
    the next.
    """
    with os.scandir(run_dir) as entries:
        names = [
            e.name
            for e in entries
            if "tfevents" in e.name and not e.name.endswith(".profile-empty") and e.is_file()
        ]
    return [Path(run_dir, name) for name in sorted(names)]


def _frame(data: bytes) -> tuple[list[bytes], list[bytes], list[int], bool]:
    """Split one file's bytes into TFRecords, without checking their CRCs.

    Returns:
        ``(headers, records, stored_crcs, partial)``: each record's 8 length bytes, its data,
        and its two stored CRCs (length's, data's) flattened in that order. A final record cut
        short is left out; ``partial`` says whether its 12-byte header (length and length CRC)
        was complete: then ``headers`` ends with it, one longer than ``records``, and its
        stored CRC ends ``stored_crcs``, so the caller can tell a file being written (the
        length is sound) from a corrupt length that points past the end.
    """
    headers: list[bytes] = []
    records: list[bytes] = []
    crcs: list[int] = []
    pos, size = 0, len(data)
    while pos + 12 <= size:
        length, length_crc = _HEADER.unpack_from(data, pos)
        start = pos + 12
        end = start + length
        headers.append(data[pos : pos + 8])
        crcs.append(length_crc)
        if end + 4 > size:
            return headers, records, crcs, True
        records.append(data[start:end])
        crcs.append(_CRC.unpack_from(data, end)[0])
        pos = end + 4
    return headers, records, crcs, False


def _verified_records(paths: Sequence[Path]) -> list[bytes]:
    """Every record of the files with sound CRCs, in file order (all CRCs in one batch).

    A record whose data CRC does not match is skipped; a length whose CRC does not match
    ends that file (nothing after it can be located). Both warn, once per file. A final
    record cut short with a sound length (a file still being written) is left out silently,
    as TensorBoard does.
    """
    framed = [_frame(path.read_bytes()) for path in paths]
    headers = [h for f in framed for h in f[0]]
    records = [r for f in framed for r in f[1]]
    if not headers:
        return []
    computed = masked_crc32c_many(headers + records).tolist()
    header_crc, data_crc = computed[: len(headers)], computed[len(headers) :]
    out: list[bytes] = []
    h = r = 0  # offsets of this file's headers and records in the batch
    for path, (file_headers, file_records, stored, partial) in zip(paths, framed, strict=True):
        bad_data = 0
        bad_length = False
        for i, record in enumerate(file_records):
            if header_crc[h + i] != stored[2 * i]:
                bad_length = True
                break
            if data_crc[r + i] != stored[2 * i + 1]:
                bad_data += 1
                continue
            out.append(record)
        else:
            # The cut final record: silent if its length is sound, corrupt otherwise.
            n = len(file_records)
            bad_length = partial and header_crc[h + n] != stored[2 * n]
        if bad_data or bad_length:
            what = [f"{bad_data} record(s) with a bad data CRC skipped"] if bad_data else []
            what += ["a length with a bad CRC: the rest of the file skipped"] if bad_length else []
            warnings.warn(f"{path}: {'; '.join(what)}", RuntimeWarning, stacklevel=3)
        h += len(file_headers)
        r += len(file_records)
    return out


def _file_version(text: str) -> float:
    """The number in an event's ``file_version`` (``brain.Event:2``: 2.0; -1 if unreadable)."""
    try:
        return float(text.split("brain.Event:")[-1])
    except ValueError:
        return -1.0


def _tensor_scalar(tensor: TensorProto) -> float | None:
    """The value of a one-element float or double ``TensorProto``, else None."""
    if any(d.size != 1 for d in tensor.tensor_shape.dim):
        return None
    if tensor.dtype == DT_FLOAT:
        if len(tensor.float_val) == 1:
            return float(tensor.float_val[0])
        if len(tensor.tensor_content) == 4:
            return _FLOAT.unpack(tensor.tensor_content)[0]
    elif tensor.dtype == DT_DOUBLE:
        if len(tensor.double_val) == 1:
            return float(tensor.double_val[0])
        if len(tensor.tensor_content) == 8:
            return _DOUBLE.unpack(tensor.tensor_content)[0]
    return None


def _purge(
    series: dict[str, tuple[list[int], list[float]]], tags: Iterable[str], step: int
) -> None:
    """Drop the values of ``tags`` logged at ``step`` or later."""
    for tag in tags:
        steps, values = series[tag]
        keep = [i for i, s in enumerate(steps) if s < step]
        values[:] = [values[i] for i in keep]
        steps[:] = [steps[i] for i in keep]


def read_scalars(run_dir: Path, tags: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The scalar series of ``tags`` in a run folder's event files, as TensorBoard shows them.

    Reads the files of :func:`event_files` in order, checks every record's CRCs in one
    vectorized batch (:func:`~rl_rmsprop.logger.masked_crc32c_many`, where TensorBoard without
    TensorFlow goes byte by byte in Python: ~5 ms a run folder instead of ~30) and parses each
    record as an ``Event``. A value counts if it has a ``simple_value``, or a one-element float
    tensor (the form newer writers use for scalars). An event may hold values of several tags.

    Orphaned values are discarded as TensorBoard's ``EventAccumulator`` does: once a
    ``file_version`` of 2 or more has been read (every writer since TF 1.0 and PyTorch's
    write it first), a ``SessionLog.START`` event at step N (what ``SummaryWriter(purge_step=N)``
    writes on resuming) drops every value read so far with step >= N, for all tags; without
    a version, an event with a summary whose step is below the latest step read drops the
    values of its own tags at its step or later.

    A final record cut short (a file being written) is ignored; a record with a bad data
    CRC is skipped and a length with a bad CRC ends its file, with a ``RuntimeWarning``
    (TensorBoard stops reading a file at either).

    Args:
        run_dir: the run folder (its subfolders are not read).
        tags: the tags wanted.

    Returns:
        ``{tag: (steps, values)}``, int64 and float64 arrays in the order read, for each
        wanted tag that appeared in some event (empty arrays if all its values were purged).
    """
    wanted = set(tags)
    series: dict[str, tuple[list[int], list[float]]] = {}
    version = 0.0  # as EventAccumulator: none yet (0) or unparsable (-1) mean no START purges
    latest = -1
    start = SessionLog.START
    for record in _verified_records(event_files(run_dir)):
        try:
            event = Event.FromString(record)
        except DecodeError:
            warnings.warn(f"{run_dir}: an undecodable event skipped", RuntimeWarning, stacklevel=2)
            continue
        what = event.WhichOneof("what")
        step = event.step
        if what == "file_version":
            version = _file_version(event.file_version)
        if version >= 2:
            if what == "session_log" and event.session_log.status == start:
                _purge(series, list(series), step)
        elif what == "summary" and step < latest:
            _purge(series, {v.tag for v in event.summary.value} & series.keys(), step)
        else:
            latest = step
        if what != "summary":
            continue
        for value in event.summary.value:
            tag = value.tag
            if tag not in wanted:
                continue
            kind = value.WhichOneof("value")
            if kind == "simple_value":
                number = value.simple_value
            elif kind == "tensor":
                number = _tensor_scalar(value.tensor)
                if number is None:
                    continue
            else:
                continue
            steps, values = series.setdefault(tag, ([], []))
            steps.append(step)
            values.append(number)
    return {
        tag: (np.array(steps, dtype=np.int64), np.array(values, dtype=np.float64))
        for tag, (steps, values) in series.items()
    }


class RunCurves:
    """The scalar series of one run's TensorBoard events, read once.

    Args:
        run_dir: the run folder (its ``events.out.tfevents.*`` files, read by
            :func:`read_scalars`).
        tags: the scalar tags to keep.
    """

    def __init__(self, run_dir: Path, tags: Sequence[str]) -> None:
        self.series: dict[str, tuple[np.ndarray, np.ndarray]] = {
            tag: (steps.astype(np.float64), values)
            for tag, (steps, values) in read_scalars(run_dir, tags).items()
        }

    def on_grid(self, tag: str, grid: np.ndarray, window: int = 1) -> np.ndarray:
        """The tag's series on ``grid`` (mean of the last ``window`` values); NaN if absent."""
        if tag not in self.series:
            return np.full(len(grid), np.nan)
        steps, values = self.series[tag]
        order = np.argsort(steps, kind="stable")
        return curve_on_grid(steps[order], values[order], grid, window)

    def interpolated(self, tag: str, grid: np.ndarray) -> np.ndarray:
        """The tag's series linearly interpolated on ``grid``; NaN before its first value."""
        if tag not in self.series:
            return np.full(len(grid), np.nan)
        steps, values = self.series[tag]
        order = np.argsort(steps, kind="stable")
        return np.interp(grid, steps[order], values[order], left=np.nan)
