"""TensorBoard and console output: the only place a run writes logs.

Agents and the optimizer return metrics as dicts; the run loop hands them here. Tags follow the
DESIGN.md schema (``charts/``, ``eval/``, ``losses/``, ``grad/``, ``optim/``); the step axis is
global environment steps.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary


def _number(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


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
        self.writer = SummaryWriter(str(run_dir), purge_step=purge_step)
        self.total_steps = total_steps
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self._next_line = 0
        self._last_draw = 0.0
        self._hparams: dict[str, Any] = {}

    def scalars(self, metrics: Mapping[str, Any], step: int) -> None:
        """Write each metric (float or 0-d tensor) under its tag."""
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, _number(value), step)

    def histograms(self, values: Mapping[str, torch.Tensor], step: int) -> None:
        """Write each tensor as a histogram."""
        for tag, tensor in values.items():
            self.writer.add_histogram(tag, tensor, step)

    def episode(self, episodic_return: float, length: int, step: int) -> None:
        """Log one finished episode."""
        self.writer.add_scalar("charts/episodic_return", episodic_return, step)
        self.writer.add_scalar("charts/episodic_length", length, step)

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

    def final(self, metrics: Mapping[str, float | None]) -> None:
        """Write hparams with the run's final metrics into the run's own event file."""
        values = {f"hparams/{k}": v for k, v in metrics.items() if v is not None}
        for summary in hparams_summary(self._hparams, values):
            self.writer.file_writer.add_summary(summary)
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, 0)

    def progress(self, step: int, sps: float, mean_return: float | None) -> None:
        """Show progress: a live line on a terminal, a plain line every 10% otherwise."""
        if self.quiet:
            return
        ret = "n/a" if mean_return is None else f"{mean_return:8.1f}"
        pct = 100.0 * step / self.total_steps
        text = (
            f"{step:>10,}/{self.total_steps:,} steps ({pct:5.1f}%)  {sps:8,.0f} SPS  return {ret}"
        )
        if self.live:
            now = time.monotonic()
            if now - self._last_draw > 0.2 or step >= self.total_steps:
                self._last_draw = now
                bar = "#" * int(pct / 5)
                print(f"\r[{bar:<20}] {text}", end="", file=self.stream, flush=True)
        elif step >= self._next_line:
            self._next_line = step + max(1, self.total_steps // 10)
            print(text, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        """Print a line unless quiet (ends a live progress line first)."""
        if not self.quiet:
            if self.live:
                print(file=self.stream)
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Flush and close the event file."""
        if self.live and not self.quiet:
            print(file=self.stream)
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
