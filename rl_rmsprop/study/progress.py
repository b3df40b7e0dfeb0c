"""A study's live progress: env steps done over all its runs, their rate, runs finished, ETA.

Jobs (a run, or a population of runs) say how many env steps they have done; the rate is
measured from what they did since they were first heard of, so the time left comes from the
throughput this study reaches, not from a count of finished runs (a population finishes all
its runs at once). On a terminal the line is redrawn in place with a bar; otherwise a line is
printed at every further 10% of the steps.
"""

from __future__ import annotations

import time
from typing import TextIO

BAR_WIDTH = 20


def clock(seconds: float) -> str:
    """``H:MM:SS``."""
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def bar(done: float, total: float, width: int = BAR_WIDTH) -> str:
    """``[#####...............]``: the share ``done / total``, capped at full."""
    filled = min(width, int(width * done / max(total, 1)))
    return "[" + "#" * filled + "." * (width - filled) + "]"


class StudyProgress:
    """The progress of ``runs`` runs of ``total_steps`` env steps in all.

    Args:
        total_steps: env steps of every run to be trained, summed.
        runs: how many runs.
        stream: where the progress goes.
        live: redraw one line in place (default: when ``stream`` is a terminal).
    """

    def __init__(
        self, total_steps: int, runs: int, stream: TextIO, live: bool | None = None
    ) -> None:
        self.total, self.runs, self.stream = total_steps, runs, stream
        self.live = stream.isatty() if live is None else live
        self.steps: dict[int, int] = {}
        """Env steps done by each job so far."""
        self.first: dict[int, int] = {}
        """What each job had done when it was first heard of (a resumed job's earlier work)."""
        self.finished = 0
        self.start = time.perf_counter()
        self._next_tenth = 1
        self._drawn = False

    def update(self, job: int, steps: int) -> None:
        """Job ``job`` has done ``steps`` env steps in all; show it."""
        self.first.setdefault(job, steps)
        self.steps[job] = steps
        self._show()

    def run_finished(self, job: int, steps: int) -> None:
        """One run of job ``job`` finished (``steps``: what the job has done by then)."""
        self.finished += 1
        self.steps[job] = max(steps, self.steps.get(job, 0))
        self.first.setdefault(job, 0)

    def done(self) -> int:
        """Env steps done over all jobs."""
        return sum(self.steps.values())

    def rate(self) -> float | None:
        """Env steps per second this study has trained at (None before any)."""
        new = self.done() - sum(self.first.values())
        elapsed = time.perf_counter() - self.start
        return new / elapsed if new > 0 and elapsed > 0 else None

    def eta(self) -> float | None:
        """Seconds left at the measured rate (None before it is known)."""
        left = max(self.total - self.done(), 0)
        if left == 0:
            return 0.0
        rate = self.rate()
        return None if rate is None else left / rate

    def line(self) -> str:
        """The progress as one line."""
        done = min(self.done(), self.total)
        rate, eta = self.rate(), self.eta()
        speed = "n/a" if rate is None else f"{rate:,.0f}"
        left = "n/a" if eta is None else clock(eta)
        return (
            f"{bar(done, self.total)} {100 * done / max(self.total, 1):5.1f}%  "
            f"{done:,}/{self.total:,} env steps  {speed} steps/s  runs finished "
            f"{self.finished}/{self.runs}  elapsed {clock(time.perf_counter() - self.start)}  "
            f"ETA {left}"
        )

    def message(self, text: str) -> None:
        """Print a line of its own (a finished run), then the progress again if it is live."""
        if self.live and self._drawn:
            print("\r\x1b[K", end="", file=self.stream)
        print(text, file=self.stream, flush=True)
        if self.live and self._drawn:
            self._draw()

    def close(self) -> None:
        """End the live line (the next output starts on a line of its own)."""
        if self.live and self._drawn:
            print(file=self.stream, flush=True)
            self._drawn = False

    def _show(self) -> None:
        if self.live:
            self._draw()
            return
        tenths = 10 * self.done() // max(self.total, 1)
        if tenths >= self._next_tenth:
            self._next_tenth = tenths + 1
            print(self.line(), file=self.stream, flush=True)

    def _draw(self) -> None:
        print(f"\r{self.line()}\x1b[K", end="", file=self.stream, flush=True)
        self._drawn = True
