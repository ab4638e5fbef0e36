"""A real multi-node Ray cluster on this machine for tests: a head and worker nodes, each a
separate raylet with its own object store, all on the loopback address 127.0.0.2.

Ray missing: skip, or fail under ``CI=true`` (the rule of ``tests/conftest.py``). Worker
processes import streamer from this checkout (``PYTHONPATH``), so they run the code under
test rather than another installed copy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[1]
NODE_IP = "127.0.0.2"


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        message = "ray is not installed (pip install 'streamer[ray]')"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: scripts/test installs the ray extra)")
        pytest.skip(message)
    return ray


@contextmanager
def local_cluster(workers: int = 2, cpus: int = 1) -> Iterator[Any]:
    """A head and ``workers`` worker nodes of ``cpus`` logical CPUs; the caller is connected."""
    ray = require_ray()
    from ray.cluster_utils import Cluster

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    existing = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), existing]) if existing else str(ROOT)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": cpus, "node_ip_address": NODE_IP, "include_dashboard": False,
    })
    try:
        for _ in range(workers):
            cluster.add_node(num_cpus=cpus, node_ip_address=NODE_IP)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING")
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        if existing is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = existing
