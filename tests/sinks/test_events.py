"""Events from per-frame detections: start after min_frames, end after gone_after_s, a
snapshot of the best frame, and a webhook that is retried without ever blocking."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

from streamer.sinks.events import EventSink
from streamer.types import Detections, Frame, Result

NAMES = ("person", "bicycle", "car")


def result(camera: str, index: int, t: float, dets: list[tuple[int, float]]) -> Result:
    image = np.full((48, 64, 3), index % 255, np.uint8)
    d = Detections(
        xyxy=np.array([[1, 1, 10, 10]] * len(dets), np.float32).reshape(-1, 4),
        confidence=np.array([c for _, c in dets], np.float32),
        class_id=np.array([k for k, _ in dets], np.int32),
    )
    return Result(frame=Frame(camera, index, image, None, t), detections=d, annotated=image, names=NAMES)


def make_sink(tmp: Path, **kw: object) -> EventSink:
    args: dict[str, object] = dict(min_confidence=0.5, min_frames=3, gone_after_s=0.3)
    args.update(kw)
    sink = EventSink(tmp / "events.jsonl", tmp / "snaps", ("person", "car"), **args)  # type: ignore[arg-type]
    sink.open()
    return sink


def test_event_after_min_frames_ends_after_gone(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    t0 = time.monotonic()
    confs = [0.6, 0.9, 0.7, 0.8]
    for i, c in enumerate(confs):
        sink.write(result("door", i, t0 + 0.04 * i, [(0, c), (1, 0.99)]))  # bicycles are not tracked
    sink.write(result("door", 9, t0 + 0.2, []))
    assert not (tmp_path / "events.jsonl").read_text()  # still within gone_after_s
    time.sleep(0.7)  # capture times above run up to t0 + 0.2: be well past last sighting + 0.3 s
    sink.idle()
    (event,) = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert event["camera"] == "door" and event["label"] == "person"
    assert event["start"] < event["end"] and event["max_confidence"] == 0.9 and event["frames"] == 4
    snap = cv2.imread(event["snapshot"])
    assert snap is not None and int(snap[0, 0, 0]) == 1  # the frame with confidence 0.9 (index 1)
    sink.close()


def test_short_or_weak_sightings_make_no_event(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    t0 = time.monotonic()
    sink.write(result("yard", 0, t0, [(0, 0.9)]))
    sink.write(result("yard", 1, t0 + 0.04, [(0, 0.9)]))
    sink.write(result("yard", 2, t0 + 0.08, []))  # the run is broken before min_frames
    sink.write(result("yard", 3, t0 + 0.12, [(0, 0.9)]))
    for i in range(4, 10):
        sink.write(result("yard", i, t0 + 0.04 * i, [(2, 0.3)]))  # cars below min_confidence
    sink.close()
    assert (tmp_path / "events.jsonl").read_text() == ""


def test_cameras_are_tracked_separately_and_open_events_close_at_the_end(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, gone_after_s=60)
    t0 = time.monotonic()
    for i in range(3):
        sink.write(result("a", i, t0 + i * 0.04, [(0, 0.8)]))
        sink.write(result("b", i, t0 + i * 0.04, [(2, 0.8)] if i != 1 else []))
    sink.close()  # end of stream: the open event of camera a is written
    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["camera"], e["label"]) for e in events] == [("a", "person")]


class Hook(BaseHTTPRequestHandler):
    received: list[dict] = []  # type: ignore[type-arg]
    fail_first = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Hook.fail_first > 0:
            Hook.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhook_is_retried_and_never_blocks(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Hook.received, Hook.fail_first = [], 1
    try:
        sink = make_sink(tmp_path, webhook=f"http://127.0.0.1:{server.server_port}/hook", gone_after_s=0.01)
        t0 = time.monotonic()
        for i in range(3):
            sink.write(result("gate", i, t0 + 0.01 * i, [(2, 0.7)]))
        time.sleep(0.05)
        sink.idle()
        sink.close()
        assert [e["label"] for e in Hook.received] == ["car"]  # delivered on the second attempt
        assert "webhook: 1 delivered, 0 failed" in (sink.summary() or "")
        assert sink.events[0]["camera"] == "gate"
    finally:
        server.shutdown()


def test_dead_webhook_does_not_block_the_pipeline(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, webhook="http://127.0.0.1:9/none", gone_after_s=0.01, webhook_retries=2)
    t0 = time.monotonic()
    started = time.monotonic()
    for n in range(5):
        for i in range(3):
            sink.write(result(f"cam{n}", i, t0 + 0.01 * i, [(0, 0.9)]))
    time.sleep(0.05)
    sink.idle()
    assert time.monotonic() - started < 0.5  # writes never waited for the webhook
    sink.close()
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 5
    assert "webhook: 0 delivered" in (sink.summary() or "")


def test_latency_does_not_break_runs_or_end_events_early(tmp_path: Path) -> None:
    """Frames arrive 0.8 s after capture, one every 0.5 s of capture time: with gone_after_s 1.0
    the person is never gone, so the run of sightings must reach min_frames."""
    sink = make_sink(tmp_path, min_frames=3, gone_after_s=1.0)
    t0 = time.monotonic() - 0.8
    for i in range(4):
        sink.write(result("lobby", i, t0 + 0.5 * i, [(0, 0.9)]))
        sink.idle()
        time.sleep(0.5)
        sink.idle()
    sink.write(result("lobby", 4, t0 + 2.0, []))
    assert not (tmp_path / "events.jsonl").read_text()  # 0.5 s of the camera's time without a person
    sink.write(result("lobby", 5, t0 + 2.6, []))  # 1.1 s of capture time without: gone
    (event,) = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert event["frames"] == 4
    sink.close()


def test_silent_camera_ends_its_event(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, min_frames=2, gone_after_s=0.3)
    t0 = time.monotonic()
    for i in range(3):
        sink.write(result("dead", i, t0 + 0.01 * i, [(0, 0.9)]))
    time.sleep(0.4)  # no frame at all from this camera (it went down)
    sink.idle()
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 1
    sink.close()


def tracked(camera: str, index: int, t: float, rows: list[tuple[int, int, float]]) -> Result:
    """A frame whose detections carry track ids: rows of (class_id, track_id, confidence)."""
    r = result(camera, index, t, [(c, conf) for c, _, conf in rows])
    assert r.detections is not None
    r.detections.tracker_id = np.array([tid for _, tid, _ in rows], np.int64)
    return r


def test_two_tracked_people_are_two_events_and_a_hand_over_does_not_merge_them(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, min_frames=2, gone_after_s=0.3)
    t0 = time.monotonic()
    frames = [
        [(0, 1, 0.9), (0, 2, 0.6)],   # two people at once
        [(0, 1, 0.8), (0, 2, 0.7)],
        [(0, 2, 0.95), (0, -1, 0.99)],  # person 1 gone; an unconfirmed box never counts
        [(0, 2, 0.9), (0, 3, 0.8)],   # person 3 takes over from 2, only one frame: no event
        [(0, 3, 0.8)],
    ]
    for i, rows in enumerate(frames):
        sink.write(tracked("hall", i, t0 + 0.05 * i, rows))
    sink.close()
    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    by_id = {e["track_id"]: e for e in events}
    assert sorted(by_id) == [1, 2, 3]
    assert by_id[1]["frames"] == 2 and by_id[1]["max_confidence"] == 0.9
    assert by_id[2]["frames"] == 4 and by_id[2]["max_confidence"] == 0.95
    assert by_id[3]["frames"] == 2
    assert all(e["type"] == "object" and e["label"] == "person" and e["zones"] == [] for e in events)
    assert len({e["snapshot"] for e in events}) == 3


def test_a_track_seen_once_makes_no_event(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, min_frames=3, gone_after_s=0.3)
    t0 = time.monotonic()
    sink.write(tracked("hall", 0, t0, [(0, 4, 0.9)]))
    sink.write(tracked("hall", 1, t0 + 0.05, [(0, 5, 0.9)]))
    sink.close()
    assert not (tmp_path / "events.jsonl").read_text()


def test_kept_events_are_bounded_and_the_rest_counted(tmp_path: Path) -> None:
    """A monitor runs for months: the in-memory list keeps the newest events only; the
    file gets every one, and the summary counts them all."""
    for keep, cameras in [(3, 0), (3, 2), (3, 5), (1, 4)]:
        folder = tmp_path / f"{keep}-{cameras}"
        folder.mkdir()
        sink = make_sink(folder, gone_after_s=60, keep_events=keep)
        t0 = time.monotonic()
        for n in range(cameras):
            for i in range(3):
                sink.write(result(f"cam{n}", i, t0 + 0.01 * i, [(0, 0.9)]))
        sink.close()
        kept = min(keep, cameras)
        assert [e["camera"] for e in sink.events] == [f"cam{n}" for n in range(cameras - kept, cameras)]
        assert sink.events_dropped == cameras - kept
        assert len((folder / "events.jsonl").read_text().splitlines()) == cameras
        assert f"{cameras} events" in (sink.summary() or "")


def test_keep_events_must_be_positive(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(ValueError, match="keep_events must be at least 1, but got 0"):
        EventSink(tmp_path / "e.jsonl", tmp_path / "s", ("person",), keep_events=0)


def with_zone(analytics, camera: str, index: int, t: float, rows: list[tuple[int, int, float, float]]) -> Result:  # type: ignore[no-untyped-def]
    """A tracked frame (class, id, conf, x) with boxes at x, and its zone analytics."""
    r = tracked(camera, index, t, [(c, tid, conf) for c, tid, conf, _ in rows])
    assert r.detections is not None
    r.detections.xyxy = np.array([[x - 5, 10, x + 5, 40] for *_, x in rows], np.float32).reshape(-1, 4)
    r.analytics = analytics.update(r.detections, t)
    return r


def test_events_zones_reports_only_objects_that_entered_them(tmp_path: Path) -> None:
    from streamer.analytics import Analytics, parse_zones

    analytics = Analytics((), parse_zones({"porch": [[0, 0], [50, 0], [50, 48], [0, 48]]}))
    sink = make_sink(tmp_path, min_frames=2, gone_after_s=0.3, zones=("porch",))
    t0 = time.monotonic()
    for i in range(4):  # person 1 walks into the porch; person 2 stays on the street
        sink.write(with_zone(analytics, "front", i, t0 + 0.05 * i, [(0, 1, 0.9, 80 - 15 * i), (0, 2, 0.9, 60)]))
    sink.close()
    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["track_id"], e["zones"]) for e in events] == [(1, ["porch"])]
    assert "1 objects outside the watched zones not reported" in (sink.summary() or "")


def test_loiter_event_once_a_track_has_stayed_long_enough(tmp_path: Path) -> None:
    from streamer.analytics import Analytics, parse_zones

    analytics = Analytics((), parse_zones({"porch": [[0, 0], [50, 0], [50, 48], [0, 48]]}))
    sink = make_sink(tmp_path, min_frames=2, gone_after_s=5.0, loiter_s=0.5)
    t0 = time.monotonic()
    for i in range(12):  # person 7 stands in the porch for 1.1 s; person 8 passes outside
        sink.write(with_zone(analytics, "front", i, t0 + 0.1 * i, [(0, 7, 0.9, 20), (0, 8, 0.9, 70)]))
    lines = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["type"], e["track_id"], e["zone"]) for e in lines] == [("loiter", 7, "porch")]
    assert lines[0]["dwell_s"] >= 0.5
    sink.close()
    ends = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()][1:]
    assert sorted((e["type"], e["track_id"]) for e in ends) == [("object", 7), ("object", 8)]
