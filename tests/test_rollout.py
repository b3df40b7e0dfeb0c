import numpy as np
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


def test_step_by_step_matches_collect():
    def policy(obs):
        return (obs[:, 2] > 0).long()  # push toward the pole's lean: long episodes

    runs = []
    for use_step in (False, True):
        env = make_vector_env("CartPole-v1", 3, seed=5)
        collector = Collector(env, seed=5, device=torch.device("cpu"))
        if use_step:
            steps = [collector.step(policy) for _ in range(30)]
            obs = torch.tensor(np.stack([steps[0].obs, *(s.next_obs for s in steps)]))
            valid = torch.tensor(np.stack([s.valid for s in steps]))
            actions = torch.stack([s.actions for s in steps])
        else:
            rollout = collector.collect(policy, 30)
            obs, valid, actions = rollout.obs, rollout.valid, rollout.actions
        env.close()
        runs.append((obs, valid, actions, collector.global_step, collector.pop_finished()))
    (o1, v1, a1, g1, e1), (o2, v2, a2, g2, e2) = runs
    assert torch.equal(o1, o2) and torch.equal(v1, v2) and torch.equal(a1, a2)
    assert g1 == g2 == 90 and e1 == e2
