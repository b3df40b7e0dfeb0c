import ast
import importlib.util
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.spaces import Discrete
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from gymnasium.wrappers.vector import RecordEpisodeStatistics

import envs
from envs import EnvError, env_reward_threshold, make_vector_env

CARTPOLE = "CartPole-v1"
ATARI_FIX = 'pip install -e ".[atari]"'


@pytest.fixture
def make():
    """make_vector_env that closes every environment it built at teardown."""
    built = []

    def _make(*args, **kwargs):
        env = make_vector_env(*args, **kwargs)
        built.append(env)
        return env

    yield _make
    for env in built:
        env.close()


def assert_one_line_error(excinfo, *fragments):
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- construction -------------------------------------------------------------------------


def test_public_names_are_exported():
    assert set(envs.__all__) >= {"EnvError", "make_vector_env", "env_reward_threshold"}
    assert issubclass(EnvError, ValueError)


def test_auto_uses_native_cartpole_vector_env(make):
    env = make(CARTPOLE, 3, seed=0)
    assert isinstance(env, RecordEpisodeStatistics)
    assert isinstance(env.unwrapped, CartPoleVectorEnv)
    assert env.unwrapped.spec.kwargs["vectorization_mode"] == "vector_entry_point"
    # The native env still honours the registered time limit.
    assert env.unwrapped.max_episode_steps == 500


def test_auto_steps_one_copy_as_a_scalar_env_on_the_native_trajectory(make):
    """One copy: auto takes the (faster) sync env, and it plays what the native env plays."""
    auto, native = make(CARTPOLE, 1, seed=7), make(CARTPOLE, 1, seed=7, vectorization="native")
    assert isinstance(auto.unwrapped, SyncVectorEnv)
    assert isinstance(native.unwrapped, CartPoleVectorEnv)
    rng = np.random.default_rng(0)
    first_a, first_n = auto.reset(seed=7)[0], native.reset(seed=7)[0]
    np.testing.assert_array_equal(first_a, first_n)
    ends = 0
    for _ in range(3000):
        action = rng.integers(0, 2, size=1)
        a, n = auto.step(action), native.step(action)
        for x, y in zip(a[:4], n[:4], strict=True):
            np.testing.assert_array_equal(x, y)
        ends += int(a[2][0] or a[3][0])
    assert ends > 50  # many episodes, so many resets, were compared


@pytest.mark.parametrize(
    ("vectorization", "cls"),
    [("sync", SyncVectorEnv), ("async", AsyncVectorEnv), ("native", CartPoleVectorEnv)],
)
def test_forced_modes_step_with_batched_shapes(make, vectorization, cls):
    env = make(CARTPOLE, 2, seed=0, vectorization=vectorization)
    assert isinstance(env.unwrapped, cls)
    assert env.num_envs == 2
    assert env.single_action_space == Discrete(2)
    assert env.single_observation_space.shape == (4,)
    assert env.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP

    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 4)
    assert obs.dtype == np.float32
    actions = env.action_space.sample()
    assert actions.shape == (2,)
    obs, reward, terminated, truncated, _ = env.step(actions)
    assert obs.shape == (2, 4)
    assert reward.shape == terminated.shape == truncated.shape == (2,)
    assert terminated.dtype == truncated.dtype == np.bool_


def clip_reward(env):
    return gymnasium.wrappers.ClipReward(env, min_reward=-0.5, max_reward=0.5)


def test_auto_with_wrappers_falls_back_to_sync_and_wraps_each_env(make):
    env = make(CARTPOLE, 2, seed=0, wrappers=[clip_reward])
    assert isinstance(env.unwrapped, SyncVectorEnv)
    env.reset(seed=0)
    _, reward, *_ = env.step(np.array([0, 1]))
    np.testing.assert_array_equal(reward, [0.5, 0.5])


def test_env_kwargs_reach_the_environment_in_every_mode(make):
    for vectorization in ("native", "sync"):
        env = make(
            CARTPOLE, 1, seed=0, vectorization=vectorization, env_kwargs={"max_episode_steps": 3}
        )
        env.reset(seed=0)
        truncated = [env.step(np.array([t % 2]))[3][0] for t in range(3)]
        assert truncated == [False, False, True], vectorization


def test_auto_falls_back_to_sync_when_native_autoreset_is_not_next_step(make, monkeypatch):
    monkeypatch.setitem(CartPoleVectorEnv.metadata, "autoreset_mode", AutoresetMode.SAME_STEP)
    env = make(CARTPOLE, 2, seed=0)
    assert isinstance(env.unwrapped, SyncVectorEnv)
    with pytest.raises(EnvError) as excinfo:
        make(CARTPOLE, 2, seed=0, vectorization="native")
    assert_one_line_error(excinfo, "NEXT_STEP", 'vectorization="sync"')


def test_env_reward_threshold():
    assert env_reward_threshold(CARTPOLE) == 475.0
    assert env_reward_threshold("Pendulum-v1") is None
    with pytest.raises(EnvError):
        env_reward_threshold("CartPol-v1")


# --- episode statistics and autoreset -------------------------------------------------------


@pytest.mark.parametrize("vectorization", ["auto", "sync"])
def test_episode_statistics_equal_rewards_summed_with_next_step_semantics(make, vectorization):
    num_envs = 4
    env = make(CARTPOLE, num_envs, seed=1, vectorization=vectorization)
    env.reset(seed=1)
    returns = np.zeros(num_envs)
    lengths = np.zeros(num_envs, dtype=int)
    prev_done = np.zeros(num_envs, dtype=bool)
    finished = 0
    for _ in range(2_000):
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        done = terminated | truncated
        # NEXT_STEP: the step after a done one is the reset step; it belongs to no episode.
        assert np.all(reward[prev_done] == 0)
        returns[prev_done], lengths[prev_done] = 0.0, 0
        returns[~prev_done] += reward[~prev_done]
        lengths[~prev_done] += 1
        if done.any():
            np.testing.assert_array_equal(info["_episode"], done)
            np.testing.assert_array_equal(info["episode"]["r"], np.where(done, returns, 0.0))
            np.testing.assert_array_equal(info["episode"]["l"], np.where(done, lengths, 0))
            assert set(info["episode"]) == {"r", "l", "t"}
            finished += int(done.sum())
        else:
            assert "episode" not in info and "_episode" not in info
        prev_done = done
        if finished >= 8:
            break
    assert finished >= 8
    assert len(env.return_queue) == finished


@pytest.mark.parametrize("vectorization", ["auto", "sync"])
def test_step_after_done_returns_zero_reward_and_reset_observation(make, vectorization):
    env = make(
        CARTPOLE, 2, seed=3, vectorization=vectorization, env_kwargs={"max_episode_steps": 5}
    )
    env.reset(seed=3)
    alternate = np.array([0, 1])
    for _ in range(4):
        env.step(alternate)
    final_obs, reward, terminated, truncated, info = env.step(alternate)
    assert truncated.all() and not terminated.any()
    np.testing.assert_array_equal(info["episode"]["l"], [5, 5])
    np.testing.assert_array_equal(info["episode"]["r"], [5.0, 5.0])

    reset_obs, reward, terminated, truncated, info = env.step(alternate)
    np.testing.assert_array_equal(reward, [0.0, 0.0])
    assert not terminated.any() and not truncated.any()
    assert "episode" not in info
    # CartPole resets every state variable uniformly in [-0.05, 0.05].
    assert np.all(np.abs(reset_obs) <= 0.05)
    assert not np.array_equal(reset_obs, final_obs)

    _, reward, _, _, _ = env.step(alternate)
    np.testing.assert_array_equal(reward, [1.0, 1.0])


@pytest.mark.parametrize("vectorization", ["auto", "sync"])
def test_action_on_the_reset_step_is_ignored(make, vectorization):
    kwargs = {"vectorization": vectorization, "env_kwargs": {"max_episode_steps": 2}}
    env_a, env_b = make(CARTPOLE, 1, 0, **kwargs), make(CARTPOLE, 1, 0, **kwargs)
    for env in (env_a, env_b):
        env.reset(seed=0)
        env.step(np.array([0]))
        env.step(np.array([0]))
    obs_a = env_a.step(np.array([0]))[0]
    obs_b = env_b.step(np.array([1]))[0]
    np.testing.assert_array_equal(obs_a, obs_b)


# --- determinism ----------------------------------------------------------------------------


def rollout(env, seed, steps=300):
    obs, _ = env.reset(seed=seed)
    observations, actions = [obs], []
    for _ in range(steps):
        action = env.action_space.sample()
        obs, *_ = env.step(action)
        observations.append(obs)
        actions.append(action)
    return np.stack(observations), np.stack(actions)


@pytest.mark.parametrize("vectorization", ["auto", "sync"])
def test_same_seed_gives_identical_streams(make, vectorization):
    obs_a, act_a = rollout(make(CARTPOLE, 3, seed=7, vectorization=vectorization), seed=7)
    obs_b, act_b = rollout(make(CARTPOLE, 3, seed=7, vectorization=vectorization), seed=7)
    np.testing.assert_array_equal(act_a, act_b)
    np.testing.assert_array_equal(obs_a, obs_b)

    obs_c, act_c = rollout(make(CARTPOLE, 3, seed=8, vectorization=vectorization), seed=8)
    assert not np.array_equal(obs_a, obs_c)
    assert not np.array_equal(act_a, act_c)


def test_single_action_space_is_seeded(make):
    env_a, env_b = make(CARTPOLE, 2, seed=5), make(CARTPOLE, 2, seed=5)
    seq_a = [env_a.single_action_space.sample() for _ in range(50)]
    seq_b = [env_b.single_action_space.sample() for _ in range(50)]
    assert seq_a == seq_b
    assert len(set(seq_a)) == 2


# --- user mistakes --------------------------------------------------------------------------


def test_unknown_id_suggests_close_names():
    with pytest.raises(EnvError) as excinfo:
        make_vector_env("CartPol-v1", 1, 0)
    message = assert_one_line_error(excinfo, "'CartPol-v1'", "did you mean", "gymnasium.registry")
    assert message.index("CartPole-v1") > message.index("did you mean")


def test_unknown_id_with_wrong_case_suggests_the_right_case_first():
    with pytest.raises(EnvError) as excinfo:
        make_vector_env("cartpole-v1", 1, 0)
    assert_one_line_error(excinfo, "did you mean CartPole-v1")


def test_unknown_id_without_close_names_points_to_the_registry():
    with pytest.raises(EnvError) as excinfo:
        make_vector_env("Zzqx", 1, 0)
    assert_one_line_error(excinfo, "'Zzqx'", "such as CartPole-v1", "gymnasium.registry")


def test_unimportable_module_in_id():
    with pytest.raises(EnvError) as excinfo:
        make_vector_env("no_such_module_xyz:Thing-v0", 1, 0)
    assert_one_line_error(excinfo, "no_such_module_xyz", "install it")


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "MountainCarContinuous-v0"])
@pytest.mark.parametrize("vectorization", ["auto", "sync"])
def test_continuous_action_space_is_rejected(env_id, vectorization):
    with pytest.raises(EnvError) as excinfo:
        make_vector_env(env_id, 2, 0, vectorization=vectorization)
    assert_one_line_error(
        excinfo,
        "discrete action space",
        f"{env_id} has Box(",
        "Discrete actions (e.g. CartPole-v1)",
    )


@pytest.mark.parametrize("vectorization", ["threads", "Sync", "vector_entry_point", ""])
def test_bad_vectorization_lists_the_choices(vectorization):
    with pytest.raises(EnvError) as excinfo:
        make_vector_env(CARTPOLE, 1, 0, vectorization=vectorization)
    assert_one_line_error(excinfo, "'auto', 'sync', 'async', 'native'")


def test_native_without_vector_entry_point():
    with pytest.raises(EnvError) as excinfo:
        make_vector_env("Acrobot-v1", 1, 0, vectorization="native")
    assert_one_line_error(excinfo, "Acrobot-v1", "vector_entry_point", '"sync"')


def test_wrappers_with_native():
    with pytest.raises(EnvError) as excinfo:
        make_vector_env(CARTPOLE, 1, 0, vectorization="native", wrappers=[clip_reward])
    assert_one_line_error(excinfo, 'vectorization="sync"')


@pytest.mark.parametrize("num_envs", [0, -1, 2.0, True])
def test_bad_num_envs(num_envs):
    with pytest.raises(EnvError) as excinfo:
        make_vector_env(CARTPOLE, num_envs, 0)
    assert_one_line_error(excinfo, "num_envs", "num_envs=1")


@pytest.mark.parametrize("seed", [-1, 1.5, None])
def test_bad_seed(seed):
    with pytest.raises(EnvError) as excinfo:
        make_vector_env(CARTPOLE, 1, seed)
    assert_one_line_error(excinfo, "seed", "seed=0")


def test_rejected_env_kwargs():
    for vectorization in ("native", "sync"):
        with pytest.raises(EnvError) as excinfo:
            make_vector_env(
                CARTPOLE, 1, 0, vectorization=vectorization, env_kwargs={"gravity": 1.0}
            )
        assert_one_line_error(excinfo, "gravity", "fix or remove")


def test_missing_dependency_is_named():
    # phys2d/* ships with Gymnasium but needs jax; skip where jax happens to be installed.
    if importlib.util.find_spec("jax") is not None:
        pytest.skip("jax is installed")
    with pytest.raises(EnvError) as excinfo:
        make_vector_env("phys2d/CartPole-v1", 1, 0)
    assert_one_line_error(excinfo, "jax", "install it")


@pytest.mark.parametrize("env_id", ["ALE/Pong-v5", "BreakoutNoFrameskip-v4"])
def test_atari_without_ale_py_names_the_extra(monkeypatch, env_id):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "ale_py" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    for call in (lambda: make_vector_env(env_id, 1, 0), lambda: env_reward_threshold(env_id)):
        with pytest.raises(EnvError) as excinfo:
            call()
        assert_one_line_error(excinfo, env_id, "Atari extra", ATARI_FIX)


def test_error_messages_are_forced_onto_one_line():
    assert str(EnvError("a\nb  c\n")) == "a b c"


# --- import direction -----------------------------------------------------------------------


def test_envs_package_imports_only_gymnasium_numpy_and_stdlib():
    forbidden = {"torch", "agents", "rl_rmsprop"}
    for path in Path(envs.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert not roots & forbidden, f"{path.name} imports {roots & forbidden}"


def test_vector_actions_answer_as_multidiscrete_and_replace_it():
    from gymnasium.spaces import MultiDiscrete

    from envs.make import VectorActions

    for nvec, start in [([2] * 8, None), ([3, 5, 2], [-1, 0, 4])]:
        ref, fast = MultiDiscrete(nvec, start=start), VectorActions(nvec, start=start)
        low = ref.start
        high = ref.start + ref.nvec - 1
        for x in [low, high, low - 1, high + 1, list(low), list(low)[:-1], low.astype(float)]:
            assert fast.contains(x) == ref.contains(x), x
        assert fast.contains(high.astype(np.int8))
    # A space pickled before the bounds were cached (old checkpoints) unpickles whole.
    import pickle

    old = VectorActions([2] * 4)
    del old._high
    back = pickle.loads(pickle.dumps(old))
    assert back.contains(np.ones(4, dtype=np.int64)) and not back.contains(np.full(4, 2))
    env = make_vector_env("CartPole-v1", 4, 0)
    assert type(env.unwrapped.action_space) is VectorActions
    with pytest.raises(AssertionError):
        env.reset(seed=0)
        env.step(np.array([0, 1, 2, 0]))
    env.close()


@pytest.mark.skipif(importlib.util.find_spec("ale_py") is None, reason="needs ale-py")
@pytest.mark.parametrize("cores,kind", [(2, SyncVectorEnv), (4, AsyncVectorEnv)])
def test_auto_steps_atari_copies_in_workers_only_with_enough_cores(monkeypatch, cores, kind):
    import envs.make
    from envs.atari import atari_wrappers

    monkeypatch.setattr(envs.make.os, "cpu_count", lambda: cores)
    # The Python wrapper chain (DQN's); without wrappers auto takes ALE's C++ vector env.
    env = make_vector_env("PongNoFrameskip-v4", 2, 0, wrappers=atari_wrappers())
    try:
        assert isinstance(env.unwrapped, kind)
    finally:
        env.close()


def test_closing_an_async_env_mid_step_does_not_wait_for_answers_already_read(monkeypatch):
    """A step broken by a worker's death may have read the other workers' answers already;
    closing must not wait for them again (it hung the suite once, under load)."""
    import threading

    import envs.make

    monkeypatch.setattr(envs.make, "CLOSE_TIMEOUT_S", 1.0)
    env = make_vector_env("CartPole-v1", 2, 0, vectorization="async")
    env.reset(seed=0)
    base = env.unwrapped
    base.step_async(np.zeros(2, dtype=np.int64))
    base.parent_pipes[0].recv()  # worker 0's answer, taken by the broken step
    closer = threading.Thread(target=envs.make.close_env, args=(env,), daemon=True)
    closer.start()
    closer.join(timeout=30)
    assert not closer.is_alive(), "close_env waited for an answer that will never come"
    assert all(not p.is_alive() for p in base.processes)
