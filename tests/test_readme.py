"""The README's commands run as written (from a fresh folder, as a newcomer would)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def _commands() -> list[str]:
    """The ``python -m rl_rmsprop...`` commands in the README's code blocks (the part after an
    install command's ``&&``), except those with a placeholder such as ``<run-name>``."""
    out = []
    for block in re.findall(r"```\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            command = line.split("&&")[-1].strip()
            if command.startswith("python -m rl_rmsprop.") and "<" not in command:
                out.append(command)
    return out


def test_the_readme_has_the_main_job_and_the_test_command():
    commands = _commands()
    assert any(c.startswith("python -m rl_rmsprop.train") for c in commands)
    assert any(c.startswith("python -m rl_rmsprop.compare") for c in commands)
    assert 'pip install -e ".[dev]" && python -m pytest -q' in README
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("command", _commands())
def test_a_readme_command_runs_as_written(command, tmp_path):
    argv = shlex.split(command)
    proc = subprocess.run(
        [sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "runs" in proc.stdout  # where its logs went
    assert (tmp_path / "runs").is_dir()
