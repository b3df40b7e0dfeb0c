"""The import direction of DESIGN.md: optim -> torch; envs -> gymnasium, numpy; agents -> torch,
numpy, gymnasium. Only the composition modules of rl_rmsprop import everything."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import cli

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


@pytest.mark.parametrize("module", ["train", "compare", "evaluate"])
def test_the_clis_run_from_the_folder_that_holds_a_clone_named_like_the_package(tmp_path, module):
    """From a clone's parent, its root (``rl_rmsprop/``, no __init__) is first on sys.path: a
    namespace package that must not stand in for ours."""
    (tmp_path / "rl_rmsprop" / "rl_rmsprop").mkdir(parents=True)
    (tmp_path / "rl_rmsprop" / "pyproject.toml").write_text("")
    (tmp_path / "agents").mkdir()  # and a sibling's namesake beside it
    help_text = cli(module, ["--help"], cwd=tmp_path)
    assert help_text.returncode == 0, help_text.stderr
    assert f"python -m rl_rmsprop.{module}" in help_text.stdout
    if module == "evaluate":  # imports whole, reaches its own check
        proc = cli(module, ["runs"], cwd=tmp_path)
        assert proc.returncode == 2 and proc.stderr == (
            "error: runs is not a folder; give the folder of a finished run\n"
        )
        return
    argv = ["--total-steps", "200", "--eval-episodes", "0", "--logdir", "runs", "--quiet"]
    if module == "compare":
        argv = ["--optimizers", "rmsprop", "--seeds", "1", "--total-steps", "200"]
    proc = cli(module, argv, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "runs" in proc.stdout and list((tmp_path / "runs").iterdir())


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


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules a file imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names} & modules
    return found


def test_the_rl_rmsprop_modules_import_one_way():
    files = sorted((ROOT / "rl_rmsprop").rglob("*.py"))
    modules = {_module_name(p) for p in files}
    graph = {
        _module_name(p): _project_imports(p, modules) - {_module_name(p)} - {"rl_rmsprop"}
        for p in files
    }
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, f"import cycle: {' -> '.join([*path, module])}"
        if module in done:
            return
        for other in sorted(graph[module]):
            visit(other, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    clis = {"rl_rmsprop.train", "rl_rmsprop.compare", "rl_rmsprop.cluster"}
    for module, imported in graph.items():
        if module.startswith("rl_rmsprop.run"):
            assert not imported & clis, f"{module} imports {sorted(imported & clis)}"
