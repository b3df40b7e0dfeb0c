"""Small environments with the observation spaces and failures the safety tests need.

Importing this module registers them; the CLI takes them as ``tests.fake_envs:<Id>`` (run
from the repository root, where ``python -m`` finds the ``tests`` folder).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces


class SpaceEnv(gymnasium.Env):
    """Random observations of any space; an episode lasts ``length`` steps.

    Args:
        space: the observation space.
        length: steps per episode.
        fail_at: raise ``RuntimeError`` in the ``fail_at``-th call of ``step`` (0: never).
    """

    def __init__(self, space: spaces.Space, length: int = 20, fail_at: int = 0) -> None:
        self.observation_space = space
        self.action_space = spaces.Discrete(2)
        self.length, self.fail_at = length, fail_at
        self.t = self.calls = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.observation_space.seed(int(self.np_random.integers(2**31)))
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self.calls += 1
        if self.fail_at and self.calls >= self.fail_at:
            raise RuntimeError("the simulator lost its licence server")
        self.t += 1
        reward = float(action == 1)
        return self.observation_space.sample(), reward, self.t >= self.length, False, {}


def _register(env_id: str, **kwargs: Any) -> None:
    if env_id not in gymnasium.registry:
        gymnasium.register(env_id, entry_point=SpaceEnv, kwargs=kwargs)


_register("ImagesHWC-v0", space=spaces.Box(0, 255, (40, 40, 3), np.uint8))
_register("TinyImages-v0", space=spaces.Box(0, 255, (2, 2, 3), np.uint8))
_register("DictObs-v0", space=spaces.Dict({"a": spaces.Box(-1, 1, (2,)), "b": spaces.Discrete(3)}))
_register("TupleObs-v0", space=spaces.Tuple((spaces.Discrete(4), spaces.MultiBinary(3))))
_register("DiscreteObs-v0", space=spaces.Discrete(5))
_register("SequenceObs-v0", space=spaces.Sequence(spaces.Discrete(2)))
_register("RaisesInStep-v0", space=spaces.Box(-1, 1, (3,)), fail_at=50)
