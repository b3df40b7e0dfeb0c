"""``compare --backend ray``: a study's runs as Ray tasks, for studies that outgrow one machine.

Each (optimizer, seed) run, or each population of runs, is one Ray task that declares its
resources (one CPU; and one GPU with ``--device cuda``). Runs write to the same study folder
as locally, so ``--logdir`` must be storage every node sees at the same path (NFS, a cluster
file system). Where the nodes share no file system, ``--ray-ship-runs`` has each task write
to the node's local disk and send the finished run folders back to the driver, which unpacks
them into the study folder.

Failures: a task whose worker process or node dies is retried by Ray up to ``--ray-retries``
times; a retried run resumes from its newest checkpoint (train's ``--checkpoint-every``), a
retried population from its own checkpoint in ``<study>/populations``. A run that still fails is
reported as failed in the study's summary. Ctrl-C on the driver cancels the tasks; the run
folders keep their checkpoints, and the same command with the same ``--name`` resumes them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from envs import EnvError
from rl_rmsprop.checkpoint import UnsafeCheckpoint, resume_candidates
from rl_rmsprop.config import Config
from rl_rmsprop.run.errors import TrainingFailed, UserError
from rl_rmsprop.run.folders import run_folder, run_folder_problem
from rl_rmsprop.run.members import PopulationError
from rl_rmsprop.run.population import run_population
from rl_rmsprop.run.single import run

RAY_INSTALL = 'pip install -e ".[ray]"'
SHIP_ROOT = Path(tempfile.gettempdir()) / "rl_rmsprop-ray"
"""Where a task writes its runs on the node's own disk with ``--ray-ship-runs``."""


class RayUnavailable(Exception):  # noqa: N818 (reported as one line)
    """Ray is not installed, or the cluster cannot be reached."""


@dataclass(frozen=True)
class RayOptions:
    """How the study uses Ray."""

    address: str | None = None
    """``ray.init`` address: None starts a local Ray instance, ``auto`` joins the running one."""
    retries: int = 2
    """Times a task is retried after its worker or node died."""
    ship_runs: bool = False
    """Nodes share no file system: runs are written locally and sent back to the driver."""


def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        RayUnavailable: Ray is not installed (the message says how to install it).
    """
    try:
        import ray
    except ImportError:
        raise RayUnavailable(
            f"--backend ray needs Ray, which is not installed; install it: {RAY_INSTALL}"
        ) from None
    return ray


def connect(ray: Any, address: str | None) -> None:
    """Join (or start) the Ray cluster unless this process already did.

    Raises:
        RayUnavailable: the address cannot be reached.
    """
    if ray.is_initialized():
        return
    if address and address != "auto" and not address.startswith(("ray://", "local")):
        _check_reachable(address)
    auth = os.environ.get("RAY_AUTH_MODE", "token")
    if address is None and auth != "token":
        # A local instance listens on every network interface: Ray's gRPC servers bind all
        # of them and Ray (2.60) turns a loopback node address into the host's own. Its
        # token (on by default) is then all that keeps other hosts from running code on it.
        raise RayUnavailable(
            f"a local Ray instance listens on every network interface, and RAY_AUTH_MODE={auth} "
            "turns off the token that keeps other hosts out; unset RAY_AUTH_MODE, give "
            "--ray-address of your own cluster, or use --backend local"
        )
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = address or "a local instance"
        raise RayUnavailable(
            f"cannot start or join the Ray cluster at {where} ({first}); check --ray-address "
            "(auto joins the cluster that `ray start` started)"
        ) from None


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a ``host:port`` nobody listens at (Ray itself retries for minutes)."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or address, int(port or 6379)), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        raise RayUnavailable(
            f"cannot reach the Ray cluster at {address} ({e}); check --ray-address (auto joins "
            "the cluster that `ray start` started on this machine)"
        ) from None


def _clear_unfinished(run_dir: Path) -> None:
    """Remove a run folder an earlier attempt left without a checkpoint, if it is ours.

    Raises:
        UserError: the folder is not one of our runs (it is left as it is).
    """
    if not (run_dir.exists() or run_dir.is_symlink()):
        return
    problem = run_folder_problem(run_dir)
    if problem:
        raise UserError(f"{run_dir} {problem}, so it is not a run of this study; move it away")
    shutil.rmtree(run_dir)


def train_or_resume(cfg: Config) -> dict[str, Any]:
    """One run: resumed from its newest checkpoint if an earlier attempt left one.

    Returns its summary (read back if it had already finished) or ``{"error": ...}``.
    """
    run_dir = run_folder(cfg)
    summary_file = run_dir / "summary.json"
    if summary_file.exists():
        return json.loads(summary_file.read_text())
    try:
        resume = run_dir if resume_candidates(run_dir) else None
        if resume is None:
            _clear_unfinished(run_dir)  # an attempt that died before its first checkpoint
        return run(cfg, resume=resume, in_study=True)
    except (UserError, EnvError, TrainingFailed) as e:
        return {"error": str(e)}


def chunk_checkpoint(study: Path, cfgs: Sequence[Config]) -> Path:
    """Where a population of a study keeps its checkpoint: named after its members' folders."""
    runs = "\n".join(sorted(str(run_folder(c)) for c in cfgs))
    return study / "populations" / f"{hashlib.sha1(runs.encode()).hexdigest()[:16]}.pt"


def train_population_chunk(
    cfgs: Sequence[Config],
    checkpoint: Path | None = None,
    out: Any = None,
    label: str = "population",
    stop: Any = None,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """One population of a study, resumed from ``checkpoint`` where an earlier attempt left one.

    Without a usable checkpoint the members that have no ``summary.json`` start again (their
    folders are removed first). The checkpoint is removed once the population finished.
    ``progress`` goes to :func:`~rl_rmsprop.run.population.run_population`.

    Raises:
        Interrupted: ``stop`` saw a signal (the checkpoint was written).
    """
    out = out if out is not None else io.StringIO()
    if checkpoint is not None and checkpoint.exists():
        try:
            summaries = run_population(
                list(cfgs),
                out=out,
                label=label,
                checkpoint=checkpoint,
                stop=stop,
                progress=progress,
            )
        except UnsafeCheckpoint as e:  # not damage: kept, for the user to decide
            return [{"error": str(e)}] * len(cfgs)
        except UserError:  # another population's, unreadable, or its folders are gone
            checkpoint.unlink(missing_ok=True)
        else:
            checkpoint.unlink(missing_ok=True)
            return summaries
    todo = []
    done: dict[int, dict[str, Any]] = {}
    for i, cfg in enumerate(cfgs):
        run_dir = run_folder(cfg)
        if (run_dir / "summary.json").exists():
            done[i] = json.loads((run_dir / "summary.json").read_text())
            continue
        try:
            _clear_unfinished(run_dir)
        except UserError as e:
            done[i] = {"error": str(e)}
            continue
        todo.append(i)
    try:
        fresh = (
            run_population(
                [cfgs[i] for i in todo],
                out=out,
                label=label,
                checkpoint=checkpoint,
                stop=stop,
                progress=progress,
            )
            if todo
            else []
        )
    except (UserError, EnvError, PopulationError) as e:
        fresh = [{"error": str(e)}] * len(todo)
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    done.update(zip(todo, fresh, strict=True))
    return [done[i] for i in range(len(cfgs))]


def _pack(run_dir: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(run_dir, arcname=".")
    return buffer.getvalue()


def unpack(archive: bytes, run_dir: Path) -> None:
    """Write a shipped run folder to ``run_dir`` (through a temp folder and a rename)."""
    tmp = run_dir.with_name(run_dir.name + ".incoming")
    _clear_unfinished(run_dir)  # an unfinished earlier attempt; anything else is refused
    shutil.rmtree(tmp, ignore_errors=True)  # a temp folder of ours, from an unpack cut short
    tmp.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        tar.extractall(tmp, filter="data")
    tmp.replace(run_dir)


def study_of(cfgs: Sequence[Config]) -> Path:
    """The study folder of a study's runs (``<study>/<optimizer>/seed-<k>``)."""
    return Path(cfgs[0].run.logdir).parent


def ray_task(cfgs: Sequence[Config], population: bool, ship_to: str | None) -> list[dict]:
    """What a Ray worker runs: a run (resumed where possible) or a population.

    With ``ship_to`` (the study folder on the driver) the runs are written under
    :data:`SHIP_ROOT` on this node and each finished folder comes back as ``"archive"``.
    """
    if ship_to is not None:
        study = Path(ship_to)
        local = SHIP_ROOT / study.name
        cfgs = [
            replace(
                c, run=replace(c.run, logdir=str(local / Path(c.run.logdir).relative_to(study)))
            )
            for c in cfgs
        ]
    if population:
        summaries = train_population_chunk(cfgs, chunk_checkpoint(study_of(cfgs), cfgs))
    else:
        summaries = [train_or_resume(cfgs[0])]
    import ray  # in a Ray worker: where the task ran, for the study's records

    node = ray.get_runtime_context().get_node_id()
    for summary in summaries:
        summary["ray_node"] = node
    if ship_to is not None:
        for cfg, summary in zip(cfgs, summaries, strict=True):
            run_dir = run_folder(cfg)
            if "error" not in summary and run_dir.exists():
                summary["archive"] = _pack(run_dir)
                shutil.rmtree(run_dir, ignore_errors=True)
    return summaries


def run_on_ray(
    chunks: list[list[Any]],
    population: bool,
    options: RayOptions,
    study: Path,
    report: Callable[[Any, dict], None],
) -> None:
    """Run each chunk of pairs (one run, or one population) as a Ray task.

    ``report(pair, summary)`` is called as each finishes; a task that failed after its
    retries reports ``{"error": ...}`` for each of its runs.

    Raises:
        RayUnavailable: Ray is missing or the cluster cannot be reached.
    """
    ray = import_ray()
    connect(ray, options.address)
    gpu = any(p.cfg.run.device == "cuda" for chunk in chunks for p in chunk)
    task = ray.remote(ray_task).options(
        num_cpus=1,
        num_gpus=1 if gpu else 0,
        max_retries=options.retries,
        retry_exceptions=False,
    )
    ship_to = str(study) if options.ship_runs else None
    pending = {task.remote([p.cfg for p in chunk], population, ship_to): chunk for chunk in chunks}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                chunk = pending.pop(ref)
                try:
                    summaries = ray.get(ref)
                except ray.exceptions.RayError as e:
                    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    error = (
                        f"failed after {options.retries + 1} attempt(s): {type(e).__name__}: {text}"
                    )
                    summaries = [{"error": error}] * len(chunk)
                for pair, summary in zip(chunk, summaries, strict=True):
                    archive = summary.pop("archive", None)
                    if archive is not None:
                        try:
                            unpack(archive, pair.run_dir)
                            summary["run_dir"] = str(pair.run_dir)
                        except UserError as e:  # the folder there is not ours: left alone
                            summary = {"error": str(e)}
                    report(pair, summary)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
