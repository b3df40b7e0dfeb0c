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
