"""Job functions for the worker-pool tests (a module of its own: spawned workers import it)."""

from __future__ import annotations

import os
import time


def square(x: int) -> int:
    return x * x


def fail(x: int) -> int:
    raise ValueError(f"no good: {x}\nsecond line")


def vanish(code: int) -> int:
    os._exit(code)


def sleep_then(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def count_to(n: int) -> int:
    """Report 1 .. n to the parent as progress, then return n."""
    from rl_rmsprop.workers import report

    for i in range(1, n + 1):
        report(i)
    return n
