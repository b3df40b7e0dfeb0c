"""study.report: the figures, table, significance and plots of a study."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading

import pytest

from rl_rmsprop.study import report
from rl_rmsprop.study.report import auc_scale
from rl_rmsprop.study.specs import parse_specs
from tests.jobs import square


def _row(label, finals):
    from rl_rmsprop.study.report import OptimizerResult

    n = len(finals)
    return OptimizerResult(
        label, n, 0, 1.0, None, 1.0, 0.0, 0, None, None, 0, None, None, None, finals
    )


def test_significance_is_the_probability_of_improvement_with_three_runs_or_more():
    from rl_rmsprop.study.report import improvements, significance

    a, b = _row("a", [1.0, 2.0, 3.0, 4.0, 5.0]), _row("b", [10.0, 11.0, 12.0, 13.0, 14.0])
    c = _row("c", [2.0, 3.0, 4.0, 11.0, 12.0])
    pairs = {(i.better, i.worse): i for i in improvements([a, b, c])}
    assert set(pairs) == {("b", "a"), ("c", "a"), ("b", "c")}  # each pair once, P >= 0.5
    assert pairs["b", "a"].probability == 1.0 and pairs["b", "a"].significant
    # Pairs with c's run above a's, ties one half: c = 2, 3, 4, 11, 12 beat 1.5, 2.5, 3.5, 5, 5.
    assert pairs["c", "a"].probability == pytest.approx(17.5 / 25)
    assert pairs["b", "c"].probability == pytest.approx((3 + 3.5 + 4.5 + 5 + 5) / 25)
    assert pairs["b", "c"].significant and pairs["b", "c"].ci[0] > 0.5
    assert not pairs["c", "a"].significant  # its interval reaches below 0.5
    assert pairs["c", "a"].ci[0] < 0.5 < pairs["c", "a"].ci[1]
    text = significance([a, b, c, _row("d", [0.0, 1.0])])
    assert "b > a  1.00 [1.00, 1.00]  significant" in text
    assert "b > c" in text and "c ~ a  0.70" in text and "not significant" in text
    assert "not compared (fewer than 3 finished runs): d" in text and "d ~" not in text
    assert "too few seeds" in significance([_row("a", [1.0]), _row("b", [5.0, 6.0])])


def test_the_probability_of_improvement_is_the_mann_whitney_fraction_and_symmetric():
    from rl_rmsprop.aggregate import probability_of_improvement

    p, (low, high) = probability_of_improvement([1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, 3.0])
    assert p == pytest.approx((1.5 + 2.5 + 3.5 + 4) / 16)
    assert low <= p <= high
    q, (qlow, qhigh) = probability_of_improvement([0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])
    assert q == pytest.approx(1 - p)
    assert qlow <= q <= qhigh and qhigh < 1.0
    assert probability_of_improvement([5.0, 5.0], [5.0, 5.0]) == (0.5, (0.5, 0.5))


def test_auc_scale_is_a_positive_goal_or_one():
    assert auc_scale(475.0, [100.0]) == 475.0
    assert auc_scale(-100.0, [-80.0]) == 1.0  # Acrobot: the AUC is then the mean return
    assert auc_scale(None, [20.0, None, 50.0]) == 50.0
    assert auc_scale(None, [-20.0, None]) == 1.0
    assert auc_scale(None, []) == 1.0


@pytest.mark.parametrize("scale", [1.0, 1e5])
def test_plots_keep_every_label_inside_the_figure(tmp_path, scale):
    """Fixed margins (no tight_layout) still fit wide tick labels, offsets and titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    specs = parse_specs("rmsprop,adam")
    grid = np.linspace(0, 10_000_000, 50)

    class Pair:
        def __init__(self, spec):
            self.spec = spec

    telemetry = {tag: np.logspace(-8, 3, 50) for tag in report.OPTIM_TAGS}
    curves = {
        Pair(s): {"return": np.linspace(-0.2, 0.2, 50) * scale + i, **telemetry}
        for s in specs
        for i in range(3)
    }
    bands = report.study_bands(specs, curves)
    figures = []
    real_close = plt.close
    plt.close = figures.append  # keep the figures to measure them
    try:
        title = "dqn on ALE/MontezumaRevenge-v5, 3 seeds"
        seeds = dict.fromkeys(specs, 3)
        report.plot_curves(bands, seeds, grid, tmp_path / "c.png", title, 0.1 * scale)
        report.plot_optim(bands, grid, tmp_path / "o.png", title)
    finally:
        plt.close = real_close
    for fig in figures:
        renderer = fig.canvas.get_renderer()
        box = fig.bbox
        for ax in fig.axes:
            tight = ax.get_tightbbox(renderer)
            assert box.x0 <= tight.x0 and tight.x1 <= box.x1, (fig, ax.get_title())
            assert box.y0 <= tight.y0 and tight.y1 <= box.y1, (fig, ax.get_title())
        boxes = sorted((ax.get_tightbbox(renderer) for ax in fig.axes), key=lambda b: b.x0)
        for left, right in itertools.pairwise(boxes):  # side by side panels do not overlap
            assert left.x1 <= right.x0
        for text in fig.texts:  # the suptitle
            extent = text.get_window_extent(renderer)
            assert box.y0 <= extent.y0 and extent.y1 <= box.y1
        plt.close(fig)


def test_the_report_draws_in_forked_workers_when_this_process_has_no_other_thread():
    # A fresh interpreter: threads other tests leave behind (e.g. tqdm's monitor) stay out.
    code = (
        "from rl_rmsprop.study import report\n"
        "with report.report_pool() as pool:\n"
        "    print(type(pool).__name__, pool.submit(pow, 3, 2).result())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["ProcessPoolExecutor", "9"]


def test_the_report_draws_here_when_this_process_has_another_thread():

    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        with report.report_pool() as pool:
            assert isinstance(pool, report._Serial)
            assert pool.submit(square, 5).result() == 25
            with pytest.raises(TypeError):
                pool.submit(square, "x")  # an error is raised where it happens
    finally:
        stop.set()
        other.join()


def test_the_table_counts_both_solved_rules():
    from rl_rmsprop.study.report import aggregate, format_table
    from rl_rmsprop.study.specs import OptimizerSpec, Pair

    spec = OptimizerSpec("rmsprop")
    pairs = [Pair(spec, seed, None) for seed in range(3)]

    def summary(solved, eval_solved):
        return {
            "episodic_return_mean100": 400.0,
            "solved_at_step": solved,
            "solved_at_time_s": None if solved is None else 1.0,
            "eval_solved_at_step": eval_solved,
            "sps": 1000.0,
        }

    results = {
        pairs[0]: summary(None, 20_000),
        pairs[1]: summary(50_000, 30_000),
        pairs[2]: {**summary(None, None), "eval_solved_at_step": None},
    }
    (row,) = aggregate([spec], pairs, results, {})
    assert (row.solved, row.eval_solved, row.eval_steps_to_solve) == (1, 2, 25_000.0)
    line = format_table([row]).splitlines()[2]
    assert " 1/3 " in line and " 2/3 " in line and "25,000" in line
