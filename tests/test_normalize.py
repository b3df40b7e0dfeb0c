"""envs.normalize: VecNormalize-like statistics, through checkpoints and into evaluation."""

from __future__ import annotations

import numpy as np
import torch

from envs import make_vector_env
from envs.normalize import (
    CLIP,
    frozen_observations,
    normalize,
    observation_normalizer,
    observation_statistics,
)
from envs.state import env_state, load_env_state
from rl_rmsprop.checkpoint import load_checkpoint
from rl_rmsprop.train import main


def _normalized(seed: int = 0):
    env = normalize(make_vector_env("Acrobot-v1", 3, seed, vectorization="sync"), 0.99)
    env.reset(seed=seed)
    return env


def _play(env, steps: int, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        obs, reward, *_ = env.step(rng.integers(0, 3, env.num_envs))
        out.append((obs.copy(), reward.copy()))
    return out


def test_observations_and_rewards_are_normalized_and_clipped_and_returns_stay_raw():
    env = _normalized()
    steps = _play(env, 600, 1)
    obs = np.concatenate([o for o, _ in steps[100:]])
    assert np.abs(obs).max() <= CLIP and abs(obs.mean()) < 0.5 and 0.3 < obs.std() < 2.0
    rewards = np.concatenate([r for _, r in steps])
    assert np.abs(rewards).max() <= CLIP and not np.isin(rewards, (-1.0, 0.0)).all()
    normalizer = observation_normalizer(env)
    assert normalizer is not None and normalizer.obs_rms.count > 1000
    env.close()


def test_the_statistics_go_through_the_env_state_and_continue_bit_for_bit():
    env = _normalized()
    _play(env, 300, 2)
    saved = env_state(env)
    fresh = _normalized()  # other statistics, as a resumed run's new env has
    load_env_state(fresh, saved)
    for (o1, r1), (o2, r2) in zip(_play(env, 200, 3), _play(fresh, 200, 3), strict=True):
        assert np.array_equal(o1, o2) and np.array_equal(r1, r2)
    a, b = observation_normalizer(env).obs_rms, observation_normalizer(fresh).obs_rms
    assert np.array_equal(a.mean, b.mean) and np.array_equal(a.var, b.var) and a.count == b.count
    env.close()
    fresh.close()


def test_evaluation_uses_a_frozen_copy_of_the_training_statistics():
    training = observation_normalizer(_normalized())
    _play(training, 200, 4)
    before = training.obs_rms.mean.copy()
    plain = make_vector_env("Acrobot-v1", 2, 7, vectorization="sync")
    frozen = frozen_observations(
        make_vector_env("Acrobot-v1", 2, 7, vectorization="sync"), observation_statistics(training)
    )
    raw, _ = plain.reset(seed=7)
    obs, _ = frozen.reset(seed=7)
    rms = training.obs_rms
    want = np.clip((raw - rms.mean) / np.sqrt(rms.var + 1e-8), -CLIP, CLIP)
    np.testing.assert_allclose(obs, want, rtol=1e-5, atol=1e-6)
    _play(frozen, 50, 5)
    assert np.array_equal(observation_normalizer(frozen).obs_rms.mean, rms.mean)
    assert np.array_equal(training.obs_rms.mean, before)  # evaluation changes nothing
    for e in (plain, frozen, training):
        e.close()


def test_a_normalized_run_resumed_from_its_checkpoint_equals_the_longer_run(tmp_path):
    base = ["--env", "Acrobot-v1", "--normalize", "--quiet", "--eval-episodes", "2"]
    base += ["--checkpoint-every", "0", "--logdir", str(tmp_path)]
    assert main([*base, "--total-steps", "3000", "--run-name", "short"]) == 0
    assert main(["--resume", str(tmp_path / "short"), "--total-steps", "6000"]) == 0
    assert main([*base, "--total-steps", "6000", "--run-name", "long"]) == 0
    a = load_checkpoint(tmp_path / "short" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "long" / "checkpoint.pt")
    assert torch.equal(a["model"], b["model"])
    short, long = (
        {tuple(map(str, path)): value for path, kind, value in state["env"]["data"]}
        for state in (a, b)
    )
    means = [k for k in short if k[-2:] == ("obs_rms", "mean")]
    assert means and all(np.array_equal(short[k], long[k]) for k in means)


def test_rewards_are_scaled_as_vecnormalize_scales_them_through_truncations_and_terminations():
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    # MountainCar's random episodes all end by truncation (200 steps), CartPole's by termination
    for env_id, actions in (("MountainCar-v0", 3), ("CartPole-v1", 2)):
        reference = VecNormalize(make_vec_env(env_id, n_envs=1, seed=3), gamma=0.99)
        reference.reset()
        ours = normalize(make_vector_env(env_id, 1, 3, vectorization="sync"), 0.99)
        ours.reset(seed=3)
        rng = np.random.default_rng(0)
        want, got, ended, episodes = [], [], False, 0
        for _ in range(1500):
            action = rng.integers(0, actions, 1)
            if ended:  # next-step autoreset: the step that starts the next episode
                ours.step(action)
            want.append(reference.step(action)[1][0])
            _, reward, terminated, truncated, _ = ours.step(action)
            got.append(reward[0])
            ended = bool(terminated[0] or truncated[0])
            episodes += ended
        assert episodes >= 7
        np.testing.assert_allclose(got, want, rtol=1e-6)  # SB3's rewards are float32
        assert ours.return_rms.count == reference.ret_rms.count
        reference.close()
        ours.close()
