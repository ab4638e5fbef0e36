"""Recorded sources: video files, single images and folders of images.

These are lossless sources: the pipeline runs them with ``BLOCK`` queues, so every frame
reaches every sink, in order.
"""

from __future__ import annotations

import logging
import os
import time
from fractions import Fraction
from pathlib import Path

import cv2  # before av (streamer/__init__.py says why)

# isort: split

import av
import numpy as np

from streamer.errors import SourceOpenError
from streamer.sources.base import Source
from streamer.types import Frame

log = logging.getLogger(__name__)

#: Failed reads in a row, short of the frame count the file announces, before the file is
#: taken to end there. Damage in the middle (a bad sector, a broken upload) makes the decoder
#: fail a few frames and then find its feet at the next keyframe.
MAX_UNDECODABLE = 50

#: An estimated frame count (Matroska, MPEG-TS: duration x rate) may miss by a frame or two.
ESTIMATE_SLACK = 0.02

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def _check_file(path: Path) -> None:
    if not path.exists():
        raise SourceOpenError(f"{path}: no such file or directory")
    if not path.is_file():
        raise SourceOpenError(f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise SourceOpenError(f"{path}: permission denied")
    if path.stat().st_size == 0:
        raise SourceOpenError(f"{path}: file is empty (0 bytes)")


def diagnose_container(path: Path) -> str:
    """Why FFmpeg could not open ``path``, as far as its streams or its first bytes tell."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                kinds = sorted({s.type for s in container.streams})
                return "it has no video stream" + (f", only {' and '.join(kinds)}" if kinds else "")
    except (av.FFmpegError, OSError, UnicodeDecodeError):
        pass  # not a container FFmpeg reads at all: the bytes may tell why
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            size = path.stat().st_size
            if len(head) >= 8 and head[4:8] in (b"ftyp", b"free", b"mdat", b"moov", b"wide"):
                # An MP4/MOV: walk the top-level boxes looking for the index.
                offset, boxes = 0, []
                while offset + 8 <= size and len(boxes) < 1000:
                    f.seek(offset)
                    header = f.read(16)
                    box_size = int.from_bytes(header[:4], "big")
                    kind = header[4:8]
                    if box_size == 1 and len(header) >= 16:
                        box_size = int.from_bytes(header[8:16], "big")
                    boxes.append(kind)
                    if box_size < 8:
                        break
                    offset += box_size
                if b"moov" not in boxes:
                    return (
                        "the MP4 index ('moov') is missing: the file is truncated or its recording was never "
                        "finalized (no frame can be located without it)"
                    )
                return "the MP4 container is damaged"
    except OSError as exc:
        return f"cannot read it: {exc.strerror}"
    return "not a video file, or damaged"


class VideoFileSource(Source):
    """Frames of a video file decoded by OpenCV's FFmpeg backend.

    ``pts_s`` is the container timestamp of each frame. A stream without timestamps (a raw
    ``.h264`` or ``.hevc`` elementary stream, where OpenCV reports 0 for every frame) is timed
    by the frame rate instead. A file that ends before the frame count its header announced
    (a truncated download, say) yields what it can and reports the shortfall in :meth:`summary`.
    """

    live = False

    def __init__(self, path: str | os.PathLike[str], source_id: str | None = None, decode_threads: int = 0) -> None:
        self.path = Path(path)
        self.source_id = source_id or self.path.name
        self.decode_threads = decode_threads
        self._cap: cv2.VideoCapture | None = None
        self._index = 0
        self._pending: np.ndarray | None = None
        self._first_pts: float | None = None
        self._untimed = False  # the second frame's timestamp was not after the first's: the rate times them
        self._ended = False  # read to the end (not stopped early)
        self._count_exact = False  # the header counts the frames (MP4, MOV) rather than estimating
        #: Frames the decoder could not read, in damaged stretches it got past.
        self.undecodable = 0
        #: The pixels' shape, width over height, when they are not square (PAL DVD, anamorphic
        #: footage); for the pictures as read, that is after any rotation.
        self.sample_aspect: Fraction | None = None
        self.width = 0
        self.height = 0

    def open(self) -> None:
        _check_file(self.path)
        params = [cv2.CAP_PROP_N_THREADS, self.decode_threads] if self.decode_threads > 0 else []
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise SourceOpenError(f"{self.path}: cannot open as a video ({diagnose_container(self.path)})")
        ok, image = cap.read()
        if not ok or image is None:
            cap.release()
            raise SourceOpenError(f"{self.path}: no decodable video frames")
        self._cap = cap
        self._pending = image
        self.height, self.width = image.shape[:2]
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else None
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.total_frames = count if count > 0 else None
        try:
            with av.open(str(self.path)) as container:
                if container.streams.video:
                    stream = container.streams.video[0]
                    self._count_exact = stream.frames > 0
                    sar = stream.sample_aspect_ratio
                    if sar is not None and sar > 0 and sar != 1:
                        turned = (stream.codec_context.height, stream.codec_context.width) == (self.width, self.height)
                        self.sample_aspect = 1 / sar if turned and self.width != self.height else sar
        except (av.FFmpegError, OSError):
            self._count_exact = False

    def read(self, timeout: float) -> Frame | None:
        assert self._cap is not None, "read() before open()"
        if self._pending is not None:
            image, self._pending = self._pending, None
        else:
            ok, image = self._cap.read()
            failed = 0
            while (not ok or image is None) and failed < MAX_UNDECODABLE and self._more_announced(failed):
                failed += 1
                ok, image = self._cap.read()
            if not ok or image is None:
                self._ended = True
                return None
            if failed:
                self.undecodable += failed
                log.warning("%s: %d undecodable frame(s) skipped after frame %d (damaged data)",
                            self.path, failed, self._index - 1)
        pts_ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        pts = self._frame_time(float(pts_ms) / 1000.0 if np.isfinite(pts_ms) and pts_ms >= 0 else None)
        frame = Frame(self.source_id, self._index, image, pts, time.monotonic())
        self._index += 1
        return frame

    def _frame_time(self, pts: float | None) -> float | None:
        """This frame's time: its timestamp, or (for a stream whose timestamps never move on
        from the first frame's) the first frame's time plus its index over the frame rate."""
        if self._index == 0:
            self._first_pts = pts
            return pts
        if self._index == 1 and not (pts is not None and self._first_pts is not None and pts > self._first_pts):
            self._untimed = True
            log.info("%s: the stream has no timestamps; timing its frames at %s fps", self.path,
                     f"{self.fps:g}" if self.fps else "the output's")
        if self._untimed:
            return (self._first_pts or 0.0) + self._index / self.fps if self.fps else None
        return pts

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _more_announced(self, failed: int) -> bool:
        """Whether the header announces frames past the ones read and failed so far."""
        return self.total_frames is not None and self._index + self.undecodable + failed < self.total_frames

    def summary(self) -> str | None:
        total = self.total_frames
        slack = 0 if self._count_exact else max(2, round(ESTIMATE_SLACK * (total or 0)))
        # Only a file read to its end can be short; a stop is not the file's fault.
        short = self._ended and total is not None and total - self._index - self.undecodable > slack
        if not short and not self.undecodable:
            return None
        note = f"{self.path}: read {self._index}" + (f" of {total} frames" if total else " frames")
        if short:
            note += " announced by the file (the file ends early: truncated or damaged)"
        if self.undecodable:
            note += f"; {self.undecodable} undecodable frame(s) skipped (damaged data)"
        return note


class ImageSource(Source):
    """One image file, or every image in a folder (sorted by name), as a sequence of frames."""

    live = False

    def __init__(self, path: str | os.PathLike[str], source_id: str | None = None) -> None:
        self.path = Path(path)
        self.source_id = source_id or self.path.name
        self.files: list[Path] = []
        self._index = 0
        self.skipped: list[str] = []

    def open(self) -> None:
        if not self.path.exists():
            raise SourceOpenError(f"{self.path}: no such file or directory")
        if self.path.is_dir():
            self.files = sorted(
                p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not self.files:
                suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
                raise SourceOpenError(f"{self.path}: folder has no images ({suffixes})")
        else:
            _check_file(self.path)
            if cv2.imread(str(self.path), cv2.IMREAD_COLOR) is None:
                raise SourceOpenError(f"{self.path}: cannot decode as an image")
            self.files = [self.path]
        self.total_frames = len(self.files)

    def read(self, timeout: float) -> Frame | None:
        while self._index < len(self.files):
            path = self.files[self._index]
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            index = self._index
            self._index += 1
            if image is None:
                log.warning("%s: cannot decode as an image, skipped", path)
                self.skipped.append(path.name)
                continue
            return Frame(path.name, index, image, None, time.monotonic())
        return None

    def summary(self) -> str | None:
        if self.skipped:
            return f"{self.path}: skipped {len(self.skipped)} undecodable image(s): {', '.join(self.skipped[:5])}"
        return None
