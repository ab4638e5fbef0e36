"""PyAvCapture: argument checks, and against a real loopback RTSP server: stream timestamps,
a transport per source, masked errors, and the fast first frame the small probe buys."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np
import pytest

from streamer.errors import ConfigError, SourceOpenError
from streamer.sources.av_capture import PyAvCapture
from streamer.sources.base import TIMEOUT
from streamer.sources.live import ReconnectPolicy, StreamSource
from streamer.types import Frame
from tests.rtsp import RtspServer, require_rtsp

PASSWORD = "pa55:w@rd"


@pytest.fixture(scope="module")
def server() -> Iterator[RtspServer]:
    require_rtsp()
    srv = RtspServer({"cam": "sample:bikes"}, user="viewer", password=PASSWORD).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"transport": ""}, "invalid RTSP transport '', expecting one of ['tcp', 'udp']"),
        ({"transport": "http"}, "invalid RTSP transport 'http'"),
        ({"open_timeout_s": 0}, "open_timeout_s must be a positive number of seconds, but got 0"),
        ({"read_timeout_s": math.nan}, "read_timeout_s must be a positive number of seconds, but got nan"),
        ({"read_timeout_s": math.inf}, "read_timeout_s must be a positive number of seconds, but got inf"),
        ({"threads": 0}, "decoder threads must be 1 or 2, but got 0"),
        ({"threads": 4}, "decoder threads must be 1 or 2, but got 4"),
    ],
)
def test_bad_arguments_fail_before_connecting(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        PyAvCapture("rtsp://user:secret@192.0.2.1/cam", **kwargs)  # type: ignore[arg-type]


def test_frames_are_bgr_with_stream_timestamps(server: RtspServer) -> None:
    cap = PyAvCapture(server.url("cam", "viewer", PASSWORD), open_timeout_s=5, read_timeout_s=2)
    try:
        images, stamps = [], []
        for _ in range(30):
            ok, image = cap.read()
            assert ok and image is not None, cap.error
            images.append(image)
            stamps.append(cap.pts_s)
    finally:
        cap.release()
    assert cap.fps == pytest.approx(25.0)
    assert all(i.shape == (272, 640, 3) and i.dtype == np.uint8 for i in images)
    # Only frames before the sender's first RTCP report lack a timestamp.
    known = [t for t in stamps if t is not None]
    assert len(known) >= 28
    steps = np.diff(known)
    assert np.allclose(steps, 1 / 25, atol=1e-3), steps


def test_tcp_and_udp_sources_side_by_side(server: RtspServer) -> None:
    """One process, two transports at once: impossible through OpenCV's process-wide options."""
    policy = ReconnectPolicy(stall_timeout_s=3, open_timeout_s=3)
    sources = [StreamSource(server.url("cam", "viewer", PASSWORD), source_id=t, policy=policy, transport=t, backend="pyav")
               for t in ("tcp", "udp")]
    frames: dict[str, list[Frame]] = {s.source_id: [] for s in sources}
    for source in sources:
        source.open()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(len(f) < 10 for f in frames.values()):
            for source in sources:
                frame = source.read(0.05)
                if isinstance(frame, Frame):
                    frames[source.source_id].append(frame)
    finally:
        for source in sources:
            source.close()
    for transport, got in frames.items():
        assert len(got) >= 10, (transport, [s.status() for s in sources])
        assert got[-1].pts_s is not None and got[-1].pts_s > 0  # the stream's clock reaches Frame
        assert got[-1].image.shape == (272, 640, 3)


@pytest.mark.parametrize(
    ("user", "password", "message"),
    [
        (None, None, "cannot connect (Server returned 401 Unauthorized"),
        ("viewer", "wrong-" + PASSWORD, "rtsp://viewer:***@127.0.0.1"),
    ],
)
def test_open_errors_say_why_and_mask_the_password(server: RtspServer, user: str | None, password: str | None,
                                                   message: str) -> None:
    url = server.url("cam", user, password)
    with pytest.raises(SourceOpenError) as info:
        PyAvCapture(url, open_timeout_s=2, read_timeout_s=1)
    text = str(info.value)
    assert message in text and "401" in text
    assert PASSWORD not in text and "pa55" not in text


def test_unknown_mount_is_refused_at_once(server: RtspServer) -> None:
    started = time.monotonic()
    with pytest.raises(SourceOpenError, match="404 Not Found"):
        PyAvCapture(server.url("nope", "viewer", PASSWORD), open_timeout_s=3, read_timeout_s=1)
    assert time.monotonic() - started < 1.0


def test_stream_source_first_frame_soon_after_open(server: RtspServer) -> None:
    source = StreamSource(server.url("cam", "viewer", PASSWORD), backend="pyav")
    started = time.monotonic()
    source.open()
    try:
        frame = TIMEOUT
        while frame is TIMEOUT and time.monotonic() - started < 5:
            frame = source.read(0.1)
    finally:
        source.close()
    assert isinstance(frame, Frame)
    # Not a speed check: FFmpeg's default probe waits for 1 s of stream, which a live server
    # sends in 1 s of wall time however fast the machine; the small probe must not wait for it.
    assert frame.captured_at - started < 1.0, f"{frame.captured_at - started:.2f} s to the first frame"
