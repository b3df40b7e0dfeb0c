"""An environment's state as plain data, and that data put back into a freshly built copy.

Checkpoints must not hold pickled objects (loading one can run code), so an environment is
saved as what its Python objects hold: arrays, numbers, strings, random-generator states. The
walk goes through the vector env, its wrappers, its sub-environments and their spaces
(Gymnasium envs, wrappers, vector envs and spaces, and this package's own classes), records
every attribute that is data, and skips what is configuration rebuilt with the env (the spec,
metadata, functions, enums, dtypes). An attribute that is neither (a process, a pipe, an
emulator handle) makes the env unsavable as data: :class:`EnvStateError` says which.

Restoring sets those attributes on an env built the same way (same id, copies and seed), in
place where an array keeps its shape, so a resumed run continues bit for bit.

Example:
    >>> from envs import make_vector_env
    >>> env = make_vector_env("CartPole-v1", 2, seed=0)
    >>> _ = env.reset(seed=0)
    >>> saved = env_state(env)
    >>> fresh = make_vector_env("CartPole-v1", 2, seed=0)
    >>> load_env_state(fresh, saved)
"""

from __future__ import annotations

import copy
import enum
from collections import deque
from typing import Any

import gymnasium
import numpy as np
from gymnasium.wrappers.utils import RunningMeanStd

__all__ = ["EnvStateError", "env_state", "load_env_state"]

SKIPPED = frozenset({"spec", "metadata", "env_fns", "_cached_spec", "_metadata"})
"""Attributes that are configuration, rebuilt with the env."""
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
"""NumPy bit generators a saved generator state may name."""
DATA_PACKAGES = frozenset({"envs", "minatar"})
"""Packages whose objects are walked like Gymnasium's: this package's own classes, and
MinAtar's games (plain Python state: numbers, lists, arrays, a ``RandomState``)."""

Path = list  # attribute names (str) and sequence indices (int), from the env down


class EnvStateError(Exception):
    """The env holds something that is not data, or saved state does not fit this env."""


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str, np.generic)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype != object
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _is_constant(value: Any) -> bool:
    """Configuration that is rebuilt with the env: functions, classes, enums, dtypes."""
    return callable(value) or isinstance(value, (type, enum.Enum, np.dtype))


def _walks_into(value: Any) -> bool:
    walked = (gymnasium.Env, gymnasium.vector.VectorEnv, gymnasium.Space, RunningMeanStd)
    if isinstance(value, walked):  # RunningMeanStd: the normalization statistics
        return True
    return type(value).__module__.split(".")[0] in DATA_PACKAGES


def _type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _capture(obj: Any, path: Path, out: list, seen: dict[int, Path]) -> None:
    if id(obj) in seen:  # an object reached twice (a shared space) is saved once
        return
    seen[id(obj)] = path
    out.append([path, "type", _type_name(obj)])  # checked before anything is restored
    for name, value in vars(obj).items():
        if name not in SKIPPED:
            _capture_value(value, [*path, name], out, seen)


def _capture_value(value: Any, path: Path, out: list, seen: dict[int, Path]) -> None:
    if isinstance(value, np.random.Generator):
        out.append([path, "generator", value.bit_generator.state])
    elif isinstance(value, np.random.RandomState):  # NumPy's legacy generator (MinAtar's)
        if id(value) in seen:  # one generator shared by a game and its wrapper stays one
            out.append([path, "same_as", seen[id(value)]])
        else:
            seen[id(value)] = path
            out.append([path, "random_state", value.get_state(legacy=False)])
    elif isinstance(value, deque) and _is_plain(list(value)):
        out.append([path, "deque", list(value)])
    elif isinstance(value, np.ndarray) and value.dtype != object:
        out.append([path, "array", value.copy()])
    elif _is_plain(value):  # a copy: a game's lists change in place as it plays on
        out.append([path, "value", copy.deepcopy(value)])
    elif isinstance(value, list) and all(isinstance(v, np.random.Generator) for v in value):
        out.append([path, "generators", [v.bit_generator.state for v in value]])
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):  # a vector env's sub-environments
            _capture_value(item, [*path, i], out, seen)
    elif _walks_into(value):
        _capture(value, path, out, seen)
    elif not _is_constant(value):
        where = ".".join(map(str, path))
        raise EnvStateError(f"{where} is a {type(value).__name__}, which is not data")


def env_state(env: Any) -> list:
    """The env's state as plain data: ``[path, kind, value]`` entries.

    Raises:
        EnvStateError: the env holds something that cannot be saved as data (worker
            processes of an async vector env, an emulator, a render window).
    """
    out: list = []
    _capture(env, [], out, {})
    return out


def _new_generator(state: dict[str, Any]) -> np.random.Generator:
    name = state.get("bit_generator")
    if name not in BIT_GENERATORS:
        raise EnvStateError(f"unknown bit generator {name!r} in the saved state")
    generator = np.random.Generator(getattr(np.random, name)())
    generator.bit_generator.state = state
    return generator


def _set(owner: Any, key: str | int, kind: str, value: Any) -> None:
    current = owner[key] if isinstance(key, int) else getattr(owner, key, None)
    if kind == "generator":
        if isinstance(current, np.random.Generator) and (
            current.bit_generator.state["bit_generator"] == value["bit_generator"]
        ):
            current.bit_generator.state = value  # in place: whoever shares it sees it too
            return
        value = _new_generator(value)
    elif kind == "generators":
        value = [_new_generator(v) for v in value]
    elif kind == "random_state":
        if not isinstance(current, np.random.RandomState):
            current = np.random.RandomState()
            setattr(owner, key, current)
        current.set_state(value)
        return
    elif kind == "deque":
        value = deque(value, maxlen=current.maxlen if isinstance(current, deque) else None)
    elif kind == "array":
        value = np.asarray(value)
        if (
            isinstance(current, np.ndarray)
            and current.shape == value.shape
            and current.dtype == value.dtype
        ):
            current[...] = value  # in place: views of it stay views
            return
        value = value.copy()
    if isinstance(key, int):
        owner[key] = value
    else:
        setattr(owner, key, value)


def _resolve(env: Any, path: Path) -> Any:
    """The object at ``path`` from ``env`` down."""
    for key in path:
        env = env[key] if isinstance(key, int) else getattr(env, key)
    return env


def load_env_state(env: Any, state: list) -> None:
    """Put :func:`env_state` output into ``env``, an env built as the saved one was.

    Every object on the saved path (the vector env, each wrapper, each sub-environment) must
    be of the class it was saved from, checked before anything is set: a state that does not
    fit leaves ``env`` as it was.

    Raises:
        EnvStateError: the saved state does not fit this env (another env, wrapper chain or
            version), or it was written before states named their classes.
    """
    types = [(path, value) for path, kind, value in state if kind == "type"]
    if not types:
        raise EnvStateError(
            "the saved state names no classes (an earlier version wrote it), so it cannot be "
            "checked against this env"
        )
    for path, saved in types:
        try:
            found = _type_name(_resolve(env, path))
        except (AttributeError, IndexError, TypeError, KeyError):
            found = "nothing"
        if found != saved:
            where = ".".join(map(str, ["env", *path]))
            raise EnvStateError(
                f"the saved state does not fit this env: {where} was a {saved}, here {found}"
            )
    for path, kind, value in state:
        if kind == "type":
            continue
        try:
            owner = _resolve(env, path[:-1])
            if kind == "same_as":  # the object restored at another path, shared again
                value, kind = _resolve(env, value), "value"
            _set(owner, path[-1], kind, value)
        except (AttributeError, IndexError, TypeError, ValueError, KeyError) as e:
            where = ".".join(map(str, path))
            raise EnvStateError(f"the saved {where} does not fit this env ({e})") from None
