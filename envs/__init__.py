"""Vectorized Gymnasium environments and their presets (imports gymnasium and numpy only)."""

from envs.make import (
    VECTORIZATION_MODES,
    EnvError,
    close_env,
    env_reward_threshold,
    is_atari,
    make_vector_env,
)

__all__ = [
    "VECTORIZATION_MODES",
    "EnvError",
    "close_env",
    "env_reward_threshold",
    "is_atari",
    "make_vector_env",
]
