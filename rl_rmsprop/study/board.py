"""A study's TensorBoard: each optimizer's aggregate curves, margin charts, the HParams columns.

``compare`` writes, in the study folder:

* ``iqm/<optimizer>/``: one TensorBoard run per optimizer whose scalars are the IQM over its
  seeds and the 95% bootstrap band, on the step grid of ``curves.png``, for the return and
  the telemetry of ``optim.png``. Their tags start with the study folder's name
  (``<study>/return``, ``<study>/return/lower``, ``<study>/return/upper``, ...), so nothing
  outside this study carries them.
* a custom-scalars layout (the Custom Scalars tab): one margin chart per figure, whose
  series are those tags, so TensorBoard draws each optimizer as a line in its band, and
  only this study's optimizers, whatever else the logdir holds;
* an HParams experiment: the optimizer first, then the options the runs differ in, then the
  rest, and the runs' final figures as metrics (TensorBoard otherwise guesses the columns
  from the runs and hides some).

Everything is written with TensorBoard's own protobuf builders.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.util.tensor_util import make_tensor_proto

from rl_rmsprop.logger import BufferedEventFile, scalar_event

AGGREGATE_DIR = "iqm"
"""The study subfolder that holds one aggregate run per optimizer."""

Band = tuple[np.ndarray, np.ndarray, np.ndarray]
"""A curve's IQM over seeds and its band's lower and upper edges, each ``[points]``."""


def tag(study: Path, metric: str, edge: str | None = None) -> str:
    """The aggregate tag of ``metric`` in ``study`` (``edge``: ``lower``, ``upper`` or None)."""
    return f"{study.name}/{metric}" + (f"/{edge}" if edge else "")


def write_aggregates(
    study: Path, bands: Mapping[str, Mapping[str, Band]], grid: np.ndarray
) -> list[Path]:
    """Write each optimizer's bands as the scalars of its aggregate run; the runs' folders.

    Args:
        study: the study folder.
        bands: optimizer folder name -> metric -> band.
        grid: the env steps of the bands' points.
    """
    root = study / AGGREGATE_DIR
    if root.exists():  # ours: rewritten with every report
        shutil.rmtree(root)
    folders = []
    for name, metrics in bands.items():
        folder = root / name
        folder.mkdir(parents=True)
        events = BufferedEventFile(str(folder))
        for i, step in enumerate(grid):
            values: dict[str, float] = {}
            for metric, band in metrics.items():
                for edge, series in zip((None, "lower", "upper"), band, strict=True):
                    if np.isfinite(series[i]):
                        values[tag(study, metric, edge)] = float(series[i])
            if values:
                events.add_record(scalar_event(values, int(np.rint(step))))
        events.close()
        folders.append(folder)
    return folders


def layout(study: Path, titles: Mapping[str, str], optimizers: Sequence[str]) -> layout_pb2.Layout:
    """The custom-scalars layout: a margin chart per metric, over this study's tags only."""
    charts = [
        layout_pb2.Chart(
            title=f"{title}: IQM over seeds, 95% bootstrap band",
            margin=layout_pb2.MarginChartContent(
                series=[
                    layout_pb2.MarginChartContent.Series(
                        value=tag(study, metric),
                        lower=tag(study, metric, "lower"),
                        upper=tag(study, metric, "upper"),
                    )
                ]
            ),
        )
        # TensorBoard 2.21 draws a category's charts last to first: reversed, they read
        # in the order given
        for metric, title in reversed(titles.items())
    ]
    category = layout_pb2.Category(
        title=f"{study.name}: {', '.join(optimizers)}", chart=charts, closed=False
    )
    return layout_pb2.Layout(category=[category])


def layout_summary(value: layout_pb2.Layout) -> Summary:
    """The summary that carries a custom-scalars layout.

    TensorBoard's own ``custom_scalar.summary.pb`` imports TensorFlow; this builds the same
    message from the protobufs and helpers TensorBoard ships.
    """
    return Summary(
        value=[
            Summary.Value(
                tag=custom_scalar_metadata.CONFIG_SUMMARY_TAG,
                metadata=custom_scalar_metadata.create_summary_metadata(),
                tensor=make_tensor_proto(value.SerializeToString()),
            )
        ]
    )


def experiment(hparams: Mapping[str, tuple[object, bool]], metrics: Mapping[str, str]) -> Summary:
    """The HParams experiment summary: these option columns, these metric columns.

    Args:
        hparams: option name -> (a run's value, whether the runs differ in it).
        metrics: metric tag -> its column title.

    TensorBoard lists the options that differ first (by name) and ticks only the first few
    for display; marking exactly the study's varied options (the optimizer, the seed) as
    differing puts them there, whatever other runs the logdir holds.
    """
    kinds = {bool: api_pb2.DATA_TYPE_BOOL, str: api_pb2.DATA_TYPE_STRING}
    infos = [
        api_pb2.HParamInfo(
            name=name, type=kinds.get(type(value), api_pb2.DATA_TYPE_FLOAT64), differs=differs
        )
        for name, (value, differs) in hparams.items()
    ]
    found = [
        api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=title)
        for tag, title in metrics.items()
    ]
    data = plugin_data_pb2.HParamsPluginData(
        experiment=api_pb2.Experiment(
            hparam_infos=infos, metric_infos=found, time_created_secs=time.time()
        )
    )
    return Summary(
        value=[
            Summary.Value(
                tag=hparams_metadata.EXPERIMENT_TAG,
                metadata=hparams_metadata.create_summary_metadata(data),
                tensor=hparams_metadata.NULL_TENSOR,
            )
        ]
    )


def columns(runs: Sequence[Mapping[str, object]]) -> dict[str, tuple[object, bool]]:
    """The HParams columns of runs' flat hparams: name -> (first run's value, shown first).

    Shown first: the optimizer, and every option the runs differ in (the seed, the lr).
    """
    return {
        k: (v, k == "optim.name" or len({str(r.get(k)) for r in runs}) > 1)
        for k, v in runs[0].items()
    }


def write_experiment(
    folder: Path, hparams: Mapping[str, tuple[object, bool]], metrics: Mapping[str, str]
) -> None:
    """Write the HParams experiment alone in ``folder`` (a population's)."""
    events = BufferedEventFile(str(folder))
    events.add_event(Event(wall_time=time.time(), summary=experiment(hparams, metrics)))
    events.close()


def write_board(
    study: Path,
    bands: Mapping[str, Mapping[str, Band]],
    grid: np.ndarray,
    labels: Sequence[str],
    titles: Mapping[str, str],
    hparams: Mapping[str, tuple[object, bool]],
    metrics: Mapping[str, str],
) -> None:
    """Write the aggregate runs, and the layout and HParams experiment in the study folder.

    The study folder's own event file is replaced (one layout per study: the latest).
    """
    write_aggregates(study, bands, grid)
    for old in study.glob("events.out.tfevents.*"):
        old.unlink()
    events = BufferedEventFile(str(study))
    for summary in (
        layout_summary(layout(study, titles, labels)),
        experiment(hparams, metrics),
    ):
        events.add_event(Event(wall_time=time.time(), summary=summary))
    events.close()
