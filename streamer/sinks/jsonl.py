"""JSON Lines output: one object per processed frame."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from streamer.errors import SinkError
from streamer.sinks.base import Sink
from streamer.types import Result

FLUSH_INTERVAL_S = 1.0


def result_record(result: Result, now: float | None = None) -> dict[str, Any]:
    """The JSONL object of one result.

    ``latency_ms`` is the time from capture (the frame leaving the decoder) to now; boxes are
    ``[x1, y1, x2, y2]`` in source pixels. With tracking, each detection has ``track_id`` (null
    until its track is confirmed); with lines or zones the record carries the cumulative line
    counts and the zone occupancy (``lines``, ``zones``).
    """
    now = time.monotonic() if now is None else now
    frame = result.frame
    record: dict[str, Any] = {
        "source": frame.source_id,
        "frame": frame.index,
        "pts": None if frame.pts_s is None else round(frame.pts_s, 6),
        "latency_ms": round((now - frame.captured_at) * 1000.0, 3),
    }
    if result.detections is not None:
        det = result.detections
        # Whole-array conversions, then one dict per box: no per-element NumPy scalars.
        boxes = det.xyxy.astype(np.float64).round(2).tolist()
        scores = det.confidence.astype(np.float64).round(5).tolist()
        record["detections"] = [
            {"class_id": c, "label": result.label(c), "confidence": s, "xyxy": box}
            for box, s, c in zip(boxes, scores, det.class_id.tolist(), strict=True)
        ]
        top_ids = det.data.get("cls_top_ids")
        if top_ids is not None:
            # The second model's classes of each object; absent on rows it did not classify.
            top_p = det.data["cls_top_p"].astype(np.float64).round(5).tolist()
            names = result.object_names
            for row, ids, probs in zip(record["detections"], top_ids.tolist(), top_p, strict=True):
                if ids and ids[0] >= 0:
                    row["classes"] = [{"label": names[c] if 0 <= c < len(names) else str(c), "probability": p}
                                      for c, p in zip(ids, probs, strict=True) if c >= 0]
        if det.tracker_id is not None:
            # null: a detection that belongs to no confirmed track (yet).
            for row, track_id in zip(record["detections"], det.tracker_id.tolist(), strict=True):
                row["track_id"] = track_id if track_id >= 0 else None
    if result.analytics is not None:
        record.update(result.analytics.to_record(result.names))
    if result.classes is not None:
        cl = result.classes
        probabilities = cl.probability.astype(np.float64).round(5).tolist()
        record["classes"] = [
            {"class_id": c, "label": result.label(c), "probability": p}
            for c, p in zip(cl.class_id.tolist(), probabilities, strict=True)
        ]
    return record


def check_writable(path: Path, what: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise SinkError(f"{path}: {what} path is a directory")
    if parent.exists() and not parent.is_dir():
        raise SinkError(f"{path}: {parent} is a file, not a folder")
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"{path}: cannot create folder {parent}: {exc.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise SinkError(f"{path}: folder {parent} is not writable")


class JsonlSink(Sink):
    """Writes one JSON object per result, one per line, flushed at least every second."""

    name = "jsonl"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = None
        self._last_flush = 0.0
        self.lines = 0

    def open(self) -> None:
        check_writable(self.path, "JSONL")
        try:
            self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot open for writing: {exc.strerror}") from None
        self._last_flush = time.monotonic()

    def write(self, result: Result) -> None:
        assert self._file is not None, "write() before open()"
        now = time.monotonic()
        self._file.write(json.dumps(result_record(result, now), separators=(",", ":")) + "\n")
        self.lines += 1
        if now - self._last_flush >= FLUSH_INTERVAL_S:
            self._file.flush()
            self._last_flush = now

    def idle(self) -> None:
        if self._file is not None and time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S:
            self._file.flush()
            self._last_flush = time.monotonic()

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def summary(self) -> str:
        return f"{self.path}: {self.lines} lines"
