import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter

from rl_rmsprop.aggregate import (
    RunCurves,
    bootstrap_ci,
    curve_on_grid,
    event_files,
    iqm,
    normalized_auc,
    read_scalars,
    step_grid,
)
from rl_rmsprop.logger import Logger, masked_crc32c_many


def test_iqm_of_known_values():
    # 8 scores: cut 2 from each end, mean of 3, 4, 5, 6.
    assert iqm([8, 1, 7, 2, 6, 3, 5, 4]) == 4.5
    # 5 scores: cut 1 from each end; an outlier does not move it.
    assert iqm([1, 2, 3, 4, 1000]) == 3.0
    # Fewer than 4: the plain mean.
    assert iqm([1.0, 2.0, 6.0]) == 3.0
    # scipy.stats.trim_mean(x, 0.25) on 10 scores cuts 2 from each end.
    x = np.arange(10.0) ** 2
    assert iqm(x) == pytest.approx(np.mean(np.sort(x)[2:8]))


def test_iqm_along_an_axis_and_empty_input():
    runs = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [100.0, 40.0]])
    np.testing.assert_allclose(iqm(runs, axis=0), [2.5, 25.0])
    with pytest.raises(ValueError, match="no scores"):
        iqm([])


def test_bootstrap_ci_of_two_runs_spans_both():
    # Resampling {0, 1}: the mean is 0 (p = 1/4), 0.5 (1/2) or 1 (1/4): the 95% interval is [0, 1].
    low, high = bootstrap_ci([0.0, 1.0], statistic=np.mean, reps=4000)
    assert (low, high) == (0.0, 1.0)


def test_bootstrap_ci_contains_the_statistic_and_narrows_with_more_runs():
    rng = np.random.default_rng(1)
    few, many = rng.normal(100, 10, size=5), rng.normal(100, 10, size=200)
    lo_few, hi_few = bootstrap_ci(few)
    lo_many, hi_many = bootstrap_ci(many)
    assert lo_few <= iqm(few) <= hi_few
    assert lo_many <= iqm(many) <= hi_many
    assert hi_many - lo_many < hi_few - lo_few
    # Known width for a large sample: the IQM's standard error of a normal(100, 10) sample of 200
    # is about 0.8, so the 95% interval is about 3 wide, and it covers the true IQM, 100.
    assert 1.5 < hi_many - lo_many < 5.0 and lo_many < 100 < hi_many
    # Constant scores: a degenerate interval. Same seed: the same interval.
    assert bootstrap_ci([3.0] * 6) == (3.0, 3.0)
    assert bootstrap_ci(few, seed=7) == bootstrap_ci(few, seed=7)


def test_bootstrap_is_stratified_by_task():
    # Task 0's runs are all 0, task 1's all 10: resampling within tasks never mixes them, so
    # every resample's task-mean of IQMs is exactly 5.
    scores = np.array([[0.0, 10.0]] * 6)
    assert bootstrap_ci(scores) == (5.0, 5.0)


def test_bootstrap_of_curves_gives_a_band_per_point():
    runs = np.array([[[0.0, 1.0, 2.0]], [[2.0, 3.0, 4.0]]])  # [runs, tasks, points]
    low, high = bootstrap_ci(runs, statistic=np.mean, reps=2000)
    np.testing.assert_allclose(low, [0.0, 1.0, 2.0])
    np.testing.assert_allclose(high, [2.0, 3.0, 4.0])


def test_curve_on_grid_is_the_mean_of_the_latest_values():
    steps = np.array([10, 20, 30, 40])
    values = np.array([1.0, 2.0, 3.0, 4.0])
    grid = np.array([5, 10, 25, 40, 100])
    np.testing.assert_allclose(
        curve_on_grid(steps, values, grid, window=2), [np.nan, 1.0, 1.5, 3.5, 3.5]
    )
    np.testing.assert_allclose(curve_on_grid(steps, values, grid, window=1)[1:], [1, 2, 4, 4])


def test_normalized_auc_and_grid():
    np.testing.assert_allclose(step_grid(1000, 4), [250, 500, 750, 1000])
    assert normalized_auc(np.array([np.nan, 100.0, 200.0, 500.0]), 500.0) == pytest.approx(0.4)


# --- reading event files -------------------------------------------------------------------


def reference_scalars(run_dir: Path, tags) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What TensorBoard's own reader gives (every point kept)."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    have = set(acc.Tags()["scalars"])
    return {
        tag: (
            np.array([e.step for e in acc.Scalars(tag)]),
            np.array([e.value for e in acc.Scalars(tag)]),
        )
        for tag in tags
        if tag in have
    }


def assert_same_as_tensorboard(run_dir: Path, tags) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sound run reads without a warning
        got = read_scalars(run_dir, tags)
    want = reference_scalars(run_dir, tags)
    assert want, "the reference read nothing: the comparison would prove nothing"
    assert got.keys() == want.keys()
    for tag in want:
        assert got[tag][0].dtype == np.int64 and got[tag][1].dtype == np.float64
        np.testing.assert_array_equal(got[tag][0], want[tag][0], err_msg=tag)
        np.testing.assert_array_equal(got[tag][1], want[tag][1], err_msg=tag)
    return got


def record_spans(path: Path) -> list[tuple[int, int]]:
    """(offset, end) of each TFRecord of a sound event file, framing included."""
    data, spans, pos = path.read_bytes(), [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        spans.append((pos, pos + 16 + length))
        pos += 16 + length
    return spans


def write_records(path: Path, events: list[Event]) -> None:
    """An event file written by hand (TFRecord framing), e.g. without a file_version."""
    records = [e.SerializeToString() for e in events]
    headers = [struct.pack("<Q", len(r)) for r in records]
    crcs = masked_crc32c_many(headers + records).tolist()
    n = len(records)
    with open(path, "wb") as f:
        for i, (header, record) in enumerate(zip(headers, records, strict=True)):
            f.write(header + struct.pack("<I", crcs[i]) + record + struct.pack("<I", crcs[n + i]))


def scalar(tag: str, value: float, step: int) -> Event:
    return Event(step=step, summary=Summary(value=[Summary.Value(tag=tag, simple_value=value)]))


def f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def test_read_scalars_of_summary_writer_matches_tensorboard(tmp_path):
    rng = np.random.default_rng(1)
    values = rng.normal(size=(3, 300))
    writer = SummaryWriter(str(tmp_path))
    for step in range(300):
        for k, tag in enumerate(["a/x", "a/y", "b"]):
            writer.add_scalar(tag, values[k, step], 10 * step)
        writer.add_scalar("not/wanted", 1.0, step)
    writer.close()
    got = assert_same_as_tensorboard(tmp_path, ["a/x", "a/y", "b", "absent"])
    assert set(got) == {"a/x", "a/y", "b"}
    for k, tag in enumerate(["a/x", "a/y", "b"]):
        np.testing.assert_array_equal(got[tag][0], 10 * np.arange(300))
        np.testing.assert_array_equal(got[tag][1], f32(values[k]))


def test_read_scalars_of_a_buffered_logger_matches_tensorboard(tmp_path):
    logger = Logger(tmp_path, total_steps=10_000, quiet=True)
    logger.config({"lr": 0.01}, "| key | value |\n|---|---|\n" + "| lr | 0.01 |\n" * 40)
    for step in range(0, 10_000, 40):
        logger.episode(float(step % 97), 20 + step % 13, step)
        if step % 400 == 0:
            logger.scalars(
                {"losses/a": step / 7, "losses/b": torch.tensor(-1.5), "optim/lr": 3e-4}, step
            )
            logger.histograms({"grad/values": torch.randn(2000)}, step)  # records of a few KB
    logger.final({"episodic_return_mean100": 42.0, "sps": None})
    logger.close()
    tags = ["charts/episodic_return", "charts/episodic_length", "losses/a", "losses/b", "optim/lr"]
    got = assert_same_as_tensorboard(tmp_path, [*tags, "hparams/episodic_return_mean100"])
    steps = np.arange(0, 10_000, 40)
    np.testing.assert_array_equal(got["charts/episodic_return"][0], steps)
    np.testing.assert_array_equal(got["charts/episodic_length"][1], 20 + steps % 13)
    np.testing.assert_array_equal(got["losses/a"][1], f32(np.arange(0, 10_000, 400) / 7))
    assert got["hparams/episodic_return_mean100"][1].tolist() == [42.0]


def write_resumed_run(run_dir: Path) -> None:
    """Steps 0..99 (value = step), then a resume from 50 writing 50..149 (value = 1000 + step)."""
    first = SummaryWriter(str(run_dir))
    for step in range(100):
        first.add_scalar("r", step, step)
        first.add_scalar("other", -step, step)
    first.close()
    # Name the first file so it sorts first whatever the clock and the writer counter say.
    (old,) = event_files(run_dir)
    old.rename(run_dir / "events.out.tfevents.0000000001.first")
    resumed = SummaryWriter(str(run_dir), purge_step=50)
    for step in range(50, 150):
        resumed.add_scalar("r", 1000 + step, step)
    resumed.close()
    assert len(event_files(run_dir)) == 2


def test_a_resumed_run_drops_what_followed_the_resume_step(tmp_path):
    write_resumed_run(tmp_path)
    got = assert_same_as_tensorboard(tmp_path, ["r", "other"])
    np.testing.assert_array_equal(got["r"][0], np.arange(150))
    np.testing.assert_array_equal(got["r"][1], [*range(50), *range(1050, 1150)])
    # The START purge is for every tag, also those the resumed run no longer writes.
    np.testing.assert_array_equal(got["other"][0], np.arange(50))
    curves = RunCurves(tmp_path, ["r", "absent"])
    assert set(curves.series) == {"r"} and curves.series["r"][0].dtype == np.float64
    np.testing.assert_array_equal(
        curves.on_grid("r", np.array([49.0, 50.0, 149.0])), [49, 1050, 1149]
    )
    assert np.isnan(curves.on_grid("absent", np.array([1.0]))).all()


def test_without_a_file_version_out_of_order_steps_purge_their_own_tags(tmp_path):
    # No file_version event: TensorBoard's older rule, an event whose step goes back drops
    # the later values of its own tags only.
    events = [scalar("a", s, s) for s in range(10)] + [scalar("b", -s, s) for s in range(10)]
    events += [scalar("a", 100.0, 5), scalar("a", 101.0, 6)]
    write_records(tmp_path / "events.out.tfevents.1.hand", events)
    got = assert_same_as_tensorboard(tmp_path, ["a", "b"])
    np.testing.assert_array_equal(got["a"][0], [0, 1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(got["a"][1], [0, 1, 2, 3, 4, 100, 101])
    np.testing.assert_array_equal(got["b"][0], np.arange(10))


def test_tensor_scalars_are_read_too(tmp_path):
    writer = SummaryWriter(str(tmp_path))
    for step in range(5):
        writer.add_scalar("new", step / 3, step, new_style=True)
        writer.add_scalar("double", step / 3, step, new_style=True, double_precision=True)
    writer.add_text("text", "not a number")
    writer.close()
    got = read_scalars(tmp_path, ["new", "double", "text/text_summary"])
    assert set(got) == {"new", "double"}
    np.testing.assert_array_equal(got["new"][1], f32(np.arange(5) / 3))
    np.testing.assert_array_equal(got["double"][1], np.arange(5) / 3)


def write_plain_run(run_dir: Path, steps: int = 50) -> Path:
    writer = SummaryWriter(str(run_dir))
    for step in range(steps):
        writer.add_scalar("a", 0.5 * step, step)
    writer.close()
    (path,) = event_files(run_dir)
    return path


@pytest.mark.parametrize("where", ["data crc", "data", "length crc", "length"])
def test_a_truncated_last_record_is_ignored_silently(tmp_path, where):
    path = write_plain_run(tmp_path)
    data = path.read_bytes()
    start, end = record_spans(path)[-1]
    cut = {"data crc": end - 2, "data": end - 6, "length crc": start + 10, "length": start + 3}
    path.write_bytes(data[: cut[where]])
    got = assert_same_as_tensorboard(tmp_path, ["a"])  # no warning either
    np.testing.assert_array_equal(got["a"][0], np.arange(49))
    np.testing.assert_array_equal(got["a"][1], 0.5 * np.arange(49))


def test_a_record_with_a_bad_crc_is_skipped_with_a_warning(tmp_path):
    path = write_plain_run(tmp_path)
    data = bytearray(path.read_bytes())
    spans = record_spans(path)
    # Record 0 is the file_version event; record 1 + s holds step s.
    start, _ = spans[1 + 20]
    # The event would still parse (a bit of its wall time), but its data CRC no longer matches.
    assert data[start + 12] == 0x09  # Event.wall_time, a double, comes first
    data[start + 12 + 4] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="1 record"):
        got = read_scalars(tmp_path, ["a"])
    kept = np.delete(np.arange(50), 20)
    np.testing.assert_array_equal(got["a"][0], kept)
    np.testing.assert_array_equal(got["a"][1], 0.5 * kept)


def test_a_length_with_a_bad_crc_ends_the_file_with_a_warning(tmp_path):
    path = write_plain_run(tmp_path)
    data = bytearray(path.read_bytes())
    start, _ = record_spans(path)[1 + 30]
    data[start] ^= 0x01  # the length: nothing after it can be trusted
    path.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="rest of the file"):
        got = read_scalars(tmp_path, ["a"])
    np.testing.assert_array_equal(got["a"][0], np.arange(30))
    # The same, corrupt length, on the last record: not taken for a file being written.
    path = write_plain_run(tmp_path / "last")
    data = bytearray(path.read_bytes())
    start, _ = record_spans(path)[-1]
    data[start] ^= 0x7F
    path.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="rest of the file"):
        got = read_scalars(tmp_path / "last", ["a"])
    np.testing.assert_array_equal(got["a"][0], np.arange(49))


def test_read_scalars_reads_only_the_folder_itself(tmp_path):
    write_plain_run(tmp_path / "sub", steps=3)
    (tmp_path / "notes.txt").write_text("not events")
    assert read_scalars(tmp_path, ["a"]) == {}
