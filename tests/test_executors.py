"""The executor choice without a cluster: config, many-file plans, the node label in
/metrics, and the two bad inputs (Ray missing, an address that does not answer) through the
CLI: exit 2, one line naming the extra or the address, within 30 s."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamer.config import ExecutorConfig, from_dict
from streamer.errors import ConfigError
from streamer.executors import files
from streamer.sinks.dashboard.metrics import render_metrics
from tests.ray_cluster import ROOT, require_ray


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({}, ExecutorConfig()),
        ({"kind": "ray"}, ExecutorConfig(kind="ray")),
        ({"kind": "ray", "address": "auto"}, ExecutorConfig(kind="ray", address="auto")),
        ({"kind": "ray", "address": "10.0.0.5:6379", "camera_cpus": 0.5},
         ExecutorConfig(kind="ray", address="10.0.0.5:6379", camera_cpus=0.5)),
        ({"kind": "dask"}, r"executor.kind must be one of \['local', 'ray'\], but got 'dask'"),
        ({"kind": "ray", "address": " "}, "executor.address must not be empty"),
        ({"camera_cpus": -1}, "executor.camera_cpus must be between 0 and 1024, but got -1"),
        ({"call_timeout_s": 0}, "executor.call_timeout_s must be > 0, but got 0"),
        ({"file_retries": -1}, "executor.file_retries must be >= 0, but got -1"),
        ({"nodes": 3}, r"unknown key 'nodes' in 'executor', expecting one of \['address', 'call_timeout_s'"),
    ],
)
def test_executor_section(section: dict[str, object], expected: ExecutorConfig | str) -> None:
    data = {"source": "clip.mp4", "executor": section}
    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=expected):
            from_dict(data)
    else:
        assert from_dict(data).executor == expected


@pytest.mark.parametrize(
    ("camera", "message"),
    [
        ({"url": "rtsp://a/1"}, None),
        ({"url": "rtsp://a/1", "node": "10.0.0.7"}, None),
        ({"url": "rtsp://a/1", "resources": {"east": 1}}, None),
        ({"url": "rtsp://a/1", "node": ""}, "node must be a node IP or node id"),
        ({"url": "rtsp://a/1", "resources": {"east": 0}}, "resources.east must be > 0, but got 0.0"),
    ],
)
def test_camera_placement(camera: dict[str, object], message: str | None) -> None:
    data = {"cameras": {"front": camera}}
    if message is not None:
        with pytest.raises(ConfigError, match=message):
            from_dict(data)
    else:
        cam = from_dict(data).cameras["front"]  # type: ignore[index]
        assert cam.node == camera.get("node") and cam.resources == camera.get("resources")


def test_plan_names_outputs_and_refuses_clashes(tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("b.mp4", "a.MKV", "notes.txt"):
        (folder / name).write_bytes(b"x")
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.mp4").write_bytes(b"x")
    cases: list[tuple[list[str], list[tuple[str, str | None, str]] | str]] = [
        ([], "no input files"),
        ([str(folder)], [("a", str(tmp_path / "o" / "a.mp4"), str(tmp_path / "o" / "a.jsonl")),
                         ("b", str(tmp_path / "o" / "b.mp4"), str(tmp_path / "o" / "b.jsonl"))]),
        (["sample:bikes", str(folder / "b.mp4")], [("bikes", str(tmp_path / "o" / "bikes.mp4"), str(tmp_path / "o" / "bikes.jsonl")),
                                                   ("b", str(tmp_path / "o" / "b.mp4"), str(tmp_path / "o" / "b.jsonl"))]),
        ([str(folder), str(other)], "would both write"),
        ([str(tmp_path / "empty"), "sample:bikes"], "no video files in this folder"),
    ]
    (tmp_path / "empty").mkdir()
    for sources, expected in cases:
        if isinstance(expected, str):
            with pytest.raises(ConfigError, match=expected):
                files.plan(sources, tmp_path / "o")
        else:
            assert [(j.name, j.video, j.jsonl) for j in files.plan(sources, tmp_path / "o")] == expected
    assert [j.video for j in files.plan([str(folder)], tmp_path / "o", video=False)] == [None, None]


def test_plan_refuses_to_write_over_an_input(tmp_path: Path) -> None:
    """Several inputs annotated into the folder that holds them would replace each input with
    its own annotated copy once the run renames its outputs into place."""
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (folder / name).write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"a\.mp4: output path is the same as the input .*a\.mp4"):
        files.plan([str(folder)], folder)
    assert [j.video for j in files.plan([str(folder)], tmp_path / "out")] == [str(tmp_path / "out" / n) for n in
                                                                             ("a.mp4", "b.mp4")]


def test_temporary_names_stay_hidden_beside_the_output() -> None:
    assert files.temporary("out/a.mp4", "t0") == str(Path("out/.a.partial-t0.mp4"))
    assert files.temporary("a.jsonl", "t1") == ".a.partial-t1.jsonl"


@pytest.mark.parametrize(
    ("cameras", "expected"),
    [
        ({}, []),
        ({"a": {"state": "streaming"}}, []),  # in-process: no node, no info line
        ({"a": {"state": "streaming", "node": "n1", "node_ip": "10.0.0.1"}},
         ['streamer_camera_info{camera="a",node="n1",node_ip="10.0.0.1"} 1.0']),
    ],
)
def test_camera_node_in_metrics(cameras: dict[str, object], expected: list[str]) -> None:
    text = render_metrics({"cameras": cameras})
    assert [line for line in text.splitlines() if line.startswith("streamer_camera_info")] == expected


def run_cli(args: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "streamer", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=dict(os.environ, **(env or {})))
    return proc, time.monotonic() - started


def monitor_file(tmp_path: Path, executor: str) -> str:
    path = tmp_path / "m.yaml"
    path.write_text(f"cameras:\n  a: {{url: synthetic}}\nexecutor: {executor}\n")
    return str(path)


def without_ray(tmp_path: Path) -> dict[str, str]:
    """An interpreter in which ``import ray`` fails, as where the extra is not installed."""
    site = tmp_path / "no-ray"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['ray'] = None  # import ray -> ImportError\n")
    existing = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), str(ROOT), existing]))}


def test_ray_not_installed(tmp_path: Path) -> None:
    env = without_ray(tmp_path)
    for args in (["annotate", "sample:carphone", "--executor", "ray", "-o", str(tmp_path / "out")],
                 ["monitor", monitor_file(tmp_path, "{kind: ray}")]):
        proc, seconds = run_cli(args, env)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert lines == ["streamer: the ray executor needs Ray, which is not installed: pip install 'streamer[ray]'"]
        assert seconds < 30
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        return int(s.getsockname()[1])


def test_address_that_does_not_answer(tmp_path: Path) -> None:
    require_ray()
    address = f"127.0.0.2:{free_port()}"
    for args in (["annotate", "sample:carphone", "--ray-address", address, "-o", str(tmp_path / "out")],
                 ["monitor", monitor_file(tmp_path, "{kind: local}"), "--executor", "ray", "--ray-address", address]):
        proc, seconds = run_cli(args)
        assert proc.returncode == 2, proc.stderr
        lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("streamer:")]
        assert len(lines) == 1 and address in lines[0] and "no Ray head answers there" in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
        assert seconds < 30
