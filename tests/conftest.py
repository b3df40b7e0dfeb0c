"""Shared test helpers: the CLIs in a subprocess, one-line errors, the fake environments, a
run's event files and printed results table."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
"""The repository root (where ``tests.fake_envs:<Id>`` env ids import from)."""


def cli(
    module: str,
    args: Sequence[str],
    timeout: float = 300,
    cwd: Path = ROOT,
    **popen: object,
) -> subprocess.CompletedProcess:
    """``python -m rl_rmsprop.<module> ARGS`` in a fresh interpreter; its status and output."""
    return subprocess.run(
        [sys.executable, "-m", f"rl_rmsprop.{module}", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def default_sigint() -> None:
    """In a child before exec: SIGINT's default action, as a terminal job starts with.

    A test suite started in the background (``nohup ... &``) has SIGINT ignored, and an
    ignored signal stays ignored across exec: a CLI started from it would never see Ctrl-C.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(
    module: str, args: Sequence[str], cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """The same, started in a process group of its own (as a terminal job is) and not awaited;
    ``env`` adds to (or replaces some of) this process's environment variables."""
    return subprocess.Popen(
        [sys.executable, "-m", f"rl_rmsprop.{module}", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
        preexec_fn=default_sigint,
    )


def ctrl_c(proc: subprocess.Popen) -> None:
    """SIGINT to the process's whole group, as a terminal's Ctrl-C sends it."""
    os.killpg(proc.pid, signal.SIGINT)


def wait_for(condition: Callable[[], bool], timeout: float = 120, what: str = "it") -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    """The live (not zombie) child processes of ``pid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def assert_one_line(err: str, *needles: str) -> None:
    """``err`` is one ``error:`` line (no traceback) that contains every needle."""
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


@pytest.fixture(scope="session")
def fake_envs():
    """Registers the environments of ``tests/fake_envs.py`` in this process."""
    import tests.fake_envs

    return tests.fake_envs


def member_config(logdir: str | Path, seed: int, argv: Sequence[str]):
    """The config that ``argv`` parses to, as the run ``<logdir>/seed-<seed>`` with that seed.

    What a population member is given: ``run_population`` trains a list of these.
    """
    import dataclasses

    from rl_rmsprop.options import parse_config

    cfg = parse_config(list(argv))
    run = dataclasses.replace(cfg.run, seed=seed, logdir=str(logdir), run_name=f"seed-{seed}")
    return dataclasses.replace(cfg, run=run)


def scalars(run_dir: str | Path, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every event of a scalar tag in a run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def assert_engine_matches_autograd(
    model, reference: dict, metrics: dict, ref_metrics: dict
) -> None:
    """The CPU engine's gradients (in ``model``'s ``.grad``) and figures equal autograd's
    (``reference``: parameter name -> gradient) to float64 rounding."""
    import torch

    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, reference[name], rtol=1e-10, atol=1e-13, msg=name)
    for tag, value in ref_metrics.items():
        assert metrics[tag] == pytest.approx(float(value), rel=1e-12, abs=1e-14)


def events(run_dir: str | Path):
    """A run folder's event files, read whole: an ``EventAccumulator`` with every scalar and
    histogram event loaded."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def results_table(text: str) -> list[str]:
    """The first four lines of the results table printed in ``text`` (header, rule and two
    optimizers' rows), each without its last column (SPS, a wall-clock figure)."""
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("optimizer"))
    return [line.rsplit("|", 1)[0] for line in lines[head : head + 4]]


class StopAfter:
    """A stand-in for StopSignals whose signal arrives at the n-th loop boundary."""

    def __init__(self, n: int) -> None:
        self.n = n

    @property
    def signum(self) -> int | None:
        """SIGINT from the n-th read on."""
        self.n -= 1
        return signal.SIGINT if self.n < 0 else None


class FakeTerminal(io.StringIO):
    """A console stream that says it is a terminal (it gets live progress lines)."""

    def isatty(self) -> bool:
        return True
