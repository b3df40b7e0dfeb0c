"""What each command-line entry point imports first: this project's package, wherever one stands.

From the folder that holds a clone named ``rl_rmsprop``, ``python -m rl_rmsprop.train`` finds
the clone's root first on ``sys.path``: a folder without ``__init__.py``, so a namespace
package, which an editable install's import hook then fills with our modules but without
running ``rl_rmsprop/__init__.py`` (so nothing it defines exists, and the sibling packages are
not claimed). Importing this module first puts the real package in its place.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PACKAGE = "rl_rmsprop"


def real_package() -> ModuleType:
    """The ``rl_rmsprop`` package, loaded from its ``__init__.py`` if a namespace stands in."""
    package = sys.modules.get(PACKAGE)
    if package is not None and getattr(package, "__file__", None) is not None:
        return package
    init = Path(__file__).with_name("__init__.py")
    spec = importlib.util.spec_from_file_location(
        PACKAGE, init, submodule_search_locations=[str(init.parent)]
    )
    assert spec is not None and spec.loader is not None  # the file beside this one
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)
    return module


exit_cli = real_package().exit_cli
