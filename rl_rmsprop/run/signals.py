"""SIGINT/SIGTERM for the run loops: finish the update, checkpoint, stop."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any


class Interrupted(Exception):  # noqa: N818 (a stop, not an error)
    """The run stopped on SIGINT or SIGTERM after writing a checkpoint."""

    def __init__(self, signum: int, step: int, run_dir: Path) -> None:
        super().__init__(signum)
        self.signum, self.step, self.run_dir = signum, step, run_dir


class StopSignals:
    """SIGINT/SIGTERM handling for the run loop, as a context manager.

    The first signal only sets :attr:`signum`; the loop finishes its current update, writes a
    checkpoint and raises :class:`Interrupted`. A second signal raises ``KeyboardInterrupt`` at
    once. Outside the main thread (where handlers cannot be installed) it does nothing. A
    signal that is ignored when it starts stays ignored (the ``nohup`` convention; a study's
    workers ignore Ctrl-C and are stopped by their parent's SIGTERM).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
