import csv
import io
import threading

import numpy as np
import pytest
import torch
from conftest import FakeTerminal
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import (
    masked_crc32c as tensorboards_masked_crc32c,
)

from agents.a2c import VALUE_LOSS
from rl_rmsprop.logger import (
    Logger,
    ProgressLine,
    flatten,
    markdown_table,
    masked_crc32c,
    scalar_event,
)
from rl_rmsprop.optim.figures import GRAD_VALUES, LR, SQ_AVG
from rl_rmsprop.tags import EPISODIC_LENGTH, EPISODIC_RETURN, HPARAMS


def test_flatten_and_markdown():
    flat = flatten({"run": {"seed": 1}, "optim": {"lr": 0.1, "name": "rmsprop"}})
    assert flat == {"run.seed": 1, "optim.lr": 0.1, "optim.name": "rmsprop"}
    table = markdown_table(flat)
    assert table.splitlines()[0] == "| option | value |" and "| optim.lr | 0.1 |" in table


def test_plain_progress_lines_every_tenth_and_quiet(tmp_path):
    out = io.StringIO()
    logger = Logger(tmp_path / "a", total_steps=1000, stream=out)
    due = []
    for step in range(0, 1001, 50):
        due.append(logger.progress_due(step))
        logger.progress(step, 123.0, None if step < 500 else 42.0)
    logger.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 11 and "n/a" in lines[0] and "42.0" in lines[-1] and "SPS" in lines[0]
    assert due == [step % 100 == 0 for step in range(0, 1001, 50)]  # exactly the drawn ones
    # a total that the steps do not divide: the last line is at 100%, never above it
    out = io.StringIO()
    logger = Logger(tmp_path / "c", total_steps=1010, stream=out)
    for step in range(40, 1041, 40):
        logger.progress(step, 1.0, None)
    logger.close()
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("     1,040/1,010 steps (100.0%)") and len(lines) == 10
    quiet = io.StringIO()
    logger = Logger(tmp_path / "b", total_steps=1000, quiet=True, stream=quiet)
    assert not logger.progress_due(500)
    logger.progress(500, 1.0, 1.0)
    logger.message("hello")
    assert quiet.getvalue() == ""
    logger.warning("not an exact continuation")  # what a quiet user must still see
    logger.close()
    assert quiet.getvalue() == "not an exact continuation\n"


def test_a_terminal_gets_one_live_line_with_a_bar(tmp_path):
    out = FakeTerminal()
    logger = Logger(tmp_path / "tty", total_steps=100, stream=out)
    logger.progress(50, 1000.0, 12.5)
    logger.progress(100, 1000.0, 20.0)  # the last step is always drawn
    logger.close()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")
    assert "[##########          ]" in text and "[####################]" in text
    assert "20.0" in text and "SPS" in text


def test_a_progress_line_ends_only_what_it_drew():
    out = FakeTerminal()
    line = ProgressLine(out, 100)
    line.end()
    assert out.getvalue() == ""  # nothing drawn, nothing to end
    line.show(10, "ten")
    line.show(11, "eleven")  # within 0.2 s of the last draw: not due
    line.show(100, "done")  # the last step is always drawn
    line.end()
    line.end()
    assert out.getvalue() == "\r[##                  ] ten\r[####################] done\n"
    plain = io.StringIO()
    line = ProgressLine(plain, 100)
    for step in range(0, 101, 5):
        line.show(step, f"at {step}")
    line.end()
    assert plain.getvalue().splitlines() == [f"at {step}" for step in range(0, 101, 10)]
    quiet = FakeTerminal()
    line = ProgressLine(quiet, 100, quiet=True)
    line.show(100, "x")
    line.end()
    assert quiet.getvalue() == "" and not line.due(100)


def test_masked_crc32c_matches_tensorboards_and_the_check_value():
    rng = np.random.default_rng(0)
    for n in [0, 1, 8, 255, 256, 257, 1000, 9000]:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert masked_crc32c(data) == tensorboards_masked_crc32c(data)
    # CRC-32C("123456789") is 0xE3069283 (the check value); TFRecord masks it.
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@pytest.mark.parametrize("step", [0, 1, 300, 2**40, -3])
def test_scalar_event_is_the_protobuf_encoding(step):
    values = {EPISODIC_RETURN: 23.0, "x/\u00e9": -1.5e-7, "a" * 200: 3.0}
    expected = Event(
        wall_time=1.5,
        step=step,
        summary=Summary(value=[Summary.Value(tag=t, simple_value=v) for t, v in values.items()]),
    )
    assert scalar_event(values, step, wall_time=1.5) == expected.SerializeToString()


def test_a_buffered_logger_writes_what_tensorboard_reads(tmp_path):
    threads = threading.active_count()
    logger = Logger(tmp_path, 1000, quiet=True)
    logger.scalars({"a": 1.0}, 0)
    assert threading.active_count() == threads  # no writer thread (SummaryWriter starts one)
    logger.events.file.max_events = 7  # several batches
    for step in range(0, 500, 10):
        logger.episode(float(step), step // 10, step)
        logger.scalars({VALUE_LOSS: torch.tensor(step / 2), LR: 7e-4}, step)
    logger.histograms({GRAD_VALUES: torch.tensor([1.0, float("nan"), 2.0])}, 10)
    logger.histograms({SQ_AVG: torch.tensor([float("inf")])}, 10)  # skipped
    logger.config({"optim.name": "rmsprop"}, "| a | b |")
    logger.final({"sps": 10.0})
    logger.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    returns = acc.Scalars(EPISODIC_RETURN)
    assert [(e.step, e.value) for e in returns] == [(s, float(s)) for s in range(0, 500, 10)]
    assert [e.value for e in acc.Scalars(VALUE_LOSS)][:3] == [0.0, 5.0, 10.0]
    assert acc.Tags()["histograms"] == [GRAD_VALUES]
    assert acc.Histograms(GRAD_VALUES)[0].histogram_value.num == 2
    assert acc.Scalars(f"{HPARAMS}sps")[0].value == 10.0
    assert np.isfinite([e.value for e in acc.Scalars(LR)]).all()
    # The same scalars as rows of progress.csv (the hparams figures only in summary.json).
    with open(tmp_path / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "wall_time", "a", *TABLE_TAGS]
    assert len(rows) == 1 + 2 * 50
    episodes = [r for r in rows if r[EPISODIC_RETURN]]
    assert [(int(r["step"]), float(r[EPISODIC_LENGTH])) for r in episodes][:2] == [
        (0, 0.0),
        (10, 1.0),
    ]
    assert float(rows[-1][VALUE_LOSS]) == 245.0 and not rows[-1]["a"]


TABLE_TAGS = [EPISODIC_RETURN, EPISODIC_LENGTH, VALUE_LOSS, LR]


def test_a_resumed_logger_hides_what_followed_the_resume_step(tmp_path):
    first = Logger(tmp_path, 100, quiet=True)
    for step in range(10):
        first.scalars({"a": step}, step)
    first.close()
    resumed = Logger(tmp_path, 100, quiet=True, purge_step=5)
    for step in range(5, 8):
        resumed.scalars({"a": 100 + step}, step)
    resumed.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    want = [*range(5), 105, 106, 107]
    assert [e.value for e in acc.Scalars("a")] == want
    with open(tmp_path / "progress.csv", newline="") as f:
        assert [float(r["a"]) for r in csv.DictReader(f)] == want


def test_event_files_sort_by_name_in_the_order_they_were_made(tmp_path, monkeypatch):
    """TensorBoard reads a run's event files in name order and, on a resume, drops what an
    earlier file logged after the resumed step: a file made later must sort later, also within
    one second of one process (the counter crossing from 9 to 10, say)."""
    import rl_rmsprop.logger as logger_module

    monkeypatch.setattr(logger_module.time, "time", lambda: 1_800_000_000.0)
    made = []
    for _ in range(12):
        events = logger_module.BufferedEventFile(str(tmp_path))
        made.append(events._file.name)
        events.close()
    assert sorted(made) == made


def test_histograms_use_summary_writers_default_buckets(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from rl_rmsprop.logger import _tensorflow_buckets

    writer = SummaryWriter(str(tmp_path))
    try:
        assert _tensorflow_buckets() == writer.default_bins
    finally:
        writer.close()
