"""Live RTSP against a real server on loopback: reconnects, stalls, timeouts, masking.

Every test runs on both capture backends (PyAV and OpenCV's FFmpeg backend)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import streamer
from streamer.api import build_pipeline
from streamer.sinks.base import Sink
from streamer.sources.live import ReconnectPolicy, StreamSource
from streamer.types import Result
from tests.fakes import DelayModel
from tests.rtsp import RtspServer, require_rtsp


class Arrivals(Sink):
    def __init__(self) -> None:
        self.times: list[float] = []

    def write(self, result: Result) -> None:
        self.times.append(time.monotonic())

    def after(self, t: float) -> float | None:
        return next((x for x in self.times if x > t), None)


@pytest.fixture(params=["pyav", "opencv"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture()
def server() -> RtspServer:
    require_rtsp()
    srv = RtspServer({"cam": "sample:bikes"}).start()
    yield srv
    srv.stop()


def wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_streams_again_after_three_server_restarts(server: RtspServer, backend: str) -> None:
    policy = ReconnectPolicy(stall_timeout_s=3, open_timeout_s=3)
    source = StreamSource(server.url("cam"), policy=policy, backend=backend)
    sink = Arrivals()
    pipeline = build_pipeline(source, DelayModel(0.02), sinks=[sink])
    # The next attempt comes within the backoff (2 s by then), plus the backend's time to a
    # first frame: OpenCV keeps FFmpeg's default probe, which waits for 1 s of live stream.
    bound = 3.0 + (1.0 if backend == "opencv" else 0.0)
    pipeline.start()
    try:
        assert wait_for(lambda: len(sink.times) > 10, 20), "never streamed"
        for round_ in range(3):
            server.kill()
            killed = time.monotonic()
            assert wait_for(lambda: source.state != "streaming", 5), f"round {round_}: kill not noticed"
            assert (sink.after(killed + 1.0) is None), "frames kept coming from a dead server"
            time.sleep(1.5)
            server.restart()
            back = time.monotonic()
            assert wait_for(lambda: sink.after(back) is not None, 10), f"round {round_}: no frame after restart"
            assert sink.after(back) - back <= bound, f"round {round_}: {sink.after(back) - back:.2f} s to stream again"
            assert pipeline.alive()
        assert source.reconnects >= 3
    finally:
        pipeline.stop()
        pipeline.join(10)
        pipeline.close()
    pipeline.raise_error()


@pytest.mark.slow
def test_hung_server_is_detected_within_stall_timeout(server: RtspServer, backend: str) -> None:
    source = StreamSource(server.url("cam"), policy=ReconnectPolicy(stall_timeout_s=2, open_timeout_s=2), backend=backend)
    source.open()
    try:
        assert wait_for(lambda: source.state == "streaming" and source.frames > 5, 20)
        server.pause()  # SIGSTOP: the connection stays open, nothing more arrives
        paused = time.monotonic()
        assert wait_for(lambda: source.state in ("stalled", "reconnecting"), 6)
        detected = time.monotonic() - paused
        assert detected <= 2.0 + 1.0, f"stall noticed after {detected:.2f} s"
        server.resume()
        assert wait_for(lambda: source.state == "streaming", 15)
    finally:
        source.close()


@pytest.mark.slow
def test_silent_server_reconnects_within_stall_timeout(caplog: pytest.LogCaptureFixture, backend: str) -> None:
    """A server that accepts the connection and then sends nothing."""
    require_rtsp()
    caplog.set_level(logging.INFO, logger="streamer.sources.live")
    with RtspServer(silent_mounts=["quiet"]) as srv:
        source = StreamSource(srv.url("quiet"), policy=ReconnectPolicy(stall_timeout_s=2, open_timeout_s=2,
                                                                      backoff_initial_s=0.1, backoff_max_s=0.2),
                              backend=backend)
        t0 = time.monotonic()
        source.open()
        try:
            assert wait_for(lambda: source.reconnects >= 1, 6)
            first = time.monotonic() - t0
            assert first <= 2.0 + 0.8, f"first reconnect after {first:.2f} s"
            assert wait_for(lambda: source.reconnects >= 3, 10)
            assert source.frames == 0
        finally:
            source.close()


def test_unreachable_host_fails_each_attempt_within_open_timeout(caplog: pytest.LogCaptureFixture, backend: str) -> None:
    caplog.set_level(logging.WARNING, logger="streamer.sources.live")
    # 192.0.2.0/24 is TEST-NET-1: never routed, so a connect gets no answer at all.
    source = StreamSource("rtsp://192.0.2.1:554/cam", policy=ReconnectPolicy(
        open_timeout_s=1.0, backoff_initial_s=0.05, backoff_max_s=0.05), backend=backend)
    t0 = time.monotonic()
    source.open()
    try:
        assert wait_for(lambda: source.reconnects >= 3, 8)
        per_attempt = (time.monotonic() - t0) / source.reconnects
        assert per_attempt <= 1.0 + 0.5, f"{per_attempt:.2f} s per attempt"
    finally:
        source.close()


@pytest.mark.slow
def test_credentials_never_appear_anywhere(tmp_path: Path, backend: str) -> None:
    """watch and monitor on rtsp://user:secret@...: no output, log, JSONL or page shows the password."""
    require_rtsp()
    password = "s3cr3t-pa55"
    with RtspServer({"cam": "sample:bikes"}, user="viewer", password=password) as srv:
        url = srv.url("cam", user="viewer", password=password)
        # monitor has no per-run flag: the variable sets what capture.backend 'auto' means.
        # The children run in tmp_path: PYTHONPATH makes them import this checkout's streamer.
        root = str(Path(streamer.__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        env = dict(os.environ, PYTHONUNBUFFERED="1", STREAMER_CAPTURE_BACKEND=backend, PYTHONPATH=path)
        watch = subprocess.Popen(
            [sys.executable, "-m", "streamer", "-v", "watch", url, "--no-window", "--status-interval", "1",
             "--jsonl", str(tmp_path / "w.jsonl"), "--record", str(tmp_path / "w.mp4")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
        assert wait_for(lambda: (tmp_path / "w.jsonl").exists() and (tmp_path / "w.jsonl").stat().st_size > 0, 60)
        time.sleep(2)
        watch.send_signal(signal.SIGINT)
        w_out, w_err = watch.communicate(timeout=30)
        wrong = subprocess.run(
            [sys.executable, "-m", "streamer", "-v", "watch", srv.url("cam", user="viewer", password="wrong-" + password),
             "--no-window", "--max-reconnects", "1", "--status-interval", "1"],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
        cfg = {"cameras": {"cam": {"url": url, "jsonl": str(tmp_path / "m.jsonl")}}, "dashboard": {"port": 0},
               "events": {"path": str(tmp_path / "events.jsonl"), "snapshots": str(tmp_path / "snaps")}}
        (tmp_path / "m.yaml").write_text(json.dumps(cfg))
        mon = subprocess.Popen([sys.executable, "-m", "streamer", "-v", "monitor", str(tmp_path / "m.yaml")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
        import re
        import urllib.request

        first = mon.stdout.readline() if mon.stdout else ""
        base = re.search(r"(http://\S+)", first).group(1)  # type: ignore[union-attr]
        assert wait_for(lambda: (tmp_path / "m.jsonl").exists() and (tmp_path / "m.jsonl").stat().st_size > 0, 60)
        pages = []
        for path in ("", "api/stats", "metrics"):
            with urllib.request.urlopen(base + path, timeout=10) as r:
                pages.append(r.read().decode())
        mon.send_signal(signal.SIGINT)
        m_out, m_err = mon.communicate(timeout=30)
    texts = [w_out, w_err, wrong.stdout, wrong.stderr, first, m_out, m_err, *pages]
    for f in tmp_path.rglob("*"):
        if f.is_file() and f.suffix in (".jsonl", ".yaml", ".txt", ".log") and f.name != "m.yaml":
            texts.append(f.read_text())
    assert all(password not in t for t in texts), [t[:200] for t in texts if password in t]
    assert "viewer:***@" in w_err and "viewer:***@" in wrong.stderr
    assert f"reading through {backend} over tcp" in w_err, w_err[:600]
    assert wrong.returncode == 2 and "gave up after 1 reconnects" in wrong.stderr
    assert json.loads((tmp_path / "w.jsonl").read_text().splitlines()[0])["source"].startswith("rtsp://viewer:***@")
