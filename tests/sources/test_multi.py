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
