"""The loopback RTSP server fixture, checked with the client the product really uses.

Why these tests exist: reconnect, stall and authentication tests elsewhere rely on
``tests/rtsp.py`` behaving like a real camera. Each property they lean on is proven
here with both clients the product reads streams with, over TCP: ``cv2.VideoCapture(url,
cv2.CAP_FFMPEG, [open/read timeouts])`` and ``PyAvCapture`` (PyAV, per-open options):
frames of the clip's size at the clip's rate, a deterministic start at frame 0, a
fast False after the server dies, a working restart on the same port, Basic auth,
several mounts at once, a silent mount that never delivers a frame, a hung
(SIGSTOP) server, shared mounts, and no server process left behind.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import cv2
import numpy as np
import pytest

from streamer.assets import sample_path
from streamer.errors import SourceOpenError
from streamer.sources.av_capture import PyAvCapture
from tests.rtsp import RtspServer, require_rtsp, rtsp_server_fixture

CLIP = "sample:bikes"
CLIP_SHAPE = (272, 640, 3)  # rows, columns, channels as OpenCV returns them
CLIP_FPS = 25.0
PATTERN_SHAPE = (240, 320, 3)  # the server's videotestsrc size
OPEN_MS = 5000
READ_MS = 2000

# One server for the read-only tests; fresh servers for the ones that kill or pause.
server = rtsp_server_fixture(
    {"cam": CLIP, "pattern": "testsrc"},
    silent_mounts=["silent"],
    scope="module",
    name="server",
)


@pytest.fixture(autouse=True)
def tcp_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    """RTP over TCP, as the product configures it.

    The variable is process-wide and read at every open; once it is set at all FFmpeg
    defaults to UDP, so it must name ``rtsp_transport;tcp``. monkeypatch restores it.
    """
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")


@pytest.fixture(params=["opencv", "pyav"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def spawn() -> Iterator[Callable[..., RtspServer]]:
    """Start servers private to one test; every one is stopped (and checked gone) after it."""
    require_rtsp()
    servers: list[RtspServer] = []

    def start(mounts: dict[str, str], **options: Any) -> RtspServer:
        started = RtspServer(mounts, **options)
        servers.append(started)
        return started.start()

    try:
        yield start
    finally:
        for started in servers:
            started.stop()
        assert not any(started.running for started in servers)


@pytest.fixture(scope="module")
def clip_thumbnails() -> list[np.ndarray]:
    """Every frame of the clip as a small grey thumbnail, to tell which frame was served."""
    capture = cv2.VideoCapture(str(sample_path(CLIP)))
    thumbnails: list[np.ndarray] = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            thumbnails.append(thumbnail(frame))
    finally:
        capture.release()
    assert len(thumbnails) == 250
    return thumbnails


def thumbnail(frame: np.ndarray) -> np.ndarray:
    """A 160x68 grey version: enough to identify a frame, cheap to compare 250 of them."""
    return cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (160, 68), interpolation=cv2.INTER_AREA)


def clip_index(frame: np.ndarray, thumbnails: list[np.ndarray]) -> int:
    """Index of the clip frame that ``frame`` (a decoded stream frame) is closest to."""
    small = thumbnail(frame)
    distances = [float(cv2.absdiff(small, candidate).mean()) for candidate in thumbnails]
    return int(np.argmin(distances))


class AvClient:
    """``PyAvCapture`` behind the few ``cv2.VideoCapture`` calls these tests make."""

    def __init__(self, url: str, open_ms: int, read_ms: int) -> None:
        try:
            self.cap: PyAvCapture | None = PyAvCapture(url, open_timeout_s=open_ms / 1000, read_timeout_s=read_ms / 1000)
        except SourceOpenError:
            self.cap = None

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.cap is not None

    def read(self) -> tuple[bool, np.ndarray | None]:
        return self.cap.read() if self.cap is not None else (False, None)

    def get(self, prop: int) -> float:
        assert prop == cv2.CAP_PROP_FPS, "only the frame rate is asked for"
        return float(self.cap.fps or 0.0) if self.cap is not None else 0.0

    def release(self) -> None:
        if self.cap is not None:
            self.cap.release()


@contextmanager
def capture(url: str, backend: str, open_ms: int = OPEN_MS, read_ms: int = READ_MS) -> Iterator[Any]:
    """The product's way of opening a stream with ``backend``, released even when the test fails."""
    if backend == "pyav":
        cap: Any = AvClient(url, open_ms, read_ms)
    else:
        cap = cv2.VideoCapture(
            url,
            cv2.CAP_FFMPEG,
            [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, open_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, read_ms],
        )
    try:
        yield cap
    finally:
        cap.release()


def read_frames(cap: Any, count: int) -> list[np.ndarray]:
    """Read ``count`` frames, failing the test at the first failed read."""
    frames = []
    for index in range(count):
        ok, frame = cap.read()
        assert ok, f"read {index} failed"
        frames.append(frame)
    return frames


def test_clip_mount_serves_the_clip_at_its_size_and_rate(
    backend: str, server: RtspServer, clip_thumbnails: list[np.ndarray]
) -> None:
    """Size, reported fps, steady rate, and a deterministic start at the clip's frame 0."""
    with capture(server.url("cam"), backend) as cap:
        assert cap.isOpened()
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(CLIP_FPS)
        first, *_ = read_frames(cap, 30)  # frames buffered while FFmpeg probed come in a burst
        assert first.shape == CLIP_SHAPE
        assert clip_index(first, clip_thumbnails) == 0
        started = time.monotonic()
        frames = read_frames(cap, 50)
        rate = len(frames) / (time.monotonic() - started)
    assert 21.0 <= rate <= 29.0, f"read {rate:.1f} fps from a {CLIP_FPS} fps clip"
    assert all(frame.shape == CLIP_SHAPE for frame in frames)


def test_two_mounts_at_once(backend: str, server: RtspServer) -> None:
    """Two captures on two mounts read side by side, each with its own size."""
    with capture(server.url("cam"), backend) as cam, capture(server.url("pattern"), backend) as pattern:
        assert cam.isOpened() and pattern.isOpened()
        for _ in range(25):
            ok_cam, cam_frame = cam.read()
            ok_pattern, pattern_frame = pattern.read()
            assert ok_cam and ok_pattern
            assert cam_frame.shape == CLIP_SHAPE
            assert pattern_frame.shape == PATTERN_SHAPE


def test_silent_mount_never_delivers_a_frame(backend: str, server: RtspServer) -> None:
    """The silent mount hangs the open until the client's timeout; other mounts still work.

    Also: an unknown mount is refused at once (404), which is not a stall.
    """
    started = time.monotonic()
    with capture(server.url("silent"), backend, open_ms=1000, read_ms=1000) as cap:
        delivered = cap.isOpened() and cap.read()[0]
        elapsed = time.monotonic() - started
    assert not delivered
    assert 0.8 <= elapsed <= 4.0, f"gave up after {elapsed:.2f} s with a 1 s open timeout"

    started = time.monotonic()
    with capture(server.url("no-such-mount"), backend) as cap:
        assert not cap.isOpened()
    assert time.monotonic() - started < 1.0

    with capture(server.url("pattern"), backend) as cap:  # the hung DESCRIBE blocked nothing else
        assert cap.read()[0]


def test_kill_fails_reads_fast_and_restart_serves_again(backend: str, spawn: Callable[..., RtspServer]) -> None:
    """SIGKILL → read() False within 1 s; the port is reused on restart; no process is left."""
    rtsp = spawn({"cam": CLIP})
    port, first_pid = rtsp.port, rtsp.pid
    with capture(rtsp.url("cam"), backend) as cap:
        read_frames(cap, 40)
        killed = time.monotonic()
        rtsp.kill()
        frames_after_kill = 0
        while cap.read()[0]:  # frames FFmpeg had already buffered, then False
            frames_after_kill += 1
            assert frames_after_kill < 50
        latency = time.monotonic() - killed
    assert latency < 1.0, f"read() returned False {latency:.2f} s after the kill"
    assert not rtsp.running

    with capture(rtsp.url("cam"), backend) as cap:  # down: connection refused, at once
        assert not cap.isOpened()

    rtsp.restart()
    assert rtsp.port == port and rtsp.pid != first_pid
    with capture(rtsp.url("cam"), backend) as cap:
        assert read_frames(cap, 5)[0].shape == CLIP_SHAPE

    pid = rtsp.pid
    assert pid is not None
    rtsp.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_basic_auth(backend: str, spawn: Callable[..., RtspServer]) -> None:
    """The right credentials open and read; a wrong password or none fail within 1 s."""
    rtsp = spawn({"cam": CLIP}, user="viewer", password="p@ss:word")  # percent-encoded in url()
    with capture(rtsp.url("cam", "viewer", "p@ss:word"), backend) as cap:
        assert cap.isOpened()
        assert read_frames(cap, 1)[0].shape == CLIP_SHAPE
    for url in (rtsp.url("cam", "viewer", "wrong"), rtsp.url("cam")):
        started = time.monotonic()
        with capture(url, backend) as cap:
            assert not cap.isOpened()
        assert time.monotonic() - started < 1.0


def test_paused_server_times_reads_out_and_resumes(backend: str, spawn: Callable[..., RtspServer]) -> None:
    """SIGSTOP keeps the connection up but silent: reads fail only by timeout (≈3× T)."""
    rtsp = spawn({"pattern": "testsrc"})
    read_ms = 500
    with capture(rtsp.url("pattern"), backend, read_ms=read_ms) as cap:
        read_frames(cap, 40)
        rtsp.pause()
        paused = time.monotonic()
        while cap.read()[0]:  # stop at the first False: each later read waits again
            pass
        waited = time.monotonic() - paused
        rtsp.resume()
    assert read_ms / 1000 <= waited <= 6 * read_ms / 1000, f"hang noticed after {waited:.2f} s"
    with capture(rtsp.url("pattern"), backend) as cap:
        assert cap.read()[0]


def test_shared_mount_late_joiner_starts_mid_stream(
    backend: str, spawn: Callable[..., RtspServer], clip_thumbnails: list[np.ndarray]
) -> None:
    """Shared: a second client joins the running stream at a keyframe, not at frame 0."""
    rtsp = spawn({"cam": CLIP}, shared=True)
    with capture(rtsp.url("cam"), backend) as first:
        assert clip_index(read_frames(first, 40)[0], clip_thumbnails) == 0
        with capture(rtsp.url("cam"), backend) as late:
            joined = read_frames(late, 1)[0]
            assert clip_index(joined, clip_thumbnails) >= 25
            assert first.read()[0]  # the first client keeps reading alongside


def test_fps_override(backend: str, spawn: Callable[..., RtspServer]) -> None:
    """``fps=`` serves the clip at another rate, and the client sees that rate."""
    rtsp = spawn({"cam": CLIP}, fps=50)
    with capture(rtsp.url("cam"), backend) as cap:
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(50.0)
        read_frames(cap, 60)
        started = time.monotonic()
        frames = read_frames(cap, 50)
        rate = len(frames) / (time.monotonic() - started)
    assert 40.0 <= rate <= 60.0, f"read {rate:.1f} fps at fps=50"
