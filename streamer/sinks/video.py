"""Annotated video output: H.264 through PyAV, timed by each frame's own timestamp.

Why H.264 yuv420p in MP4 with ``+faststart``: it is what every browser plays (Chromium
refuses MPEG-4 Part 2, the only codec OpenCV's wheel writes), and the index at the front lets
a browser start playing before the whole file has arrived.

Why timestamps instead of a frame rate: a phone's variable-rate recording keeps its timing,
and a live recording (which writes only the frames the pipeline kept) plays in real time
without first guessing a rate. Each frame is held until the next one arrives, so its duration
(the gap to the next) is known when it is encoded; the last frame lasts as long as the gap
before it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, cast

import cv2  # before av (streamer/__init__.py says why)

# isort: split

import av
import av.container
import av.video.stream
from av.video.reformatter import ColorRange, Colorspace
import numpy as np

from streamer.errors import SinkError
from streamer.sinks.audio import AudioCopy, NoAudio, video_start_s
from streamer.sinks.base import Sink
from streamer.sinks.jsonl import check_writable
from streamer.types import Frame, Result

if TYPE_CHECKING:
    from streamer.sources.base import Source

log = logging.getLogger(__name__)

#: Output file suffix -> FFmpeg muxer. AVI is gone: its index counts frames at one rate, so
#: it cannot hold a variable-rate or live recording's timing.
FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}

#: 90 kHz, the MPEG clock: fine enough that a VFR input's timestamps survive to well under
#: a millisecond. (Matroska stores milliseconds whatever it is given.)
TIME_BASE = Fraction(1, 90000)

#: H.264 encoders in order of preference; the first that FFmpeg offers and that opens wins.
ENCODERS = ("h264_nvenc", "libx264")

#: x264 presets (fastest to slowest), for the validation message.
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")

CLOCKS = ("pts", "wall")

#: The longest one frame may last: MP4 muxing takes a frame duration up to 2^31 ticks, 6.6 h at
#: 90 kHz. A live recording across a longer outage shows the last picture this long.
MAX_GAP_S = 6 * 3600.0

#: A timestamp this far behind the previous frame's is a new timeline (files joined
#: end to end, a stream that restarted its clock), not jitter: the frames after it carry on
#: one frame after the previous one instead of being squeezed one tick apart.
REBASE_S = 0.5

MAX_GAP_TICKS, REBASE_TICKS = round(MAX_GAP_S / TIME_BASE), round(REBASE_S / TIME_BASE)

#: Live recordings are written as fragments and finished as a plain MP4 (FFmpeg's hybrid
#: mode): while recording, each fragment carries its own index, so a recording killed outright
#: (power cut, SIGKILL, OOM) plays up to its last fragment; at the end the whole index is
#: appended (the fragment headers become padding) and no picture data moves. ``+faststart`` would move
#: gigabytes at the stop of a day-long recording, past the time a stop may take. A fragment
#: starts at each keyframe, one every ``LIVE_KEYFRAME_S``.
LIVE_MOVFLAGS = "+hybrid_fragmented"
LIVE_KEYFRAME_S = 2.0


def can_open(codec: str, width: int, height: int) -> bool:
    """Whether FFmpeg's ``codec`` opens for a ``width`` x ``height`` yuv420p stream here.

    NVENC is compiled into PyAV's FFmpeg everywhere but opens only with an NVIDIA driver and
    an encoder engine (data-centre GPUs such as the H100 have none), so it must be tried.
    """
    try:
        ctx = av.CodecContext.create(codec, "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"  # type: ignore[attr-defined]
        ctx.time_base = TIME_BASE
        ctx.open()
    except (av.FFmpegError, ValueError, OSError) as exc:
        log.debug("video encoder %s does not open: %s", codec, exc)
        return False
    return True


def choose_encoder(
    width: int,
    height: int,
    available: Collection[str] | None = None,
    opens: Callable[[str, int, int], bool] = can_open,
) -> str:
    """The H.264 encoder to use: ``h264_nvenc`` when offered and it opens, else ``libx264``.

    ``available`` is FFmpeg's encoder list (``av.codecs_available`` by default) and ``opens``
    the open test; both are parameters so the choice can be tested without a GPU.
    """
    names = av.codecs_available if available is None else available
    for codec in ENCODERS:
        if codec in names and (codec == ENCODERS[-1] or opens(codec, width, height)):
            return codec
    raise SinkError(f"no H.264 encoder: expected one of {list(ENCODERS)} in FFmpeg's encoders, but got none")


def even_crop(image: np.ndarray) -> np.ndarray:
    """``image`` cropped to even width and height (yuv420p halves both for its colour planes).

    Cropping drops the last column and/or row; padding would invent one. Shape (H, W, 3) uint8.
    """
    h, w = image.shape[:2]
    return image[: h - h % 2, : w - w % 2]


def encoder_threads(threads: int | None, cores: int | None = None) -> int:
    """x264 threads for ``threads`` (None: the default for this machine).

    On two cores or fewer one thread: the model needs the cores, and x264 at a fast preset
    keeps up on one (the end-to-end figures in scripts/bench_video.py are no better with
    more). With more cores FFmpeg decides (0): one thread encodes 1080p at 35-40 frames a
    second at ``superfast``, which would cap a pipeline whose model runs faster (a GPU).
    """
    if threads is not None:
        return threads
    return 1 if (cores if cores is not None else os.cpu_count() or 1) <= 2 else 0


class Yuv420Converter:
    """BGR pictures into yuv420p ``av.VideoFrame`` s, through OpenCV's BT.601 conversion.

    ``VideoFrame.from_ndarray(..., "bgr24")`` copies the picture row by row and leaves the
    conversion to the encoder's swscale pass; converting with OpenCV into one reused I420
    buffer and copying its planes costs about 10 % less of the whole encode (640x272 2.18 vs
    2.42 ms, 1080p 25.1 vs 28.3 ms of CPU per frame with x264 ``superfast``). Both use the
    BT.601 limited-range matrix swscale assumes for untagged video: luma agrees within one
    level; chroma is subsampled with another filter, so it differs by a few levels at edges.
    The stream is tagged with that matrix and range (see ``VideoSink``).
    """

    def __init__(self, width: int, height: int) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"yuv420p needs an even width and height, but got {width}x{height}")
        self.width, self.height = width, height
        self._i420 = np.empty((height * 3 // 2, width), np.uint8)
        luma = width * height
        chroma = luma // 4
        flat = self._i420.reshape(-1)
        self._planes = (
            self._i420[:height],
            flat[luma:luma + chroma].reshape(height // 2, width // 2),
            flat[luma + chroma:].reshape(height // 2, width // 2),
        )

    def __call__(self, image: np.ndarray) -> av.VideoFrame:
        """``image`` ((height, width, 3) uint8 BGR) as a new yuv420p frame."""
        cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420, dst=self._i420)
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        for plane, source in zip(frame.planes, self._planes, strict=True):
            rows, cols = source.shape
            # A plane's rows may be padded past its width (``line_size``).
            np.frombuffer(plane, np.uint8).reshape(rows, plane.line_size)[:, :cols] = source
        return frame


class VideoSink(Sink):
    """Writes every result's rendered picture to an H.264 file, each at its own timestamp.

    ``clock`` says which timestamp: ``"pts"`` is the frame's stream time (``Frame.pts_s``, the
    container time of a file), falling back to ``index / fps`` when a frame has none;
    ``"wall"`` is ``Frame.captured_at`` relative to the first frame, for live sources whose
    frames carry no stream time and whose dropped frames must leave gaps. ``measure_fps=True``
    (the live callers' flag) means ``clock="wall"``. ``fps`` is only a hint then: the rate
    announced in the stream header and the duration of a lone frame.

    The output is written to ``<path>.part`` and renamed to ``path`` by :meth:`close` (or
    :meth:`flush`), so a crash never leaves a half-written file under the final name, and a
    stop still finalizes what was processed. ``audio_from`` names the file whose first audio
    stream is carried over (see :mod:`streamer.sinks.audio`). A frame of another size than the
    first (a camera that came back at another resolution) is resized to the first size.
    ``like`` is the file being annotated: the output takes its frame rate and its non-square
    pixels, read when the sink opens (a pipeline opens its file source before its sinks).

    ``crf``: x264 quality, 0 (lossless) to 51, lower is better; ``preset``: x264 speed preset;
    ``threads``: encoder threads (0 lets FFmpeg decide; None: :func:`encoder_threads`).
    ``encoders`` overrides FFmpeg's encoder list (tests). The default preset is ``superfast``:
    on a 2-core machine (scripts/bench_video.py, bikes 640x272, 5 interleaved rounds) annotate
    spent 32.8 CPU ms per frame without video, 35.1 with superfast and 38.6 with veryfast;
    veryfast files are about 30 % smaller. Faster than superfast costs quality: at CRF 23 on
    bikes, ``ultrafast`` (even with CABAC and B-frames turned back on) gives SSIM 0.976-0.981
    against superfast's 0.986 in a 23-140 % larger file.
    """

    name = "video"
    needs_render = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float | None = 25.0,
        measure_fps: bool = False,
        *,
        clock: str | None = None,
        like: Source | None = None,
        audio_from: str | os.PathLike[str] | None = None,
        crf: int = 23,
        preset: str = "superfast",
        threads: int | None = None,
        encoders: Collection[str] | None = None,
    ) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in FORMATS:
            raise SinkError(f"{self.path}: unsupported video file type '{suffix}', expecting one of {sorted(FORMATS)}")
        clock = clock or ("wall" if measure_fps else "pts")
        if clock not in CLOCKS:
            raise SinkError(f"{self.path}: video clock must be one of {list(CLOCKS)}, but got {clock!r}")
        if not (isinstance(crf, int) and 0 <= crf <= 51):
            raise SinkError(f"{self.path}: video crf must be an integer from 0 to 51, but got {crf!r}")
        if preset not in PRESETS:
            raise SinkError(f"{self.path}: video preset must be one of {list(PRESETS)}, but got {preset!r}")
        if not (threads is None or (isinstance(threads, int) and threads >= 0)):
            raise SinkError(f"{self.path}: video threads must be an integer >= 0, but got {threads!r}")
        self.format = FORMATS[suffix]
        self.fps = fps if fps and fps > 0 else 25.0
        self.clock = clock
        self.like = like
        self.audio_from = Path(audio_from) if audio_from is not None else None
        self.crf, self.preset, self.threads = crf, preset, encoder_threads(threads)
        self.encoders = encoders
        #: Non-square pixels of the source (width over height), kept so the video displays at
        #: its shape; taken from ``like`` when the sink opens.
        self.sample_aspect: Fraction | None = None
        self.temp_path = self.path.with_name(self.path.name + ".part")
        self.codec: str | None = None
        self.frames = 0
        #: Frames whose timestamp did not increase, written one tick after the previous one.
        self.bumped = 0
        self.cropped = False
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._audio: AudioCopy | None = None
        self._audio_note = ""
        self._size: tuple[int, int] | None = None
        self._to_yuv: Yuv420Converter | None = None
        self._first_s: float | None = None
        self._held: av.VideoFrame | None = None
        self._held_pts = 0  # output ticks of the held frame
        self._shift = 0  # output ticks added to every timestamp after a new timeline or a cut outage
        self.rebased = 0
        self.gaps_cut = 0
        self._last_gap = 0
        self._durations: dict[int, int] = {}
        self._end = 0  # output ticks: where the last encoded frame ends
        self._finished = False

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        check_writable(self.path, "video")
        if self.like is not None:
            if self.like.fps:
                self.fps = self.like.fps
            self.sample_aspect = self.like.sample_aspect

    def _time_s(self, frame: Frame) -> float:
        if self.clock == "wall":
            return frame.captured_at
        return frame.pts_s if frame.pts_s is not None else frame.index / self.fps

    def _open_container(self, width: int, height: int, first_s: float) -> None:
        """The file and its stream for ``width`` x ``height`` pictures, the first at ``first_s``."""
        self.codec = choose_encoder(width, height, self.encoders)
        options: dict[str, str] = {}
        if self.format in ("mp4", "mov"):
            options["movflags"] = LIVE_MOVFLAGS if self.clock == "wall" else "+faststart"
            if self.clock == "wall":
                options["flush_packets"] = "1"  # each fragment reaches the disk when it is complete
        try:
            container = av.open(str(self.temp_path), "w", format=self.format, options=options)
        except (av.FFmpegError, OSError) as exc:
            raise SinkError(f"{self.path}: cannot create the video file: {exc}") from None
        try:
            stream = cast(av.video.stream.VideoStream,
                          container.add_stream(self.codec, rate=Fraction(self.fps).limit_denominator(1001)))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.time_base = TIME_BASE
            stream.codec_context.time_base = TIME_BASE
            stream.codec_context.thread_count = self.threads
            if self.sample_aspect is not None:
                stream.codec_context.sample_aspect_ratio = self.sample_aspect
            # Say what the pictures are (Yuv420Converter: BT.601, limited range). Untagged, a
            # player guesses, and for HD it guesses BT.709: every colour would shift.
            stream.codec_context.colorspace = Colorspace.ITU601
            stream.codec_context.color_range = ColorRange.MPEG
            if self.codec == "libx264":
                stream.options = {"crf": str(self.crf), "preset": self.preset}
            else:  # NVENC: its own preset scale (p1 fastest .. p7 best) and constant-quality knob
                stream.options = {"preset": "p4", "rc": "vbr", "cq": str(self.crf)}
            if self.clock == "wall":
                # No B-frames for live recordings: an outage of more than about 50 minutes
                # between two frames would put a composition offset past what MP4 readers
                # accept (2^28 ticks), and every player would show the file out of order.
                stream.options = {**stream.options, "bf": "0", "g": str(max(1, round(LIVE_KEYFRAME_S * self.fps)))}
        except (av.FFmpegError, ValueError) as exc:
            container.close()
            self.temp_path.unlink(missing_ok=True)
            raise SinkError(f"{self.path}: cannot set up the {self.codec} stream for {width}x{height}: {exc}") from None
        self._container, self._stream = container, stream
        self._to_yuv = Yuv420Converter(width, height)
        if self.audio_from is not None:
            self._open_audio(container, first_s)

    def _open_audio(self, container: av.container.OutputContainer, first_s: float) -> None:
        assert self.audio_from is not None
        try:
            origin = video_start_s(self.audio_from) + first_s
            self._audio = AudioCopy(self.audio_from, container, origin)
            self._audio_note = self._audio.describe()
        except NoAudio as exc:  # a silent source is normal
            self._audio_note = "no audio"
            log.info("%s: video written without audio: %s", self.path, exc)
        except (SinkError, av.FFmpegError, OSError) as exc:
            # The annotated pictures are still worth writing.
            self._audio_note = "audio not kept"
            log.warning("%s: video written without the source's audio: %s", self.path, exc)

    def _audio_failed(self, exc: Exception) -> None:
        """Audio that fails part-way stops there; the pictures go on (and are the point)."""
        assert self._audio is not None
        log.warning("%s: the audio stops at %.2f s: %s", self.path, float(self._end * TIME_BASE), exc)
        self._audio_note = f"{self._audio.describe()}, stopped at {float(self._end * TIME_BASE):.2f} s"
        try:
            self._audio.close()
        except (av.FFmpegError, OSError):
            pass
        self._audio = None

    # -- frames ------------------------------------------------------------------------------

    def write(self, result: Result) -> None:
        if self._finished:
            raise SinkError(f"{self.path}: write after close")
        t = self._time_s(result.frame)
        image = result.image
        if self._container is None:
            h, w = image.shape[:2]
            size = (w - w % 2, h - h % 2)
            if min(size) < 2:
                raise SinkError(f"{self.path}: frame size must be at least 2x2, but got {w}x{h}")
            self._open_container(*size, first_s=t)  # on failure the next frame tries again
            self._first_s, self._size, self.cropped = t, size, (w % 2, h % 2) != (0, 0)
        assert self._size is not None and self._first_s is not None
        h, w = image.shape[:2]
        if (w - w % 2, h - h % 2) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        else:
            image = even_crop(image)
        assert self._to_yuv is not None
        frame = self._to_yuv(image)
        pts = self._next_pts(round((t - self._first_s) / TIME_BASE) + self._shift)
        frame.pts = pts
        frame.time_base = TIME_BASE
        held, held_pts = self._held, self._held_pts
        # The new frame is held before the previous one is encoded: if encoding fails, that
        # frame is lost, but it is never sent again with a timestamp the encoder has seen.
        self._held, self._held_pts = frame, pts
        if held is not None:
            self._last_gap = pts - held_pts
            self._encode(held, held_pts, self._last_gap)
        if self._audio is not None:
            try:
                self._audio.pump(float(pts * TIME_BASE))
            except (SinkError, av.FFmpegError, OSError) as exc:
                self._audio_failed(exc)

    def _next_pts(self, pts: int) -> int:
        """``pts`` (output ticks), made later than the held frame's and at most ``MAX_GAP_S`` after it."""
        if self._held is None:
            return pts
        previous = self._held_pts
        if pts <= previous:
            if previous - pts > REBASE_TICKS:
                # A new timeline: carry on one frame after the previous frame.
                step = self._last_gap or round(1 / (self.fps * TIME_BASE))
                self._shift += previous + step - pts
                self.rebased += 1
                log.warning("%s: timestamps jumped back %.2f s; the frames after it carry on from %.2f s",
                            self.path, float((previous - pts) * TIME_BASE), float((previous + step) * TIME_BASE))
                return previous + step
            self.bumped += 1
            return previous + 1
        if pts - previous > MAX_GAP_TICKS:
            self._shift -= pts - previous - MAX_GAP_TICKS
            self.gaps_cut += 1
            log.warning("%s: a gap of %.0f s between two frames is cut to %.0f s", self.path,
                        float((pts - previous) * TIME_BASE), MAX_GAP_S)
            return previous + MAX_GAP_TICKS
        return pts

    def _encode(self, frame: av.VideoFrame | None, pts: int = 0, duration: int = 0) -> None:
        assert self._stream is not None and self._container is not None
        if frame is not None:
            # Encoders emit packets in decode order, without durations: look them up by pts.
            self._durations[pts] = duration
            self._end = pts + duration
            self.frames += 1
        for packet in self._stream.encode(frame):
            if packet.pts is not None:
                packet.duration = self._durations.pop(packet.pts, 0)
            self._container.mux(packet)

    # -- end ---------------------------------------------------------------------------------

    def flush(self) -> None:
        self._finish()

    def close(self) -> None:
        self._finish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        container = self._container
        if container is None:
            return  # no frame arrived: no file
        try:
            if self._held is not None:
                held, self._held = self._held, None
                self._encode(held, self._held_pts, self._last_gap or round(1 / (self.fps * TIME_BASE)))
            self._encode(None)
            if self._audio is not None:
                try:
                    self._audio.finish(float(self._end * TIME_BASE))
                except (SinkError, av.FFmpegError, OSError) as exc:
                    self._audio_failed(exc)
            container.close()
            os.replace(self.temp_path, self.path)
        except (av.FFmpegError, OSError) as exc:
            if self._audio is not None:
                self._audio.close()
            try:
                container.close()
            except (av.FFmpegError, OSError):
                pass
            # What was written stays on disk: it may not play (a full disk, say, stopped the
            # index being written), but deleting it would lose every picture for certain.
            kept = self.temp_path.is_file() and self.temp_path.stat().st_size > 0
            if not kept:
                self.temp_path.unlink(missing_ok=True)
            raise SinkError(f"{self.path}: cannot finish the video file: {exc}"
                            + (f"; what was written is kept in {self.temp_path}" if kept else "")) from None
        finally:
            self._container = self._stream = self._audio = None

    def summary(self) -> str:
        parts = [f"{self.path}: {self.frames} frames"]
        if self._size:
            parts.append(f"{self._size[0]}x{self._size[1]}" + (" (cropped to even size)" if self.cropped else ""))
        if self.codec:
            parts.append(f"{self.codec} crf {self.crf}" + (f" {self.preset}" if self.codec == "libx264" else ""))
        if self.frames and self._end:
            parts.append(f"{float(self._end * TIME_BASE):.2f} s")
        if self._audio_note:
            parts.append(self._audio_note)
        if self.bumped:
            parts.append(f"{self.bumped} non-increasing timestamps moved one tick later")
        if self.rebased:
            parts.append(f"{self.rebased} jump(s) back in time joined on")
        if self.gaps_cut:
            parts.append(f"{self.gaps_cut} gap(s) over {MAX_GAP_S / 3600:g} h cut")
        return ", ".join(parts)
