"""Atari preprocessing, the frame replay memory and the presets (need the atari extra)."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import events

pytest.importorskip("ale_py", reason="the atari extra (ale-py) is not installed")
pytest.importorskip("cv2", reason="the atari extra (opencv-python-headless) is not installed")

from agents.a2c import ENTROPY, POLICY_LOSS
from agents.dqn import TD_LOSS
from agents.replay import FrameReplayBuffer
from envs import EnvError, make_vector_env
from envs.atari import NativeAtari, atari_wrappers
from rl_rmsprop.optim.figures import NORM_PRECLIP, SQ_AVG_MEAN
from rl_rmsprop.tags import EPSILON, FRAMES

CPU = torch.device("cpu")


def test_observations_are_stacked_uint8_frames():
    env = make_vector_env("PongNoFrameskip-v4", 2, seed=0, vectorization="sync")
    obs, _ = env.reset(seed=0)
    assert env.single_observation_space.shape == (4, 84, 84)
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    # Right after a reset the stack is the reset frame four times (padding_type="reset").
    assert all((obs[:, k] == obs[:, 3]).all() for k in range(3))
    new, *_ = env.step(np.zeros(2, dtype=np.int64))
    assert new.dtype == np.uint8
    assert (new[:, :3] == obs[:, 1:]).all()  # the stack shifts by one frame per step
    env.close()


def test_native_observations_are_stacked_uint8_frames_zero_padded_after_a_reset():
    env = make_vector_env("PongNoFrameskip-v4", 2, seed=0)  # auto: ALE's C++ vector env
    assert isinstance(env, NativeAtari)
    obs, _ = env.reset(seed=0)
    assert env.single_observation_space.shape == (4, 84, 84)
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    # A new game's first stack: three zero frames and the reset frame (as SB3's VecFrameStack).
    assert (obs[:, :3] == 0).all() and (obs[:, 3] > 0).any()
    new, *_ = env.step(np.zeros(2, dtype=np.int64))
    assert new.dtype == np.uint8 and (new[:, :3] == obs[:, 1:]).all()
    env.close()


def test_native_copies_are_seeded_seed_plus_index_and_replay_the_same():
    actions = np.random.default_rng(1).integers(0, 6, size=(60, 2))

    def play(num_envs, seed, cols):
        env = make_vector_env("PongNoFrameskip-v4", num_envs, seed=seed, vectorization="native")
        frames = [env.reset(seed=seed)[0]]
        frames += [env.step(actions[t, cols])[0] for t in range(len(actions))]
        env.close()
        return np.stack(frames)

    both = play(2, 5, [0, 1])
    assert np.array_equal(both, play(2, 5, [0, 1]))  # threads or not, the same games
    assert np.array_equal(both[:, 1], play(1, 6, [1])[:, 0])  # copy i is seeded seed + i
    assert not np.array_equal(both[:, 0], both[:, 1])


def test_native_clipped_rewards_are_the_sign_of_the_scores_it_logs():
    # The same games played twice, with and without clipping: the learner's reward is the
    # sign of the raw one and each logged game return is the sum of its raw rewards.
    clipped_env = NativeAtari("BreakoutNoFrameskip-v4", 2)
    raw_env = NativeAtari("BreakoutNoFrameskip-v4", 2, clip_rewards=False)
    clipped_env.reset(seed=3)
    raw_env.reset(seed=3)
    rng = np.random.default_rng(0)
    sums, steps, games, was_over = np.zeros(2), np.zeros(2, dtype=int), [], np.zeros(2, bool)
    for _ in range(3000):
        actions = rng.integers(0, 4, size=2)
        _, clipped, term_c, trunc_c, info_c = clipped_env.step(actions)
        _, raw, terminated, truncated, info = raw_env.step(actions)
        assert np.array_equal(clipped, np.sign(raw))
        assert np.array_equal(term_c, terminated) and np.array_equal(trunc_c, truncated)
        sums += np.where(was_over, 0, raw)  # the step after a game over is its reset
        steps += ~was_over
        over = np.zeros(2, bool)
        if "episode" in info:
            over = info["_episode"]
            assert np.array_equal(info_c["episode"]["r"], info["episode"]["r"])
            for e in np.flatnonzero(over):
                assert info["episode"]["r"][e] == sums[e] and info["episode"]["l"][e] == steps[e]
                games.append(sums[e])
            sums[over], steps[over] = 0, 0
        was_over = over
    clipped_env.close()
    raw_env.close()
    assert len(games) >= 2 and max(games) > 0


def test_native_env_presses_fire_on_the_step_after_a_lost_life():
    # The step after a lost life is dropped by the agents; in Breakout it launches the ball
    # (FIRE) whatever action was given, as the wrapper chain's reset after a lost life does.
    envs = [NativeAtari("BreakoutNoFrameskip-v4", 1) for _ in range(2)]
    for env in envs:
        env.reset(seed=4)
    rng = np.random.default_rng(2)
    life_losses, after = 0, False
    for _ in range(1500):
        action = rng.integers(0, 4, size=1)
        if after:  # one copy gets NOOP, the other LEFT: both must press FIRE
            steps = [env.step(np.array([a])) for env, a in zip(envs, (0, 3), strict=True)]
        else:
            steps = [env.step(action) for env in envs]
        assert np.array_equal(steps[0][0], steps[1][0])
        terminated, info = steps[0][2][0], steps[0][4]
        after = bool(terminated) and info["lives"][0] > 0
        life_losses += after
    for env in envs:
        env.close()
    assert life_losses >= 2
    assert not NativeAtari("FreewayNoFrameskip-v4", 1).fire and envs[0].fire


@pytest.mark.parametrize("vectorization", ["sync", "native"])
def test_clipped_rewards_for_learning_real_score_logged_and_lives_end_learning_episodes(
    vectorization,
):
    # Breakout: bricks are worth 1 to 7 points (clipped to 1), a game has 5 lives.
    env = make_vector_env("BreakoutNoFrameskip-v4", 1, seed=3, vectorization=vectorization)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    clipped, life_ends, game = 0.0, 0, None
    for _ in range(5000):
        _, reward, terminated, _, info = env.step(rng.integers(0, 4, size=1))
        assert reward[0] in (-1.0, 0.0, 1.0)
        clipped += reward[0]
        if "episode" in info and info["_episode"][0]:
            game = (float(info["episode"]["r"][0]), int(info["episode"]["l"][0]))
            break
        life_ends += bool(terminated[0])
    env.close()
    assert game is not None, "a random Breakout game ends within 5000 steps"
    assert life_ends == 4  # 5 lives: 4 learning episodes end before the game does
    score, length = game
    assert score >= clipped  # the logged score is the raw one (bricks above row 1 score more)
    assert length > 0


def _drive(env_id, num_envs, steps, capacity, seed=0):
    """Random play into a FrameReplayBuffer and a naive list of (obs, next_obs, a, r, term)."""
    env = make_vector_env(env_id, num_envs, seed=seed, vectorization="sync")
    obs, _ = env.reset(seed=seed)
    buffer = FrameReplayBuffer(capacity, (4, 84, 84), num_envs, CPU)
    naive = {}
    prev_done = np.zeros(num_envs, dtype=bool)
    rng = np.random.default_rng(seed)
    for t in range(1, steps + 1):
        actions = rng.integers(0, env.single_action_space.n, size=num_envs)
        next_obs, reward, terminated, truncated, _ = env.step(actions)
        valid = ~prev_done
        buffer.add(obs, next_obs, actions, reward, terminated, valid)
        for e in range(num_envs):
            if valid[e]:
                naive[e, t] = (obs[e], next_obs[e], actions[e], reward[e], terminated[e])
        prev_done = terminated | truncated
        obs = next_obs
    env.close()
    return buffer, naive


@pytest.mark.parametrize("capacity", [10_000, 150])
def test_frame_replay_rebuilds_every_stack_exactly_across_episode_boundaries(capacity):
    buffer, naive = _drive("BreakoutNoFrameskip-v4", 2, 400, capacity)
    lowest = buffer._lowest()
    keys = [(e, t) for (e, t) in naive if t >= lowest]
    assert len(buffer) == len(keys)
    assert sum(bool(v[4]) for k, v in naive.items() if k in set(keys)) >= 2  # lives were lost
    env = torch.tensor([k[0] for k in keys])
    step = torch.tensor([k[1] for k in keys])
    obs, next_obs = buffer._stacks(env, step)
    for i, key in enumerate(keys):
        o, n, a, r, term = naive[key]
        assert torch.equal(obs[i], torch.from_numpy(o)), key
        assert torch.equal(next_obs[i], torch.from_numpy(n)), key
        slot = key[1] % buffer.ring
        assert buffer.actions[key[0], slot] == a and buffer.rewards[key[0], slot] == r
        assert bool(buffer.terminated[key[0], slot]) == bool(term)
    # Samples are stored transitions, never an autoreset step.
    batch = buffer.sample(256, generator=torch.Generator().manual_seed(0))
    stored = {(o.tobytes(), n.tobytes()) for (o, n, *_rest) in (naive[k] for k in keys)}
    for o, n in zip(batch.obs, batch.next_obs, strict=True):
        assert (o.numpy().tobytes(), n.numpy().tobytes()) in stored


def test_frame_replay_memory_per_transition():
    per = FrameReplayBuffer.bytes_needed(1_000_000, (4, 84, 84), 1) / 1_000_000
    assert per == pytest.approx(84 * 84 + 22, rel=1e-4)
    assert FrameReplayBuffer.bytes_needed(1_000_000, (4, 84, 84), 1) < 7.5e9
    buffer = FrameReplayBuffer(1000, (4, 84, 84), 2, CPU)
    assert buffer.nbytes == FrameReplayBuffer.bytes_needed(1000, (4, 84, 84), 2)
    # Against a buffer that stores obs and next_obs: 2 x 4 x 84 x 84 bytes per transition.
    assert per / (2 * 4 * 84 * 84) < 0.126


def test_frame_replay_state_round_trip():
    buffer, _ = _drive("PongNoFrameskip-v4", 1, 60, 40)
    copy = FrameReplayBuffer(40, (4, 84, 84), 1, CPU)
    copy.load_state_dict(buffer.state_dict())
    assert len(copy) == len(buffer)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a, b = buffer.sample(16, g1), copy.sample(16, g2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.slow
def test_a_short_dqn_nature_run_on_pong(tmp_path, capsys):
    from rl_rmsprop.train import main

    argv = [
        *("--preset", "dqn-nature", "--env", "PongNoFrameskip-v4", "--total-steps", "1200"),
        *("--learning-starts", "400", "--buffer-size", "3000", "--eval-episodes", "0"),
        *("--log-every", "20", "--logdir", str(tmp_path), "--run-name", "dqn"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "replay buffer: 3,000 transitions" in out.err and "frames stored once" in out.err
    summary = json.loads((tmp_path / "dqn" / "summary.json").read_text())
    assert summary["total_steps"] >= 1200 and summary["updates"] == (1200 - 400) // 4 + 1
    acc = events(tmp_path / "dqn")
    assert {TD_LOSS, EPSILON, SQ_AVG_MEAN} <= set(acc.Tags()["scalars"])
    config = json.loads((tmp_path / "dqn" / "config.json").read_text())
    assert config["optim"]["name"] == "rmsprop:dqn-nature"
    assert config["dqn"]["loss_reduction"] == "sum" and config["run"]["eval_epsilon"] == 0.05


def test_a_short_a2c_atari_run_on_pong(tmp_path, capsys):
    from rl_rmsprop.train import main

    argv = [
        *("--preset", "a2c-atari", "--env", "PongNoFrameskip-v4", "--num-envs", "4"),
        *("--total-steps", "1600", "--eval-episodes", "0", "--log-every", "10"),
        *("--logdir", str(tmp_path), "--run-name", "a2c"),
    ]
    assert main(argv) == 0
    threads = min(4, os.cpu_count() or 1)
    line = f"on PongNoFrameskip-v4 x4 (ALE vector env, {threads} threads), optimizer"
    assert line in capsys.readouterr().err
    acc = events(tmp_path / "a2c")
    assert {POLICY_LOSS, ENTROPY, NORM_PRECLIP} <= set(acc.Tags()["scalars"])
    frames = acc.Scalars(FRAMES)  # env steps on the axis, emulator frames as a value
    assert all(e.value == 4 * e.step for e in frames) and frames
    config = json.loads((tmp_path / "a2c" / "config.json").read_text())
    assert config["optim"]["name"] == "rmsprop:tf" and config["a2c"]["ent_coef"] == 0.01


def test_capture_video_records_the_evaluation_games(tmp_path):
    pytest.importorskip("moviepy", reason="--capture-video needs moviepy (the video extra)")
    from rl_rmsprop.train import main

    argv = [
        *("--preset", "a2c-atari", "--env", "BreakoutNoFrameskip-v4", "--num-envs", "2"),
        *("--total-steps", "400", "--eval-episodes", "1", "--capture-video", "--quiet"),
        *("--logdir", str(tmp_path), "--run-name", "video"),
    ]
    assert main(argv) == 0
    (video,) = (tmp_path / "video" / "videos").glob("*.mp4")
    assert video.stat().st_size > 1000


def test_native_atari_runs_checkpoint_without_env_state_and_resume_says_so(tmp_path, capsys):
    from rl_rmsprop.train import main

    with pytest.raises(TypeError, match="cannot be pickled"):
        import pickle

        pickle.dumps(NativeAtari("PongNoFrameskip-v4", 1))
    argv = [
        *("--preset", "a2c-atari", "--env", "PongNoFrameskip-v4", "--num-envs", "2"),
        *("--total-steps", "400", "--eval-episodes", "0"),
        *("--logdir", str(tmp_path), "--run-name", "a2c", "--checkpoint-every", "200"),
    ]
    assert main(argv) == 0
    assert main(["--resume", str(tmp_path / "a2c"), "--total-steps", "600"]) == 0
    err = capsys.readouterr().err
    assert "not an exact continuation" in err and "ALEVectorInterface, which is not data" in err
    summary = json.loads((tmp_path / "a2c" / "summary.json").read_text())
    assert summary["total_steps"] >= 600


def test_dqn_refuses_the_native_atari_env_in_one_line(tmp_path, capsys):
    from rl_rmsprop.train import main

    argv = [
        *("--preset", "dqn-nature", "--env", "PongNoFrameskip-v4", "--vectorization", "native"),
        *("--total-steps", "100", "--logdir", str(tmp_path), "--run-name", "dqn"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "frame replay" in err and "--vectorization auto" in err
    assert not (tmp_path / "dqn").exists()


def test_native_atari_rejects_env_kwargs_and_wrappers():
    with pytest.raises(EnvError, match="cannot be passed to ALE"):
        make_vector_env("PongNoFrameskip-v4", 1, 0, env_kwargs={"render_mode": "rgb_array"})
    with pytest.raises(EnvError, match="native"):
        make_vector_env(
            "PongNoFrameskip-v4", 1, 0, vectorization="native", wrappers=atari_wrappers()
        )


@pytest.mark.slow
def test_pickled_atari_envs_are_restored_only_with_trust_checkpoint(tmp_path, capsys):
    from rl_rmsprop.train import main

    argv = [
        *("--preset", "dqn-nature", "--env", "PongNoFrameskip-v4", "--total-steps", "400"),
        *("--learning-starts", "100", "--buffer-size", "1000", "--eval-episodes", "0"),
        *("--checkpoint-every", "200", "--logdir", str(tmp_path), "--run-name", "dqn"),
    ]
    assert main(argv) == 0
    shutil.copytree(tmp_path / "dqn", tmp_path / "trusted")
    capsys.readouterr()
    assert main(["--resume", str(tmp_path / "dqn"), "--total-steps", "600"]) == 0
    err = capsys.readouterr().err
    assert "not an exact continuation" in err and "--trust-checkpoint" in err
    trusted = ["--resume", str(tmp_path / "trusted"), "--total-steps", "600"]
    assert main([*trusted, "--trust-checkpoint"]) == 0
    err = capsys.readouterr().err
    assert "resumed" in err and "not an exact continuation" not in err
