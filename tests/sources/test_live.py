"""Live sources without a network: the synthetic camera, reconnects, masking, overload."""

from __future__ import annotations

import logging
import os
import re
import time

import cv2
import numpy as np
import pytest

from streamer.api import build_pipeline
from streamer.errors import ConfigError, SourceReadError
from streamer.sinks.base import Sink
from streamer.sources import live, make_source
from streamer.sources.base import TIMEOUT
from streamer.sources.live import ReconnectPolicy, StreamSource, SyntheticSource, mask_url
from streamer.types import Result
from tests.fakes import DelayModel


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("rtsp://127.0.0.1:8554/cam", "rtsp://127.0.0.1:8554/cam"),
        ("rtsp://user:secret@127.0.0.1:8554/cam", "rtsp://user:***@127.0.0.1:8554/cam"),
        ("rtsp://user@host/cam", "rtsp://user@host/cam"),
        ("http://admin:p%40ss@cam.local/video.mjpg?x=1", "http://admin:***@cam.local/video.mjpg?x=1"),
        ("rtsps://a:b@[::1]:322/s", "rtsps://a:***@::1:322/s"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_backoff_doubles_to_cap() -> None:
    p = ReconnectPolicy()
    assert [p.backoff(i) for i in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    with pytest.raises(ConfigError, match="stall_timeout_s must be a positive"):
        ReconnectPolicy(stall_timeout_s=0)


@pytest.mark.parametrize(
    ("spec", "kind"),
    [("synthetic", SyntheticSource), ("synthetic:320x240@15", SyntheticSource), ("rtsp://h/x", StreamSource)],
)
def test_make_source_live_kinds(spec: str, kind: type) -> None:
    assert isinstance(make_source(spec), kind)


@pytest.mark.parametrize(
    ("backend", "env", "expected"),
    [
        ("auto", "", live.AUTO_BACKEND),
        ("auto", "opencv", "opencv"),
        ("auto", " PyAV ", "pyav"),
        ("pyav", "opencv", "pyav"),  # an explicit choice wins over the variable
        ("opencv", "", "opencv"),
        ("", "", ConfigError("invalid capture backend '', expecting one of ['auto', 'pyav', 'opencv']")),
        ("gstreamer", "", ConfigError("invalid capture backend 'gstreamer'")),
        ("auto", "ffmpeg", ConfigError("STREAMER_CAPTURE_BACKEND='ffmpeg' is invalid, expecting one of ['pyav', 'opencv']")),
    ],
)
def test_capture_backend_choice(monkeypatch, backend: str, env: str, expected: str | Exception) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(live.BACKEND_VAR, env)
    if isinstance(expected, Exception):
        with pytest.raises(type(expected), match=re.escape(str(expected))):
            make_source("rtsp://h/x", backend=backend)
    else:
        source = make_source("rtsp://h/x", backend=backend)
        assert isinstance(source, StreamSource) and source.backend == expected


def test_synthetic_is_paced_like_a_camera() -> None:
    src = SyntheticSource(width=160, height=120, fps=50, limit=50)
    src.open()
    frames = []
    t0 = time.monotonic()
    while True:
        f = src.read(1.0)
        if f is None:
            break
        if f is not TIMEOUT:
            frames.append(f)
    elapsed = time.monotonic() - t0
    src.close()
    assert 0.8 <= elapsed <= 2.0  # 50 frames at 50 fps
    assert frames[0].image.shape == (120, 160, 3)
    assert [f.index for f in frames] == sorted(f.index for f in frames)
    assert len(frames) + src.dropped == 50


def test_disconnects_reconnect_and_log_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamer.sources.live")
    src = SyntheticSource(width=64, height=48, fps=1000, paced=False, limit=1000, disconnect_every=200)
    src.open()
    got = 0
    while (f := src.read(1.0)) is not None:
        got += f is not TIMEOUT
    src.close()
    assert src.reconnects == 4  # at 200, 400, 600, 800
    reconnect_logs = [r for r in caplog.records if ": reconnect " in r.getMessage()]
    assert len(reconnect_logs) == 4
    streaming_logs = [r for r in caplog.records if r.getMessage().endswith("streaming (64x48)")]
    assert len(streaming_logs) == 5


@pytest.mark.parametrize("backend", ["opencv", "pyav"])
def test_max_reconnects_gives_up_with_error(backend: str) -> None:
    src = StreamSource("rtsp://user:secret@127.0.0.1:9/none", backend=backend, policy=ReconnectPolicy(
        open_timeout_s=0.5, backoff_initial_s=0.01, backoff_max_s=0.02, max_reconnects=2))
    src.open()
    with pytest.raises(SourceReadError, match=r"gave up after 2 reconnects") as info:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if src.read(0.1) is None:
                break
    src.close()
    assert "secret" not in str(info.value) and "user:***@" in str(info.value)


class LatencySink(Sink):
    def __init__(self) -> None:
        self.rows: list[tuple[float, float]] = []  # (when written, latency s)

    def write(self, result: Result) -> None:
        now = time.monotonic()
        self.rows.append((now, now - result.frame.captured_at))


@pytest.mark.slow
def test_overload_latency_does_not_grow() -> None:
    """30 fps in, a 100 ms model, 60 s: latency bounded and flat, drops counted."""
    period = 1 / 30
    source = SyntheticSource(width=320, height=240, fps=30)
    sink = LatencySink()
    pipeline = build_pipeline(source, DelayModel(0.1), sinks=[sink])
    pipeline.start()
    time.sleep(60)
    pipeline.stop()
    assert pipeline.join(10)
    pipeline.raise_error()
    stats = {s.name: s for s in pipeline.stats()}
    stage_sum_ms = sum(stats[n].p50_ms for n in ("preprocess", "infer", "postprocess", "sinks"))
    lat_ms = np.array([lat for _, lat in sink.rows]) * 1000
    p95 = float(np.percentile(lat_ms, 95))
    assert p95 <= stage_sum_ms + 2 * period * 1000, (p95, stage_sum_ms)
    t = np.array([w for w, _ in sink.rows])
    first = lat_ms[t <= t[0] + 10]
    last = lat_ms[t >= t[-1] - 10]
    # A frame waits in the source's slot for up to one frame period before the model takes it,
    # and the beat between 30 fps and a ~100 ms model moves that wait slowly across the whole
    # period, so a 10 s window's median can sit anywhere in it. Frames queueing up would add
    # a model call (100 ms) each.
    assert np.median(last) <= np.median(first) + period * 1000 + 5, (np.median(first), np.median(last))
    assert len(sink.rows) > 400  # ~9.5 fps through a 100 ms model
    dropped = pipeline.dropped + source.dropped
    assert dropped > 1000
    # Every captured frame is either written or counted as dropped; at most the one left in
    # the source's slot when it stopped is neither.
    assert 0 <= source.frames - (len(sink.rows) + dropped) <= 1


class _Sized:
    def __init__(self, size: tuple[int, int], frames: int) -> None:
        self.size, self.left = size, frames

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.left == 0:
            return False, None
        self.left -= 1
        time.sleep(0.005)
        return True, np.full((self.size[1], self.size[0], 3), 80, np.uint8)

    def release(self) -> None:
        pass


class ResizingCamera(SyntheticSource):
    """Comes back from each reconnect at another resolution, like a camera reconfigured."""

    sizes = [(320, 240), (640, 360), (160, 120)]

    def __init__(self) -> None:
        super().__init__(width=320, height=240)
        self.connects = 0

    def _connect(self):  # type: ignore[no-untyped-def]
        self.connects += 1
        if self.connects > len(self.sizes):
            self.limit = 0
            return _Sized((16, 16), 0)
        return _Sized(self.sizes[self.connects - 1], 30)

    def _ends_naturally(self) -> bool:
        return self.connects > len(self.sizes)


def test_frame_size_change_after_reconnect(tmp_path, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    import cv2

    from streamer.sinks.video import VideoSink

    caplog.set_level(logging.WARNING, logger="streamer.sources.live")
    source = ResizingCamera()
    seen: list[tuple[int, int]] = []

    class Sizes(Sink):
        def write(self, result: Result) -> None:
            assert result.detections is not None and len(result.detections) == 1
            x1, y1, x2, y2 = result.detections.xyxy[0]
            h, w = result.frame.image.shape[:2]
            assert abs(x1 - w / 4) < 2 and abs(x2 - 3 * w / 4) < 2  # the known box, in this frame's pixels
            seen.append((w, h))

    video = tmp_path / "rec.mp4"
    pipeline = build_pipeline(source, DelayModel(0.0), sinks=[Sizes(), VideoSink(video, fps=25)])
    pipeline.run()
    assert {(320, 240), (640, 360), (160, 120)} <= set(seen)
    assert any("frame size changed from 320x240 to 640x360" in r.getMessage() for r in caplog.records)
    cap = cv2.VideoCapture(str(video))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (320, 240)
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == len(seen)


class _TrackedCapture:
    """Wraps a real OpenCV capture and records whether it was released (a subclass of
    ``cv2.VideoCapture`` would crash the interpreter at exit)."""

    made: list[_TrackedCapture] = []

    def __init__(self, *args: object) -> None:
        self.cap = _REAL_CAPTURE(*args)
        self.released = False
        _TrackedCapture.made.append(self)

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return bool(self.cap.isOpened())

    def release(self) -> None:
        self.released = True
        self.cap.release()


_REAL_CAPTURE = cv2.VideoCapture


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100])
def test_replay_releases_a_capture_that_failed_to_open(tmp_path, monkeypatch, content: bytes) -> None:  # type: ignore[no-untyped-def]
    from streamer.errors import SourceOpenError
    from streamer.sources.live import ReplaySource

    clip = tmp_path / "broken.mp4"
    clip.write_bytes(content)
    _TrackedCapture.made = []
    monkeypatch.setattr(cv2, "VideoCapture", _TrackedCapture)
    source = ReplaySource(str(clip), backend="opencv")
    source.fps = 25.0
    with pytest.raises(SourceOpenError, match="broken.mp4: cannot open as a video"):
        source._connect()  # the reader thread's connect step, here in the test's thread
    made, _TrackedCapture.made = _TrackedCapture.made, []
    assert len(made) == 1 and made[0].released


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100])
def test_replay_through_pyav_says_what_failed_to_open(tmp_path, content: bytes) -> None:  # type: ignore[no-untyped-def]
    from streamer.errors import SourceOpenError
    from streamer.sources.live import ReplaySource

    clip = tmp_path / "broken.mp4"
    clip.write_bytes(content)
    source = ReplaySource(str(clip), backend="pyav")
    with pytest.raises(SourceOpenError, match="broken.mp4: cannot open as a video"):
        source._connect()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(("backend", "transports"), [("opencv", ["tcp"]), ("pyav", ["tcp", "udp"])])
def test_stream_capture_never_writes_the_process_environment(monkeypatch, backend: str, transports: list[str]) -> None:  # type: ignore[no-untyped-def]
    """setenv while other threads call C getenv is a data race: capture threads must never
    write the environment. The URL refuses at once, so the reader connects over and over."""
    import os

    writes: list[tuple[str, ...]] = []
    real_putenv, real_unsetenv = os.putenv, os.unsetenv
    monkeypatch.setattr(os, "putenv", lambda k, v: (writes.append(("set", k, v)), real_putenv(k, v)))
    monkeypatch.setattr(os, "unsetenv", lambda k: (writes.append(("unset", k)), real_unsetenv(k)))
    for transport in transports:
        source = StreamSource(
            f"rtsp://127.0.0.1:{_closed_port()}/none", transport=transport, backend=backend,
            policy=ReconnectPolicy(backoff_initial_s=0.01, backoff_max_s=0.02, open_timeout_s=1),
        )
        source.open()
        try:
            deadline = time.monotonic() + 10
            while source.reconnects < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert source.reconnects >= 3, source.status()
        finally:
            source.close()
    assert writes == []


def test_rtsp_transport_is_chosen_once_per_process(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """OpenCV only: PyAV takes the transport per open (see test_pyav_transport_is_per_source)."""
    from streamer.sources import live

    monkeypatch.delenv(live.CAPTURE_OPTIONS_VAR, raising=False)
    monkeypatch.setattr(live, "_transport", None)
    monkeypatch.setattr(live, "_capturing", False)
    StreamSource("rtsp://127.0.0.1/a", transport="tcp", backend="opencv")
    assert live.CAPTURE_OPTIONS_VAR not in os.environ  # OpenCV's own default is TCP
    StreamSource("rtsp://127.0.0.1/b", transport="tcp", backend="opencv")
    with pytest.raises(ConfigError, match="RTSP transport 'udp' conflicts with 'tcp'"):
        StreamSource("rtsp://127.0.0.1/c", transport="udp", backend="opencv")

    monkeypatch.setattr(live, "_transport", None)
    StreamSource("rtsp://127.0.0.1/d", transport="udp", backend="opencv")
    assert os.environ[live.CAPTURE_OPTIONS_VAR] == "rtsp_transport;udp"

    monkeypatch.setattr(live, "_transport", None)
    monkeypatch.setattr(live, "_capturing", True)  # a capture thread runs: no more writes
    monkeypatch.delenv(live.CAPTURE_OPTIONS_VAR)
    with pytest.raises(ConfigError, match="before the first capture"):
        StreamSource("rtsp://127.0.0.1/e", transport="udp", backend="opencv")
    assert live.CAPTURE_OPTIONS_VAR not in os.environ

    monkeypatch.setattr(live, "_transport", None)
    monkeypatch.setenv(live.CAPTURE_OPTIONS_VAR, "rtsp_transport;udp|stimeout;100")  # the user's own choice wins
    StreamSource("rtsp://127.0.0.1/f", transport="tcp", backend="opencv")
    assert os.environ[live.CAPTURE_OPTIONS_VAR] == "rtsp_transport;udp|stimeout;100"


def test_pyav_transport_is_per_source(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from streamer.sources import live

    monkeypatch.delenv(live.CAPTURE_OPTIONS_VAR, raising=False)
    monkeypatch.setattr(live, "_transport", None)
    tcp = StreamSource("rtsp://127.0.0.1/a", transport="tcp", backend="pyav")
    udp = StreamSource("rtsp://127.0.0.1/b", transport="udp", backend="pyav")
    assert (tcp.transport, udp.transport) == ("tcp", "udp")
    assert live.CAPTURE_OPTIONS_VAR not in os.environ and live._transport is None


class _Script:
    """A capture that plays a script: a (w, h) size gives a frame of that size, an exception
    is raised from ``read()``, and the end of the script reads as a lost stream."""

    def __init__(self, script: list[object]) -> None:
        self.script = list(script)

    def read(self) -> tuple[bool, np.ndarray | None]:
        time.sleep(0.005)
        if not self.script:
            return False, None
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        w, h = step  # type: ignore[misc]
        return True, np.zeros((h, w, 3), np.uint8)

    def release(self) -> None:
        pass


class ScriptedCamera(SyntheticSource):
    """One scripted capture per connect; after the last, the stream ends."""

    def __init__(self, scripts: list[list[object]]) -> None:
        super().__init__(width=64, height=48)
        self.scripts = scripts
        self.connects = 0

    def _connect(self):  # type: ignore[no-untyped-def]
        self.connects += 1
        return _Script(self.scripts[self.connects - 1] if self.connects <= len(self.scripts) else [])

    def _ends_naturally(self) -> bool:
        return self.connects >= len(self.scripts)


def drain(source: SyntheticSource, within_s: float = 10.0) -> list[tuple[int, int]]:
    """The sizes of every frame until the source ends, which it must do within ``within_s``."""
    sizes = []
    deadline = time.monotonic() + within_s
    while (frame := source.read(0.2)) is not None:
        assert time.monotonic() < deadline, f"no end after {within_s} s ({len(sizes)} frames, {source.status()})"
        if frame is not TIMEOUT:
            sizes.append(frame.image.shape[1::-1])
    return sizes


def test_a_capture_that_raises_mid_stream_is_reconnected(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="streamer.sources.live")
    source = ScriptedCamera([[(64, 48)] * 3 + [ValueError("reformat failed")], [(64, 48)] * 4])
    source.policy = ReconnectPolicy(backoff_initial_s=0.01)
    source.open()
    try:
        assert len(drain(source)) == 7  # the frames before and after the error: the reader lived on
    finally:
        source.close()
    assert source.connects == 2 and source.reconnects == 1
    assert any("ValueError: reformat failed" in r.getMessage() for r in caplog.records)


def test_a_size_change_without_a_reconnect_is_seen(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="streamer.sources.live")
    source = ScriptedCamera([[(64, 48)] * 3 + [(128, 96)] * 3])
    source.open()
    try:
        assert drain(source) == [(64, 48)] * 3 + [(128, 96)] * 3
        assert source.status()["size"] == "128x96"
    finally:
        source.close()
    assert any("frame size changed from 64x48 to 128x96" in r.getMessage() for r in caplog.records)


def test_a_read_error_that_quotes_the_url_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    """A driver's exception may quote the URL it was reading: the password never reaches the
    log or the status."""
    caplog.set_level(logging.INFO, logger="streamer.sources.live")
    source = ScriptedCamera([[(64, 48), OSError("rtsp://cam:s3cr3t@10.0.0.9/live: connection reset")], []])
    source.url = "rtsp://cam:s3cr3t@10.0.0.9/live"  # type: ignore[attr-defined]
    source.policy = ReconnectPolicy(backoff_initial_s=0.01)
    source.open()
    try:
        drain(source)
    finally:
        source.close()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "connection reset" in text and "s3cr3t" not in text
    assert "s3cr3t" not in str(source.status())
