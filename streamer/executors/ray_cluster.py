"""Joining (or starting) the Ray cluster a job runs on, with errors a user can act on.

``ray.init`` on an address that does not answer retries for minutes; a user who mistyped
the head's address should hear so at once. So a ``HOST:PORT`` address is first probed with a
plain TCP connect (a few seconds), and ``ray.init`` itself runs under a deadline (in a helper
thread; a local instance starts in the caller's thread, see ``init``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from streamer.config import ExecutorConfig
from streamer.errors import ConfigError, import_optional

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'streamer[ray]'"
PROBE_TIMEOUT_S = 5.0
INIT_TIMEOUT_S = 25.0


class RayUnavailableError(ConfigError):
    """Ray is not installed, or the cluster address does not answer."""


def require_ray() -> ModuleType:
    """The ``ray`` module, or one line saying which extra to install."""
    return import_optional("ray", RayUnavailableError, f"the ray executor needs Ray, which is not installed: {INSTALL_HINT}")


def _host_port(address: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (optionally ``ray://``) split, or None for ``auto`` and other forms."""
    text = address.removeprefix("ray://")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def probe(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise ``RayUnavailableError`` naming ``address`` when nothing listens there."""
    target = _host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout_s):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise RayUnavailableError(
            f"executor.address {address}: no Ray head answers there ({reason}); start one with "
            "'ray start --head' or check the address"
        ) from None


def _worker_env() -> dict[str, str]:
    """Workers import the same streamer as this driver when its folder exists on their node
    (a checkout that is not installed, or a development tree)."""
    root = str(Path(__file__).resolve().parents[2])
    existing = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([root, existing]) if existing else root, "RAY_USAGE_STATS_ENABLED": "0"}


def init(cfg: ExecutorConfig) -> ModuleType:
    """Connect this process to the cluster ``cfg`` names (or start a local one); returns ``ray``."""
    ray = require_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return ray
    address = cfg.address
    if address is not None:
        probe(address)
    kwargs: dict[str, Any] = {
        "address": address or "local", "runtime_env": {"env_vars": _worker_env()},
        "logging_level": logging.WARNING, "log_to_driver": True,
    }
    if address is None:
        kwargs["include_dashboard"] = False
    outcome: dict[str, BaseException | None] = {}

    def connect() -> None:
        try:
            ray.init(**kwargs)
            outcome["error"] = None
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            outcome["error"] = exc

    where = address or "a local Ray instance"
    if address is None:
        # Ray's own processes die with the thread that started them (PR_SET_PDEATHSIG), so
        # a local instance starts in this thread; it has no address that could fail to answer.
        connect()
        thread = None
    else:
        thread = threading.Thread(target=connect, name="streamer-ray-init", daemon=True)
        thread.start()
        thread.join(INIT_TIMEOUT_S)
    if thread is not None and thread.is_alive():
        raise RayUnavailableError(f"executor.address {where}: Ray did not connect within {INIT_TIMEOUT_S:.0f} s")
    error = outcome.get("error")
    if error is not None:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RayUnavailableError(f"executor.address {where}: cannot join the Ray cluster: {detail}") from None
    return ray


@contextmanager
def connected(cfg: ExecutorConfig) -> Iterator[ModuleType]:
    """``init`` for the length of a job; a Ray instance this job started is shut down after."""
    ray = require_ray()
    owned = not ray.is_initialized()
    ray = init(cfg)
    try:
        yield ray
    finally:
        if owned:
            ray.shutdown()


def alive_nodes(ray: ModuleType) -> list[dict[str, Any]]:
    """``ray.nodes()`` entries of the nodes that are alive."""
    return [n for n in ray.nodes() if n.get("Alive")]


def resolve_node(ray: ModuleType, spec: str, where: str) -> str:
    """The node id that ``spec`` (a node id, a prefix of one, or a node IP) names."""
    nodes = alive_nodes(ray)
    for node in nodes:
        if node["NodeID"] == spec:
            return str(node["NodeID"])
    by_ip = [n for n in nodes if n.get("NodeManagerAddress") == spec]
    if by_ip:
        return str(by_ip[0]["NodeID"])
    by_prefix = [n for n in nodes if str(n["NodeID"]).startswith(spec)]
    if len(by_prefix) == 1:
        return str(by_prefix[0]["NodeID"])
    valid = sorted({str(n["NodeID"]) for n in nodes} | {str(n.get("NodeManagerAddress")) for n in nodes})
    raise ConfigError(f"{where}: no live Ray node {spec!r}, expecting a node IP or node id, one of {valid}")
