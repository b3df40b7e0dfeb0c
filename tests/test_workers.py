"""rl_rmsprop.workers: jobs that report failures, stop when asked and die with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, alive, children, wait_for

from rl_rmsprop.workers import Pool, WorkerDied, WorkerFailed
from tests.jobs import count_to, fail, sleep_then, square, vanish


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_results_come_in_job_order_with_failures_as_results(method):
    jobs = [(square, (3,)), (fail, (4,)), (vanish, (7,)), (square, (5,)), (square, (6,))]
    seen = []
    results = Pool(2, method).map(jobs, lambda i, r: seen.append(i))
    assert results[0] == 9 and results[3] == 25 and results[4] == 36
    assert (
        isinstance(results[1], WorkerFailed)
        and str(results[1]) == "ValueError: no good: 4 second line"
    )
    assert isinstance(results[2], WorkerDied) and "exit code 7" in str(results[2])
    assert sorted(seen) == [0, 1, 2, 3, 4]


def test_a_jobs_progress_reaches_the_parent_before_its_result():
    events = []
    results = Pool(2, "fork").map(
        [(count_to, (3,)), (count_to, (2,)), (square, (4,))],
        lambda i, r: events.append(("result", i, r)),
        lambda i, p: events.append(("progress", i, p)),
    )
    assert results == [3, 2, 16]
    for job, n in ((0, 3), (1, 2)):
        mine = [e for e in events if e[1] == job]
        assert mine == [*(("progress", job, k) for k in range(1, n + 1)), ("result", job, n)]
    assert [e for e in events if e[1] == 2] == [("result", 2, 16)]


PARENT = """
import sys, time
sys.path.insert(0, {root!r})
from tests.jobs import sleep_then
from rl_rmsprop.workers import Pool
Pool(2, "spawn").map([(sleep_then, (600,)), (sleep_then, (600,))])
"""


def test_workers_die_with_their_parent():
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(root=str(ROOT))], cwd=ROOT)
    wait_for(lambda: len(children(parent.pid)) >= 2, timeout=60, what="two workers")
    time.sleep(1.0)  # let both get past their start-up
    workers = [p for p in children(parent.pid) if "resource_tracker" not in _cmdline(p)]
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    wait_for(lambda: not any(alive(p) for p in workers), timeout=15, what="the workers to exit")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def test_stop_terminates_busy_workers_and_kills_what_does_not_stop():
    pool = Pool(2, "fork")
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        try:
            pool.map([(sleep_then, (600,)), (sleep_then, (600,))])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
    assert time.monotonic() - start < 30 and not pool.busy
