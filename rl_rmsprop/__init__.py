"""rl_rmsprop: reinforcement learning around an exact, vectorized, observable RMSprop."""

import gc
import importlib.util
import sys
from pathlib import Path
from typing import NoReturn

__version__ = "0.1.0"

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
        spec = importlib.util.spec_from_file_location(
            name, init, submodule_search_locations=[str(init.parent)]
        )
        assert spec is not None and spec.loader is not None  # a file we just found
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


def exit_cli(code: int) -> NoReturn:
    """``sys.exit(code)`` for a command-line entry point, without the collection at exit.

    As the interpreter shuts down it runs a full garbage collection over every object still
    alive: with torch and matplotlib loaded, ~200k objects and 0.2-0.4 s on the build
    machine, spent as the process ends and the OS frees its memory anyway. Freezing them
    first (``gc.freeze``) takes them out of that collection; files, ``atexit`` handlers and
    child processes are finished as usual.
    """
    gc.freeze()
    sys.exit(code)


_claim_siblings()
