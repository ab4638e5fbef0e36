"""The counts a job's summary reports: frames, detections per class, tracks, line and zone totals."""

from __future__ import annotations

import collections
from typing import Any

from streamer.sinks.base import Sink
from streamer.types import Result


class CountingSink(Sink):
    """Counts frames and detections per class for the summary."""

    name = "summary"

    def __init__(self) -> None:
        self.frames = 0
        self.per_class: collections.Counter[str] = collections.Counter()
        self.frames_with: collections.Counter[str] = collections.Counter()
        self.top_class: collections.Counter[str] = collections.Counter()
        #: (source, track id) -> label of every confirmed track seen.
        self.tracks: dict[tuple[str, int], str] = {}
        #: source -> its newest line counts and zone occupancy.
        self.analytics: dict[str, Any] = {}
        #: Class names of the model, as the results carry them.
        self.names: tuple[str, ...] = ()

    def write(self, result: Result) -> None:
        self.frames += 1
        self.names = result.names
        if result.detections is not None and len(result.detections):
            labels = [result.label(int(c)) for c in result.detections.class_id]
            self.per_class.update(labels)
            self.frames_with.update(set(labels))
            ids = result.detections.tracker_id
            if ids is not None:
                source = result.frame.source_id
                for track_id, label in zip(ids.tolist(), labels, strict=True):
                    if track_id >= 0:
                        self.tracks.setdefault((source, track_id), label)
        if result.analytics is not None:
            self.analytics[result.frame.source_id] = result.analytics
        if result.classes is not None and len(result.classes):
            self.top_class[result.label(int(result.classes.class_id[0]))] += 1
