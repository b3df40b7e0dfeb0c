"""The tag schema: docs/telemetry.md is current, runs write only its tags, no tag spelled twice."""

from __future__ import annotations

import re

from rl_rmsprop import csvlog, tags, train
from tests.conftest import ROOT, events

DEFINED_IN = {"rl_rmsprop/tags.py", "rl_rmsprop/optim/figures.py", "agents/a2c.py", "agents/dqn.py"}
EXEMPT = {"tests/test_tags.py"}
"""Spells out made-up names to test ``tags.matches``."""
LITERAL = re.compile(r"[\"'](charts|losses|grad|optim|eval|hparams)/[A-Za-z0-9_./<>{}]*[\"']")


def test_the_telemetry_page_is_generated_from_the_schema():
    assert (ROOT / "docs" / "telemetry.md").read_text() == tags.markdown()


def test_a_tag_is_spelled_out_only_where_it_is_defined():
    for folder in ("rl_rmsprop", "agents", "envs", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            found = [m.group(0) for m in LITERAL.finditer(path.read_text())]
            if name not in DEFINED_IN | EXEMPT:
                assert not found, f"{name} spells out {found}; import the tag instead"


def test_the_schema_matches_names_and_its_name_parts():
    assert tags.matches("grad/norm/policy.0.weight") and tags.matches("hparams/sps")
    assert tags.matches("optim/lr") and not tags.matches("optim/lr2")
    assert not tags.matches("grad/norm/") and not tags.matches("charts/nope")


def _written(run_dir) -> set[str]:
    acc = events(run_dir)
    return set(acc.Tags()["scalars"]) | set(acc.Tags()["histograms"])


def test_a2c_and_dqn_runs_write_the_schemas_tags_and_only_those(tmp_path):
    common = ["--total-steps", "3000", "--eval-every", "1000", "--eval-episodes", "2"]
    common += ["--log-every", "5", "--histogram-every", "5", "--logdir", str(tmp_path), "--quiet"]
    assert train.main([*common, "--run-name", "a"]) == 0
    dqn = ["--algo", "dqn", "--learning-starts", "500", "--run-name", "d"]
    assert train.main([*common, *dqn]) == 0
    written = _written(tmp_path / "a") | _written(tmp_path / "d")
    unknown = sorted(tag for tag in written if not tags.matches(tag))
    assert not unknown, unknown
    # Everything but Atari's frame count is written by one of the two.
    expected = {t for t in tags.all_tags() if "<" not in t and t != tags.FRAMES}
    assert expected <= written, sorted(expected - written)
    # progress.csv has a column for every scalar of the event files but the final hparams.
    for run in ("a", "d"):
        acc = events(tmp_path / run)
        scalar_tags = {t for t in acc.Tags()["scalars"] if not t.startswith(tags.HPARAMS)}
        with open(tmp_path / run / csvlog.FILENAME) as f:
            header = f.readline().strip().split(",")
        assert header[:2] == [csvlog.STEP, csvlog.WALL_TIME]
        assert set(header[2:]) == scalar_tags
