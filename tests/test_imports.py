"""The import direction of DESIGN.md: optim -> torch; envs -> gymnasium, numpy; agents -> torch,
numpy, gymnasium. Only the composition modules of rl_rmsprop import everything."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {
    "rl_rmsprop/optim": {"torch"},
    "envs": {"gymnasium", "numpy", "envs"},
    "agents": {"torch", "numpy", "gymnasium"},
}


def _imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports of a file (relative ones stay in the package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_the_design_allows(package):
    files = sorted((ROOT / package).glob("*.py"))
    assert files
    for path in files:
        extra = _imports(path) - ALLOWED[package]
        assert not extra, f"{path.relative_to(ROOT)} imports {sorted(extra)}"


def test_folders_named_like_our_packages_in_the_working_directory_do_not_shadow_them(tmp_path):
    """`python -m` puts the cwd first on sys.path: an `envs` folder there (no __init__) or a
    user's own `agents` package must not replace ours."""
    import subprocess

    (tmp_path / "envs").mkdir()
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "__init__.py").write_text("raise ImportError('not ours')\n")
    argv = ["--total-steps", "200", "--eval-episodes", "0", "--logdir", "runs", "--quiet"]
    proc = subprocess.run(
        [sys.executable, "-m", "rl_rmsprop.train", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "logs in runs" in proc.stdout


def test_exit_cli_exits_with_the_code_and_takes_the_heap_out_of_the_last_collection():
    import gc

    from rl_rmsprop import exit_cli

    try:
        with pytest.raises(SystemExit) as info:
            exit_cli(2)
        assert info.value.code == 2
        assert gc.get_freeze_count() > 1000  # the objects alive now are frozen
    finally:
        gc.unfreeze()
