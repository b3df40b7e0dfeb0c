"""run.tracker: the solved-at rule and the per-member episode bookkeeping."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rl_rmsprop.optim.figures import LR
from rl_rmsprop.run.tracker import SOLVE_WINDOW, EpisodeStats, SolvedAt, fmt_or_na
from rl_rmsprop.train import main


def test_solved_at_is_the_first_episode_whose_last_20_reach_the_threshold():
    assert SOLVE_WINDOW == 20
    exact, above = SolvedAt(475.0), SolvedAt(476.0)
    for i in range(19):
        for tracker in (exact, above):
            tracker.add(500.0, i, float(i))  # 19 episodes at 500: not yet a full window
            assert tracker.step is None
    exact.add(0.0, 19, 19.0)  # mean 475.0 reaches 475
    assert (exact.step, exact.time_s) == (19, 19.0)
    exact.add(0.0, 20, 20.0)
    assert exact.step == 19  # the first step counts
    above.add(0.0, 19, 19.0)  # the largest return is above 476, the mean (475) is not
    assert above.step is None
    restored = SolvedAt(476.0)
    restored.load_state_dict(above.state_dict())
    for tracker in (above, restored):
        for i in range(20, 39):
            tracker.add(500.0, i, float(i))  # the 0 is still in the window
        assert tracker.step is None and len(tracker.state_dict()["window"]) == 20
        tracker.add(500.0, 39, 39.0)  # it has left: 20 episodes at 500
        assert tracker.step == 39
    never = SolvedAt(None)
    for i in range(40):
        never.add(1e9, i, 0.0)
    assert never.step is None


def test_episode_stats_keep_the_last_100_returns_and_the_solved_step():
    stats = EpisodeStats(500.0)  # every one of the last 20 must be 500
    assert stats.mean_recent() is None and stats.figures()["episodic_return_mean100"] is None
    for i in range(150):
        stats.add(float(i), step=10 * i, elapsed_s=i / 10)
    assert list(stats.recent) == [float(i) for i in range(50, 150)]
    assert stats.mean_recent() == pytest.approx(99.5)
    assert stats.mean_recent(SOLVE_WINDOW) == pytest.approx(139.5)
    assert stats.figures()["solved_at_step"] is None
    for i in range(SOLVE_WINDOW):
        stats.add(500.0, step=2000 + i, elapsed_s=30.0 + i)
    assert stats.figures()["solved_at_step"] == 2000 + SOLVE_WINDOW - 1
    restored = EpisodeStats(500.0)
    restored.load_state_dict(stats.state_dict())
    assert restored.figures() == stats.figures() and list(restored.recent) == list(stats.recent)


def test_eval_solved_at_is_the_first_evaluation_whose_mean_reaches_the_threshold():
    stats = EpisodeStats(475.0)
    stats.evaluated(None, 10_000)  # evaluation off: nothing to judge
    stats.evaluated(474.9, 20_000)
    assert stats.figures()["eval_solved_at_step"] is None
    stats.evaluated(475.0, 30_000)
    stats.evaluated(500.0, 40_000)  # the first evaluation counts
    assert stats.figures()["eval_solved_at_step"] == 30_000
    assert stats.figures()["solved_at_step"] is None  # the training rule is separate
    restored = EpisodeStats(475.0)
    restored.load_state_dict(stats.state_dict())
    assert restored.figures() == stats.figures()
    older = {k: v for k, v in stats.state_dict().items() if k != "eval_solved_at_step"}
    restored.load_state_dict(older)  # a checkpoint written before the evaluation rule
    assert restored.figures()["eval_solved_at_step"] is None
    never = EpisodeStats(None)
    never.evaluated(1e9, 10)
    assert never.figures()["eval_solved_at_step"] is None


def test_fmt_or_na():
    assert fmt_or_na(None) == "n/a" and fmt_or_na(12.345) == "12.3" and fmt_or_na(3, ",.0f") == "3"


@pytest.mark.parametrize("population", [0, 2])
def test_a_linear_schedule_sets_each_updates_lr_from_the_env_steps_done(tmp_path, population):
    total = 2000
    argv = ["--total-steps", str(total), "--lr", "8.3e-4", "--lr-schedule", "linear"]
    argv += ["--log-every", "1", "--eval-every", "0", "--eval-episodes", "0", "--quiet"]
    argv += ["--logdir", str(tmp_path), "--run-name", "lin", "--seed", "3"]
    assert main([*argv, "--population", str(population)]) == 0
    folder = tmp_path / "lin" / "seed-3" if population else tmp_path / "lin"
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    logged = [(e.step, e.value) for e in acc.Scalars(LR)]
    assert [s for s, _ in logged] == list(range(40, total + 1, 40))  # 8 envs x 5 steps
    for step, lr in logged:  # SB3's lin_: progress_remaining * initial, after the rollout
        assert lr == pytest.approx((1.0 - step / total) * 8.3e-4, rel=1e-6, abs=1e-12)
