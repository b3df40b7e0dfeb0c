import numpy as np
import pytest

from rl_rmsprop.aggregate import bootstrap_ci, curve_on_grid, iqm, normalized_auc, step_grid


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
