import numpy as np
import pytest
import torch

from agents.replay import ReplayBuffer, ReplaySample
from envs import make_vector_env

CPU = torch.device("cpu")


def _step(values, num_envs=2, valid=None, terminated=None):
    """One add() worth of data whose obs rows are [v, v] and next_obs rows [v + 0.5, v + 0.5]."""
    v = torch.as_tensor(values, dtype=torch.float32)
    return dict(
        obs=v[:, None].repeat(1, 2),
        next_obs=(v + 0.5)[:, None].repeat(1, 2),
        actions=v.long(),
        rewards=v * 10,
        terminated=torch.zeros(num_envs, dtype=torch.bool) if terminated is None else terminated,
        valid=torch.ones(num_envs, dtype=torch.bool) if valid is None else valid,
    )


def _chronological(buffer, column):
    """Rows of ``column`` oldest first."""
    idx = [(buffer.pos - len(buffer) + k) % buffer.capacity for k in range(len(buffer))]
    return column[idx]


def test_wraps_around_overwriting_the_oldest_rows():
    buffer = ReplayBuffer(5, (2,), num_envs=2, device=CPU)
    buffer.add(**_step([0.0, 1.0]))
    buffer.add(**_step([2.0, 3.0]))
    assert len(buffer) == 4 and buffer.pos == 4
    buffer.add(**_step([4.0, 5.0]))  # row 4 gets 4, then wraps: row 0 (was 0) gets 5
    assert len(buffer) == 5 and buffer.pos == 1
    assert buffer.obs[:, 0].tolist() == [5.0, 1.0, 2.0, 3.0, 4.0]
    assert buffer.next_obs[:, 1].tolist() == [5.5, 1.5, 2.5, 3.5, 4.5]
    assert buffer.actions.tolist() == [5, 1, 2, 3, 4]
    assert buffer.rewards.tolist() == [50.0, 10.0, 20.0, 30.0, 40.0]
    assert _chronological(buffer, buffer.actions).tolist() == [1, 2, 3, 4, 5]


def test_batch_larger_than_capacity_keeps_the_newest_rows():
    buffer = ReplayBuffer(3, (2,), num_envs=4, device=CPU)
    buffer.add(**_step([0.0, 1.0, 2.0, 3.0], num_envs=4))
    buffer.add(**_step([4.0, 5.0, 6.0, 7.0], num_envs=4))
    assert len(buffer) == 3 and buffer.pos == 8 % 3
    assert _chronological(buffer, buffer.actions).tolist() == [5, 6, 7]


def test_samples_only_filled_rows():
    buffer = ReplayBuffer(100, (2,), num_envs=3, device=CPU)
    buffer.add(**_step([1.0, 2.0, 3.0], num_envs=3))
    batch = buffer.sample(1000, generator=torch.Generator().manual_seed(0))
    assert isinstance(batch, ReplaySample)
    assert batch.obs.shape == (1000, 2) and batch.next_obs.shape == (1000, 2)
    assert set(batch.obs[:, 0].tolist()) == {1.0, 2.0, 3.0}  # all three drawn, nothing else
    # Columns stay aligned: each sampled row is one stored transition.
    assert torch.equal(batch.actions.float(), batch.obs[:, 0])
    assert torch.equal(batch.rewards, batch.obs[:, 0] * 10)
    assert torch.equal(batch.next_obs, batch.obs + 0.5)


def test_invalid_autoreset_rows_are_never_stored():
    buffer = ReplayBuffer(10, (2,), num_envs=3, device=CPU)
    buffer.add(**_step([1.0, 2.0, 3.0], num_envs=3, valid=torch.tensor([True, False, True])))
    assert len(buffer) == 2
    assert buffer.obs[:2, 0].tolist() == [1.0, 3.0]
    buffer.add(**_step([4.0, 5.0, 6.0], num_envs=3, valid=torch.zeros(3, dtype=torch.bool)))
    assert len(buffer) == 2 and buffer.pos == 2
    assert (buffer.obs[2:] == 0).all()
    batch = buffer.sample(200, generator=torch.Generator().manual_seed(1))
    assert set(batch.actions.tolist()) == {1, 3}


def test_truncated_transition_is_stored_with_terminated_false_and_true_last_obs():
    buffer = ReplayBuffer(4, (2,), num_envs=2, device=CPU)
    last_obs = np.array([[0.1, 0.2], [0.3, 0.4]], dtype=np.float32)
    terminated = np.array([False, True])
    truncated = np.array([True, False])
    buffer.add(
        obs=np.zeros((2, 2), dtype=np.float32),
        next_obs=last_obs,
        actions=np.array([0, 1]),
        rewards=np.array([1.0, 1.0]),
        terminated=terminated,
        valid=np.ones(2, dtype=bool),
    )
    assert buffer.terminated[:2].tolist() == [False, True]
    assert torch.equal(buffer.next_obs[:2], torch.from_numpy(last_obs))
    # Next step: both envs autoreset; the reset observations must not enter the buffer.
    prev_done = terminated | truncated
    buffer.add(
        obs=last_obs,
        next_obs=np.full((2, 2), 9.0, dtype=np.float32),
        actions=np.array([1, 1]),
        rewards=np.zeros(2),
        terminated=np.zeros(2, dtype=bool),
        valid=~prev_done,
    )
    assert len(buffer) == 2 and not (buffer.next_obs == 9.0).any()


def test_numpy_and_tensor_inputs_store_the_same_rows():
    data = _step([1.0, 2.0], terminated=torch.tensor([True, False]))
    from_tensor = ReplayBuffer(4, (2,), num_envs=2, device=CPU)
    from_numpy = ReplayBuffer(4, (2,), num_envs=2, device=CPU)
    from_tensor.add(**data)
    from_numpy.add(**{k: v.numpy() for k, v in data.items()})
    for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
        a, b = getattr(from_tensor, name), getattr(from_numpy, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert from_numpy.actions.dtype == torch.int64
    assert from_numpy.rewards.dtype == torch.float32
    assert from_numpy.terminated[:2].tolist() == [True, False]


def test_uint8_observations_and_nbytes():
    buffer = ReplayBuffer(10, (4, 84, 84), num_envs=2, device=CPU, obs_dtype=torch.uint8)
    assert buffer.obs.dtype == torch.uint8 and buffer.next_obs.dtype == torch.uint8
    assert buffer.nbytes == 10 * (2 * 4 * 84 * 84 + 8 + 4 + 1)
    frames = np.random.default_rng(0).integers(0, 256, (2, 4, 84, 84), dtype=np.uint8)
    buffer.add(frames, frames, np.zeros(2), np.zeros(2), np.zeros(2, bool), np.ones(2, bool))
    assert torch.equal(buffer.obs[:2], torch.from_numpy(frames))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"capacity": 0, "num_envs": 1}, "capacity"),
        ({"capacity": -3, "num_envs": 1}, "capacity"),
        ({"capacity": 10, "num_envs": 0}, "num_envs"),
    ],
)
def test_bad_constructor_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ReplayBuffer(obs_shape=(2,), device=CPU, **kwargs)


def test_bad_add_and_sample_arguments_raise_value_error():
    buffer = ReplayBuffer(10, (2,), num_envs=2, device=CPU)
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(4)
    with pytest.raises(ValueError, match="obs"):
        buffer.add(**_step([1.0, 2.0, 3.0], num_envs=3) | {"valid": torch.ones(2, dtype=bool)})
    bad_shape = _step([1.0, 2.0]) | {"next_obs": torch.zeros(2, 3)}
    with pytest.raises(ValueError, match="next_obs"):
        buffer.add(**bad_shape)
    with pytest.raises(ValueError, match="actions"):
        buffer.add(**_step([1.0, 2.0]) | {"actions": torch.zeros(3)})
    assert len(buffer) == 0  # a rejected add writes nothing
    buffer.add(**_step([1.0, 2.0]))
    with pytest.raises(ValueError, match="batch_size"):
        buffer.sample(0)


def test_sampling_with_a_seeded_generator_is_deterministic():
    buffer = ReplayBuffer(50, (2,), num_envs=5, device=CPU)
    for start in range(0, 40, 5):
        buffer.add(**_step([float(v) for v in range(start, start + 5)], num_envs=5))
    first = buffer.sample(64, generator=torch.Generator().manual_seed(123))
    again = buffer.sample(64, generator=torch.Generator().manual_seed(123))
    other = buffer.sample(64, generator=torch.Generator().manual_seed(124))
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first.actions, other.actions)


@pytest.mark.parametrize("capacity", [1000, 50])
def test_cartpole_end_to_end_stores_exactly_the_real_transitions(capacity):
    num_envs, n_steps = 4, 60
    env = make_vector_env("CartPole-v1", num_envs, seed=0)
    env.action_space.seed(0)
    buffer = ReplayBuffer(capacity, (4,), num_envs=num_envs, device=CPU)
    obs, _ = env.reset(seed=0)
    prev_done = np.zeros(num_envs, dtype=bool)
    episode = np.zeros(num_envs, dtype=np.int64)  # per-env episode id, bumped at autoreset
    episode_of = {}  # (env, obs bytes) -> episode id
    for i in range(num_envs):
        episode_of[i, obs[i].tobytes()] = 0
    expected = []  # (obs, action, reward, next_obs, terminated) of every real transition
    crossings = []  # (last obs, reset obs) pairs of the autoreset steps
    n_terminated = 0
    for _ in range(n_steps):
        actions = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(actions)
        valid = ~prev_done
        buffer.add(obs, next_obs, actions, reward, terminated, valid)
        episode += prev_done  # an autoreset step's next_obs starts a new episode
        for i in range(num_envs):
            episode_of[i, next_obs[i].tobytes()] = int(episode[i])
            if valid[i]:
                expected.append((obs[i], actions[i], reward[i], next_obs[i], terminated[i]))
                n_terminated += bool(terminated[i])
            else:
                crossings.append((obs[i], next_obs[i]))
        prev_done = terminated | truncated
        obs = next_obs
    env.close()
    assert crossings, "60 random CartPole steps always finish an episode"
    assert n_terminated > 0
    assert len(expected) == num_envs * n_steps - len(crossings)
    assert len(buffer) == min(capacity, len(expected))

    kept = expected[-len(buffer) :]
    stored = [_chronological(buffer, getattr(buffer, name)) for name in ReplaySample._fields]
    s_obs, s_actions, s_rewards, s_next_obs, s_terminated = stored
    assert torch.equal(s_obs, torch.tensor(np.array([t[0] for t in kept])))
    assert s_actions.tolist() == [int(t[1]) for t in kept]
    assert s_rewards.tolist() == [float(t[2]) for t in kept]
    assert torch.equal(s_next_obs, torch.tensor(np.array([t[3] for t in kept])))
    assert s_terminated.tolist() == [bool(t[4]) for t in kept]
    if capacity >= len(expected):
        assert int(buffer.terminated.sum()) == n_terminated

    # Independently of the bookkeeping above: each stored pair lies inside one episode of one
    # env, and no autoreset pair (last obs -> reset obs) was stored.
    owners = {}
    for (i, key), ep in episode_of.items():
        owners.setdefault(key, set()).add((i, ep))
    pairs = list(zip(s_obs.numpy(), s_next_obs.numpy(), strict=True))
    for o, n in pairs:
        assert owners[o.tobytes()] & owners[n.tobytes()]
    stored_pairs = {(o.tobytes(), n.tobytes()) for o, n in pairs}
    assert not stored_pairs & {(o.tobytes(), n.tobytes()) for o, n in crossings}
