"""MultiSource: several live cameras behind one source."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from streamer.errors import SourceOpenError
from streamer.sources.live import ENDED, LiveSource, ReplaySource, SyntheticSource
from streamer.sources.multi import MultiSource


def capture_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("streamer-capture-") and t.is_alive()}


@pytest.mark.parametrize("bad_at", [0, 1, 2])
def test_open_stops_the_cameras_it_started_when_a_later_one_fails(tmp_path: Path, bad_at: int) -> None:
    before = capture_threads()
    cameras: dict[str, LiveSource] = {}
    for i in range(3):
        name = f"cam{i}"
        if i == bad_at:
            cameras[name] = ReplaySource(str(tmp_path / "missing.mp4"), source_id=name)
        else:
            cameras[name] = SyntheticSource(width=64, height=48, fps=50, source_id=name)
    source = MultiSource(cameras)
    with pytest.raises(SourceOpenError, match="missing.mp4"):
        source.open()
    assert capture_threads() - before == set(), "a camera opened before the failure still captures"
    assert all(cameras[f"cam{i}"].state == ENDED for i in range(bad_at))


def test_open_and_close_every_camera() -> None:
    before = capture_threads()
    cameras: dict[str, LiveSource] = {n: SyntheticSource(width=64, height=48, source_id=n) for n in ("a", "b")}
    source = MultiSource(cameras)
    source.open()
    try:
        assert capture_threads() - before == {"streamer-capture-a", "streamer-capture-b"}
    finally:
        source.close()
    assert capture_threads() - before == set()


def test_a_camera_at_fps_0_is_never_served_and_a_capped_one_at_its_rate() -> None:
    """``fps: 0`` holds back every frame of a camera whose capture cannot leave frames
    undecoded (here a synthetic one), as the PyAV captures do by not decoding."""
    import time

    from streamer.sources.base import TIMEOUT

    cameras: dict[str, LiveSource] = {
        "off": SyntheticSource(width=64, height=48, fps=30, source_id="off", max_fps=0),
        "five": SyntheticSource(width=64, height=48, fps=30, source_id="five", max_fps=5),
    }
    source = MultiSource(cameras)
    source.open()
    served: dict[str, int] = {"off": 0, "five": 0}
    try:
        until = time.monotonic() + 2.0
        while time.monotonic() < until:
            frame = source.read(0.1)
            if frame is not None and frame is not TIMEOUT:
                served[frame.source_id] += 1  # type: ignore[union-attr]
    finally:
        source.close()
    assert served["off"] == 0
    assert 8 <= served["five"] <= 12
