"""Monitoring end to end: four cameras from real RTSP servers, the real model, the dashboard
in headless Chromium, a camera server killed and restarted, events with snapshots."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from streamer.render import class_colour
from tests.rtsp import RtspServer, require_rtsp

CAMERAS = ["cam1", "cam2", "cam3", "cam4"]
STATES_JS = ("Object.fromEntries(Array.from(document.querySelectorAll('.tile'))"
             ".map(t => [t.dataset.camera, t.dataset.state]))")
PAINTED = "Array.from(document.images).every(i => i.naturalWidth > 0)"


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def near_colour(region: np.ndarray, bgr: tuple[int, int, int], tol: int = 30) -> int:
    return int((np.abs(region.astype(np.int16) - np.array(bgr, np.int16)).max(axis=2) < tol).sum())


def launch_monitor(tmp_path: Path, cfg: dict[str, Any]) -> subprocess.Popen[str]:
    """``streamer monitor`` on ``cfg`` (written to tmp_path/monitor.yaml) as a real process."""
    (tmp_path / "monitor.yaml").write_text(json.dumps(cfg))
    return subprocess.Popen([sys.executable, "-m", "streamer", "monitor", str(tmp_path / "monitor.yaml")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def dashboard_url(proc: subprocess.Popen[str]) -> str:
    """The dashboard address the monitor prints first (what it said instead, if it ended)."""
    line = proc.stdout.readline() if proc.stdout else ""
    match = re.search(r"dashboard: (http://\S+)", line)
    assert match, line + (proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
    return match.group(1)


@pytest.mark.slow
def test_four_cameras_dashboard_reconnect_and_events(tmp_path: Path) -> None:
    require_rtsp()
    from tests.browser import Chromium

    three = RtspServer({"cam1": "sample:bikes", "cam2": "sample:bikes", "cam3": "sample:carphone"}).start()
    fourth = RtspServer({"cam4": "sample:bikes"}).start()
    urls = {"cam1": three.url("cam1"), "cam2": three.url("cam2"), "cam3": three.url("cam3"), "cam4": fourth.url("cam4")}
    cfg = {
        "cameras": {name: {"url": url, "jsonl": str(tmp_path / f"{name}.jsonl")} for name, url in urls.items()},
        "capture": {"stall_timeout_s": 2, "open_timeout_s": 2, "backoff_initial_s": 0.25, "backoff_max_s": 1},
        "dashboard": {"port": 0},
        # A CPU runs single-frame calls by default; batching across cameras (what a GPU does)
        # is chosen here so that it is tested end to end on this machine too.
        "model": {"batch": 4},
        "events": {"track": ["person"], "min_confidence": 0.4, "min_frames": 2, "gone_after_s": 1.0,
                   "path": str(tmp_path / "events.jsonl"), "snapshots": str(tmp_path / "snaps")},
    }
    proc = launch_monitor(tmp_path, cfg)
    try:
        base = dashboard_url(proc)

        def streaming(names: list[str]) -> bool:
            cams = get_json(base + "api/stats")["cameras"]
            return all(cams[n]["state"] == "streaming" and cams[n]["frames"] > 0 for n in names)

        wait_until(lambda: streaming(CAMERAS), 90, "all four cameras streaming")
        stats = get_json(base + "api/stats")
        assert sorted(stats["cameras"]) == CAMERAS
        wait_until(lambda: get_json(base + "api/stats")["model"]["batches"] >= 10, 60, "ten batches")
        assert get_json(base + "api/stats")["model"]["batch_size_mean"] > 1
        metrics = get_text(base + "metrics")
        for name in CAMERAS:
            assert f'streamer_camera_fps{{camera="{name}"}}' in metrics
            assert f'streamer_camera_up{{camera="{name}"}} 1' in metrics

        with Chromium(size=(1280, 900)) as browser:
            browser.goto(base)
            browser.wait_for(f"document.body.dataset.ready === '1' && {PAINTED} && document.images.length === 4", 30)
            wait_until(lambda: browser.evaluate(STATES_JS) == dict.fromkeys(CAMERAS, "streaming"), 20, "4 live tiles")
            views = browser.evaluate(
                "Array.from(document.querySelectorAll('.tile')).map(t => { const r = t.querySelector('.view')"
                ".getBoundingClientRect(); return [t.dataset.camera, r.left, r.top, r.width, r.height]; })")
            assert [v[0] for v in views] == CAMERAS
            # Boxes are drawn: label backgrounds in class colours (raw bikes frames have < 10 such pixels).
            # A tile shows whichever frame came last, and some frames of the clips hold only a
            # small object, so each tile gets a few screenshots a second apart to show its boxes.
            drawn = dict.fromkeys(CAMERAS, 0)
            for attempt in range(6):
                time.sleep(1.0)
                shot = cv2.imread(str(browser.screenshot(tmp_path / f"four-{attempt}.png")))
                for name, left, top, width, height in views:
                    region = shot[int(top):int(top + height), int(left):int(left + width)]
                    seen = near_colour(region, class_colour(2)) + near_colour(region, class_colour(0))
                    drawn[name] = max(drawn[name], seen)
                if all(n > 60 for n in drawn.values()):
                    break
            assert all(n > 60 for n in drawn.values()), f"box-coloured pixels per tile: {drawn}"

            fourth.kill()
            wait_until(lambda: browser.evaluate(STATES_JS)["cam4"] in ("reconnecting", "stalled", "connecting"),
                       15, "cam4 shown as reconnecting")
            before = {n: c["frames"] for n, c in get_json(base + "api/stats")["cameras"].items()}
            time.sleep(3.0)
            states = browser.evaluate(STATES_JS)
            after = {n: c["frames"] for n, c in get_json(base + "api/stats")["cameras"].items()}
            assert states["cam4"] != "streaming"
            for name in ["cam1", "cam2", "cam3"]:
                assert states[name] == "streaming" and after[name] > before[name], (name, states, before, after)
            browser.screenshot(tmp_path / "one-down.png")

            fourth.restart()
            wait_until(lambda: browser.evaluate(STATES_JS)["cam4"] == "streaming", 15, "cam4 back on the page")
            frames_back = get_json(base + "api/stats")["cameras"]["cam4"]["frames"]
            wait_until(lambda: get_json(base + "api/stats")["cameras"]["cam4"]["frames"] > frames_back + 3, 15,
                       "cam4 frames after its return")
            assert get_json(base + "api/stats")["cameras"]["cam4"]["reconnects"] >= 1

        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        three.stop()
        fourth.stop()
    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    people = [e for e in events if e["label"] == "person"]
    cam3 = [json.loads(x) for x in (tmp_path / "cam3.jsonl").read_text().splitlines()]
    seen = [sorted((d["label"], d["confidence"]) for d in r["detections"]) for r in cam3]
    assert people, (events, out[-3000:], err[-3000:], seen[:20])
    for e in people:
        assert e["start"] < e["end"] and e["camera"] in CAMERAS
        assert e["snapshot"] and Path(e["snapshot"]).is_file() and cv2.imread(e["snapshot"]) is not None
    assert any(e["camera"] == "cam3" for e in people)  # the carphone clip is a face: a person
    for name in CAMERAS:
        lines = (tmp_path / f"{name}.jsonl").read_text().splitlines()
        assert len(lines) > 10 and all(json.loads(x)["source"] == name for x in lines)
