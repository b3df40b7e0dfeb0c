"""TensorBoard and console output: the only place a run writes logs.

Agents and the optimizer return metrics as dicts; the run loop hands them here. Tags follow
the schema of :mod:`rl_rmsprop.tags` (``docs/telemetry.md``); the step axis is global
environment steps.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary
from torch.utils.tensorboard.writer import FileWriter

from rl_rmsprop.tags import EPISODIC_LENGTH, EPISODIC_RETURN, HPARAMS

_file_ids = itertools.count()


def _shift(register: np.ndarray) -> np.ndarray:
    """One zero byte through the CRC-32C register (a linear map over GF(2))."""
    return _CRC_TABLE[register & 0xFF] ^ (register >> 8)


def _crc32c_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1)
    return table.astype(np.uint32)


_CRC_TABLE = _crc32c_table()
_tables: dict[str, np.ndarray] = {
    "zeros": _CRC_TABLE[None, :].copy(),
    "init": np.array([0xFFFFFFFF], dtype=np.uint32),
}
"""``zeros[k, b]``: the register after byte b followed by k zero bytes, from 0;
``init[n]``: the initial register 0xFFFFFFFF after n zero bytes. Grown on demand (doubling)."""


def _grow_tables(length: int) -> None:
    zeros, init = _tables["zeros"], _tables["init"]
    if len(zeros) >= length and len(init) > length:
        return
    size = max(length + 1, 2 * len(zeros))
    rows = [zeros]
    last = zeros[-1]
    for _ in range(size - len(zeros)):
        last = _shift(last)
        rows.append(last[None, :])
    values = list(init)
    while len(values) <= size:
        values.append(_shift(np.array([values[-1]], dtype=np.uint32))[0])
    _tables["zeros"] = np.concatenate(rows)
    _tables["init"] = np.array(values, dtype=np.uint32)


def masked_crc32c_many(records: list[bytes]) -> np.ndarray:
    """The masked CRC-32C of each record (TFRecord framing), computed for all at once.

    TensorBoard without TensorFlow computes this CRC byte by byte in Python (~80 ns a byte).
    The CRC register update is linear over GF(2), so a record's CRC is the XOR of one table
    entry per byte (that byte followed by the number of bytes after it) and the initial
    value shifted through the record's length: a gather and a segmented XOR in NumPy for
    the whole batch, ~1 us a record.
    """
    n = len(records)
    lengths = np.fromiter(map(len, records), dtype=np.int64, count=n)
    longest = int(lengths.max()) if n else 0
    _grow_tables(longest)
    crc = _tables["init"][lengths]
    full = lengths > 0
    if full.any():
        data = np.frombuffer(b"".join(records), dtype=np.uint8)
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        # bytes after each byte within its record: length - 1 - position
        after = np.repeat(starts + lengths - 1, lengths) - np.arange(data.size)
        terms = _tables["zeros"][after, data]
        crc[full] ^= np.bitwise_xor.reduceat(terms, starts[full])
    crc ^= np.uint32(0xFFFFFFFF)
    return ((crc >> 15) | (crc << 17)) + np.uint32(0xA282EAD8)


class BufferedEventFile:
    """An event file written by the calling thread, in batches: no writer thread.

    TensorBoard's writer gives every event file a thread that wakes on every event and takes
    the GIL from the training loop each time: a single CartPole A2C run measured ~20% slower
    with it, a population's dozens of run folders in one process 2x slower. Events are kept in
    memory and appended to the file every ``max_events`` events, when an event arrives
    ``flush_secs`` after the last write, on :meth:`flush` (checkpoints call it) and on
    :meth:`close`.

    Args:
        logdir: the folder (made if missing).
        max_events: events buffered before they are written.
        flush_secs: the longest an event waits in memory while events keep coming.
    """

    def __init__(self, logdir: str, max_events: int = 2000, flush_secs: float = 10.0) -> None:
        self._logdir = logdir
        os.makedirs(logdir, exist_ok=True)
        name = "events.out.tfevents.%010d.%s.%s.%06d" % (  # noqa: UP031 (TensorBoard's pattern)
            time.time(),
            socket.gethostname(),
            os.getpid(),
            next(_file_ids),
        )
        self._file = open(os.path.join(logdir, name), "wb")  # noqa: SIM115 (closed in close)
        self._pending: list[bytes] = []
        self.max_events = max_events
        self.flush_secs = flush_secs
        self._flushed_at = time.monotonic()
        self.add_event(Event(wall_time=time.time(), file_version="brain.Event:2"))
        self.flush()

    def add_event(self, event: Event) -> None:
        """Queue one event (written with the next batch)."""
        self.add_record(event.SerializeToString())

    def add_record(self, record: bytes) -> None:
        """Queue one serialized event."""
        self._pending.append(record)
        if (
            len(self._pending) >= self.max_events
            or time.monotonic() - self._flushed_at >= self.flush_secs
        ):
            self.flush()

    def flush(self) -> None:
        """Write the queued events to the file as TFRecords (length, CRCs, data)."""
        if self._pending:
            headers = [struct.pack("<Q", len(r)) for r in self._pending]
            crcs = masked_crc32c_many(headers + self._pending).tolist()
            n = len(headers)
            parts = []
            for i, (header, record) in enumerate(zip(headers, self._pending, strict=True)):
                crc_header, crc_data = struct.pack("<I", crcs[i]), struct.pack("<I", crcs[n + i])
                parts += [header, crc_header, record, crc_data]
            self._file.write(b"".join(parts))
            self._pending.clear()
        self._file.flush()
        self._flushed_at = time.monotonic()

    def close(self) -> None:
        """Write what is queued and close the file."""
        if not self._file.closed:
            self.flush()
            self._file.close()

    def get_logdir(self) -> str:
        """The folder of the file."""
        return self._logdir


class _BufferedFileWriter(FileWriter):
    def __init__(self, log_dir: str) -> None:  # no super().__init__: it starts a thread
        self.event_writer = BufferedEventFile(str(log_dir))


class BufferedSummaryWriter(SummaryWriter):
    """A ``SummaryWriter`` whose event file is a :class:`BufferedEventFile` (no thread)."""

    def _get_file_writer(self) -> FileWriter:
        if self.all_writers is None or self.file_writer is None:
            self.file_writer = _BufferedFileWriter(self.log_dir)
            self.all_writers = {self.file_writer.get_logdir(): self.file_writer}
            if self.purge_step is not None:  # a resumed run: hide what followed this step
                start = SessionLog(status=SessionLog.START)
                self.file_writer.add_event(Event(step=self.purge_step, session_log=start))
                self.purge_step = None
        return self.file_writer

    def add_scalars_fast(self, values: Mapping[str, float], step: int) -> None:
        """Scalars of one step as one event, encoded directly (a few us instead of ~20).

        One event per step rather than per tag: every record in an event file is framed
        with CRCs, and TensorBoard reads each value of an event as its own series.
        """
        self._get_file_writer().event_writer.add_record(scalar_event(values, step))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _number(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


_TAG_BYTES: dict[str, bytes] = {}


def scalar_event(values: Mapping[str, float], step: int, wall_time: float | None = None) -> bytes:
    """A serialized ``Event`` holding one ``simple_value`` per tag at ``step``.

    The protobuf wire format written by hand (Event: wall_time = 1, step = 2, summary = 5;
    Summary.value = 1; Value: tag = 1, simple_value = 2): the same bytes as building the
    messages and calling ``SerializeToString``, at a fraction of the cost.
    """
    summary = bytearray()
    for tag, value in values.items():
        tag_bytes = _TAG_BYTES.get(tag)
        if tag_bytes is None:
            raw = tag.encode()
            tag_bytes = _TAG_BYTES[tag] = b"\x0a" + _varint(len(raw)) + raw
        item = tag_bytes + b"\x15" + struct.pack("<f", value)
        summary += b"\x0a" + _varint(len(item)) + item
    wall = time.time() if wall_time is None else wall_time
    head = b"\x09" + struct.pack("<d", wall)
    if step:  # proto3 leaves a zero out
        head += b"\x10" + _varint(step & (2**64 - 1))
    return head + b"\x2a" + _varint(len(summary)) + bytes(summary)


FINAL_METRICS = ("episodic_return_mean100", "eval_return_mean", "solved_at_step", "sps")
"""The summary figures a run writes with its hparams (the HParams tab's metric columns)."""


class ProgressLine:
    """A run's console progress: a live line on a terminal, plain lines every 10% otherwise.

    One display for a single run (:class:`Logger`) and a population (its loop): on a
    terminal the line is redrawn in place at most five times a second; elsewhere (a file, a
    pipe, CI) a line is printed every tenth of the budget, and the one at 100% always.

    Args:
        stream: where it is shown.
        total_steps: the step budget.
        quiet: show nothing.
    """

    def __init__(self, stream: TextIO, total_steps: int, quiet: bool = False) -> None:
        self.stream, self.total_steps, self.quiet = stream, total_steps, quiet
        self.live = stream.isatty()
        self._next_line = 0
        self._last_draw = 0.0
        self._drawn = False

    def due(self, step: int) -> bool:
        """Whether :meth:`show` at ``step`` would show anything (callers skip the figures)."""
        if self.quiet:
            return False
        if self.live:
            return time.monotonic() - self._last_draw > 0.2 or step >= self.total_steps
        return step >= self._next_line

    def percent(self, step: int) -> float:
        """How far ``step`` is into the budget (the last round may overshoot it: 100 at most)."""
        return min(100.0, 100.0 * step / self.total_steps)

    def show(self, step: int, text: str) -> None:
        """Show ``text`` as the progress at ``step``, if it is due."""
        if not self.due(step):
            return
        if self.live:
            self._last_draw = time.monotonic()
            bar = "#" * int(self.percent(step) / 5)
            print(f"\r[{bar:<20}] {text}", end="", file=self.stream, flush=True)
            self._drawn = True
        else:
            self._next_line = min(step + max(1, self.total_steps // 10), self.total_steps)
            print(text, file=self.stream, flush=True)

    def end(self) -> None:
        """End a live line, so that what is printed next starts on a line of its own."""
        if self._drawn:
            print(file=self.stream, flush=True)
            self._drawn = False


class Logger:
    """Writes one run's TensorBoard events and its console progress.

    Args:
        run_dir: the run folder (events are written straight into it).
        total_steps: the step budget, for the progress display.
        quiet: print nothing but the final summary line.
        stream: console stream (a terminal gets a live progress line, anything else plain
            lines every 10% of the budget).
        purge_step: on a resumed run, the step it resumes at: TensorBoard then hides what
            earlier event files logged from that step on.
    """

    def __init__(
        self,
        run_dir: Path,
        total_steps: int,
        quiet: bool = False,
        stream: TextIO | None = None,
        purge_step: int | None = None,
    ) -> None:
        self.writer = BufferedSummaryWriter(str(run_dir), purge_step=purge_step)
        self.total_steps = total_steps
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.line = ProgressLine(self.stream, total_steps, quiet)
        self._hparams: dict[str, Any] = {}

    def scalars(self, metrics: Mapping[str, Any], step: int) -> None:
        """Write each metric (float or 0-d tensor) under its tag."""
        self.writer.add_scalars_fast({t: _number(v) for t, v in metrics.items()}, step)

    def histograms(self, values: Mapping[str, torch.Tensor], step: int) -> None:
        """Write each tensor as a histogram of its finite values (none finite: skipped)."""
        for tag, tensor in values.items():
            finite = tensor[torch.isfinite(tensor)]
            if finite.numel():
                self.writer.add_histogram(tag, finite, step)

    def episode(self, episodic_return: float, length: int, step: int) -> None:
        """Log one finished episode."""
        values = {EPISODIC_RETURN: episodic_return, EPISODIC_LENGTH: length}
        self.writer.add_scalars_fast(values, step)

    def config(self, flat_config: Mapping[str, Any], markdown: str | None) -> None:
        """Record the configuration as a text table (None: already written, e.g. on resume).

        The hparams are written at the end, with the final metrics.
        """
        if markdown is not None:
            self.writer.add_text("config", markdown)
        self._hparams = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v)
            for k, v in flat_config.items()
        }

    def final(self, summary: Mapping[str, Any], experiment: bool = True) -> None:
        """Write hparams with the run's :data:`FINAL_METRICS` (from its summary) as metrics.

        Args:
            summary: the run's summary.
            experiment: also write the HParams experiment (its columns); a run of a study
                leaves it to the study, since TensorBoard takes one experiment per logdir,
                whichever it finds first.
        """
        metrics = {k: summary.get(k) for k in FINAL_METRICS}
        values = {f"{HPARAMS}{k}": v for k, v in metrics.items() if v is not None}
        exp, start, end = hparams_summary(self._hparams, values)
        for part in (exp, start, end) if experiment else (start, end):
            self.writer.file_writer.add_summary(part)
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, 0)

    def progress_due(self, step: int) -> bool:
        """Whether :meth:`progress` at ``step`` would show anything (callers skip the figures)."""
        return self.line.due(step)

    def progress(self, step: int, sps: float, mean_return: float | None) -> None:
        """Show progress: a live line on a terminal, a plain line every 10% otherwise."""
        if not self.line.due(step):
            return
        ret = "n/a" if mean_return is None else f"{mean_return:8.1f}"
        pct = self.line.percent(step)
        text = (
            f"{step:>10,}/{self.total_steps:,} steps ({pct:5.1f}%)  {sps:8,.0f} SPS  return {ret}"
        )
        self.line.show(step, text)

    def message(self, text: str) -> None:
        """Print a line unless quiet (ends a live progress line first)."""
        if not self.quiet:
            self.line.end()
            print(text, file=self.stream, flush=True)

    def flush(self) -> None:
        """Write buffered events to disk."""
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.line.end()
        self.writer.flush()
        self.writer.close()


def markdown_table(flat: Mapping[str, Any]) -> str:
    """A two-column markdown table of a flat config."""
    rows = [f"| {k} | {v} |" for k, v in flat.items()]
    return "| option | value |\n|---|---|\n" + "\n".join(rows)


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}``."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
