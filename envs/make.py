"""Build seeded, vectorized Gymnasium environments with episode statistics.

``make_vector_env`` is the only way the rest of the project creates environments. It turns
every user mistake it can detect (unknown id, continuous actions, missing Atari extra, bad
vectorization mode) into an ``EnvError`` whose one-line message names the fix, and it
returns an environment whose conventions the agents rely on:

* autoreset is Gymnasium's ``NEXT_STEP`` mode (see ``make_vector_env``);
* ``info["episode"]`` reports every finished episode (``RecordEpisodeStatistics``);
* the action spaces are seeded, the environment itself is not reset.

Requires Gymnasium >= 1.1 (``AutoresetMode`` and ``metadata["autoreset_mode"]``).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium.envs.registration import EnvSpec, VectorizeMode
from gymnasium.spaces import Box, Discrete, MultiDiscrete, flatten_space
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.wrappers.vector import (
    FlattenObservation,
    RecordEpisodeStatistics,
    TransformObservation,
)

from envs.atari import NativeAtari, atari_env_kwargs, atari_wrappers
from envs.minatar import MINATAR_INSTALL, MINATAR_PREFIX, is_minatar

__all__ = ["VECTORIZATION_MODES", "EnvError", "env_reward_threshold", "make_vector_env"]

VECTORIZATION_MODES = ("auto", "sync", "async", "native")
"""Accepted values of ``make_vector_env(vectorization=...)``."""

_ATARI_INSTALL = 'pip install -e ".[atari]"'
_MODES = {
    "sync": VectorizeMode.SYNC,
    "async": VectorizeMode.ASYNC,
    "native": VectorizeMode.VECTOR_ENTRY_POINT,
}


class EnvError(ValueError):
    """A user mistake about the environment.

    The message is always one line that names the problem and the fix, so the command line
    can print it without a traceback. Whitespace (newlines included) is collapsed to single
    spaces to keep that promise even when a message embeds a multi-line ``repr``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


ASYNC_MIN_CORES = 4
"""``vectorization="auto"`` steps several Atari copies under the Python wrapper chain (the one
DQN's frame replay needs) in worker processes only with at least this many cores. On 2 cores
the 16 workers of ``--preset a2c-atari`` competed with the learner and trained slower than
stepping them in-process (docs/benchmarks.md, "Figures moved from the code")."""


class VectorActions(MultiDiscrete):
    """A vector env's ``MultiDiscrete`` actions with a cheaper membership test, same answers.

    Gymnasium's test runs at every step of a native vector env such as
    CartPole's, and half of it is ``np.all`` dispatch and bounds recomputed at each call;
    here the bounds are computed once and the reductions are array methods.
    """

    def __init__(self, nvec: Any, dtype: Any = np.int64, start: Any = None) -> None:
        super().__init__(nvec, dtype=dtype, start=start)
        self._high = self.start + (self.nvec - 1)  # fits the dtype for a valid space

    def __setstate__(self, state: Any) -> None:
        """Unpickle (also a checkpoint's space pickled before ``_high`` existed)."""
        super().__setstate__(state)
        self._high = self.start + (self.nvec - 1)

    def contains(self, x: Any) -> bool:
        """Whether ``x`` has this shape and every action is in ``[start, start + nvec)``."""
        if isinstance(x, Sequence):
            x = np.array(x)
        return bool(
            isinstance(x, np.ndarray)
            and x.shape == self.shape
            and np.can_cast(x.dtype, self.dtype)
            and (self.start <= x).all()
            and (x <= self._high).all()
        )


def make_vector_env(
    env_id: str,
    num_envs: int,
    seed: int,
    *,
    vectorization: str = "auto",
    env_kwargs: dict[str, Any] | None = None,
    wrappers: Sequence[Callable[[gymnasium.Env], gymnasium.Env]] | None = None,
) -> VectorEnv:
    """Create ``num_envs`` copies of ``env_id`` as one vector environment.

    Autoreset (Gymnasium's ``NEXT_STEP`` mode, checked here): when sub-environment ``i``
    returns ``terminated[i] or truncated[i]``, the observation of that step is the true
    final observation. The *next* ``step`` ignores ``actions[i]``, resets ``i`` and returns
    the first observation of the new episode with ``reward[i] == 0`` and
    ``terminated[i] == truncated[i] == False``. That transition (last obs -> reset obs)
    does not exist in the environment and must not be learned from; mask it out with the
    previous step's ``terminated | truncated``.

    Episode statistics (``gymnasium.wrappers.vector.RecordEpisodeStatistics``): on a step
    where at least one sub-environment ends, ``info`` holds::

        info["episode"] = {
            "r": float64 array [num_envs],  # return of the finished episode, 0.0 elsewhere
            "l": int64 array [num_envs],    # its length in steps, 0 elsewhere
            "t": float64 array [num_envs],  # its wall time in seconds, 0.0 elsewhere
        }
        info["_episode"] = bool array [num_envs]  # which entries of "r", "l", "t" are real

    On other steps neither key is present. The return sums the episode's rewards exactly
    once: the zero-reward reset step is not counted in the next episode. The wrapper also
    keeps the last 100 returns and lengths in ``env.return_queue`` and ``env.length_queue``.

    Seeding: the action spaces (``env.action_space`` and ``env.single_action_space``) are
    seeded with ``seed`` here; the environment is *not* reset. The caller starts with
    ``obs, info = env.reset(seed=seed)``. Two environments built and reset with the same
    seed and stepped with the same actions produce the same observations. Modes are not
    interchangeable: sync/async seed sub-environment ``i`` with ``seed + i``, a native
    vector environment draws all sub-environments from one generator, so the streams of
    ``"sync"`` and ``"native"`` differ for the same seed.

    Example:
        >>> env = make_vector_env("CartPole-v1", num_envs=4, seed=0)
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape
        (4, 4)
        >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        >>> env.close()

    Args:
        env_id: A registered Gymnasium id (``"CartPole-v1"``), an Atari id (``"ALE/Pong-v5"``,
            ``"PongNoFrameskip-v4"``, needs the ``atari`` extra) or ``"module:Id-v0"`` to
            import ``module`` (which registers ``Id-v0``) first.
        num_envs: Number of sub-environments, >= 1.
        seed: Non-negative seed for the action spaces; pass the same value to ``reset``.
        vectorization: ``"auto"`` uses the environment's native vectorized implementation
            (its spec's ``vector_entry_point``, e.g. CartPole-v1's ``CartPoleVectorEnv``)
            when it has one, no ``wrappers`` are given and there are at least 2 copies,
            otherwise ``"sync"`` (one copy of CartPole steps faster as a scalar env than as
            a vector env of one, on the same trajectory). An Atari id
            without ``wrappers`` gets ALE's C++ vector env (:class:`envs.atari.NativeAtari`,
            copies stepped on threads); with ``wrappers`` (e.g. ``atari_wrappers()``, the
            Python chain DQN's frame replay needs) several copies go to ``"async"`` on
            machines with at least ``ASYNC_MIN_CORES`` cores, else ``"sync"``. ``"sync"``
            (``SyncVectorEnv``, one process), ``"async"`` (``AsyncVectorEnv``, one worker
            process per sub-environment) and ``"native"`` force a mode; ``"sync"`` and
            ``"async"`` give Atari ids the Python wrapper chain.
        env_kwargs: Keyword arguments for the environment constructor (for a native vector
            environment, for its constructor, e.g. ``max_episode_steps``).
        wrappers: Single-environment wrappers applied to each sub-environment before
            vectorization (e.g. Atari preprocessing); only with ``"auto"`` (which then
            means ``"sync"``), ``"sync"`` or ``"async"``.

    Returns:
        The vector environment wrapped in ``RecordEpisodeStatistics``, not yet reset.

    Raises:
        EnvError: For an unknown id, a missing dependency or Atari extra, rejected
            ``env_kwargs``, ``num_envs < 1``, a bad ``seed`` or ``vectorization``, a
            non-``Discrete`` action space, or a native environment whose autoreset mode
            is not ``NEXT_STEP``.
    """
    if vectorization not in VECTORIZATION_MODES:
        choices = ", ".join(repr(mode) for mode in VECTORIZATION_MODES)
        raise EnvError(f"unknown vectorization {vectorization!r}; choose one of {choices}")
    if not _is_int(num_envs) or num_envs < 1:
        raise EnvError(
            f"num_envs must be an integer >= 1, got {num_envs!r}; pass num_envs=1 or more"
        )
    if not _is_int(seed) or seed < 0:
        raise EnvError(f"seed must be a non-negative integer, got {seed!r}; pass e.g. seed=0")
    if wrappers and vectorization == "native":
        raise EnvError(
            "wrappers cannot be applied inside a native vector environment; "
            'use vectorization="sync" or "async"'
        )

    spec = _find_spec(env_id)
    atari = is_atari(env_id)
    if atari and not wrappers and vectorization in ("auto", "native"):
        env = _native_atari(spec, num_envs, env_kwargs)
    else:
        if atari:  # DeepMind's preprocessing, episode statistics inside it (the real score)
            env_kwargs = {**atari_env_kwargs(env_id), **(env_kwargs or {})}
            wrappers = atari_wrappers() if wrappers is None else wrappers
        env = _build(
            spec,
            num_envs,
            _mode(spec, vectorization, atari, num_envs, wrappers),
            env_kwargs,
            wrappers,
        )
    if env.metadata.get("autoreset_mode") is not AutoresetMode.NEXT_STEP:
        found = env.metadata.get("autoreset_mode")
        env.close()
        if vectorization != "auto":
            raise EnvError(
                f"{spec.id} ({vectorization}) autoresets in mode {found}, the agents need "
                f'{AutoresetMode.NEXT_STEP}; use vectorization="sync"'
            )
        # A native implementation with another autoreset convention: the sync fallback
        # always uses NEXT_STEP (Gymnasium's default), so "auto" never fails for this reason.
        env = _build(spec, num_envs, VectorizeMode.SYNC, env_kwargs, wrappers)

    if not isinstance(env.single_action_space, Discrete):
        space = env.single_action_space
        env.close()
        raise EnvError(
            f"DQN/A2C here need a discrete action space; {spec.id} has {space}. "
            "Choose an environment with Discrete actions (e.g. CartPole-v1)"
        )

    if type(env.action_space) is MultiDiscrete:
        space = env.action_space
        env.action_space = VectorActions(space.nvec, dtype=space.dtype, start=space.start)
    if not atari:
        env = RecordEpisodeStatistics(adapt_observations(env, spec.id))
    env.action_space.seed(seed)
    env.single_action_space.seed(seed)
    return env


def is_image(space: Any) -> bool:
    """Whether observations are images for a CNN: a 3-D ``uint8`` or ``bool`` Box."""
    return isinstance(space, Box) and len(space.shape) == 3 and space.dtype in (np.uint8, bool)


def adapt_observations(env: VectorEnv, env_id: str) -> VectorEnv:
    """The env with observations the agents take: a flat vector, or a ``[C, H, W]`` image.

    A 1-D Box is kept. A ``uint8`` image whose channels come last (``[H, W, C]``: the last
    axis is the shorter end, and always for MinAtar) is transposed to ``[C, H, W]``. Boolean
    planes (MinAtar's ``[10, 10, C]``) become ``uint8`` 0/1 images ``[C, H, W]``, one byte a
    cell as the replay memory stores them. Every other space that Gymnasium
    can flatten (Discrete becomes one-hot; MultiDiscrete, MultiBinary, multi-dimensional
    Boxes, and Dict or Tuple of those) is flattened to one vector.

    Raises:
        EnvError: the space cannot be flattened (Text, Graph, Sequence, images in a Dict).
    """
    space = env.single_observation_space
    if isinstance(space, Box) and len(space.shape) == 1:
        return env
    if is_image(space):
        # MinAtar's planes are [H, W, C] also where C equals the side (Seaquest's 10).
        last = space.shape[-1] < space.shape[0] or is_minatar(env_id)
        if not last and space.dtype == np.uint8:
            return env  # [C, H, W] already
        order = (2, 0, 1) if last else (0, 1, 2)
        low, high = (bound.transpose(order).astype(np.uint8) for bound in (space.low, space.high))
        chw = Box(low, high, dtype=np.uint8)
        return TransformObservation(
            env,
            _channels_first if last else _as_bytes,
            observation_space=Box(
                np.broadcast_to(low, (env.num_envs, *chw.shape)),
                np.broadcast_to(high, (env.num_envs, *chw.shape)),
                dtype=np.uint8,
            ),
            single_observation_space=chw,
        )
    try:
        flat = flatten_space(space)
        if not (isinstance(flat, Box) and len(flat.shape) == 1):
            raise NotImplementedError
        if any(is_image(s) for s in _leaves(space)):
            raise NotImplementedError
    except (NotImplementedError, TypeError, ValueError):
        env.close()
        raise EnvError(
            f"{env_id} has observations {space}, which the agents cannot take; they take "
            "vectors (Box, Discrete and what flattens to them) or uint8 images"
        ) from None
    return FlattenObservation(env)


def _channels_first(obs: np.ndarray) -> np.ndarray:
    """``[N, H, W, C]`` image batches as ``[N, C, H, W]`` ``uint8`` (a copy, contiguous)."""
    return _as_bytes(np.ascontiguousarray(obs.transpose(0, 3, 1, 2)))


def _as_bytes(obs: np.ndarray) -> np.ndarray:
    """``uint8`` images as they are, boolean planes as ``uint8`` 0/1 (a view, no copy)."""
    return obs.view(np.uint8) if obs.dtype == bool else obs


def _leaves(space: Any) -> list[Any]:
    """The non-composite spaces inside a Dict or Tuple space (or the space itself)."""
    inner = getattr(space, "spaces", None)
    if inner is None:
        return [space]
    values = inner.values() if isinstance(inner, dict) else inner
    return [leaf for s in values for leaf in _leaves(s)]


def _mode(
    spec: EnvSpec, vectorization: str, atari: bool, num_envs: int, wrappers: Any
) -> VectorizeMode:
    """The Gymnasium vectorization mode that ``vectorization`` means for this env."""
    if vectorization == "auto":
        native = spec.vector_entry_point is not None and not wrappers and num_envs > 1
        mode = VectorizeMode.VECTOR_ENTRY_POINT if native else VectorizeMode.SYNC
        if atari and num_envs > 1 and (os.cpu_count() or 1) >= ASYNC_MIN_CORES:
            mode = VectorizeMode.ASYNC  # an emulator step is costly: step the copies in parallel
        return mode
    mode = _MODES[vectorization]
    if mode is VectorizeMode.VECTOR_ENTRY_POINT and spec.vector_entry_point is None:
        raise EnvError(
            f"{spec.id} has no native vector implementation (no vector_entry_point); "
            'use vectorization="auto" or "sync"'
        )
    return mode


def _native_atari(spec: EnvSpec, num_envs: int, env_kwargs: dict[str, Any] | None) -> VectorEnv:
    """ale-py's C++ vector env (:class:`envs.atari.NativeAtari`) for an Atari id."""
    if env_kwargs:
        raise EnvError(
            f"env_kwargs {env_kwargs!r} cannot be passed to ALE's native vector env; "
            'use vectorization="sync" for them'
        )
    try:
        return NativeAtari(spec.id, num_envs)
    except ImportError as e:  # an ale-py without AtariVectorEnv (before 0.11)
        raise EnvError(
            f"{spec.id}: this ale-py has no native vector env ({e}); "
            f'upgrade it ({_ATARI_INSTALL}) or use vectorization="sync"'
        ) from None


CLOSE_TIMEOUT_S = 10.0
"""The longest an async env's close waits for a pending step (see :func:`close_env`)."""


def close_env(env: Any) -> None:
    """Close a vector env, also one whose worker process died (no hang, no error at exit).

    Gymnasium's async env waits on a pending step when closed and raises ``EOFError`` if the
    worker is gone; its ``__del__`` would then try again and print a traceback at exit. Here
    the remaining workers are terminated and the env is marked closed instead.

    A worker that was just killed can still look alive: its pipe is at EOF as the kernel
    closes its files, a moment before it can be reaped. The pending step it broke may then
    already hold the other workers' answers, and waiting for them again would wait forever;
    so an async env's close waits at most :data:`CLOSE_TIMEOUT_S`, then terminates the rest.
    """
    base = env.unwrapped
    workers = getattr(base, "processes", [])
    if not any(not w.is_alive() for w in workers):  # healthy (or in-process): a normal close
        try:
            with warnings.catch_warnings():  # "close while waiting for a pending step"
                warnings.simplefilter("ignore")
                if workers:
                    env.close(timeout=CLOSE_TIMEOUT_S)
                else:
                    env.close()
            return
        except (OSError, EOFError):
            pass
    for process in getattr(base, "processes", []):
        if process.is_alive():
            process.terminate()
        process.join(timeout=5)
    for pipe in getattr(base, "parent_pipes", []):
        if pipe is not None:
            pipe.close()
    base.closed = True
    env.closed = True


def env_reward_threshold(env_id: str) -> float | None:
    """Return the return at which ``env_id`` counts as solved, or ``None`` if it has none.

    Args:
        env_id: An id accepted by ``make_vector_env``.

    Returns:
        ``gymnasium.spec(env_id).reward_threshold`` (475.0 for CartPole-v1).

    Raises:
        EnvError: For an unknown id or a missing Atari extra.
    """
    threshold = _find_spec(env_id).reward_threshold
    return None if threshold is None else float(threshold)


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_atari(env_id: str) -> bool:
    """Whether an id names an Arcade Learning Environment game."""
    return env_id.startswith("ALE/") or env_id.endswith(("NoFrameskip-v4", "NoFrameskip-v0"))


def _find_spec(env_id: str) -> EnvSpec:
    """Return the registered spec of ``env_id``, importing what registers it first."""
    if not isinstance(env_id, str) or not env_id:
        raise EnvError(f"env_id must be a non-empty string, got {env_id!r}; pass e.g. CartPole-v1")
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise EnvError(
                f"cannot import module {module!r} that should register {name!r} ({exc}); "
                "install it or fix the module part of the id"
            ) from None
    if is_atari(name):
        _register_atari(name)
    if is_minatar(name):
        _register_minatar(name)

    spec = gymnasium.registry.get(name)
    if spec is None:
        raise EnvError(_unknown_id_message(name))
    return spec


def _register_atari(env_id: str) -> None:
    # Since Gymnasium 1.0 nothing registers ALE ids implicitly: ale_py must be imported.
    gymnasium.register_envs(_import_extra(env_id, "ale_py", "an Atari game", "Atari"))


def _register_minatar(env_id: str) -> None:
    # The minatar package registers its ids only when asked, once is enough.
    if f"{MINATAR_PREFIX}Breakout-v1" not in gymnasium.registry:
        _import_extra(env_id, "minatar.gym", "a MinAtar game", "MinAtar").register_envs()


def _import_extra(env_id: str, module: str, what: str, extra: str) -> Any:
    """Import the module an optional extra installs, or say in one line how to install it."""
    install = {"Atari": _ATARI_INSTALL, "MinAtar": MINATAR_INSTALL}[extra]
    package = module.split(".")[0]
    if importlib.util.find_spec(package) is None:
        raise EnvError(f"{env_id} is {what} and needs the {extra} extra: {install}")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise EnvError(
            f"{env_id} needs {package}, which is installed but does not import ({e}); "
            f"reinstall it: {install}"
        ) from None


def _unknown_id_message(env_id: str) -> str:
    ids = list(gymnasium.registry.keys())
    close = difflib.get_close_matches(env_id, ids, n=3, cutoff=0.6)
    # difflib is case-sensitive; "cartpole-v1" should still find CartPole-v1 first.
    exact = [i for i in ids if i.lower() == env_id.lower()]
    close = exact + [i for i in close if i not in exact]
    if close:
        guess = close[0] if len(close) == 1 else ", ".join(close[:-1]) + " or " + close[-1]
        return (
            f"unknown environment {env_id!r}; did you mean {guess}? "
            "(see gymnasium.registry for all ids)"
        )
    return (
        f"unknown environment {env_id!r}; pass a registered id such as CartPole-v1 "
        "(see gymnasium.registry for all ids)"
    )


def _build(
    spec: EnvSpec,
    num_envs: int,
    mode: VectorizeMode,
    env_kwargs: dict[str, Any] | None,
    wrappers: Sequence[Callable[[gymnasium.Env], gymnasium.Env]] | None,
) -> VectorEnv:
    """Call ``gymnasium.make_vec``, turning construction failures into ``EnvError``."""
    kwargs = dict(env_kwargs or {})
    try:
        return gymnasium.make_vec(
            spec.id,
            num_envs=num_envs,
            vectorization_mode=mode,
            wrappers=list(wrappers) if wrappers else None,
            **kwargs,
        )
    except (ImportError, gymnasium.error.DependencyNotInstalled) as exc:
        # e.g. Box2D, MuJoCo or jax (phys2d/*) not installed; Gymnasium names the package.
        raise EnvError(
            f"{spec.id} needs a package that is not installed ({exc}); "
            "install it or choose another environment"
        ) from None
    except TypeError as exc:
        if not kwargs or "unexpected keyword argument" not in str(exc):
            raise
        raise EnvError(
            f"{spec.id} rejected env_kwargs {kwargs!r} ({exc}); fix or remove those keys"
        ) from None
