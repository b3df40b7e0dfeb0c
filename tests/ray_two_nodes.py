"""A compare study on a Ray cluster of a head and two worker nodes on loopback; one node dies.

Run by ``tests/test_cluster.py`` in a fresh interpreter (its own Ray cluster, not the test
module's local instance): ``python tests/ray_two_nodes.py LOGDIR``. The head has no CPUs, so
every run executes on a worker node. Once both runs have written a checkpoint, the first
worker node is removed (its raylet and workers killed); Ray retries its run on the other node,
which resumes it from its checkpoint. The runs are written on the nodes' disks and shipped
back (``--ray-ship-runs``). Writes ``LOGDIR/result.json``: the node ids, the killed node, the
exit status and compare's output.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from rl_rmsprop import compare
from rl_rmsprop.cluster import SHIP_ROOT


def main(logdir: Path) -> None:
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False},
    )
    first = cluster.add_node(num_cpus=1)
    second = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    local = SHIP_ROOT / "compare-two"
    killed: list[str] = []

    def kill_first_node() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            # each run has a checkpoint (two of one run's would not do: the other run, if
            # it is the killed node's, would start again instead of resuming)
            runs = {p.parent.parent for p in local.glob("*/seed-*/checkpoints/step-*.pt")}
            if len(runs) >= 2:
                cluster.remove_node(first, allow_graceful=False)
                killed.append(first.node_id)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_first_node)
    killer.start()
    argv = [
        *("--optimizers", "rmsprop", "--seeds", "2", "--total-steps", "60000"),
        *("--checkpoint-every", "3000", "--eval-episodes", "1", "--no-population"),
        *("--backend", "ray", "--ray-address", cluster.address, "--ray-ship-runs"),
        *("--logdir", str(logdir), "--name", "two"),
    ]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = compare.main(argv)
    killer.join()
    result = {
        "status": status,
        "head": cluster.head_node.node_id,
        "workers": [first.node_id, second.node_id],
        "killed": killed,
        "out": out.getvalue(),
    }
    (logdir / "result.json").write_text(json.dumps(result))
    ray.shutdown()  # the driver first: the cluster cannot remove the head it is connected to
    cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
