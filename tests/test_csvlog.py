"""progress.csv: rows, widening header, resume, a cut-short last line, exact values."""

import csv

import numpy as np
import pytest

from rl_rmsprop.csvlog import FILENAME, STEP, WALL_TIME, ProgressCsv, read_progress

A, B, C = "a/x", "b/y", "c/z"  # made-up tags (names outside the schema)


def _lines(run_dir):
    with open(run_dir / FILENAME, newline="") as f:
        return list(csv.reader(f))


def test_a_new_tag_widens_the_header_and_earlier_rows_get_empty_cells(tmp_path):
    table = ProgressCsv(tmp_path)
    table.row({A: 1.0}, step=10, wall_time=100.0)
    table.row({B: 2.0, A: 3.0}, step=20, wall_time=101.0)
    table.close()
    header, *rows = _lines(tmp_path)
    assert header == [STEP, WALL_TIME, A, B]
    assert rows == [["10", "100.0", "1.0", ""], ["20", "101.0", "3.0", "2.0"]]
    assert not (tmp_path / (FILENAME + ".tmp")).exists()


def test_values_come_back_exactly_and_nan_is_kept(tmp_path):
    values = [0.1, 1 / 3, 1e-300, -2.5e17, float("nan")]
    table = ProgressCsv(tmp_path)
    for i, value in enumerate(values):
        table.row({A: value}, step=i)
    table.close()
    steps, read = read_progress(tmp_path, [A])[A]
    assert steps.dtype == np.int64 and read.dtype == np.float64
    assert steps.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(read, np.array(values))  # NaN == NaN here


def test_read_progress_gives_only_logged_cells_and_skips_unknown_tags(tmp_path):
    table = ProgressCsv(tmp_path)
    table.row({A: 1.0}, step=1)
    table.row({B: 2.0}, step=2)
    table.row({A: 3.0, B: 4.0}, step=3)
    table.close()
    series = read_progress(tmp_path, [A, B, C])
    assert set(series) == {A, B}
    assert series[A][0].tolist() == [1, 3] and series[A][1].tolist() == [1.0, 3.0]
    assert series[B][0].tolist() == [2, 3] and series[B][1].tolist() == [2.0, 4.0]


def test_no_table_reads_as_none(tmp_path):
    assert read_progress(tmp_path, [A]) is None


def test_flush_writes_rows_before_close(tmp_path):
    table = ProgressCsv(tmp_path)
    table.row({A: 1.0}, step=1)
    table.flush()
    assert read_progress(tmp_path, [A])[A][1].tolist() == [1.0]
    table.close()
    table.close()  # a second close is harmless


def test_resume_drops_rows_at_and_after_the_resume_step_and_keeps_columns(tmp_path):
    first = ProgressCsv(tmp_path)
    for step in (10, 20, 30, 40):
        first.row({A: float(step), B: -float(step)}, step=step)
    first.close()
    resumed = ProgressCsv(tmp_path, resume_step=30)
    assert resumed.columns == [A, B]
    resumed.row({A: 31.0}, step=31)
    resumed.close()
    steps, values = read_progress(tmp_path, [A])[A]
    assert steps.tolist() == [10, 20, 31] and values.tolist() == [10.0, 20.0, 31.0]
    assert read_progress(tmp_path, [B])[B][0].tolist() == [10, 20]


def test_resume_without_a_table_starts_one(tmp_path):
    table = ProgressCsv(tmp_path, resume_step=50)
    table.row({A: 1.0}, step=60)
    table.close()
    assert read_progress(tmp_path, [A])[A][0].tolist() == [60]


def test_a_table_that_is_not_resumed_starts_empty(tmp_path):
    first = ProgressCsv(tmp_path)
    first.row({A: 1.0}, step=1)
    first.close()
    fresh = ProgressCsv(tmp_path)  # not resumed: rows of an earlier table are not kept
    fresh.close()
    assert _lines(tmp_path) == [[STEP, WALL_TIME]]


def test_a_last_line_cut_short_is_not_a_row(tmp_path):
    table = ProgressCsv(tmp_path)
    table.row({A: 1.0, B: 2.0}, step=1)
    table.row({A: 3.0, B: 4.0}, step=2)
    table.close()
    path = tmp_path / FILENAME
    text = path.read_text()
    path.write_text(text[: len(text) - 4])  # the process died while writing the last row
    series = read_progress(tmp_path, [A, B])
    assert series[A][0].tolist() == [1] and series[B][0].tolist() == [1]
    resumed = ProgressCsv(tmp_path, resume_step=100)
    resumed.row({A: 5.0}, step=3)
    resumed.close()
    assert read_progress(tmp_path, [A])[A][0].tolist() == [1, 3]


def test_an_unreadable_row_is_skipped_with_a_warning(tmp_path):
    table = ProgressCsv(tmp_path)
    for step in (1, 2, 3):
        table.row({A: float(step)}, step=step, wall_time=0.0)
    table.close()
    path = tmp_path / FILENAME
    path.write_text(path.read_text().replace("\n2,", "\ntwo,"))
    with pytest.warns(RuntimeWarning, match="1 unreadable row"):
        steps, values = read_progress(tmp_path, [A])[A]
    assert steps.tolist() == [1, 3] and values.tolist() == [1.0, 3.0]
