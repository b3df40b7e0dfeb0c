"""Population environments: member-major layout, per-member streams, episode statistics."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

from envs import EnvError, make_vector_env
from envs.atari import atari_wrappers
from envs.population import MemberSeededCartPole, make_population_env


def _step_both(pop, singles, envs, steps, seed=0):
    """Step the population and the single-run envs with the same random actions."""
    rng = np.random.default_rng(seed)
    k = len(singles)
    for _ in range(steps):
        actions = rng.integers(0, 2, size=(k, envs))
        out = pop.step(actions.reshape(-1))
        yield actions, out, [env.step(actions[i]) for i, env in enumerate(singles)]


def test_each_member_is_a_single_runs_native_cartpole():
    seeds, envs = [3, 7, 11], 4
    pop = make_population_env("CartPole-v1", seeds, envs)
    assert isinstance(pop.env, MemberSeededCartPole)
    singles = [make_vector_env("CartPole-v1", envs, s) for s in seeds]
    obs, _ = pop.reset()
    for i, (env, s) in enumerate(zip(singles, seeds, strict=True)):
        np.testing.assert_array_equal(obs[i * envs : (i + 1) * envs], env.reset(seed=s)[0])
    ended = 0
    for _, (o, r, term, trunc, info), theirs in _step_both(pop, singles, envs, 2000):
        for i, (o2, r2, term2, trunc2, info2) in enumerate(theirs):
            rows = slice(i * envs, (i + 1) * envs)
            np.testing.assert_array_equal(o[rows], o2)
            np.testing.assert_array_equal(r[rows], r2)
            np.testing.assert_array_equal(term[rows], term2)
            np.testing.assert_array_equal(trunc[rows], trunc2)
            # the population's own episode statistics equal RecordEpisodeStatistics'
            idx, returns, lengths = info["episodes"]
            mine = (idx >= i * envs) & (idx < (i + 1) * envs)
            if "episode" in info2:
                done = info2["_episode"]
                np.testing.assert_array_equal(idx[mine] - i * envs, np.flatnonzero(done))
                np.testing.assert_array_equal(returns[mine], info2["episode"]["r"][done])
                np.testing.assert_array_equal(lengths[mine], info2["episode"]["l"][done])
                ended += int(done.sum())
            else:
                assert not mine.any()
    assert ended > 100  # many episodes, resets included


def test_a_member_does_not_depend_on_the_other_members():
    envs = 3
    a = make_population_env("CartPole-v1", [5, 1, 2], envs)
    b = make_population_env("CartPole-v1", [5, 9, 4], envs)
    obs_a, _ = a.reset()
    obs_b, _ = b.reset()
    rng = np.random.default_rng(1)
    for _ in range(1500):
        mine = rng.integers(0, 2, size=envs)
        # the other members act differently in the two populations
        acts_a = np.concatenate([mine, rng.integers(0, 2, size=2 * envs)])
        acts_b = np.concatenate([mine, rng.integers(0, 2, size=2 * envs)])
        obs_a = a.step(acts_a)[0]
        obs_b = b.step(acts_b)[0]
        np.testing.assert_array_equal(obs_a[:envs], obs_b[:envs])


def test_other_envs_use_independent_sync_sub_environments():
    seeds, envs = [2, 6], 2
    pop = make_population_env("Acrobot-v1", seeds, envs)
    singles = [make_vector_env("Acrobot-v1", envs, s, vectorization="sync") for s in seeds]
    obs, _ = pop.reset()
    for i, (env, s) in enumerate(zip(singles, seeds, strict=True)):
        np.testing.assert_array_equal(obs[i * envs : (i + 1) * envs], env.reset(seed=s)[0])
    rng = np.random.default_rng(0)
    for _ in range(50):
        actions = rng.integers(0, 3, size=(2, envs))
        o = pop.step(actions.reshape(-1))[0]
        for i, env in enumerate(singles):
            np.testing.assert_array_equal(o[i * envs : (i + 1) * envs], env.step(actions[i])[0])


def test_bad_input():
    with pytest.raises(EnvError, match="at least one member"):
        make_population_env("CartPole-v1", [], 2)
    with pytest.raises(EnvError, match="unknown environment"):
        make_population_env("CartPol-v1", [1], 2)
    pop = make_population_env("CartPole-v1", [1, 2], 2)
    pop.reset()
    with pytest.raises(AssertionError):
        pop.step(np.array([0, 1, 2, 0]))  # action 2 does not exist
    with pytest.raises(ValueError, match="one seed per member"):
        MemberSeededCartPole(2, 2).reset()


@pytest.mark.parametrize("integrator", ["euler", "semi-implicit euler"])
@pytest.mark.parametrize("sutton_barto", [False, True])
def test_one_member_steps_as_gymnasiums_vectorized_cartpole_bit_for_bit(integrator, sutton_barto):
    # Short episodes: terminations, truncations and resets all happen many times.
    kwargs = {"max_episode_steps": 25, "sutton_barto_reward": sutton_barto}
    mine = MemberSeededCartPole(1, 6, **kwargs)
    theirs = CartPoleVectorEnv(num_envs=6, **kwargs)
    mine.kinematics_integrator = theirs.kinematics_integrator = integrator
    np.testing.assert_array_equal(mine.reset(seed=[4])[0], theirs.reset(seed=4)[0])
    rng = np.random.default_rng(2)
    truncations = terminations = 0
    for _ in range(600):
        actions = rng.integers(0, 2, size=6)
        a, b = mine.step(actions), theirs.step(actions)
        for x, y in zip(a[:4], b[:4], strict=True):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(mine.state, theirs.state)
        truncations += int(a[3].sum())
        terminations += int(a[2].sum())
    assert truncations > 20 and terminations > 20


def test_an_atari_member_reports_its_games_as_a_single_runs_env_does_not_its_lives():
    """A lost life ends a learning episode (terminated) but not a game: the episodes a
    population reports for member k are the games its single run's env reports."""
    from envs.population import PopulationEnv

    steps, seeds = 1500, [1, 2]
    pop = make_population_env("BreakoutNoFrameskip-v4", seeds, 2, atari_wrappers())
    single = make_vector_env("BreakoutNoFrameskip-v4", 2, seeds[0], vectorization="sync")
    own = PopulationEnv(single, seeds[:1], 2, reports_episodes=True)
    pop.reset(), own.reset()
    rng = np.random.default_rng(0)
    mine, theirs, lives = [], [], 0
    for t in range(steps):
        actions = rng.integers(0, 4, 4)
        _, _, terminated, _, info = pop.step(actions)
        lives += int(terminated[:2].sum())
        ended, returns, lengths = info["episodes"]
        mine += [(t, e, r, n) for e, r, n in zip(ended, returns, lengths, strict=True) if e < 2]
        ended, returns, lengths = own.step(actions[:2])[4]["episodes"]
        theirs += [(t, e, r, n) for e, r, n in zip(ended, returns, lengths, strict=True)]
    pop.close(), own.close()
    assert mine == theirs and len(mine) >= 2 and lives > 2 * len(mine)
