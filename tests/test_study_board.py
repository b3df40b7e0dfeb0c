"""study.board: a study's aggregate runs, margin-chart layout and HParams experiment."""

from __future__ import annotations

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import metadata

from rl_rmsprop.logger import Logger
from rl_rmsprop.optim.figures import NORM_PRECLIP
from rl_rmsprop.study.board import columns, write_board
from rl_rmsprop.tags import RETURN_MEAN100


def _bands(seed):
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=5)
    centre[0] = np.nan  # before the first log: left out
    return centre, centre - 1, centre + 1


def _tags(folder):
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return acc, set(acc.Tags()["scalars"])


def test_the_layout_names_only_this_studys_aggregate_runs_in_a_shared_logdir(tmp_path):
    study = tmp_path / "compare-a"
    study.mkdir()
    other = Logger(tmp_path / "someone-else", total_steps=10, quiet=True)  # any other run
    other.scalars({RETURN_MEAN100: 1.0, NORM_PRECLIP: 2e5}, 1)
    other.close()
    grid = np.linspace(100, 500, 5)
    bands = {"rmsprop": {"return": _bands(0)}, "adam": {"return": _bands(1)}}
    hparams = columns([{"optim.name": "rmsprop", "run.seed": 0}, {"optim.name": "adam"}])
    write_board(study, bands, grid, ["rmsprop", "adam"], {"return": "ret"}, hparams, {})
    for name, metrics in bands.items():
        acc, tags = _tags(study / "iqm" / name)
        assert tags == {"compare-a/return", "compare-a/return/lower", "compare-a/return/upper"}
        for edge, band in zip(("", "/lower", "/upper"), metrics["return"], strict=True):
            events = acc.Scalars("compare-a/return" + edge)
            assert [e.step for e in events] == [200, 300, 400, 500]  # NaN left out
            np.testing.assert_allclose([e.value for e in events], band[1:], rtol=1e-6)
    acc = EventAccumulator(str(study))
    acc.Reload()
    (event,) = acc.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    assert layout.category[0].title == "compare-a: rmsprop, adam"
    referenced = {
        t
        for c in layout.category[0].chart
        for m in c.margin.series
        for t in (m.value, m.lower, m.upper)
    }
    holders = {
        folder.relative_to(tmp_path).as_posix()
        for folder in [p.parent for p in tmp_path.rglob("events.out.tfevents.*")]
        if referenced & _tags(folder)[1]
    }
    assert holders == {"compare-a/iqm/rmsprop", "compare-a/iqm/adam"}
    # the experiment puts the optimizer and what the runs differ in first
    content = acc.PluginTagToContent("hparams")[metadata.EXPERIMENT_TAG]
    infos = metadata.parse_experiment_plugin_data(content).hparam_infos
    assert [(i.name, i.differs) for i in infos] == [("optim.name", True), ("run.seed", True)]


def test_a_new_report_replaces_the_old_aggregate_runs(tmp_path):
    study = tmp_path / "compare-b"
    study.mkdir()
    grid = np.linspace(1, 5, 5)
    write_board(study, {"sgd": {"return": _bands(2)}}, grid, ["sgd"], {"return": "r"}, {}, {})
    write_board(study, {"adam": {"return": _bands(3)}}, grid, ["adam"], {"return": "r"}, {}, {})
    assert [p.name for p in (study / "iqm").iterdir()] == ["adam"]
    assert len(list(study.glob("events.out.tfevents.*"))) == 1


@pytest.mark.parametrize("runs", [[{"optim.name": "sgd", "optim.lr": 0.1}] * 2])
def test_columns_mark_the_optimizer_even_when_every_run_shares_it(runs):
    assert columns(runs) == {"optim.name": ("sgd", True), "optim.lr": (0.1, False)}
