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


def test_damage_in_the_middle_skips_what_cannot_be_decoded(bikes: Path, tmp_path: Path) -> None:
    """2000 bytes overwritten inside the picture data: the decoder loses two frames and finds
    its feet at the next; everything after them is still read (it used to stop at frame 120)."""
    damaged = tmp_path / "damaged.mp4"
    data = bytearray(bikes.read_bytes())
    data[254934:256934] = b"\xff" * 2000
    damaged.write_bytes(bytes(data))
    source = VideoFileSource(damaged)
    source.open()
    frames = []
    while (frame := source.read(1.0)) is not None:
        frames.append(frame)
    source.close()
    assert len(frames) == 248 and source.undecodable == 2
    times = [f.pts_s for f in frames]
    assert times == sorted(times) and times[-1] == pytest.approx(9.96)
    assert source.summary() == f"{damaged}: read 248 of 250 frames; 2 undecodable frame(s) skipped (damaged data)"


@pytest.mark.parametrize("suffix", [".mkv", ".ts"])
def test_an_estimated_frame_count_is_no_reason_to_call_a_file_damaged(suffix: str, bikes: Path, tmp_path: Path) -> None:
    """Matroska and MPEG-TS do not count their frames; the estimate (duration x rate) can be a
    frame over, here with sound a little longer than the pictures."""
    clip = tmp_path / f"bikes{suffix}"
    ffmpeg("-i", str(bikes), "-f", "lavfi", "-i", "sine=d=10.1", "-map", "0:v", "-map", "1:a", "-c:v", "copy",
           "-c:a", "libmp3lame", str(clip))
    source = VideoFileSource(clip)
    source.open()
    n = 0
    while source.read(1.0) is not None:
        n += 1
    source.close()
    assert n == 250 and source.summary() is None


def test_a_stop_is_not_a_truncated_file(bikes: Path) -> None:
    source = VideoFileSource(bikes)
    source.open()
    for _ in range(10):
        assert source.read(1.0) is not None
    source.close()
    assert source.summary() is None


@pytest.mark.parametrize(("rotate", "size", "sar"), [(0, (720, 576), "16:15"), (90, (576, 720), "15:16")])
def test_non_square_pixels_keep_their_shape(rotate: int, size: tuple[int, int], sar: str, bikes: Path,
                                            tmp_path: Path) -> None:
    """A PAL-shaped 720x576 clip with 16:15 pixels shows at 4:3; its annotated copy says so too
    (it came out without the aspect and showed squeezed, at 5:4). Turned by its rotation
    tag, the pixels are 15:16."""
    from tests.sinks.test_video import streams
    from tests.test_cli_annotate import run_cli

    clip, tagged = tmp_path / "pal.mp4", tmp_path / "pal-turned.mp4"
    ffmpeg("-i", str(bikes), "-t", "1", "-vf", "scale=720:576,setsar=16/15", "-c:v", "libx264", "-preset", "ultrafast",
           str(clip))
    if rotate:
        ffmpeg("-i", str(clip), "-c", "copy", "-metadata:s:v", f"rotate={rotate}", str(tagged))
        clip = tagged
    out = tmp_path / "o.mp4"
    proc = run_cli("annotate", str(clip), "-o", str(out), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (video,) = streams(out)
    assert ((video["width"], video["height"]), video["sample_aspect_ratio"]) == (size, sar)
