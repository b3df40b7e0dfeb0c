import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rl_rmsprop.train import main

SCHEMA_TAGS = [
    "charts/episodic_return",
    "charts/episodic_length",
    "charts/episodic_return_mean100",
    "charts/SPS",
    "losses/policy_loss",
    "losses/value_loss",
    "losses/entropy",
    "grad/norm_preclip",
    "grad/norm_postclip",
    "grad/clipped",
    "grad/norm/policy.0.weight",
    "optim/lr",
    "optim/sq_avg/mean",
    "optim/sq_avg/min",
    "optim/sq_avg/max",
    "optim/effective_lr/mean",
    "optim/effective_lr/p05",
    "optim/effective_lr/p50",
    "optim/effective_lr/p95",
    "optim/update_to_param_ratio",
    "optim/eps_dominated_fraction",
    "optim/nonfinite_skipped",
]


def short_run(tmp_path, name, *extra):
    argv = [
        "--total-steps",
        "1600",
        "--logdir",
        str(tmp_path),
        "--run-name",
        name,
        "--log-every",
        "5",
        "--histogram-every",
        "10",
        "--eval-episodes",
        "2",
        "--quiet",
        *extra,
    ]
    assert main(argv) == 0
    return tmp_path / name


def events(run_dir):
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def test_a_short_run_writes_the_schema(tmp_path, capsys):
    run_dir = short_run(tmp_path, "a2c")
    assert "logs in" in capsys.readouterr().out
    acc = events(run_dir)
    tags = set(acc.Tags()["scalars"])
    missing = [t for t in SCHEMA_TAGS if t not in tags]
    assert not missing, missing
    assert {"optim/sq_avg", "grad/values"} <= set(acc.Tags()["histograms"])
    returns = acc.Scalars("charts/episodic_return")
    assert len(returns) >= 40  # 1,600 random-ish CartPole steps finish dozens of episodes
    assert all(r.value >= 1 for r in returns)
    assert "config/text_summary" in acc.Tags()["tensors"]

    summary = json.loads((run_dir / "summary.json").read_text())
    for key in [
        "total_steps",
        "wall_time_s",
        "sps",
        "episodic_return_mean100",
        "eval_return_mean",
        "eval_return_std",
        "solved_at_step",
        "solved_at_time_s",
    ]:
        assert key in summary
    assert summary["total_steps"] == 1600 and summary["solved_at_step"] is None
    config = json.loads((run_dir / "config.json").read_text())
    assert config["optim"]["name"] == "rmsprop" and config["a2c"]["n_steps"] == 5
    assert (run_dir / "checkpoint.pt").stat().st_size > 0


def test_same_seed_gives_identical_returns_and_losses(tmp_path):
    runs = [events(short_run(tmp_path, f"r{i}", "--seed", "3")) for i in range(2)]
    for tag in ["charts/episodic_return", "losses/policy_loss", "losses/value_loss"]:
        a, b = ([(e.step, e.value) for e in acc.Scalars(tag)] for acc in runs)
        assert a == b, tag
    other = events(short_run(tmp_path, "other", "--seed", "4"))
    assert [e.value for e in other.Scalars("charts/episodic_return")] != [
        e.value for e in runs[0].Scalars("charts/episodic_return")
    ]


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--env", "CartPol-v1"], "CartPole-v1"),
        (["--env", "Pendulum-v1"], "discrete"),
        (["--optimizer", "rmsprp"], "rmsprop"),
        (["--optimizer", "adam", "--alpha", "1.5"], "alpha"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, argv, needle):
    assert main([*argv, "--logdir", str(tmp_path / "logs"), "--total-steps", "100"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and needle in err
    assert not (tmp_path / "logs").exists()


def test_existing_run_folder_is_refused(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert main(["--logdir", str(tmp_path), "--run-name", "taken", "--total-steps", "100"]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.slow
def test_a2c_with_default_rmsprop_solves_cartpole_within_200k_steps(tmp_path):
    run_dir = tmp_path / "learn"
    assert (
        main(
            [
                "--seed",
                "1",
                "--logdir",
                str(tmp_path),
                "--run-name",
                "learn",
                "--quiet",
                "--eval-episodes",
                "5",
            ]
        )
        == 0
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["solved_at_step"] is not None and summary["solved_at_step"] <= 200_000


def test_a_short_dqn_run_writes_the_schema(tmp_path):
    run_dir = short_run(
        tmp_path,
        "dqn",
        "--algo",
        "dqn",
        "--total-steps",
        "1500",
        "--learning-starts",
        "500",
        "--train-freq",
        "100",
        "--gradient-steps",
        "20",
        "--buffer-size",
        "1000",
    )
    acc = events(run_dir)
    tags = set(acc.Tags()["scalars"])
    dqn_tags = ["charts/epsilon", "losses/td_loss", "losses/q_values", "grad/norm/layers.0.weight"]
    schema = [t for t in SCHEMA_TAGS if not t.startswith(("losses/", "grad/norm/"))]
    missing = [t for t in schema + dqn_tags if t not in tags]
    assert not missing, missing
    eps = [e.value for e in acc.Scalars("charts/epsilon")]
    assert eps == sorted(eps, reverse=True) and eps[-1] < 1.0
    summary = json.loads((run_dir / "summary.json").read_text())
    # Rounds of 100 env steps end at steps 100, 200, ..., 1500; those ending at 500 or later
    # (11 of them) train, 20 gradient steps each.
    assert summary["updates"] == 220
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"]["algo"] == "dqn" and config["learn"]["hidden"] == [256, 256]


@pytest.mark.slow
def test_dqn_with_default_rmsprop_solves_cartpole_within_100k_steps(tmp_path):
    argv = [
        "--algo",
        "dqn",
        "--seed",
        "1",
        "--total-steps",
        "100000",
        "--logdir",
        str(tmp_path),
        "--run-name",
        "learn",
        "--quiet",
        "--eval-episodes",
        "0",
    ]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "learn" / "summary.json").read_text())
    assert summary["solved_at_step"] is not None and summary["solved_at_step"] <= 100_000


def test_batched_targets_equal_minibatch_by_minibatch_targets():
    import copy

    import torch

    from agents.dqn import QNetwork, td_targets
    from agents.replay import ReplayBuffer
    from rl_rmsprop.config import parse_config
    from rl_rmsprop.train import training_batches

    torch.manual_seed(0)
    q_net = QNetwork(4, 2, (32, 32))
    target = copy.deepcopy(q_net)
    buffer = ReplayBuffer(500, (4,), 1, torch.device("cpu"))
    for i in range(300):
        buffer.add(torch.randn(1, 4), torch.randn(1, 4), [i % 2], [1.0], [i % 7 == 0], [True])
    cfg = parse_config(["--algo", "dqn", "--gradient-steps", "5", "--batch-size", "16"])
    batches = list(training_batches(buffer, target, q_net, cfg))
    assert len(batches) == 5
    for batch, targets in batches:
        assert batch.obs.shape == (16, 4) and targets.shape == (16,)
        expected = td_targets(batch.rewards, batch.next_obs, batch.terminated, target)
        torch.testing.assert_close(targets, expected)
    # The minibatches differ from one another (drawn independently, not one batch repeated).
    assert not torch.equal(batches[0][0].obs, batches[1][0].obs)
