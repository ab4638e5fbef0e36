"""Annotated video output through OpenCV's FFmpeg writer."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from streamer.errors import SinkError
from streamer.sinks.base import Sink
from streamer.sinks.jsonl import check_writable
from streamer.types import Result

log = logging.getLogger(__name__)

# Codecs every opencv-python wheel can write (its FFmpeg has no H.264 encoder).
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


class VideoSink(Sink):
    """Writes every result's rendered picture, in order, at the source's size and frame rate.

    The writer opens on the first frame (its size is known only then). A later frame of a
    different size (a camera that came back at another resolution) is resized to the first
    size, so the file stays valid.
    """

    name = "video"
    needs_render = True

    #: Live recordings hold this many seconds of frames to measure the rate they arrive at.
    MEASURE_S = 2.0

    def __init__(self, path: str | os.PathLike[str], fps: float | None = 25.0, measure_fps: bool = False) -> None:
        self.path = Path(path)
        self.fps = fps if fps and fps > 0 else 25.0
        # A live pipeline writes only the frames it processed (it drops the rest): written at
        # the camera's rate the recording would play too fast, so the rate is measured first.
        self.measure_fps = measure_fps
        self._held: list[tuple[float, np.ndarray]] = []
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0
        suffix = self.path.suffix.lower()
        if suffix not in FOURCC:
            raise SinkError(f"{self.path}: unsupported video file type '{suffix}', expecting one of {sorted(FOURCC)}")
        self._fourcc = FOURCC[suffix]

    def open(self) -> None:
        check_writable(self.path, "video")

    def _open_writer(self, width: int, height: int) -> cv2.VideoWriter:
        fourcc = cv2.VideoWriter_fourcc(*self._fourcc)
        writer = cv2.VideoWriter(str(self.path), cv2.CAP_FFMPEG, fourcc, float(self.fps), (width, height))
        if not writer.isOpened():
            raise SinkError(f"{self.path}: cannot open a {self._fourcc} video writer for {width}x{height}")
        return writer

    def write(self, result: Result) -> None:
        if self.measure_fps:
            self._held.append((result.frame.captured_at, result.image))
            span = self._held[-1][0] - self._held[0][0]
            if span >= self.MEASURE_S or len(self._held) >= 120:
                self._release_held()
            return
        self._write_image(result.image)

    def _release_held(self) -> None:
        held, self._held = self._held, []
        self.measure_fps = False
        if len(held) >= 2 and held[-1][0] > held[0][0]:
            rate = (len(held) - 1) / (held[-1][0] - held[0][0])
            self.fps = float(min(120.0, max(1.0, round(rate, 1))))
        for _, image in held:
            self._write_image(image)

    def _write_image(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        if self._writer is None:
            self._writer = self._open_writer(w, h)
            self._size = (w, h)
        elif (w, h) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(np.ascontiguousarray(image))
        self.frames += 1

    def flush(self) -> None:
        if self._held:
            self._release_held()
        self._release()

    def close(self) -> None:
        if self._held:
            self._release_held()
        self._release()

    def _release(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def summary(self) -> str:
        size = f"{self._size[0]}x{self._size[1]}, " if self._size else ""
        return f"{self.path}: {self.frames} frames, {size}{self.fps:g} fps"
