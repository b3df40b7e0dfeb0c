"""study.runs: how a study's runs are started."""

from __future__ import annotations

from rl_rmsprop.study import runs


def test_workers_fork_only_for_single_threaded_cpu_populations(monkeypatch):
    from rl_rmsprop.options import parse_config

    # Other tests may leave threads behind in this process; a fresh CLI has only its own.
    monkeypatch.setattr(runs.threading, "active_count", lambda: 1)
    cpu = [parse_config(["--seed", str(s)]) for s in (0, 1)]
    assert runs.start_method(True, cpu) == "fork"
    assert runs.start_method(False, cpu) == "spawn"  # process mode: any algorithm, any env
    for extra in (["--device", "cuda"], ["--threads", "0"], ["--threads", "2"]):
        assert runs.start_method(True, [*cpu, parse_config(extra)]) == "spawn", extra
    atari = parse_config(["--env", "PongNoFrameskip-v4"])
    assert runs.start_method(True, [atari]) == "spawn"
    # A thread alive here could hold a lock that a forked child would inherit, held.
    monkeypatch.setattr(runs.threading, "active_count", lambda: 2)
    assert runs.start_method(True, cpu) == "spawn"
