import torch

from agents.rollout import Collector
from envs import make_vector_env


def test_autoreset_steps_are_marked_invalid_and_episodes_recorded():
    env = make_vector_env("CartPole-v1", 4, seed=0)
    collector = Collector(env, seed=0, device=torch.device("cpu"))
    rollout = collector.collect(lambda obs: torch.zeros(len(obs), dtype=torch.long), 40)
    env.close()
    done = rollout.terminated | rollout.truncated
    assert done.any()  # always pushing left ends CartPole episodes within ~10 steps
    assert rollout.obs.shape == (41, 4, 4) and rollout.actions.shape == (40, 4)
    # The step after a done step is the autoreset step: invalid, reward 0; all others valid.
    expected_valid = torch.ones_like(done)
    expected_valid[1:] = ~done[:-1]
    assert torch.equal(rollout.valid, expected_valid)
    assert (rollout.rewards[~rollout.valid] == 0).all()
    episodes = collector.pop_finished()
    assert len(episodes) == int(done.sum())
    assert collector.pop_finished() == []
    assert collector.global_step == 160
    # Each episode's return is the sum of its valid rewards (1 per step in CartPole).
    assert all(ep.episodic_return == ep.length for ep in episodes)
    assert collector.mean_recent() == sum(ep.episodic_return for ep in episodes) / len(episodes)
