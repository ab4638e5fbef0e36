"""The annotated video: H.264 that browsers play, each frame at its own time, the sound kept.

Checked with the real FFmpeg tools (``ffprobe`` reads what was written, ``ffmpeg`` makes the
inputs: a clip with a tone, a variable-rate clip) and the real pipeline.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from streamer.api import build_pipeline
from streamer.errors import SinkError
from streamer.sinks.base import Sink
from streamer.sinks.video import VideoSink, Yuv420Converter, can_open, choose_encoder, encoder_threads, even_crop
from streamer.sources.file import VideoFileSource
from streamer.sources.live import SyntheticSource
from streamer.types import Frame, Result
from tests.conftest import require_tool
from tests.fakes import DelayModel
from tests.test_cli_annotate import run_cli

# -- helpers -----------------------------------------------------------------------------------


def ffprobe(path: Path, *args: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(
        [require_tool("ffprobe"), "-v", "error", "-of", "json", *args, str(path)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    return dict(json.loads(out))


def streams(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return list(ffprobe(path, "-show_streams", "-count_frames")["streams"])


def frame_times(path: Path) -> list[float]:
    frames = ffprobe(path, "-select_streams", "v:0", "-show_entries", "frame=pts_time")["frames"]
    return [float(f["pts_time"]) for f in frames]


def ffmpeg(*args: str) -> None:
    subprocess.run([require_tool("ffmpeg"), "-v", "error", "-y", *args], check=True, timeout=120)


def top_level_boxes(path: Path) -> list[bytes]:
    """The MP4 top-level box types in file order (``moov`` before ``mdat`` is faststart)."""
    data, boxes, offset = path.read_bytes(), [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset:offset + 4], "big")
        boxes.append(data[offset + 4:offset + 8])
        if size == 1:
            size = int.from_bytes(data[offset + 8:offset + 16], "big")
        if size < 8:
            break
        offset += size
    return boxes


def result(index: int, pts_s: float | None, size: tuple[int, int] = (64, 48), captured_at: float = 0.0) -> Result:
    w, h = size
    image = np.full((h, w, 3), (index * 7) % 256, np.uint8)
    return Result(frame=Frame("t", index, image, pts_s, captured_at))


def write_all(sink: VideoSink, results: list[Result]) -> VideoSink:
    sink.open()
    for r in results:
        sink.write(r)
    sink.close()
    return sink


@pytest.fixture(scope="module")
def clip_with_sound(bikes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bikes' first 3 s (75 frames) with a 440 Hz tone in AAC, as a phone would record it."""
    path = tmp_path_factory.mktemp("clips") / "bikes-tone.mp4"
    ffmpeg("-i", str(bikes), "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "3",
           "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(path))
    return path


@pytest.fixture(scope="module")
def vfr_clip(bikes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 frames of bikes at irregular times: gaps of 1 ms to 320 ms (a variable-rate file)."""
    path = tmp_path_factory.mktemp("clips") / "bikes-vfr.mp4"
    ffmpeg("-i", str(bikes), "-frames:v", "40",
           "-vf", "setpts='(N*0.04+mod(N,4)*0.009+floor(N/20)*0.3)/TB'", "-fps_mode", "passthrough",
           "-video_track_timescale", "1000", "-c:v", "libx264", "-preset", "ultrafast", str(path))
    return path


@pytest.fixture(scope="module")
def annotated(clip_with_sound: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``streamer annotate`` (the real CLI, the real default model) on the clip with sound."""
    out = tmp_path_factory.mktemp("annotated") / "bikes-tone.mp4"
    proc = run_cli("annotate", str(clip_with_sound), "-o", str(out), "--jsonl", str(out.with_suffix(".jsonl")))
    assert proc.returncode == 0, proc.stderr
    return out


# -- encoder choice ---------------------------------------------------------------------------


def always(codec: str, width: int, height: int) -> bool:
    return True


def never(codec: str, width: int, height: int) -> bool:
    return False


@pytest.mark.parametrize(
    ("available", "opens", "expected"),
    [
        (set(), always, SinkError),
        ({"libx264"}, never, "libx264"),  # the software encoder is not test-opened: it always works
        ({"h264_nvenc", "libx264"}, always, "h264_nvenc"),
        ({"h264_nvenc", "libx264"}, never, "libx264"),  # no NVIDIA driver, or a GPU without NVENC
        ({"h264_nvenc"}, never, SinkError),
        ({"mpeg4", "mjpeg"}, always, SinkError),
    ],
)
def test_choose_encoder(available: set[str], opens: Callable[[str, int, int], bool], expected: object) -> None:
    if isinstance(expected, str):
        assert choose_encoder(640, 272, available, opens) == expected
    else:
        with pytest.raises(SinkError, match="no H.264 encoder"):
            choose_encoder(640, 272, available, opens)


def test_choose_encoder_with_this_machines_ffmpeg() -> None:
    # PyAV's FFmpeg lists NVENC everywhere; it opens only with an NVIDIA driver and engine.
    nvenc = can_open("h264_nvenc", 640, 272)
    assert can_open("libx264", 640, 272)
    assert choose_encoder(640, 272) == ("h264_nvenc" if nvenc else "libx264")
    assert not can_open("no_such_encoder", 640, 272)


# -- construction and small pieces ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("o.avi", {}, r"unsupported video file type '.avi', expecting one of \['.m4v', '.mkv', '.mov', '.mp4'\]"),
        ("o", {}, "unsupported video file type ''"),
        ("o.mp4", {"crf": 52}, "crf must be an integer from 0 to 51, but got 52"),
        ("o.mp4", {"crf": 23.5}, "crf must be an integer from 0 to 51, but got 23.5"),
        ("o.mp4", {"preset": "quick"}, "preset must be one of .*'veryfast'.* but got 'quick'"),
        ("o.mp4", {"threads": -1}, "threads must be an integer >= 0, but got -1"),
        ("o.mp4", {"clock": "frame"}, r"clock must be one of \['pts', 'wall'\], but got 'frame'"),
    ],
)
def test_bad_arguments(name: str, kwargs: dict, message: str, tmp_path: Path) -> None:  # type: ignore[type-arg]
    with pytest.raises(SinkError, match=message):
        VideoSink(tmp_path / name, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "clock"),
    [({}, "pts"), ({"measure_fps": True}, "wall"), ({"fps": None, "measure_fps": True}, "wall"), ({"clock": "wall"}, "wall")],
)
def test_clock_follows_the_callers_flags(kwargs: dict, clock: str, tmp_path: Path) -> None:  # type: ignore[type-arg]
    assert VideoSink(tmp_path / "o.mp4", **kwargs).clock == clock


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((0, 0, 3), (0, 0, 3)), ((2, 2, 3), (2, 2, 3)), ((5, 4, 3), (4, 4, 3)), ((4, 7, 3), (4, 6, 3)), ((273, 641, 3), (272, 640, 3))],
)
def test_even_crop(shape: tuple[int, int, int], expected: tuple[int, int, int]) -> None:
    image = np.arange(int(np.prod(shape)), dtype=np.uint32).reshape(shape)
    cropped = even_crop(image)
    assert cropped.shape == expected
    assert np.array_equal(cropped, image[: expected[0], : expected[1]])  # the top-left is kept as it was


@pytest.mark.parametrize(
    ("bgr", "yuv"),
    # BT.601 limited range, the matrix untagged video is read with: white, black, pure red,
    # green, blue and a mid grey.
    [((255, 255, 255), (235, 128, 128)), ((0, 0, 0), (16, 128, 128)), ((0, 0, 255), (81, 90, 240)),
     ((0, 255, 0), (145, 54, 34)), ((255, 0, 0), (41, 240, 110)), ((128, 128, 128), (126, 128, 128))],
)
@pytest.mark.parametrize("size", [(646, 270), (2, 2)])
def test_yuv_conversion_of_known_colours(bgr: tuple[int, int, int], yuv: tuple[int, int, int], size: tuple[int, int]) -> None:
    # 646 wide: the frame's planes are padded past their width (line_size 656 / 336 here).
    w, h = size
    frame = Yuv420Converter(w, h)(np.full((h, w, 3), bgr, np.uint8))
    for plane, value, (rows, cols) in zip(frame.planes, yuv, [(h, w), (h // 2, w // 2), (h // 2, w // 2)], strict=True):
        pixels = np.frombuffer(plane, np.uint8).reshape(rows, plane.line_size)[:, :cols]
        assert np.abs(pixels.astype(int) - value).max() <= 1


@pytest.mark.parametrize("size", [(640, 272), (646, 270), (1922, 1080)])
def test_yuv_conversion_matches_swscale(size: tuple[int, int], bikes: Path) -> None:
    """On a real picture the planes agree with FFmpeg's own conversion within rounding, and a
    cropped (strided) view converts like its copy."""
    import av
    import cv2

    w, h = size
    capture = cv2.VideoCapture(str(bikes))
    ok, picture = capture.read()
    capture.release()
    assert ok
    image = cv2.resize(picture, (w + 1, h + 1))[:h, :w]  # a view whose rows are not contiguous
    ours = Yuv420Converter(w, h)(image)
    theirs = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24").reformat(format="yuv420p")
    # Luma within rounding; chroma is subsampled with another filter, so it differs at edges.
    for a, b, (mean, most) in zip(ours.planes, theirs.planes, ((1.0, 1), (0.5, 12), (0.5, 12)), strict=True):
        pa = np.frombuffer(a, np.uint8).reshape(-1, a.line_size)[:, :a.width].astype(int)
        pb = np.frombuffer(b, np.uint8).reshape(-1, b.line_size)[:, :b.width].astype(int)
        assert pa.shape == pb.shape
        assert np.abs(pa - pb).mean() < mean and np.abs(pa - pb).max() <= most
    assert np.abs(ours.to_ndarray(format="bgr24").astype(int) - image).mean() < 2.0


def test_yuv_conversion_refuses_an_odd_size() -> None:
    with pytest.raises(ValueError, match="even width and height, but got 5x4"):
        Yuv420Converter(5, 4)


@pytest.mark.parametrize(("threads", "cores", "expected"), [(None, 1, 1), (None, 2, 1), (None, 4, 0), (None, 64, 0),
                                                             (3, 2, 3), (0, 2, 0), (1, 16, 1)])
def test_encoder_threads(threads: int | None, cores: int, expected: int) -> None:
    assert encoder_threads(threads, cores) == expected


# -- files written directly -------------------------------------------------------------------


def test_no_frames_writes_no_file(tmp_path: Path) -> None:
    sink = write_all(VideoSink(tmp_path / "o.mp4"), [])
    assert list(tmp_path.iterdir()) == []
    assert sink.summary() == f"{tmp_path / 'o.mp4'}: 0 frames"


def test_written_under_a_temporary_name_until_closed(tmp_path: Path) -> None:
    require_tool("ffprobe")
    sink = VideoSink(tmp_path / "o.mp4")
    sink.open()
    for i in range(40):  # past the encoder's lookahead, so packets have reached the file
        sink.write(result(i, i / 25))
    assert not (tmp_path / "o.mp4").exists() and (tmp_path / "o.mp4.part").exists()
    sink.close()
    sink.close()  # a second close (after flush, say) changes nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"]
    assert frame_times(tmp_path / "o.mp4") == pytest.approx([i / 25 for i in range(40)], abs=1e-6)
    with pytest.raises(SinkError, match="write after close"):
        sink.write(result(40, 1.6))


@pytest.mark.parametrize(
    ("times", "expected", "bumped"),
    [
        ([0.0], [0.0], 0),
        ([0.0, 0.1, 0.1, 0.2], [0.0, 0.1, 0.1 + 1 / 90000, 0.2], 1),  # a repeated time: one tick later
        ([0.0, 0.5, 0.3, 0.6], [0.0, 0.5, 0.5 + 1 / 90000, 0.6], 1),  # a time going back
        ([1.0, 1.04, 1.5], [0.0, 0.04, 0.5], 0),  # the file starts at the first frame
    ],
)
def test_timestamps(times: list[float], expected: list[float], bumped: int, tmp_path: Path) -> None:
    require_tool("ffprobe")
    sink = write_all(VideoSink(tmp_path / "o.mp4"), [result(i, t) for i, t in enumerate(times)])
    assert frame_times(tmp_path / "o.mp4") == pytest.approx(expected, abs=1e-5)
    assert sink.bumped == bumped
    assert ("non-increasing" in sink.summary()) == bool(bumped)


def test_frames_without_a_time_are_spaced_at_the_rate(tmp_path: Path) -> None:
    require_tool("ffprobe")
    write_all(VideoSink(tmp_path / "o.mp4", fps=10), [result(i, None) for i in range(4)])
    assert frame_times(tmp_path / "o.mp4") == pytest.approx([0, 0.1, 0.2, 0.3], abs=1e-6)


@pytest.mark.parametrize(
    ("name", "sizes", "expected"),
    [
        ("o.mp4", [(64, 48)] * 3, (64, 48)),
        ("o.mp4", [(65, 49)] * 3, (64, 48)),  # odd: cropped by one column and one row
        ("o.mp4", [(64, 48), (128, 96), (30, 20)], (64, 48)),  # later sizes scaled to the first
        ("o.mov", [(64, 48)] * 3, (64, 48)),
        ("o.mkv", [(64, 48)] * 3, (64, 48)),
        ("o.m4v", [(64, 48)] * 3, (64, 48)),
    ],
)
def test_containers_and_sizes(name: str, sizes: list[tuple[int, int]], expected: tuple[int, int], tmp_path: Path) -> None:
    require_tool("ffprobe")
    path = tmp_path / name
    sink = write_all(VideoSink(path), [result(i, i / 25, size) for i, size in enumerate(sizes)])
    (video,) = streams(path)
    assert (video["codec_name"], video["pix_fmt"]) == ("h264", "yuv420p")
    assert (video["width"], video["height"]) == expected
    assert int(video["nb_read_frames"]) == len(sizes)
    assert ("cropped to even size" in sink.summary()) == (sizes[0] != expected)


def test_colours_survive_an_hd_clip_tagged_bt709(tmp_path: Path) -> None:
    """A phone-style HD clip (BT.709, tagged) read by the file source and written again: the
    output says which matrix and range it uses (BT.601, limited), and decoding it by those tags
    gives back the pictures that went in. Read as BT.709, which players assume for untagged HD,
    the same file would be off by far more."""
    import av

    require_tool("ffprobe")
    clip = tmp_path / "bt709.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25", "-t", "0.4",
           "-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p", "-c:v", "libx264", "-crf", "10",
           "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv", str(clip))
    source = VideoFileSource(clip)
    source.open()
    pictures = []
    sink = VideoSink(tmp_path / "out.mp4", crf=10)
    sink.open()
    while (frame := source.read(1.0)) is not None:
        pictures.append(frame.image.copy())
        sink.write(Result(frame=frame))
    sink.close()
    source.close()
    (video,) = streams(tmp_path / "out.mp4")
    assert (video.get("color_space"), video.get("color_range")) == ("bt470bg", "tv")
    with av.open(str(tmp_path / "out.mp4")) as container:
        decoded = [f for f in container.decode(video=0)]
    assert len(decoded) == len(pictures) == 10
    by_tags = np.mean([np.abs(f.to_ndarray(format="bgr24").astype(int) - p).mean() for f, p in zip(decoded, pictures)])
    as_bt709 = np.mean([np.abs(f.reformat(format="bgr24", src_colorspace="ITU709").to_ndarray().astype(int) - p).mean()
                        for f, p in zip(decoded, pictures)])
    assert by_tags < 2.5
    assert as_bt709 > 3 * by_tags


def test_too_small_a_frame(tmp_path: Path) -> None:
    sink = VideoSink(tmp_path / "o.mp4")
    sink.open()
    with pytest.raises(SinkError, match="at least 2x2, but got 1x1"):
        sink.write(result(0, 0.0, (1, 1)))


def test_audio_from_a_silent_file_writes_video_only(bikes: Path, tmp_path: Path) -> None:
    require_tool("ffprobe")
    sink = write_all(VideoSink(tmp_path / "o.mp4", audio_from=bikes), [result(i, i / 25) for i in range(3)])
    assert [s["codec_type"] for s in streams(tmp_path / "o.mp4")] == ["video"]
    assert "no audio" in sink.summary()


# -- through the pipeline ---------------------------------------------------------------------


def test_annotate_writes_h264_that_starts_with_its_index(annotated: Path, clip_with_sound: Path) -> None:
    (video, *_) = streams(annotated)
    (source, *_) = streams(clip_with_sound)
    assert (video["codec_name"], video["pix_fmt"], video["width"], video["height"]) == ("h264", "yuv420p", 640, 272)
    assert int(video["nb_read_frames"]) == int(source["nb_read_frames"]) == 75
    assert video["avg_frame_rate"] == "25/1"
    boxes = top_level_boxes(annotated)
    assert boxes.index(b"moov") < boxes.index(b"mdat"), boxes  # +faststart
    assert frame_times(annotated) == pytest.approx(frame_times(clip_with_sound), abs=1e-3)


def test_annotate_keeps_the_sound(annotated: Path) -> None:
    assert [s["codec_type"] for s in streams(annotated)] == ["video", "audio"]


def run_file(clip: Path, sink: VideoSink) -> None:
    source = VideoFileSource(clip)
    build_pipeline(source, DelayModel(0.0), sinks=[sink]).run()


def test_sound_is_copied(clip_with_sound: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    sink = VideoSink(out, audio_from=clip_with_sound)
    run_file(clip_with_sound, sink)
    video, audio = streams(out)
    (_, source_audio) = streams(clip_with_sound)
    assert (video["codec_type"], audio["codec_type"], audio["codec_name"]) == ("video", "audio", "aac")
    assert float(audio["duration"]) == pytest.approx(float(source_audio["duration"]), abs=0.05)
    assert int(audio["nb_read_frames"]) == int(source_audio["nb_read_frames"])  # every packet, none re-encoded
    assert float(audio["start_time"]) == pytest.approx(float(source_audio["start_time"]), abs=1e-3)
    assert sink.summary().endswith("audio aac copied")


def test_sound_in_another_codec_is_transcoded_to_aac(clip_with_sound: Path, tmp_path: Path) -> None:
    pcm = tmp_path / "pcm.mov"
    ffmpeg("-i", str(clip_with_sound), "-c:v", "copy", "-c:a", "pcm_s16le", str(pcm))
    out = tmp_path / "o.mp4"
    sink = VideoSink(out, audio_from=pcm)
    run_file(pcm, sink)
    _, audio = streams(out)
    assert audio["codec_name"] == "aac"
    assert float(audio["duration"]) == pytest.approx(3.0, abs=0.1)
    assert "audio pcm_s16le transcoded to aac" in sink.summary()


def test_stopped_early_the_sound_ends_with_the_pictures(clip_with_sound: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    sink = VideoSink(out, audio_from=clip_with_sound)
    source = VideoFileSource(clip_with_sound)
    source.open()
    sink.open()
    for _ in range(25):  # 1 s of the 3 s
        frame = source.read(1.0)
        assert isinstance(frame, Frame)
        sink.write(Result(frame=frame))
    sink.close()
    source.close()
    video, audio = streams(out)
    assert float(video["duration"]) == pytest.approx(1.0, abs=1e-3)
    assert float(audio["duration"]) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize(
    ("video_delay", "audio_delay"),
    [
        (0.0, 0.5),  # sound starts half a second after the pictures: it still does
        (0.5, 0.0),  # pictures start late: the sound before the first picture is dropped
        (0.5, 0.8),  # both late: the file starts with the first picture, the sound 0.3 s later
    ],
)
def test_sound_keeps_its_place(video_delay: float, audio_delay: float, bikes: Path, tmp_path: Path) -> None:
    clip = tmp_path / "offset.mp4"
    ffmpeg("-t", "3", "-i", str(bikes), "-itsoffset", str(audio_delay),
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=2",
           "-map", "0:v", "-map", "1:a", "-vf", f"setpts=PTS+{video_delay}/TB",
           "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(clip))
    source_video, source_audio = streams(clip)
    gap = float(source_audio["start_time"]) - float(source_video["start_time"])
    assert gap == pytest.approx(audio_delay - video_delay, abs=0.06)  # the clip is what it should be
    out = tmp_path / "o.mp4"
    run_file(clip, VideoSink(out, audio_from=clip))
    video, audio = streams(out)
    assert float(video["start_time"]) == 0.0
    assert float(audio["start_time"]) == pytest.approx(max(gap, 0.0), abs=0.03)  # within one AAC packet
    source_end = float(source_audio["start_time"]) + float(source_audio["duration"]) - float(source_video["start_time"])
    assert float(audio["start_time"]) + float(audio["duration"]) == pytest.approx(source_end, abs=0.03)


def test_variable_frame_rate_keeps_every_timestamp(vfr_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    run_file(vfr_clip, VideoSink(out))
    expected = frame_times(vfr_clip)
    assert len(expected) == 40 and len({round(b - a, 3) for a, b in itertools.pairwise(expected)}) >= 3  # truly VFR
    assert frame_times(out) == pytest.approx(expected, abs=1e-3)


class Captures(Sink):
    def __init__(self) -> None:
        self.times: list[float] = []

    def write(self, result: Result) -> None:
        self.times.append(result.frame.captured_at)


def test_live_recording_lasts_as_long_as_it_was_recorded(tmp_path: Path) -> None:
    """A 30 fps camera and a model at about 12 fps: frames are dropped, the time is not."""
    require_tool("ffprobe")
    out = tmp_path / "rec.mp4"
    captures = Captures()
    pipeline = build_pipeline(SyntheticSource(width=320, height=240, fps=30), DelayModel(0.08),
                              sinks=[captures, VideoSink(out, fps=None, measure_fps=True)])
    runner = threading.Thread(target=pipeline.run)
    runner.start()
    deadline = time.monotonic() + 30
    while not captures.times and time.monotonic() < deadline:
        time.sleep(0.01)
    first = captures.times[0]
    time.sleep(4.0)
    pipeline.stop()
    stopped = time.monotonic()
    runner.join(timeout=30)
    assert not runner.is_alive()
    (video,) = streams(out)
    assert int(video["nb_read_frames"]) == len(captures.times) < 4 * 30  # frames were dropped
    assert float(video["duration"]) == pytest.approx(stopped - first, rel=0.05)


# -- in a browser ------------------------------------------------------------------------------


def browser_state(video: Path) -> dict:  # type: ignore[type-arg]
    from tests.browser import video_state

    return video_state(video)


def test_plays_in_chromium(annotated: Path) -> None:
    state = browser_state(annotated)
    assert "error" not in state, f"Chromium refused the file: MediaError code {state.get('error')}"
    assert (state["w"], state["h"]) == (640, 272)
    assert state["duration"] == pytest.approx(3.0, abs=0.05)


def test_chromium_refuses_the_old_mp4v_output(annotated: Path, tmp_path: Path) -> None:
    """The control: the same pictures as MPEG-4 Part 2 (OpenCV's codec) do not play."""
    old = tmp_path / "mp4v.mp4"
    ffmpeg("-i", str(annotated), "-an", "-c:v", "mpeg4", "-tag:v", "mp4v", str(old))
    assert browser_state(old) == {"error": 4}  # MEDIA_ERR_SRC_NOT_SUPPORTED


# -- faults and awkward inputs ----------------------------------------------------------------


@pytest.mark.parametrize(("container", "channels"), [("avi", 1), ("mkv", 2)])
def test_pcm_without_a_channel_order_is_transcoded(container: str, channels: int, bikes: Path, tmp_path: Path) -> None:
    """PCM in AVI or Matroska reads as "N channels" with no order, which the AAC encoder
    refuses; the sound used to take the whole video file with it."""
    clip = tmp_path / f"cam.{container}"
    ffmpeg("-i", str(bikes), "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000", "-t", "2",
           "-map", "0:v", "-map", "1:a", "-c:v", "mjpeg", "-c:a", "pcm_s16le", "-ac", str(channels), str(clip))
    out = tmp_path / "o.mp4"
    sink = VideoSink(out, audio_from=clip)
    run_file(clip, sink)
    video, audio = streams(out)
    assert (video["codec_name"], audio["codec_name"], audio["channels"]) == ("h264", "aac", channels)
    assert float(audio["duration"]) == pytest.approx(2.0, abs=0.1)
    assert "audio pcm_s16le transcoded to aac" in sink.summary()


def test_mp3_is_named_and_copied_and_a_second_audio_stream_is_mentioned(bikes: Path, tmp_path: Path) -> None:
    clip = tmp_path / "two.mkv"
    ffmpeg("-i", str(bikes), "-f", "lavfi", "-i", "sine=d=2", "-f", "lavfi", "-i", "sine=frequency=880:d=2",
           "-t", "2", "-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:v", "copy", "-c:a", "libmp3lame", str(clip))
    out = tmp_path / "o.mp4"
    sink = VideoSink(out, audio_from=clip)
    run_file(clip, sink)
    assert [s["codec_name"] for s in streams(out)] == ["h264", "mp3"]
    assert sink.summary().endswith("audio mp3 copied (the first of 2 audio streams)")


def test_a_failed_first_write_leaves_the_sink_ready_for_the_next(tmp_path: Path) -> None:
    require_tool("ffprobe")
    sink = VideoSink(tmp_path / "o.mp4")
    sink.open()
    with pytest.raises(SinkError, match="at least 2x2, but got 64x1"):
        sink.write(result(0, 0.0, (64, 1)))
    for i in range(1, 4):
        sink.write(result(i, i / 25))
    sink.close()
    assert frame_times(tmp_path / "o.mp4") == pytest.approx([0.0, 0.04, 0.08], abs=1e-5)


class FailingMux:
    """The output container, with the ``fail_at``-th mux (or the close) raising a disk error."""

    def __init__(self, container: object, fail_at: int = 0, fail_close: bool = False) -> None:
        self.container, self.fail_at, self.fail_close, self.calls = container, fail_at, fail_close, 0

    def mux(self, packet: object) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise av.error.OSError(28, "No space left on device")
        self.container.mux(packet)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.container.close()  # type: ignore[attr-defined]
        if self.fail_close:
            raise av.error.OSError(28, "No space left on device")

    def __getattr__(self, name: str) -> object:
        return getattr(self.container, name)


def test_one_failed_write_loses_one_frame_not_the_file(tmp_path: Path) -> None:
    """The frame being encoded when the disk hiccups is lost; the frames after it are written
    at their own times (the lost one was once sent again at a time already used, and every
    later packet failed)."""
    require_tool("ffprobe")
    sink = VideoSink(tmp_path / "o.mp4")
    sink.open()
    sink.write(result(0, 0.0))
    sink._container = FailingMux(sink._container, fail_at=10)  # type: ignore[assignment]
    failures = 0
    for i in range(1, 60):
        try:
            sink.write(result(i, i / 25))
        except av.error.OSError:
            failures += 1
    sink.close()
    assert failures == 1
    times = frame_times(tmp_path / "o.mp4")
    assert len(times) == 59 and times == sorted(times) and times[-1] == pytest.approx(59 / 25, abs=1e-5)


def test_a_file_that_cannot_be_finished_is_kept_and_named(tmp_path: Path) -> None:
    sink = VideoSink(tmp_path / "o.mp4")
    sink.open()
    sink.write(result(0, 0.0))
    sink._container = FailingMux(sink._container, fail_close=True)  # type: ignore[assignment]
    for i in range(1, 30):
        sink.write(result(i, i / 25))
    with pytest.raises(SinkError, match=r"cannot finish the video file: .*No space left.*kept in .*o\.mp4\.part"):
        sink.close()
    assert (tmp_path / "o.mp4.part").stat().st_size > 0


def test_timestamps_that_jump_back_are_joined_on(tmp_path: Path) -> None:
    """Two recordings joined end to end (each starting at 0): the second carries on one frame
    after the first instead of being squeezed one tick apart."""
    require_tool("ffprobe")
    times = [i / 25 for i in range(25)] + [i / 25 for i in range(5)]  # 1 s, then 0.2 s from 0 again
    sink = write_all(VideoSink(tmp_path / "o.mp4"), [result(i, t) for i, t in enumerate(times)])
    assert frame_times(tmp_path / "o.mp4") == pytest.approx([i / 25 for i in range(30)], abs=1e-5)
    assert (sink.rebased, sink.bumped) == (1, 0)
    assert "1 jump(s) back in time joined on" in sink.summary()


def test_a_live_recording_across_a_long_outage_plays_in_order(tmp_path: Path) -> None:
    """25 frames, a camera gone for an hour, 25 more; then an outage past what MP4 can time
    (6.6 h), which is cut to 6 h. With B-frames the hour put composition offsets past what
    MP4 readers accept ("CTTS invalid") and every player showed the file out of order."""
    ffprobe_path = require_tool("ffprobe")
    starts = (0.0, 3600.0, 3600.0 + 14 * 3600)
    captured = [start + i / 25 for start in starts for i in range(25)]
    sink = write_all(VideoSink(tmp_path / "o.mp4", measure_fps=True),
                     [result(i, None, captured_at=t) for i, t in enumerate(captured)])
    probe = subprocess.run([ffprobe_path, "-v", "warning", "-select_streams", "v:0", "-show_entries",
                            "frame=pts_time", "-of", "csv=p=0", str(tmp_path / "o.mp4")],
                           capture_output=True, text=True, timeout=60, check=True)
    assert "CTTS" not in probe.stderr, probe.stderr
    times = [float(x.strip(",")) for x in probe.stdout.split()]
    # the 14 h outage lasts 6 h: the third part starts 6 h after the second part's last frame
    expected = captured[:50] + [captured[49] + 6 * 3600 + i / 25 for i in range(25)]
    assert times == pytest.approx(expected, abs=1e-4)
    assert sink.gaps_cut == 1


def test_a_finished_live_recording_is_a_plain_mp4_that_plays_in_chromium(tmp_path: Path) -> None:
    """Live recordings are written as fragments (so a killed recording still plays; see
    tests/test_signals.py) and finished as a plain MP4, with the whole index appended at the
    end, nothing moved: Chromium plays them at their full length."""
    out = tmp_path / "rec.mp4"
    frames = [result(i, None, (320, 240), captured_at=100.0 + i / 15) for i in range(45)]  # 3 s at 15 fps
    write_all(VideoSink(out, fps=None, measure_fps=True), frames)
    assert top_level_boxes(out) == [b"ftyp", b"free", b"mdat", b"moov"]
    state = browser_state(out)
    assert "error" not in state, f"Chromium refused the file: MediaError code {state.get('error')}"
    assert (state["w"], state["h"]) == (320, 240)
    assert state["duration"] == pytest.approx(3.0, abs=0.1)
