from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from agents.a2c import VALUE_LOSS as LOSS
from rl_rmsprop.aggregate import (
    RunCurves,
    bootstrap_ci,
    curve_on_grid,
    iqm,
    normalized_auc,
    read_scalars,
    step_grid,
)
from rl_rmsprop.logger import Logger
from rl_rmsprop.optim.figures import LR
from rl_rmsprop.tags import EPISODIC_LENGTH, EPISODIC_RETURN


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


# --- reading a run's scalars ----------------------------------------------------------------


def tensorboard_scalars(run_dir: Path, tags) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What TensorBoard's reader shows (every point kept)."""
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


def f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def test_a_run_is_read_from_its_table_with_the_values_tensorboard_shows_in_float32(tmp_path):
    logger = Logger(tmp_path, total_steps=10_000, quiet=True)
    for step in range(0, 10_000, 40):
        logger.episode(float(step % 97) / 3, 20 + step % 13, step)
        if step % 400 == 0:
            logger.scalars({LOSS: step / 7, LR: torch.tensor(3e-4)}, step)
    logger.final({"episodic_return_mean100": 42.0, "sps": None})
    logger.close()
    tags = [EPISODIC_RETURN, EPISODIC_LENGTH, LOSS, LR, "absent"]
    got = read_scalars(tmp_path, tags)
    shown = tensorboard_scalars(tmp_path, tags)
    assert got.keys() == shown.keys() == {EPISODIC_RETURN, EPISODIC_LENGTH, LOSS, LR}
    for tag in got:
        assert got[tag][0].dtype == np.int64 and got[tag][1].dtype == np.float64
        np.testing.assert_array_equal(got[tag][0], shown[tag][0])
        np.testing.assert_array_equal(f32(got[tag][1]), shown[tag][1])
    steps = np.arange(0, 10_000, 40)
    np.testing.assert_array_equal(got[EPISODIC_RETURN][1], (steps % 97) / 3)  # float64 kept
    np.testing.assert_array_equal(got[LOSS][1], np.arange(0, 10_000, 400) / 7)


def test_a_run_without_a_table_is_read_by_tensorboards_reader(tmp_path):
    first = SummaryWriter(str(tmp_path))
    for step in range(100):
        first.add_scalar("r", step, step)
        first.add_scalar("other", -step, step)
    first.close()
    (old,) = tmp_path.glob("events.out.tfevents.*")
    old.rename(tmp_path / "events.out.tfevents.0000000001.first")  # sorts first whatever the clock
    resumed = SummaryWriter(str(tmp_path), purge_step=50)
    for step in range(50, 150):
        resumed.add_scalar("r", 1000 + step, step)
    resumed.close()
    got = read_scalars(tmp_path, ["r", "other", "absent"])
    assert set(got) == {"r", "other"}
    np.testing.assert_array_equal(got["r"][0], np.arange(150))
    np.testing.assert_array_equal(got["r"][1], [*range(50), *range(1050, 1150)])
    np.testing.assert_array_equal(got["other"][0], np.arange(50))  # purged for every tag
    curves = RunCurves(tmp_path, ["r", "absent"])
    assert set(curves.series) == {"r"} and curves.series["r"][0].dtype == np.float64
    np.testing.assert_array_equal(
        curves.on_grid("r", np.array([49.0, 50.0, 149.0])), [49, 1050, 1149]
    )
    assert np.isnan(curves.on_grid("absent", np.array([1.0]))).all()
    np.testing.assert_array_equal(curves.interpolated("r", np.array([0.5, 149.0])), [0.5, 1149])


def test_tensor_scalars_of_other_writers_are_read_too(tmp_path):
    writer = SummaryWriter(str(tmp_path))
    for step in range(5):
        writer.add_scalar("new", step / 3, step, new_style=True)
        writer.add_scalar("double", step / 3, step, new_style=True, double_precision=True)
    writer.add_text("text", "not a number")
    writer.close()
    got = read_scalars(tmp_path, ["new", "double", "text/text_summary"])
    assert set(got) == {"new", "double"}
    np.testing.assert_array_equal(got["new"][0], np.arange(5))
    np.testing.assert_array_equal(got["new"][1], f32(np.arange(5) / 3))
    np.testing.assert_array_equal(got["double"][1], np.arange(5) / 3)


def test_read_scalars_reads_only_the_folder_itself(tmp_path):
    Logger(tmp_path / "sub", total_steps=10, quiet=True).close()
    writer = SummaryWriter(str(tmp_path / "sub"))
    writer.add_scalar("a", 1.0, 0)
    writer.close()
    (tmp_path / "notes.txt").write_text("not events")
    assert read_scalars(tmp_path, ["a"]) == {}
