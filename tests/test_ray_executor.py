"""The Ray executor on a real three-node Ray cluster (loopback, one logical CPU per node):
files annotated across nodes equal the in-process runs, a killed file task is retried to a
complete output, four RTSP cameras spread over the nodes show boxes on the dashboard, and a
node removed mid-run brings its cameras back on the others."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from streamer import assets
from streamer.config import from_dict
from tests.ray_cluster import local_cluster, require_ray

pytestmark = pytest.mark.slow

CAMERAS = ["cam1", "cam2", "cam3", "cam4"]


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    require_ray()
    with local_cluster(workers=2, cpus=1) as c:
        yield c


def write_clip(path: Path, source: str, start: int, frames: int) -> Path:
    """``frames`` frames of a sample clip from ``start``, as H.264 (a short real input)."""
    cap = cv2.VideoCapture(str(assets.sample_path(source)))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    images = [cap.read()[1] for _ in range(frames)]
    assert all(image is not None for image in images)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.height, stream.width = images[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for image in images:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(stream.encode())
    cap.release()
    return path


def frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def records(path: Path) -> list[dict[str, Any]]:
    """The JSONL records without the one field that depends on the clock."""
    return [{k: v for k, v in json.loads(line).items() if k != "latency_ms"} for line in path.read_text().splitlines()]


def annotate_config(executor: dict[str, Any] | None = None) -> Any:
    return from_dict({"job": "annotate", "source": "unused", "model": {"threads": 1},
                      **({"executor": executor} if executor else {})})


def test_files_across_nodes_equal_in_process_and_a_killed_task_is_retried(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from streamer.executors import files
    from streamer.executors.ray_annotate import run_annotate_ray

    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips / "a.mp4", "sample:bikes", 0, 30)
    write_clip(clips / "b.mp4", "sample:bikes", 100, 90)  # the one killed mid-way: long enough to catch
    write_clip(clips / "c.mp4", "sample:carphone", 0, 30)
    local = files.run_annotate_local(annotate_config(), files.plan([str(clips)], tmp_path / "local"),
                                     err=io.StringIO(), show_progress=False)
    assert not local.failed and local.frames == 150

    killed: dict[str, Any] = {}

    def kill_b_once(board: dict[str, dict[str, Any]]) -> None:
        b = board.get("b", {})
        if not killed and b.get("done", 0) >= 10 and b.get("total"):
            killed.update(pid=b["pid"], at=b["done"])
            os.kill(int(b["pid"]), signal.SIGKILL)

    err = io.StringIO()
    cfg = annotate_config({"kind": "ray", "file_cpus": 1, "file_retries": 2})
    summary = run_annotate_ray(cfg, files.plan([str(clips)], tmp_path / "ray"), err=err, on_board=kill_b_once)
    assert killed, err.getvalue()
    assert not summary.failed, summary.lines
    assert summary.nodes >= 2, summary.lines
    assert "3/3 files" in err.getvalue()
    for name, n in (("a", 30), ("b", 90), ("c", 30)):
        ray_jsonl, local_jsonl = tmp_path / "ray" / f"{name}.jsonl", tmp_path / "local" / f"{name}.jsonl"
        assert records(ray_jsonl) == records(local_jsonl), name
        assert len(records(ray_jsonl)) == n
        assert frame_count(tmp_path / "ray" / f"{name}.mp4") == frame_count(tmp_path / "local" / f"{name}.mp4") == n
    assert not [p.name for p in (tmp_path / "ray").iterdir() if files.TMP_MARK in p.name]


def test_a_bad_file_is_reported_by_name_while_the_others_finish(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from streamer.executors import files
    from streamer.executors.ray_annotate import run_annotate_ray

    write_clip(tmp_path / "good.mp4", "sample:carphone", 0, 20)
    (tmp_path / "broken.mp4").write_bytes(bytes(range(256)) * 100)
    jobs = files.plan([str(tmp_path / "good.mp4"), str(tmp_path / "broken.mp4")], tmp_path / "out")
    summary = run_annotate_ray(annotate_config({"kind": "ray"}), jobs, err=io.StringIO(), show_progress=False)
    assert [r["name"] for r in summary.results] == ["good"]
    assert len(summary.failed) == 1 and "broken.mp4" in summary.failed[0][1] and "cannot open" in summary.failed[0][1]
    assert any(line.startswith("FAILED ") and "broken.mp4" in line for line in summary.lines)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.jsonl", "good.mp4"]


def wait_until(predicate, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def near_colour(region: np.ndarray, bgr: tuple[int, int, int], tol: int = 30) -> int:
    return int((np.abs(region.astype(np.int16) - np.array(bgr, np.int16)).max(axis=2) < tol).sum())


def test_four_cameras_over_the_nodes_dashboard_and_a_node_lost(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import ray

    from streamer.compose import ray_monitor
    from streamer.render import class_colour
    from tests.rtsp import RtspServer, require_rtsp
    from tests.test_monitor_e2e import PAINTED, STATES_JS, get_json, get_text

    require_rtsp()
    from tests.browser import Chromium

    server = RtspServer({"cam1": "sample:bikes", "cam2": "sample:bikes", "cam3": "sample:bikes",
                         "cam4": "sample:bikes"}).start()
    head = cluster.head_node.node_id
    cameras: dict[str, Any] = {name: {"url": server.url(name), "jsonl": str(tmp_path / f"{name}.jsonl")} for name in CAMERAS}
    cameras["cam1"]["node"] = head[:16]  # pinned (a node id prefix); the others spread
    cfg = from_dict({
        "cameras": cameras,
        "capture": {"stall_timeout_s": 2, "open_timeout_s": 2, "backoff_initial_s": 0.25, "backoff_max_s": 1},
        "model": {"threads": 1},
        "dashboard": {"port": 0},
        "events": {"path": None},
        "executor": {"kind": "ray", "camera_cpus": 0.25, "inference_cpus": 0.25, "call_timeout_s": 5},
    })
    monitor = ray_monitor(cfg, ray)
    monitor.start()
    try:
        assert monitor.server is not None
        base = monitor.server.url

        def cams() -> dict[str, Any]:
            return get_json(base + "api/stats")["cameras"]

        wait_until(lambda: all(c["state"] == "streaming" and c["frames"] > 3 for c in cams().values()), 120,
                   "all four cameras streaming")
        stats = get_json(base + "api/stats")
        nodes = {c["node"] for c in stats["cameras"].values()}
        assert len(nodes) >= 2 and stats["nodes"] >= 2, stats["cameras"]
        assert stats["cameras"]["cam1"]["node"] == head
        metrics = get_text(base + "metrics")
        for name, c in stats["cameras"].items():
            assert f'streamer_camera_info{{camera="{name}",node="{c["node"]}",node_ip="127.0.0.2"}} 1.0' in metrics
        assert "streamer_nodes " in metrics

        with Chromium(size=(1280, 900)) as browser:
            browser.goto(base)
            browser.wait_for(f"document.body.dataset.ready === '1' && {PAINTED} && document.images.length === 4", 30)
            wait_until(lambda: browser.evaluate(STATES_JS) == dict.fromkeys(CAMERAS, "streaming"), 20, "4 live tiles")
            # Every tile shows boxes (some stretches of the clip have none: a few screenshots).
            boxed: dict[str, int] = {}
            for attempt in range(12):
                time.sleep(1.0)
                shot = cv2.imread(str(browser.screenshot(tmp_path / f"four-{attempt}.png")))
                views = browser.evaluate(
                    "Array.from(document.querySelectorAll('.tile')).map(t => { const r = t.querySelector('.view')"
                    ".getBoundingClientRect(); return [t.dataset.camera, r.left, r.top, r.width, r.height]; })")
                for name, left, top, width, height in views:
                    region = shot[int(top):int(top + height), int(left):int(left + width)]
                    drawn = near_colour(region, class_colour(2)) + near_colour(region, class_colour(0))
                    boxed[name] = max(boxed.get(name, 0), drawn)
                if all(boxed.get(name, 0) > 60 for name in CAMERAS):
                    break
            assert all(boxed.get(name, 0) > 60 for name in CAMERAS), f"box-coloured pixels per tile: {boxed}"

        # Lose a worker node that runs cameras (the head stays: this process is its driver).
        by_node: dict[str, list[str]] = {}
        for name, c in cams().items():
            by_node.setdefault(c["node"], []).append(name)
        victim = next(n for n in cluster.worker_nodes if n.node_id in by_node)
        moved = by_node[victim.node_id]
        others = [n for n in CAMERAS if n not in moved]
        before = {n: c["frames"] for n, c in cams().items()}
        lost_at = time.monotonic()
        cluster.remove_node(victim)

        def back() -> bool:
            now = cams()
            return all(now[n]["state"] == "streaming" and now[n]["node"] != victim.node_id
                       and now[n]["frames"] > before[n] + 2 for n in moved)

        seen_reconnecting: set[str] = set()

        def back_watching() -> bool:
            seen_reconnecting.update(n for n, c in cams().items() if c["state"] != "streaming")
            return back()

        wait_until(back_watching, 15, f"{moved} streaming again from another node")
        recovery_s = time.monotonic() - lost_at
        after = cams()
        for name in others:
            assert after[name]["frames"] > before[name], (name, before, after)
        assert set(moved) <= seen_reconnecting, (moved, seen_reconnecting)
        for name in moved:
            assert after[name]["reconnects"] >= 1
        print(f"cameras {moved} back on another node {recovery_s:.1f} s after the node was removed")

        # A camera actor killed alone restarts (Ray, max_restarts=-1) and streams again.
        frames = cams()["cam1"]["frames"]
        ray.kill(monitor.source.cameras["cam1"].handle, no_restart=False)
        wait_until(lambda: cams()["cam1"]["state"] == "streaming" and cams()["cam1"]["frames"] > frames + 2
                   and cams()["cam1"]["actor_restarts"] >= 1, 15, "cam1 back after its actor was killed")

        # An inference actor killed is replaced, and its node's cameras get detections again.
        node = cams()["cam1"]["node"]
        served = [n for n, c in cams().items() if c["node"] == node]
        frames = {n: cams()[n]["frames"] for n in served}
        ray.kill(monitor.source.inference[node][0].handle, no_restart=True)
        wait_until(lambda: get_json(base + "api/stats")["model"]["inference_replaced"] >= 1, 15,
                   "the dead inference actor replaced")
        wait_until(lambda: all(cams()[n]["frames"] > frames[n] + 2 for n in served), 30,
                   f"{served} through the new inference actor")
    finally:
        monitor.stop()
        server.stop()
    for name in CAMERAS:
        lines = (tmp_path / f"{name}.jsonl").read_text().splitlines()
        assert len(lines) > 5 and all(json.loads(x)["source"] == name for x in lines)
