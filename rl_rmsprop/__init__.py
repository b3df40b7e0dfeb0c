"""rl_rmsprop: reinforcement learning around an exact, vectorized, observable RMSprop."""

import importlib.util
import sys
from pathlib import Path

from rl_rmsprop.cli import exit_cli, load_package

__version__ = "0.1.0"

__all__ = ["exit_cli"]

SIBLINGS = ("agents", "envs")
"""The project's other top-level packages, installed beside ``rl_rmsprop``."""


def _claim_siblings() -> None:
    """Make ``import agents`` / ``import envs`` give this project's packages, whatever the cwd.

    ``python -m`` puts the working directory first on ``sys.path``, and an editable install
    finds the project's packages only after the path has been searched; so a folder named
    ``envs`` or ``agents`` where the user stands (a conda ``envs`` folder, a run's log folder)
    was imported in their place, and training died with ``cannot import name 'EnvError'``.
    Where a plain import would not give the package beside this one, that package is loaded
    from its file here, before anything imports it.
    """
    root = Path(__file__).resolve().parent.parent
    for name in SIBLINGS:
        init = root / name / "__init__.py"
        if name in sys.modules or not init.is_file():
            continue
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin and Path(spec.origin).resolve() == init:
            continue  # the normal case: nothing is loaded here
        load_package(name, init)


_claim_siblings()
