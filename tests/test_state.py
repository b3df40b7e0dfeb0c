"""envs.state: an environment saved as plain data and put back into a fresh copy, bit for bit."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from envs import make_vector_env
from envs.population import make_population_env
from envs.state import EnvStateError, env_state, load_env_state

BUILDERS = {
    "native CartPole": lambda: make_vector_env("CartPole-v1", 3, 5),
    "sync Acrobot": lambda: make_vector_env("Acrobot-v1", 2, 5, vectorization="sync"),
    "one CartPole (scalar in sync)": lambda: make_vector_env("CartPole-v1", 1, 5),
    "population CartPole": lambda: make_population_env("CartPole-v1", [1, 2], 2),
    "population Acrobot": lambda: make_population_env("Acrobot-v1", [3, 4], 2),
}
if importlib.util.find_spec("minatar") is not None:  # the games' own RandomState and state
    BUILDERS["sync MinAtar Seaquest"] = lambda: make_vector_env("MinAtar/Seaquest-v1", 2, 5)
    BUILDERS["population MinAtar Asterix"] = lambda: make_population_env(
        "MinAtar/Asterix-v1", [3, 4], 2
    )


def _step(env, actions):
    obs, reward, terminated, truncated, info = env.step(actions)
    episodes = info.get("episode", {}).get("r")
    return obs, reward, terminated, truncated, episodes


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_a_restored_env_continues_bit_for_bit(kind):
    env = BUILDERS[kind]()
    env.reset(
        seed=[1, 2] if "population CartPole" in kind else [3, 4] if "population" in kind else 5
    )
    rng = np.random.default_rng(0)
    n, actions = env.num_envs, int(env.single_action_space.n)
    for _ in range(300):  # mid-episode for some copies, just reset for others
        env.step(rng.integers(0, actions, n))
    saved = env_state(env)
    fresh = BUILDERS[kind]()
    load_env_state(fresh, saved)
    ended = 0
    for _ in range(800):
        a = rng.integers(0, actions, n)
        mine, theirs = _step(env, a), _step(fresh, a)
        for x, y in zip(mine, theirs, strict=True):
            assert (x is None and y is None) or np.array_equal(x, y)
        ended += int(mine[2].sum() + mine[3].sum())
    assert ended > 0  # episodes ended and reset from the restored generators
    env.close()
    fresh.close()


def test_the_action_space_stream_is_restored_too():
    env = make_vector_env("CartPole-v1", 2, 7)
    env.action_space.sample()
    saved = env_state(env)
    fresh = make_vector_env("CartPole-v1", 2, 7)
    load_env_state(fresh, saved)
    assert all(np.array_equal(env.action_space.sample(), fresh.action_space.sample()) for _ in "ab")


def test_an_env_with_worker_processes_is_not_data():
    env = make_vector_env("CartPole-v1", 2, 0, vectorization="async")
    try:
        with pytest.raises(EnvStateError, match="Connection, which is not data"):
            env_state(env)
    finally:
        env.close()


def test_the_state_of_another_env_does_not_fit():
    env = make_vector_env("Acrobot-v1", 2, 0, vectorization="sync")
    env.reset(seed=0)
    saved = env_state(env)
    with pytest.raises(EnvStateError, match="does not fit this env"):
        load_env_state(make_vector_env("CartPole-v1", 2, 0), saved)


def test_a_state_of_another_env_class_is_refused_before_anything_is_set():
    from envs.normalize import normalize

    native = normalize(make_vector_env("CartPole-v1", 2, 0), 0.99)  # fitting wrappers, then
    native.reset(seed=0)  # another vector env under them
    for _ in range(30):
        native.step(np.zeros(2, dtype=np.int64))
    sync = normalize(make_vector_env("CartPole-v1", 2, 0, vectorization="sync"), 0.99)
    sync.reset(seed=1)
    before = env_state(sync)
    with pytest.raises(
        EnvStateError, match=r"env\.env\.env was a .*CartPoleVectorEnv, here .*Sync"
    ):
        load_env_state(sync, env_state(native))
    np.testing.assert_equal(env_state(sync), before)  # not even the wrappers' statistics


def test_a_state_that_names_no_classes_is_refused():
    env = make_vector_env("CartPole-v1", 2, 0)
    env.reset(seed=0)
    untyped = [entry for entry in env_state(env) if entry[1] != "type"]
    with pytest.raises(EnvStateError, match="names no classes"):
        load_env_state(make_vector_env("CartPole-v1", 2, 0), untyped)
