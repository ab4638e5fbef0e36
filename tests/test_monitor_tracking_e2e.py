"""Monitoring with tracking end to end: real RTSP cameras, the real model, the dashboard in
headless Chromium. Two people standing in view at once are two objects with two ids (two
events), a zone counts them, a counting line on a street counts cars and cyclists, and the
counts reach /api/stats, /metrics and the page."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest

from streamer import assets
from tests.conftest import require_tool
from tests.rtsp import RtspServer, require_rtsp
from tests.test_monitor_e2e import PAINTED, dashboard_url, get_json, get_text, launch_monitor, wait_until

COUNTS_JS = "document.querySelector('.tile[data-camera=\"{}\"] .counts').textContent"


def still_clip(path: Path, seconds: int = 8) -> Path:
    """sample:testimg (two people, bicycles, a dog) as an H.264 clip of a still scene."""
    ffmpeg = require_tool("ffmpeg")
    subprocess.run([ffmpeg, "-v", "error", "-y", "-loop", "1", "-i", str(assets.sample_path("sample:testimg")),
                    "-t", str(seconds), "-r", "25", "-vf", "scale=700:466", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    str(path)], check=True, timeout=120)
    return path


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.slow
def test_two_people_two_events_and_counts_everywhere(tmp_path: Path) -> None:
    require_rtsp()
    from tests.browser import Chromium

    server = RtspServer({"yard": still_clip(tmp_path / "yard.mp4"), "street": "sample:bikes"}).start()
    cfg = {
        "cameras": {
            "yard": {"url": server.url("yard"), "zones": {"lawn": [[0, 0], [700, 0], [700, 466], [0, 466]]}},
            "street": {"url": server.url("street"), "lines": {"gate": {"start": [400, 0], "end": [400, 272]}}},
        },
        "capture": {"stall_timeout_s": 3, "open_timeout_s": 3, "backoff_initial_s": 0.25, "backoff_max_s": 1},
        "dashboard": {"port": 0},
        "events": {"track": ["person"], "min_confidence": 0.5, "min_frames": 3, "gone_after_s": 1.5,
                   "path": str(tmp_path / "events.jsonl"), "snapshots": str(tmp_path / "snaps")},
    }
    proc = launch_monitor(tmp_path, cfg)
    out = err = ""
    try:
        base = dashboard_url(proc)

        def yard_people() -> int:
            return get_json(base + "api/stats")["cameras"]["yard"].get("zones", {}).get("lawn", {}).get("person", 0)

        wait_until(lambda: yard_people() == 2, 90, "two people in the yard's lawn zone")
        stats = get_json(base + "api/stats")
        assert stats["cameras"]["yard"]["tracks_in_view"] >= 2
        # Two people have entered (more only if a track was lost and found anew on a machine
        # too loaded to keep up; the occupancy above is what must be exact).
        assert stats["cameras"]["yard"]["zone_entries"]["lawn"]["person"] >= 2

        def crossed() -> int:
            gate = get_json(base + "api/stats")["cameras"]["street"].get("lines", {}).get("gate", {})
            return gate.get("in", 0) + gate.get("out", 0)

        wait_until(lambda: crossed() >= 1, 60, "a crossing of the street's gate")
        metrics = get_text(base + "metrics")
        assert metric(metrics, "streamer_zone_objects", camera="yard", zone="lawn", **{"class": "person"}) == 2
        assert metric(metrics, "streamer_zone_entries_total", camera="yard", zone="lawn", **{"class": "person"}) >= 2
        crossings = [line for line in metrics.splitlines() if line.startswith("streamer_line_crossings_total{")]
        assert crossings and all('camera="street"' in line and 'line="gate"' in line for line in crossings)
        assert sum(float(line.rsplit(" ", 1)[1]) for line in crossings) >= 1

        with Chromium(size=(1280, 900)) as browser:
            browser.goto(base)
            browser.wait_for(f"document.body.dataset.ready === '1' && document.images.length === 2 && {PAINTED}", 30)
            wait_until(lambda: "lawn: 2 person" in browser.evaluate(COUNTS_JS.format("yard")), 20,
                       "the yard's tile showing two people in the lawn")
            wait_until(lambda: re.search(r"gate in \d+ / out \d+", browser.evaluate(COUNTS_JS.format("street"))), 20,
                       "the street's tile showing the gate's counts")
            browser.screenshot(tmp_path / "tracking.png")

        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            out, err = proc.communicate()
        server.stop()
    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    yard = [e for e in events if e["camera"] == "yard" and e["label"] == "person"]
    ids = {e["track_id"] for e in yard}
    assert len(ids) == len(yard) >= 2, (yard, out[-3000:], err[-3000:])
    # Two of them at the same time: two people in view at once are two events, two ids.
    assert any(a["start"] < b["end"] and b["start"] < a["end"] for a in yard for b in yard if a is not b), yard
    for e in yard:
        assert e["type"] == "object" and e["zones"] == ["lawn"] and e["max_confidence"] > 0.8
        assert Path(e["snapshot"]).is_file()
