"""run.evaluation: greedy episodes side by side, one per env copy, apart from the training."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

from agents.dqn import QNetwork
from rl_rmsprop.options import parse_config
from rl_rmsprop.run.evaluation import EVAL_SEED_OFFSET, evaluate


def _q_network(seed: int = 0) -> QNetwork:
    torch.manual_seed(seed)
    return QNetwork(4, 2, (16,))


def test_each_env_copy_plays_its_first_episode_from_its_own_seed():
    # Synchronous copies are seeded one by one (native vector envs share one generator).
    argv = ["--algo", "dqn", "--seed", "3", "--eval-episodes", "4", "--vectorization", "sync"]
    cfg = parse_config(argv)
    model = _q_network()
    mean, std = evaluate(model, cfg, torch.device("cpu"))
    expected = []
    for i in range(4):  # the same episodes one by one, on plain Gymnasium envs
        env = gymnasium.make("CartPole-v1")
        obs, _ = env.reset(seed=3 + EVAL_SEED_OFFSET + i)
        total, done = 0.0, False
        while not done:
            with torch.no_grad():
                action = int(model(torch.as_tensor(obs[None], dtype=torch.float32)).argmax(-1))
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        expected.append(total)
    assert len(set(expected)) > 1  # the copies start apart
    assert (mean, std) == pytest.approx((np.mean(expected), np.std(expected)))


def test_evaluation_draws_from_no_generator_of_the_training():
    cfg = parse_config(["--algo", "dqn", "--eval-episodes", "3", "--eval-epsilon", "0.5"])
    before = torch.random.get_rng_state()
    first = evaluate(_q_network(), cfg, torch.device("cpu"))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert evaluate(_q_network(), cfg, torch.device("cpu")) == first
    assert evaluate(_q_network(), parse_config(["--eval-episodes", "0"]), "cpu") == (None, None)
