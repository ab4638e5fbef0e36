"""The web dashboard for real: a live hub fed by a thread, HTTP over loopback, headless Chromium."""

from __future__ import annotations

import http.client
import json
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from streamer.errors import ConfigError, SinkError
from streamer.sinks.dashboard import DashboardHub, DashboardServer, render_metrics, render_page

CAMERAS = ["cam1", "cam2", "cam3", "cam4"]
COLOURS = {"cam1": (0, 0, 255), "cam2": (0, 255, 0), "cam3": (255, 0, 0), "cam4": (255, 0, 255)}  # BGR
WIDTH, HEIGHT, BOX = 640, 360, 120
TOKEN = "tok-9f8e7d6c5b4a-secret"
PAINTED = "Array.from(document.images).every(i => i.naturalWidth > 0)"
READY = "document.body && document.body.dataset.ready === '1'"


def draw(camera: str, index: int) -> np.ndarray:
    """A grey frame with the camera's coloured box sliding right and its name in white."""
    image = np.full((HEIGHT, WIDTH, 3), 60, np.uint8)
    x = 20 + (index * 6) % (WIDTH - BOX - 40)
    cv2.rectangle(image, (x, 120), (x + BOX - 1, 120 + BOX - 1), COLOURS.get(camera, (0, 255, 255)), -1)
    cv2.putText(image, camera, (20, 50), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 2)
    return image


class FakePipeline:
    """Stats provider in the pipeline's schema; tests flip camera states."""

    def __init__(self, cameras: list[str]) -> None:
        self.cameras = list(cameras)
        self.states = {name: "streaming" for name in cameras}
        self.frames = {name: 0 for name in cameras}
        self.started = time.monotonic()
        self.lock = threading.Lock()

    def set_state(self, camera: str, state: str) -> None:
        with self.lock:
            self.states[camera] = state

    def stats(self) -> dict[str, Any]:
        with self.lock:
            cameras = {
                name: {
                    "state": self.states[name], "fps": 25.0 + i, "latency_ms_p50": 40.0 + i, "latency_ms_p95": 90.5 + i,
                    "dropped": 3 * i, "reconnects": i, "frames": self.frames[name],
                    "url": f"rtsp://user:***@10.0.0.{i}/{name}", "last_error": None if i else "timeout",
                    "size": "640x360",
                    "latency_histogram": {"le": [0.005, 0.05, 0.1], "counts": [0, 10 + i, 18 + i, 20 + i],
                                          "sum_s": 1.5 + i},
                }
                for i, name in enumerate(self.cameras)
            }
        return {
            "uptime_s": time.monotonic() - self.started,
            "model": {"name": "yolo11n", "backend": "onnx", "device": "cpu", "batch_size_mean": 3.5, "batches": 42},
            "cameras": cameras,
            "stages": {
                "infer": {"processed": 100, "dropped": 2, "p50_ms": 12.5, "p95_ms": 30.0, "fps": 24.0,
                          "queue_depth": 1},
                "render": {"processed": 98, "dropped": 0, "p50_ms": 1.5, "p95_ms": 2.5, "fps": 24.0,
                           "queue_depth": 0},
            },
        }


class Feeder:
    """Publishes synthetic frames of every camera at about 25 fps from a background thread."""

    def __init__(self, hub: DashboardHub, pipeline: FakePipeline) -> None:
        self.hub = hub
        self.pipeline = pipeline
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="dashboard-feeder", daemon=True)

    def _run(self) -> None:
        index = 0
        while not self.stop_event.wait(0.04):
            for name in self.hub.cameras:
                with self.pipeline.lock:
                    self.pipeline.frames[name] += 1
                self.hub.publish(name, draw(name, index))
            index += 1

    def __enter__(self) -> Feeder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(5)


@pytest.fixture(scope="module")
def pipeline() -> FakePipeline:
    return FakePipeline(CAMERAS)


@pytest.fixture(scope="module")
def hub(pipeline: FakePipeline) -> Iterator[DashboardHub]:
    hub = DashboardHub(CAMERAS, pipeline.stats, max_fps=15)
    with Feeder(hub, pipeline):
        deadline = time.monotonic() + 10
        while any(hub.latest(name) is None for name in CAMERAS) and time.monotonic() < deadline:
            time.sleep(0.02)
        yield hub


@pytest.fixture(scope="module")
def server(hub: DashboardHub) -> Iterator[DashboardServer]:
    with DashboardServer(hub, port=0) as server:
        yield server


@pytest.fixture(scope="module")
def token_server(hub: DashboardHub) -> Iterator[DashboardServer]:
    with DashboardServer(hub, port=0, token=TOKEN) as server:
        yield server


def request(
    server: DashboardServer, path: str, method: str = "GET", headers: dict[str, str] | None = None, body: bool = True
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """Send ``path`` byte for byte (no client-side normalization); ``body=False`` for streams."""
    conn = http.client.HTTPConnection("127.0.0.1", server.bound_port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        response = conn.getresponse()
        data = response.read() if body else b""
        return response.status, response.headers, data
    finally:
        conn.close()


def read_part(response: http.client.HTTPResponse, boundary: str) -> tuple[dict[str, str], bytes]:
    """One MJPEG part: skip to the boundary line, then headers, then Content-Length bytes."""
    while True:
        line = response.readline()
        assert line, "stream ended before the next part"
        if line.strip() == f"--{boundary}".encode():
            break
    headers: dict[str, str] = {}
    while True:
        raw = response.readline()
        assert raw, "stream ended inside a part"
        if not raw.strip():
            break
        key, _, value = raw.decode().partition(":")
        headers[key.strip().lower()] = value.strip()
    data = response.read(int(headers["content-length"]))
    return headers, data


# --------------------------------------------------------------------------- Prometheus text

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"({_NAME})(?:\{{(.*)\}})? (\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)')


def parse_prometheus(text: str) -> tuple[dict[str, tuple[str, str]], list[tuple[str, dict[str, str], float]]]:
    """Strictly parse text format 0.0.4: families (HELP, TYPE) and samples with unescaped labels."""
    assert text.endswith("\n")
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    samples: list[tuple[str, dict[str, str], float]] = []
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert re.fullmatch(_NAME, name) and name not in helps and help_text, line
            helps[name] = help_text
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name not in types and kind in ("counter", "gauge", "summary", "histogram", "untyped"), line
            assert not any(s[0] == name for s in samples), f"TYPE after samples: {line}"
            types[name] = kind
        else:
            match = _SAMPLE.fullmatch(line)
            assert match, f"not a sample line: {line!r}"
            name, raw_labels, value = match.groups()
            labels: dict[str, str] = {}
            position = 0
            while raw_labels and position < len(raw_labels):
                label = _LABEL.match(raw_labels, position)
                assert label, f"bad labels in {line!r}"
                unescaped = re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), label.group(2))
                labels[label.group(1)] = unescaped
                position = label.end()
            family = name
            for suffix in ("_bucket", "_count", "_sum"):
                base = name.removesuffix(suffix)
                if base != name and types.get(base) == "histogram":
                    family = base
            assert family in types and family in helps, f"sample before HELP/TYPE: {line}"
            key = (name, tuple(sorted(labels.items())))
            assert key not in seen, f"duplicate sample {line}"
            seen.add(key)
            samples.append((name, labels, float(value)))
    assert set(helps) == set(types)
    return {name: (helps[name], types[name]) for name in types}, samples


def value_of(samples: list[tuple[str, dict[str, str], float]], metric: str, /, **labels: str) -> float:
    found = [v for n, lab, v in samples if n == metric and all(lab.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, f"{metric}{labels}: {found}"
    return found[0]


# --------------------------------------------------------------------------- hub

def test_hub_throttles_encodes_and_wakes_waiters() -> None:
    hub = DashboardHub(["a", "b"], dict, max_fps=10)
    assert hub.wait_frame("a", 0, timeout=0.05) is None
    image = draw("a", 0)
    started = time.monotonic()
    offered = 0
    while time.monotonic() - started < 0.5:
        hub.publish("a", image)
        offered += 1
    assert offered > 50
    assert hub.wait_frame("a", 0, timeout=5) is not None
    time.sleep(0.2)  # the encoder thread finishes what was kept
    assert 3 <= hub.encoded("a") <= 8, hub.encoded("a")
    assert hub.encoded("b") == 0 and hub.latest("b") is None
    assert hub.publish("nope", image) is False

    seq, _ = hub.latest("a")  # type: ignore[misc]
    got: list[tuple[int, bytes] | None] = []
    waiter = threading.Thread(target=lambda: got.append(hub.wait_frame("a", seq, timeout=5)))
    waiter.start()
    time.sleep(0.15)
    assert hub.publish("a", draw("a", 7))
    waiter.join(2)
    assert got and got[0] is not None and got[0][0] == seq + 1
    decoded = cv2.imdecode(np.frombuffer(got[0][1], np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (HEIGHT, WIDTH, 3)

    with pytest.raises(ConfigError):
        DashboardHub(["a", "a"], dict)
    with pytest.raises(ConfigError):
        DashboardHub(["a"], dict, max_fps=0)


def test_hub_downscales_wide_frames() -> None:
    hub = DashboardHub(["a"], dict, max_width=320)
    assert hub.publish("a", draw("a", 0))
    _, jpeg = hub.wait_frame("a", 0, timeout=5)  # type: ignore[misc]
    hub.close()
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (180, 320, 3)


# --------------------------------------------------------------------------- JSON and metrics

def test_api_stats_lists_every_camera(server: DashboardServer, pipeline: FakePipeline) -> None:
    status, headers, body = request(server, "/api/stats")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Content-Type-Options"] == "nosniff"
    stats = json.loads(body)
    assert list(stats["cameras"]) == CAMERAS
    assert stats["cameras"]["cam2"]["state"] == "streaming"
    assert stats["model"]["name"] == "yolo11n"
    assert set(stats["stages"]) == {"infer", "render"}


def test_metrics_are_valid_prometheus_text(server: DashboardServer, pipeline: FakePipeline) -> None:
    pipeline.set_state("cam2", "reconnecting")
    try:
        status, headers, body = request(server, "/metrics")
    finally:
        pipeline.set_state("cam2", "streaming")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert headers["Cache-Control"] == "no-store"
    families, samples = parse_prometheus(body.decode())

    for name, kind in {
        "streamer_camera_fps": "gauge", "streamer_camera_latency_seconds": "histogram", "streamer_camera_up": "gauge",
        "streamer_camera_state": "gauge", "streamer_dropped_frames_total": "counter",
        "streamer_reconnects_total": "counter", "streamer_frames_total": "counter",
        "streamer_stage_time_p50_seconds": "gauge", "streamer_stage_time_p95_seconds": "gauge",
        "streamer_stage_processed_total": "counter",
        "streamer_stage_dropped_total": "counter", "streamer_stage_queue_depth": "gauge",
        "streamer_model_batch_size_mean": "gauge", "streamer_model_batches_total": "counter",
        "streamer_uptime_seconds": "gauge", "streamer_dashboard_jpeg_frames_total": "counter",
        "streamer_dashboard_connections": "gauge", "streamer_dashboard_rejected_connections_total": "counter",
    }.items():
        assert families[name][1] == kind, name
    assert all(name.endswith("_total") for name, (_, kind) in families.items() if kind == "counter")
    assert not [lab for _, lab, _ in samples if "quantile" in lab], "quantile is for summaries only"

    assert {lab["camera"] for n, lab, _ in samples if n == "streamer_camera_fps"} == set(CAMERAS)
    for i, camera in enumerate(CAMERAS):
        assert value_of(samples, "streamer_camera_fps", camera=camera) == 25.0 + i
        buckets = {lab["le"]: v for n, lab, v in samples
                   if n == "streamer_camera_latency_seconds_bucket" and lab["camera"] == camera}
        assert buckets == {"0.005": 0, "0.05": 10 + i, "0.1": 18 + i, "+Inf": 20 + i}
        assert value_of(samples, "streamer_camera_latency_seconds_count", camera=camera) == 20 + i
        assert value_of(samples, "streamer_camera_latency_seconds_sum", camera=camera) == 1.5 + i
        assert value_of(samples, "streamer_dropped_frames_total", camera=camera) == 3 * i
        assert value_of(samples, "streamer_reconnects_total", camera=camera) == i
        assert value_of(samples, "streamer_frames_total", camera=camera) > 0
        assert value_of(samples, "streamer_dashboard_jpeg_frames_total", camera=camera) > 0
        current = "reconnecting" if camera == "cam2" else "streaming"
        assert value_of(samples, "streamer_camera_up", camera=camera) == (camera != "cam2")
        states = {lab["state"]: v for n, lab, v in samples if n == "streamer_camera_state" and lab["camera"] == camera}
        assert states[current] == 1 and sum(states.values()) == 1 and "down" in states
    assert value_of(samples, "streamer_stage_time_p95_seconds", stage="infer") == 0.03
    assert value_of(samples, "streamer_stage_time_p50_seconds", stage="render") == 0.0015
    assert value_of(samples, "streamer_stage_processed_total", stage="render") == 98
    assert value_of(samples, "streamer_stage_dropped_total", stage="infer") == 2
    assert value_of(samples, "streamer_stage_queue_depth", stage="infer") == 1
    assert value_of(samples, "streamer_model_batch_size_mean") == 3.5
    assert value_of(samples, "streamer_model_batches_total") == 42
    assert value_of(samples, "streamer_model_info", name="yolo11n", backend="onnx", device="cpu") == 1
    assert value_of(samples, "streamer_uptime_seconds") > 0


def test_metrics_escape_labels_and_skip_missing_values() -> None:
    odd = 'we"ird\\name\nx'
    camera = {"state": "exploded", "fps": math.nan, "latency_ms_p50": None, "frames": 5}
    stats = {"cameras": {odd: camera}, "stages": {}}
    _, samples = parse_prometheus(render_metrics(stats))
    assert value_of(samples, "streamer_frames_total", camera=odd) == 5
    assert math.isnan(value_of(samples, "streamer_camera_fps", camera=odd))
    assert value_of(samples, "streamer_camera_state", camera=odd, state="exploded") == 1
    assert not [s for s in samples if s[0].startswith("streamer_camera_latency")]
    assert not [s for s in samples if s[0] == "streamer_uptime_seconds"]


# --------------------------------------------------------------------------- MJPEG and snapshots

def test_mjpeg_stream_sends_decodable_advancing_frames(server: DashboardServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.bound_port, timeout=10)
    try:
        conn.request("GET", "/stream/cam1.mjpg")
        response = conn.getresponse()
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        content_type = response.headers["Content-Type"]
        match = re.fullmatch(r"multipart/x-mixed-replace; boundary=(\S+)", content_type)
        assert match, content_type
        boundary = match.group(1)
        frames = []
        for _ in range(2):
            headers, data = read_part(response, boundary)
            assert headers["content-type"] == "image/jpeg"
            frames.append(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
    finally:
        conn.close()
    for frame in frames:
        assert frame.shape == (HEIGHT, WIDTH, 3)
        red = (frame[..., 2] > 200) & (frame[..., 1] < 60) & (frame[..., 0] < 60)
        assert red.sum() > 0.8 * BOX * BOX
    columns = [np.flatnonzero(((f[..., 2] > 200) & (f[..., 1] < 60)).any(axis=0)).min() for f in frames]
    assert columns[0] != columns[1], "the second part repeats the first frame"


def test_snapshot(server: DashboardServer) -> None:
    status, headers, body = request(server, "/snapshot/cam4.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (HEIGHT, WIDTH, 3)
    with DashboardServer(DashboardHub(["idle"], dict), port=0) as idle:
        status, headers, _ = request(idle, "/snapshot/idle.jpg")
        assert status == 503 and headers["Retry-After"] == "1"


# --------------------------------------------------------------------------- routing

@pytest.mark.parametrize(
    "path",
    [
        "/../etc/passwd", "/%2e%2e/", "/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd", "/etc/passwd", "/index.html",
        "/static/x.js", "/api/statsx", "/api/stats/", "/api", "/metrics/x", "/stream/nope.mjpg",
        "/stream/../../etc/passwd", "/stream/%2e%2e%2f%2e%2e%2fetc%2fpasswd.mjpg", "/stream/cam1.mjpg/",
        "/stream/cam1", "/stream/cam1.jpg", "/STREAM/cam1.mjpg", "/snapshot/nope.jpg", "/snapshot/cam1.mjpg",
        "/snapshot/../cam1.jpg", "/streamer/sinks/dashboard.py", "/tests/conftest.py", "/dashboard.py", "/.git/config",
    ],
)
def test_unknown_paths_are_404(server: DashboardServer, path: str) -> None:
    status, headers, body = request(server, path)
    assert status == 404, path
    assert body == b"404 not found\n"
    assert request(server, path, method="HEAD")[0] == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"])
def test_other_methods_are_405(server: DashboardServer, method: str) -> None:
    status, headers, _ = request(server, "/", method=method)
    assert status == 405 and headers["Allow"] == "GET, HEAD"


def test_head_and_page(server: DashboardServer) -> None:
    status, headers, body = request(server, "/", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 1000
    status, headers, body = request(server, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src 'nonce-" in headers["Content-Security-Policy"]
    page = body.decode()
    assert page.index('data-camera="cam1"') < page.index('data-camera="cam2"') < page.index('data-camera="cam4"')
    assert "http://" not in page and "https://" not in page
    assert request(server, "/favicon.ico")[0] == 204


def test_page_escapes_camera_names() -> None:
    evil = '<img src=x onerror="alert(1)">\'&'
    page = render_page([evil, "a/b c"])[0].decode()
    assert evil not in page and "<img src=x" not in page
    assert 'data-camera="&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&#x27;&amp;"' in page
    assert 'src="/stream/a%2Fb%20c.mjpg"' in page


# --------------------------------------------------------------------------- token

PROTECTED = ["/", "/api/stats", "/metrics", "/stream/cam1.mjpg", "/snapshot/cam1.jpg", "/favicon.ico", "/nope"]


def test_token_guards_every_route(token_server: DashboardServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="streamer.sinks.dashboard")
    seen: list[str] = []

    def check(
        path: str, headers: dict[str, str] | None = None, body: bool = True
    ) -> tuple[int, http.client.HTTPMessage]:
        status, response_headers, data = request(token_server, path, headers=headers, body=body)
        seen.append(str(response_headers) + data.decode(errors="replace"))
        return status, response_headers

    for path in PROTECTED:
        status, headers = check(path)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert check(path, {"Authorization": "Bearer wrong-token"})[0] == 401
        assert check(path, {"Cookie": "streamer_token=" + TOKEN})[0] == 401
        expected = 404 if path == "/nope" else 204 if path == "/favicon.ico" else 200
        assert check(path, {"Authorization": f"Bearer {TOKEN}"}, body="stream" not in path)[0] == expected, path

    assert check("/?token=wrong")[0] == 401
    assert check("/?token=")[0] == 401
    status, headers = check(f"/?token={TOKEN}")
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    attributes = [part.strip() for part in cookie.split(";")]
    assert "HttpOnly" in attributes and "SameSite=Strict" in attributes and "Path=/" in attributes
    pair = attributes[0]
    assert pair.startswith("streamer_token=")
    for path in PROTECTED:
        expected = 404 if path == "/nope" else 204 if path == "/favicon.ico" else 200
        assert check(path, {"Cookie": f"other=1; {pair}"}, body="stream" not in path)[0] == expected, path

    assert all(TOKEN not in text for text in seen), "the token leaked into a response"
    assert caplog.records and all(TOKEN not in record.getMessage() for record in caplog.records)
    assert any("token=***" in record.getMessage() for record in caplog.records)


# --------------------------------------------------------------------------- binding and stopping

def test_port_in_use_and_bad_address_raise_sink_error(hub: DashboardHub) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SinkError, match=rf"127\.0\.0\.1:{port}: .*in use"):
            DashboardServer(hub, port=port).start()
    with pytest.raises(SinkError, match=r"192\.0\.2\.1:0: "):
        DashboardServer(hub, host="192.0.2.1", port=0).start()
    with pytest.raises(ConfigError):
        DashboardServer(hub, token="")


def test_stop_returns_promptly_with_a_stream_client(hub: DashboardHub) -> None:
    before = set(threading.enumerate())
    server = DashboardServer(hub, port=0)
    server.start()
    conn = http.client.HTTPConnection("127.0.0.1", server.bound_port, timeout=10)
    try:
        conn.request("GET", "/stream/cam2.mjpg")
        response = conn.getresponse()
        boundary = response.headers["Content-Type"].rpartition("=")[2]
        read_part(response, boundary)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2
        with pytest.raises((AssertionError, OSError, http.client.HTTPException)):
            for _ in range(100):
                read_part(response, boundary)
    finally:
        conn.close()
    deadline = time.monotonic() + 1.5
    while [t for t in set(threading.enumerate()) - before if t.is_alive()] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]
    server.stop()


# --------------------------------------------------------------------------- headless Chromium

def colour_pixels(image: np.ndarray, colour: tuple[int, int, int], tolerance: int = 45) -> int:
    return int((np.abs(image.astype(np.int16) - np.array(colour, np.int16)) <= tolerance).all(axis=2).sum())


def test_browser_shows_four_live_tiles(server: DashboardServer, pipeline: FakePipeline, tmp_path: Path) -> None:
    from tests.browser import Chromium

    expected = {name: "reconnecting" if name == "cam3" else "streaming" for name in CAMERAS}
    states_js = (
        "Object.fromEntries(Array.from(document.querySelectorAll('.tile'))"
        ".map(t => [t.dataset.camera, t.dataset.state]))"
    )
    pipeline.set_state("cam3", "reconnecting")
    try:
        with Chromium(size=(1280, 900)) as browser:
            browser.goto(server.url)
            browser.wait_for(f"{READY} && {PAINTED} && {states_js}['cam3'] === 'reconnecting'", timeout=30)
            assert browser.evaluate(states_js) == expected
            time.sleep(0.3)
            shot = browser.screenshot(tmp_path / "dashboard.png")
            views = browser.evaluate(
                "Array.from(document.querySelectorAll('.tile')).map(t => { const r = t.querySelector('.view')"
                ".getBoundingClientRect(); const o = getComputedStyle(t.querySelector('.overlay'));"
                " return [t.dataset.camera, r.left, r.top, r.width, r.height, o.display,"
                " t.querySelector('.overlay').textContent, t.querySelector('.status').textContent]; })"
            )
            header = browser.evaluate("document.getElementById('model').textContent")
    finally:
        pipeline.set_state("cam3", "streaming")

    assert "yolo11n" in header and "onnx" in header and "cpu" in header and "3.50" in header
    image = cv2.imread(str(shot))
    assert image.shape == (900, 1280, 3)
    assert [view[0] for view in views] == CAMERAS
    lefts = sorted({round(view[1]) for view in views})
    tops = sorted({round(view[2]) for view in views})
    assert len(lefts) == 2 and len(tops) == 2, "expected a 2x2 grid"
    for name, left, top, width, height, overlay, overlay_text, status in views:
        region = image[int(top):int(top + height), int(left):int(left + width)]
        scale = min(width / WIDTH, height / HEIGHT)
        box_area = (BOX * scale) ** 2
        others = [COLOURS[other] for other in CAMERAS if other != name]
        assert "fps" in status and "p95" in status and "reconnects" in status
        if name == "cam3":
            assert overlay == "flex" and overlay_text == "RECONNECTING"
            dimmed = tuple(int(c * 0.55) for c in COLOURS[name])
            assert colour_pixels(region, dimmed, 35) > 0.3 * box_area, name  # the last image under the overlay
            assert colour_pixels(region, COLOURS[name]) < 0.05 * box_area
        else:
            assert overlay == "none"
            assert colour_pixels(region, COLOURS[name]) > 0.6 * box_area, name
        assert all(colour_pixels(region, colour) < 0.05 * box_area for colour in others), name


def test_browser_token_cookie_path(token_server: DashboardServer) -> None:
    from tests.browser import Chromium

    with Chromium(size=(1024, 768)) as browser:
        browser.goto(token_server.url + "?token=" + TOKEN)
        browser.wait_for(f"{READY} && {PAINTED} && document.images.length === 4", timeout=30)
        assert browser.evaluate("location.pathname + location.search") == "/"
        assert browser.evaluate("document.cookie") == "", "the cookie must be HttpOnly"
        assert browser.evaluate("document.querySelector('.tile').dataset.state") == "streaming"
        browser.goto(token_server.url + "?token=wrong")
        text = browser.wait_for("document.body && document.body.innerText", timeout=10)
        assert text.startswith("401") and TOKEN not in text


def test_browser_many_odd_cameras_and_resubscribe(tmp_path: Path) -> None:
    """Six cameras (two past the MJPEG limit, shown by snapshot refresh), hostile names, and
    a server restart on the same port that the page must recover from without a reload."""
    from tests.browser import Chromium

    names = ['<img src=x onerror="window.pwned=1">', "a&b 'c'", "cam/4 ü", "d", "e", "f"]
    pipeline = FakePipeline(names)
    hub = DashboardHub(names, pipeline.stats)
    with Feeder(hub, pipeline), Chromium(size=(1280, 900)) as browser:
        server = DashboardServer(hub, port=0)
        server.start()
        try:
            port = server.bound_port
            browser.goto(server.url)
            browser.wait_for(f"{READY} && {PAINTED}", timeout=30)
            tiles = browser.evaluate(
                "Array.from(document.querySelectorAll('.tile')).map(t => [t.dataset.camera, t.dataset.mode,"
                " t.querySelector('.name').textContent, t.dataset.state])"
            )
            assert [t[0] for t in tiles] == names and [t[2] for t in tiles] == names
            assert [t[1] for t in tiles] == ["mjpeg"] * 4 + ["snapshot"] * 2
            assert all(t[3] == "streaming" for t in tiles)
            injected = "window.pwned !== undefined || document.querySelectorAll('img[src=\"x\"]').length > 0"
            assert browser.evaluate(injected) is False

            server.stop()
            browser.wait_for("document.body.dataset.connected === '0'", timeout=10)
            server = DashboardServer(hub, port=port)
            server.start()
            browser.wait_for(
                f"document.body.dataset.connected === '1' && {PAINTED} && "
                "Array.from(document.images).slice(0, 4).every(i => i.src.includes('?r='))",
                timeout=20,
            )
        finally:
            server.stop()


# --------------------------------------------------------------------------- caps and slow clients

def open_stream(server: DashboardServer, camera: str, timeout: float = 10) -> tuple[http.client.HTTPResponse, int]:
    """An open MJPEG response. The response is what holds the socket (the server answers
    ``Connection: close``, so the connection hands it over): keep it, or the stream closes."""
    conn = http.client.HTTPConnection("127.0.0.1", server.bound_port, timeout=timeout)
    conn.request("GET", f"/stream/{camera}.mjpg")
    response = conn.getresponse()
    return response, response.status


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def test_stream_cap_answers_503_and_counts(hub: DashboardHub) -> None:
    with DashboardServer(hub, port=0, max_streams=2, max_connections=4) as server:
        assert server.dashboard_stats()["rejected"] == 0
        held = []
        try:
            for _ in range(2):
                conn, status = open_stream(server, "cam1")
                held.append(conn)
                assert status == 200
            assert wait_for(lambda: server.dashboard_stats()["streams"] == 2)
            conn, status = open_stream(server, "cam2")
            conn.close()
            assert status == 503
            assert server.dashboard_stats()["rejected"] == 1
            assert request(server, "/api/stats")[0] == 200  # other routes still answer
            _, samples = parse_prometheus(request(server, "/metrics")[2].decode())
            assert value_of(samples, "streamer_dashboard_rejected_connections_total") == 1
            assert value_of(samples, "streamer_dashboard_streams") == 2
        finally:
            for conn in held:
                conn.close()
        assert wait_for(lambda: server.dashboard_stats()["streams"] == 0)
        conn, status = open_stream(server, "cam2")  # a freed slot is usable again
        conn.close()
        assert status == 200


def test_connection_cap_refuses_before_spending_a_thread(hub: DashboardHub) -> None:
    with DashboardServer(hub, port=0, max_streams=1, max_connections=3) as server:
        idle = []
        try:
            for _ in range(3):  # connections that never send a request hold their slot
                sock = socket.create_connection(("127.0.0.1", server.bound_port), timeout=5)
                idle.append(sock)
            assert wait_for(lambda: server.dashboard_stats()["connections"] == 3)
            with socket.create_connection(("127.0.0.1", server.bound_port), timeout=5) as extra:
                reply = b""
                while chunk := extra.recv(4096):
                    reply += chunk
            assert reply.startswith(b"HTTP/1.1 503 ") and reply.endswith(b"503 too many dashboard connections\n")
            assert server.dashboard_stats()["rejected"] == 1
        finally:
            for sock in idle:
                sock.close()
        assert wait_for(lambda: server.dashboard_stats()["connections"] == 0)
        assert request(server, "/api/stats")[0] == 200
    with pytest.raises(ConfigError, match="max_streams=5, max_connections=4"):
        DashboardServer(hub, max_streams=5, max_connections=4)


def test_slow_mjpeg_client_never_blocks_publishing() -> None:
    """A viewer that stops reading fills its socket and blocks its handler in a write; the
    pipeline's publish calls, the encoder and the other viewers must carry on regardless."""
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(3)]  # ~1 MB JPEGs
    hub = DashboardHub(["a", "b"], dict, max_fps=50, quality=95)
    with DashboardServer(hub, port=0) as server:
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", server.bound_port))
        stuck.sendall(b"GET /stream/a.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
        try:
            published = threading.Event()

            def pipeline() -> None:
                deadline = time.monotonic() + 3.0
                i = 0
                while time.monotonic() < deadline:
                    hub.publish("a", noise[i % 3])
                    hub.publish("b", noise[(i + 1) % 3])
                    i += 1
                    time.sleep(0.005)
                published.set()

            feeder = threading.Thread(target=pipeline, daemon=True)
            feeder.start()
            assert wait_for(lambda: server.dashboard_stats()["streams"] == 1)
            before = hub.encoded("a")
            seqs = [hub.latest("b")]
            for _ in range(3):  # a second viewer keeps getting fresh frames
                time.sleep(0.5)
                seqs.append(hub.latest("b"))
            assert published.wait(15), "publish blocked behind the stuck client"
            feeder.join(5)
            assert hub.encoded("a") > before + 3, "the encoder stalled behind the stuck client"
            numbers = [s[0] for s in seqs if s is not None]
            assert len(numbers) >= 3 and numbers == sorted(numbers) and numbers[-1] > numbers[0]
        finally:
            stuck.close()
    hub.close()
