"""What each command-line entry point imports first: this project's package, wherever one stands.

From the folder that holds a clone named ``rl_rmsprop``, ``python -m rl_rmsprop.train`` finds
the clone's root first on ``sys.path``: a folder without ``__init__.py``, so a namespace
package, which an editable install's import hook then fills with our modules but without
running ``rl_rmsprop/__init__.py`` (so nothing it defines exists, and the sibling packages are
not claimed). Importing this module first puts the real package in its place.
"""

from __future__ import annotations

import gc
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import NoReturn

PACKAGE = "rl_rmsprop"


def load_package(name: str, init: Path) -> ModuleType:
    """Import the package ``name`` from its ``init`` file, in place of what ``name`` was."""
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(init.parent)]
    )
    assert spec is not None and spec.loader is not None  # a file the caller found
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


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


def real_package() -> ModuleType:
    """The ``rl_rmsprop`` package, loaded from its ``__init__.py`` if a namespace stands in."""
    package = sys.modules.get(PACKAGE)
    if package is not None and getattr(package, "__file__", None) is not None:
        return package  # the normal case (this import may run inside its __init__)
    return load_package(PACKAGE, Path(__file__).with_name("__init__.py"))


real_package()
