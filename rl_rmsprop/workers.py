"""Worker processes that stop when asked and never outlive their parent.

A study runs each job (a run, or a population of runs) in a process of its own. Three things
``concurrent.futures.ProcessPoolExecutor`` does not give and a study needs:

* **Ctrl-C is the parent's.** Workers start with SIGINT ignored, so a Ctrl-C in the terminal
  (which reaches the whole process group) prints no traceback from a worker. The parent then
  sends each busy worker SIGTERM: a training run finishes its update, writes its checkpoint
  and returns (``rl_rmsprop.run.signals.StopSignals``); after :data:`GRACE_S` seconds, or at
  a second Ctrl-C, the rest are killed.
* **Orphans stop.** On Linux each worker asks the kernel for SIGTERM when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``), so a SIGKILLed study leaves no workers training; elsewhere a
  watchdog thread checks the parent every second and sends the same signal.
* **A dead worker is a result**, not a hang: its job is reported as failed with its exit code.

A job may also tell the parent how far it is: :func:`report` in the worker reaches
``on_progress`` of :meth:`Pool.map` in the parent, over the same pipe.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

GRACE_S = 60.0
"""How long stopped workers get to write their checkpoints before they are killed."""
_PR_SET_PDEATHSIG = 1

Job = tuple[Callable[..., Any], tuple[Any, ...]]
"""A function of a module (so that a spawned worker can import it) and its arguments."""


class WorkerDied(Exception):  # noqa: N818 (reported as a job's failure)
    """A worker process ended without returning its job's result."""


class WorkerFailed(Exception):  # noqa: N818 (reported as a job's failure)
    """A job raised an exception in its worker (its type and message, one line)."""


def _die_with_parent(parent: int) -> None:
    """Have this process receive SIGTERM when ``parent`` dies (and now, if it already has)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    else:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
    if os.getppid() != parent:  # it died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)


_parent_conn: Connection | None = None
"""In a worker: the pipe to the parent (where :func:`report` writes)."""


def report(payload: Any) -> None:
    """From a job in a worker: hand ``payload`` to the parent's ``on_progress`` (else nothing)."""
    if _parent_conn is not None:
        with contextlib.suppress(OSError):  # the parent is gone: the job ends anyway
            _parent_conn.send(("progress", payload))


def _worker(conn: Connection, parent: int) -> None:
    """A worker's body: run the jobs the parent sends, each ``(fn, args)``, until ``None``.

    Each result goes back as ``("ok", result)`` or ``("error", "Type: message")``, after any
    number of ``("progress", payload)`` messages from :func:`report`.
    """
    global _parent_conn
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's (see the module)
    _die_with_parent(parent)
    _parent_conn = conn
    with contextlib.suppress(EOFError, OSError, KeyboardInterrupt):  # parent gone, or stopped
        while (job := conn.recv()) is not None:
            fn, args = job
            try:
                message: tuple[str, Any] = ("ok", fn(*args))
            except KeyboardInterrupt:  # a second SIGTERM while stopping: end quietly
                return
            except Exception as e:  # an error in the job is its result, reported by the parent
                text = " ".join(str(e).split())
                message = ("error", f"{type(e).__name__}: {text}" if text else type(e).__name__)
            conn.send(message)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored in this (main) thread while workers start, so they inherit it ignored.

    A spawned worker ignores Ctrl-C from its first instruction, before its imports (a
    KeyboardInterrupt there would print a traceback); Python keeps an inherited SIG_IGN.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


class Pool:
    """At most ``size`` worker processes; each takes the next job when it finishes one.

    Workers live for the whole :meth:`map` (a spawned worker imports torch once, ~1.3 s).

    Args:
        size: processes at once (>= 1).
        method: multiprocessing start method (``fork`` or ``spawn``).
    """

    def __init__(self, size: int, method: str) -> None:
        self.size = max(1, size)
        self.context = multiprocessing.get_context(method)
        self.busy: dict[Connection, tuple[int, Any]] = {}  # pipe -> (job index, process)
        self.idle: list[tuple[Connection, Any]] = []  # started workers waiting for a job

    def _start(self) -> tuple[Connection, Any]:
        mine, theirs = self.context.Pipe()
        process = self.context.Process(
            target=_worker, args=(theirs, os.getpid()), name="rl_rmsprop-worker"
        )
        with _sigint_ignored():
            process.start()
        theirs.close()  # the worker holds its copy: EOF here means it is gone
        return mine, process

    def _result(self, conn: Connection) -> tuple[int, Any, bool]:
        """A busy worker's message: its job's index, the value, and whether the job is done.

        A progress message leaves the job busy; a result (or a WorkerDied if the worker is
        gone) ends it.
        """
        index, process = self.busy[conn]
        try:
            status, value = conn.recv()
        except (EOFError, OSError):
            del self.busy[conn]
            conn.close()
            process.join()
            died = WorkerDied(f"its worker process ended with exit code {process.exitcode}")
            return index, died, True
        if status == "progress":
            return index, value, False
        del self.busy[conn]
        if status == "error":
            value = WorkerFailed(value)
        self.idle.append((conn, process))
        return index, value, True

    def map(
        self,
        jobs: Sequence[Job],
        on_result: Callable[[int, Any], None] | None = None,
        on_progress: Callable[[int, Any], None] | None = None,
    ) -> list[Any]:
        """Run every job; each one's result (or a WorkerDied/WorkerFailed), in job order.

        ``on_result(index, result)`` is called as each finishes, ``on_progress(index,
        payload)`` for each :func:`report` of a job.

        Raises:
            KeyboardInterrupt: on Ctrl-C (or SIGTERM turned into it by the caller), after the
                busy workers were stopped (:meth:`stop`).
        """
        results: list[Any] = [None] * len(jobs)
        queue = list(enumerate(jobs))
        started = 0
        try:
            while queue or self.busy:
                while queue and (self.idle or started < self.size):
                    if not self.idle:
                        self.idle.append(self._start())
                        started += 1
                    conn, process = self.idle.pop()
                    index, job = queue.pop(0)
                    conn.send(job)
                    self.busy[conn] = (index, process)
                for conn in wait(list(self.busy)):
                    index, value, done = self._result(conn)  # type: ignore[arg-type]
                    if not done:
                        if on_progress is not None:
                            on_progress(index, value)
                        continue
                    results[index] = value
                    if on_result is not None:
                        on_result(index, value)
        except KeyboardInterrupt:
            self.stop()
            raise
        finally:
            self._dismiss_idle()
        return results

    def _dismiss_idle(self) -> None:
        for conn, process in self.idle:
            with contextlib.suppress(OSError):
                conn.send(None)
            conn.close()
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
        self.idle.clear()

    def stop(self) -> None:
        """SIGTERM every busy worker, wait up to :data:`GRACE_S` for them, kill the rest.

        What the stopped jobs return is dropped: each left its run folder resumable (a
        checkpoint, or a finished run with its summary).
        """
        for _, process in self.busy.values():
            with contextlib.suppress(OSError):
                process.terminate()
        deadline = time.monotonic() + GRACE_S
        try:
            while self.busy and time.monotonic() < deadline:
                for conn in wait(list(self.busy), timeout=deadline - time.monotonic()):
                    self._result(conn)  # type: ignore[arg-type]
        except KeyboardInterrupt:  # a second Ctrl-C: no more waiting
            pass
        for conn, (_, process) in list(self.busy.items()):
            process.kill()
            process.join()
            conn.close()
        self.busy.clear()
