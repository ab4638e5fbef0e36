"""Image outputs: annotated copies of input images, and one console line per image."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import cv2

from streamer.errors import SinkError
from streamer.sinks.base import Sink
from streamer.types import Result

if TYPE_CHECKING:
    from streamer.sources.base import Source


class ImageFolderSink(Sink):
    """Writes each rendered picture as ``folder/<input file name>`` (same format by suffix)."""

    name = "images"
    needs_render = True

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.written = 0

    def open(self) -> None:
        if self.folder.exists() and not self.folder.is_dir():
            raise SinkError(f"{self.folder}: output for images must be a folder, but it is a file")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"{self.folder}: cannot create the output folder: {exc.strerror}") from None

    def write(self, result: Result) -> None:
        name = Path(result.frame.source_id).name or f"{result.frame.index:06d}.png"
        path = self.folder / name
        if not cv2.imwrite(str(path), result.image):
            raise SinkError(f"{path}: cannot write the annotated image")
        self.written += 1

    def summary(self) -> str:
        return f"{self.folder}/: {self.written} annotated images"


class ConsoleSink(Sink):
    """One line per image, in input order: ``[3/17] cat.jpg tabby (87.20%)`` for a classifier
    (top-1, two decimals), ``[3/17] street.jpg: 2 person, 1 dog`` for a detector.

    ``like`` is the source being read: its frame count, known once it is open (a pipeline
    opens its file source before its sinks), replaces ``total`` when the sink opens.
    """

    name = "console"

    def __init__(self, total: int | None = None, stream: TextIO | None = None, *, like: Source | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stdout
        self.like = like
        self.count = 0

    def open(self) -> None:
        if self.like is not None:
            self.total = self.like.total_frames

    def write(self, result: Result) -> None:
        self.count += 1
        head = f"[{self.count}/{self.total}]" if self.total else f"[{self.count}]"
        name = result.frame.source_id
        if result.classes is not None and len(result.classes):
            best = int(result.classes.class_id[0])
            text = f"{head} {name} {result.label(best)} ({100 * float(result.classes.probability[0]):.2f}%)"
        elif result.detections is not None:
            counts: dict[str, int] = {}
            for c in result.detections.class_id.tolist():
                label = result.label(int(c))
                counts[label] = counts.get(label, 0) + 1
            found = ", ".join(f"{n} {label}" for label, n in sorted(counts.items(), key=lambda kv: -kv[1]))
            text = f"{head} {name}: {found or 'nothing detected'}"
        else:
            text = f"{head} {name}"
        self.stream.write(text + "\n")
        self.stream.flush()
