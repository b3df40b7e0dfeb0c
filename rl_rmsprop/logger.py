"""TensorBoard and console output: the only place a run writes logs.

Agents and the optimizer return metrics as dicts; the run loop hands them here. Tags follow
the schema of :mod:`rl_rmsprop.tags` (``docs/telemetry.md``); the step axis is global
environment steps.
"""

from __future__ import annotations

import functools
import itertools
import os
import socket
import struct
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import google_crc32c
import torch
from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard.summary import histogram as histogram_summary
from torch.utils.tensorboard.summary import hparams as hparams_summary
from torch.utils.tensorboard.summary import text as text_summary

from rl_rmsprop.csvlog import ProgressCsv
from rl_rmsprop.tags import EPISODIC_LENGTH, EPISODIC_RETURN, HPARAMS

_file_ids = itertools.count()


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C of ``data``, as TFRecord framing stores it (``google-crc32c``)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class BufferedEventFile:
    """An event file written by the calling thread, in batches: no writer thread.

    TensorBoard's writer gives every event file a thread that wakes on every event and takes the GIL
    from the training loop each time, which slows a single CartPole run and a population's dozens of
    run folders in one process far more (docs/benchmarks.md, "Figures moved from the code"). Events
    are kept in memory and appended to the file every ``max_events`` events, when an event arrives
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
            parts = []
            for record in self._pending:
                header = _LENGTH.pack(len(record))
                parts += [header, _CRC.pack(masked_crc32c(header)), record]
                parts.append(_CRC.pack(masked_crc32c(record)))
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


_LENGTH, _CRC = struct.Struct("<Q"), struct.Struct("<I")


def scalar_event(values: Mapping[str, float], step: int, wall_time: float | None = None) -> bytes:
    """A serialized ``Event`` holding one ``simple_value`` per tag at ``step``.

    One event per step rather than per tag: every record in an event file is framed with
    CRCs, and TensorBoard reads each value of an event as its own series.
    """
    wall = time.time() if wall_time is None else wall_time
    event = Event(wall_time=wall, step=step)
    add = event.summary.value.add
    for tag, value in values.items():
        add(tag=tag, simple_value=value)
    return event.SerializeToString()


@functools.cache
def _tensorflow_buckets() -> list[float]:
    """Bucket edges +-1e-12 * 1.1^k up to 1e20, and 0: TensorFlow's default histogram."""
    edges = []
    edge = 1e-12
    while edge < 1e20:
        edges.append(edge)
        edge *= 1.1
    return [-e for e in reversed(edges)] + [0.0] + edges


class EventWriter:
    """Writes one run's TensorBoard events into one :class:`BufferedEventFile`.

    The summaries themselves are built by PyTorch's public builders
    (``torch.utils.tensorboard.summary``): what ``SummaryWriter`` writes, without its
    writer thread.

    Args:
        logdir: the run folder.
        purge_step: on a resumed run, the step it resumes at: a ``SessionLog.START`` event
            at that step makes TensorBoard hide what earlier files logged from it on.
    """

    def __init__(self, logdir: str, purge_step: int | None = None) -> None:
        self.file = BufferedEventFile(logdir)
        if purge_step is not None:
            start = SessionLog(status=SessionLog.START)
            self.file.add_event(Event(wall_time=time.time(), step=purge_step, session_log=start))

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """Scalars of one step, as one event."""
        self.file.add_record(scalar_event(values, step))

    def summary(self, summary: Summary, step: int = 0) -> None:
        """One ``Summary`` (a histogram, text, hparams) at ``step``."""
        self.file.add_event(Event(wall_time=time.time(), step=step, summary=summary))

    def histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        """A histogram of ``values`` in TensorFlow's default buckets (``SummaryWriter``'s)."""
        bins = _tensorflow_buckets()
        self.summary(histogram_summary(tag, values.detach().cpu().numpy(), bins), step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        """A text (markdown) summary."""
        self.summary(text_summary(tag, text), step)

    def flush(self) -> None:
        """Write buffered events to disk."""
        self.file.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.file.close()


def _number(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


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
        self.events = EventWriter(str(run_dir), purge_step=purge_step)
        self.table = ProgressCsv(run_dir, resume_step=purge_step)
        self.total_steps = total_steps
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.line = ProgressLine(self.stream, total_steps, quiet)
        self._hparams: dict[str, Any] = {}

    def scalars(self, metrics: Mapping[str, Any], step: int) -> None:
        """Write each metric (float or 0-d tensor) under its tag, and as a row of the table."""
        values = {t: _number(v) for t, v in metrics.items()}
        self.events.scalars(values, step)
        self.table.row(values, step)

    def histograms(self, values: Mapping[str, torch.Tensor], step: int) -> None:
        """Write each tensor as a histogram of its finite values (none finite: skipped)."""
        for tag, tensor in values.items():
            finite = tensor[torch.isfinite(tensor)]
            if finite.numel():
                self.events.histogram(tag, finite, step)

    def episode(self, episodic_return: float, length: int, step: int) -> None:
        """Log one finished episode."""
        values = {EPISODIC_RETURN: float(episodic_return), EPISODIC_LENGTH: float(length)}
        self.events.scalars(values, step)
        self.table.row(values, step)

    def config(self, flat_config: Mapping[str, Any], markdown: str | None) -> None:
        """Record the configuration as a text table (None: already written, e.g. on resume).

        The hparams are written at the end, with the final metrics.
        """
        if markdown is not None:
            self.events.text("config", markdown)
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
            self.events.summary(part)
        self.events.scalars({tag: float(value) for tag, value in values.items()}, 0)

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
            self.warning(text)

    def warning(self, text: str) -> None:
        """Print a line even when quiet: what the user must know (ends a progress line first)."""
        self.line.end()
        print(text, file=self.stream, flush=True)

    def flush(self) -> None:
        """Write buffered events and rows to disk."""
        self.events.flush()
        self.table.flush()

    def close(self) -> None:
        """Flush and close the event file and the table."""
        self.line.end()
        self.events.close()
        self.table.close()


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
