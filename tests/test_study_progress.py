"""study.progress: a study's env steps, rate, runs finished and ETA, live or every 10%."""

from __future__ import annotations

import io

import pytest
from conftest import FakeTerminal

from rl_rmsprop.study import progress as progress_module
from rl_rmsprop.study.progress import StudyProgress, bar, clock


@pytest.fixture
def now(monkeypatch):
    """A clock the test moves: ``now[0]`` seconds."""
    t = [100.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: t[0])
    return t


def test_bar_and_clock():
    assert bar(5, 10, width=10) == "[#####.....]" and bar(20, 10, width=4) == "[####]"
    assert clock(3725.4) == "1:02:05" and clock(0) == "0:00:00"


def test_plain_lines_every_tenth_with_the_measured_rate_and_eta(now):
    out = io.StringIO()
    study = StudyProgress(1000, 4, out)
    study.update(0, 0)
    study.update(1, 0)
    now[0] += 1.0
    study.update(0, 60)  # 6%: no line yet
    assert out.getvalue() == ""
    now[0] += 1.0
    study.update(1, 140)  # 20% in 2 s: 100 steps/s, 800 steps left
    now[0] += 1.0
    study.update(0, 100)  # 24%: nothing new
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and " 20.0%" in lines[0] and "200/1,000 env steps" in lines[0]
    assert "100 steps/s" in lines[0] and "ETA 0:00:08" in lines[0]
    assert "runs finished 0/4" in lines[0]
    study.run_finished(0, 500)
    study.message("a run finished")
    assert study.finished == 1 and out.getvalue().endswith("a run finished\n")


def test_a_resumed_jobs_earlier_steps_do_not_count_as_speed(now):
    study = StudyProgress(1000, 2, io.StringIO())
    study.update(0, 600)  # resumed at 600
    assert study.rate() is None and study.eta() is None
    now[0] += 2.0
    study.update(0, 700)
    assert study.rate() == pytest.approx(50.0) and study.eta() == pytest.approx(6.0)


def test_a_terminal_gets_one_line_redrawn_and_messages_above_it(now):
    out = FakeTerminal()
    study = StudyProgress(100, 1, out)
    study.update(0, 10)
    study.update(0, 50)
    study.message("done: run 1")
    study.close()
    text = out.getvalue()
    assert text.count("\r[") == 3 and text.endswith("\n")  # two updates, one redraw
    assert "\r\x1b[Kdone: run 1\n" in text and "[##########..........]" in text
