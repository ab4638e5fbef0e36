"""A real Prometheus server scrapes a running monitor's ``/metrics`` through the bearer token.

Debian's ``prometheus`` package (``.ci/run`` installs it): without it the test skips on a
laptop and fails under ``CI=true``.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamer import compose
from streamer.config import from_dict
from streamer.monitor import Monitor
from tests.conftest import require_tool

TOKEN = "prom-token-4c1d"
CAMERAS = ["gate", "yard"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    cfg = from_dict({
        "cameras": {name: {"url": "synthetic:160x120@10"} for name in CAMERAS},
        "dashboard": {"port": 0, "token": TOKEN, "max_fps": 5},
    })
    mon = compose.monitor(cfg)
    mon.start()
    try:
        yield mon
    finally:
        mon.stop()


@pytest.fixture
def prometheus(monitor: Monitor, tmp_path: Path) -> Iterator[str]:
    binary = require_tool("prometheus")
    assert monitor.server is not None
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": "streamer",
            "metrics_path": "/metrics",
            "authorization": {"credentials": TOKEN},
            "static_configs": [{"targets": [f"127.0.0.1:{monitor.server.bound_port}"]}],
        }],
    }))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def query(base: str, promql: str) -> list[dict[str, Any]] | None:
    """The result vector of an instant query; None while Prometheus is not up yet."""
    url = f"{base}/api/v1/query?query={urllib.parse.quote(promql)}"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body = json.loads(response.read())
    except OSError:
        return None
    assert body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]


def poll(base: str, promql: str, ready: Any, timeout: float, log: Path) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    result: list[dict[str, Any]] | None = None
    while time.monotonic() < deadline:
        result = query(base, promql)
        if result is not None and ready(result):
            return result
        time.sleep(0.5)
    raise AssertionError(f"{promql}: {result}\n{log.read_text()[-3000:] if log.exists() else ''}")


def test_real_prometheus_scrapes_counters_and_latency_histogram(prometheus: str, tmp_path: Path) -> None:
    log = tmp_path / "prometheus.log"
    frames = poll(prometheus, "streamer_frames_total",
                  lambda r: {s["metric"].get("camera") for s in r} == set(CAMERAS) and
                  all(float(s["value"][1]) > 0 for s in r), 25, log)
    assert all(s["metric"]["job"] == "streamer" for s in frames)

    up = query(prometheus, 'up{job="streamer"}')
    assert up and float(up[0]["value"][1]) == 1  # the scrape got through the bearer token

    p95 = poll(prometheus, "histogram_quantile(0.95, sum by (camera, le) (streamer_camera_latency_seconds_bucket))",
               lambda r: len(r) == len(CAMERAS) and all(math.isfinite(float(s["value"][1])) for s in r), 10, log)
    for sample in p95:
        assert 0 < float(sample["value"][1]) <= 10, sample

    camera_up = query(prometheus, "streamer_camera_up")
    assert camera_up and {s["metric"]["camera"]: float(s["value"][1]) for s in camera_up} == dict.fromkeys(CAMERAS, 1.0)
    batches = query(prometheus, "streamer_model_batches_total")
    assert batches and float(batches[0]["value"][1]) > 0
