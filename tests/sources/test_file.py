"""The file source on files as users have them: raw elementary streams, damage, odd headers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from streamer.api import build_pipeline
from streamer.sinks.video import VideoSink
from streamer.sources.file import VideoFileSource
from streamer.types import Frame
from tests.conftest import require_tool
from tests.fakes import DelayModel
from tests.sinks.test_video import frame_times


def ffmpeg(*args: str) -> None:
    subprocess.run([require_tool("ffmpeg"), "-v", "error", "-y", *args], check=True, timeout=120)


def read_all(path: Path) -> list[Frame]:
    source = VideoFileSource(path)
    source.open()
    frames = []
    try:
        while (frame := source.read(1.0)) is not None:
            assert isinstance(frame, Frame)
            frames.append(frame)
    finally:
        source.close()
    return frames


@pytest.mark.parametrize(("suffix", "codec"), [(".h264", "h264"), (".hevc", "hevc")])
def test_a_raw_stream_is_timed_by_its_frame_rate(suffix: str, codec: str, bikes: Path, tmp_path: Path) -> None:
    """A Raspberry Pi's ``.h264`` has no container and no timestamps (OpenCV says 0 for every
    frame): the frames are timed at the stream's rate, and the annotated copy lasts as long."""
    raw = tmp_path / f"bikes{suffix}"
    if codec == "h264":
        ffmpeg("-i", str(bikes), "-frames:v", "50", "-c", "copy", "-bsf:v", "h264_mp4toannexb", str(raw))
    else:
        ffmpeg("-i", str(bikes), "-frames:v", "50", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params",
               "log-level=error", str(raw))
    frames = read_all(raw)
    assert len(frames) == 50
    assert [f.pts_s for f in frames] == pytest.approx([i / 25 for i in range(50)], abs=1e-9)
    out = tmp_path / "o.mp4"
    build_pipeline(VideoFileSource(raw), DelayModel(0.0), sinks=[VideoSink(out, fps=25)]).run()
    assert frame_times(out) == pytest.approx([i / 25 for i in range(50)], abs=1e-4)


def test_a_container_with_timestamps_keeps_them(bikes: Path) -> None:
    frames = read_all(bikes)
    assert len(frames) == 250 and frames[1].pts_s == pytest.approx(0.04) and frames[-1].pts_s == pytest.approx(9.96)
