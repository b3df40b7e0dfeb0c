"""MinAtar's five games (Young and Tian 2019) as Gymnasium environments.

MinAtar plays Asterix, Breakout, Freeway, Seaquest and Space Invaders on a 10x10 grid: an
observation is one boolean plane per kind of object (``[10, 10, C]``, C from 4 to 10), every
step is one frame, and sticky actions (probability 0.1) and difficulty ramping are on, as in
the paper. A run learns in minutes to hours on a CPU where an ALE game takes days.

The ``minatar`` package registers ``MinAtar/<Game>-v0`` (all six actions, as the paper's
agents played) and ``MinAtar/<Game>-v1`` (the game's minimal action set) with Gymnasium, but
only when asked: :func:`envs.make_vector_env` asks for every ``MinAtar/`` id (with a one-line
message naming the extra where the package is missing), and turns the boolean planes into
``uint8`` ``[C, 10, 10]`` images.
"""

from __future__ import annotations

__all__ = ["MINATAR_GAMES", "MINATAR_INSTALL", "MINATAR_PREFIX", "is_minatar"]

MINATAR_GAMES = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")
"""The games, as their ids spell them (``MinAtar/Breakout-v1``)."""

MINATAR_INSTALL = 'pip install -e ".[minatar]"'
"""How to install the ``minatar`` extra."""

MINATAR_PREFIX = "MinAtar/"
"""What every MinAtar id starts with."""


def is_minatar(env_id: str) -> bool:
    """Whether an id names a MinAtar game (``MinAtar/Breakout-v1``)."""
    return isinstance(env_id, str) and env_id.startswith(MINATAR_PREFIX)
