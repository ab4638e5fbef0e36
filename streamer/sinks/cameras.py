"""Each camera's fps and latency at the end of a monitor's pipeline, and the dashboard's frames."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from streamer.sinks.base import Sink
from streamer.stats import LatencyHistogram, StageMeter
from streamer.types import Result


class CameraStats(Sink):
    """Per-camera latency and fps at the end of the pipeline, and the dashboard's frames."""

    name = "cameras"
    needs_render = True

    def __init__(self, names: list[str], publish: Callable[[str, np.ndarray], object] | None = None) -> None:
        self.meters = {name: StageMeter(name) for name in names}
        self.latency = {name: LatencyHistogram() for name in names}
        self.publish = publish
        self.frames = 0
        #: per camera: its newest line counts and zone occupancy, class names, tracks in view
        self.analytics: dict[str, Any] = {}
        self.names: tuple[str, ...] = ()
        self.in_view: dict[str, int] = {}
        #: per camera: when its newest result's frame was captured (monotonic seconds)
        self.newest: dict[str, float] = {}

    def write(self, result: Result) -> None:
        camera = result.frame.source_id
        self.frames += 1
        self.names = result.names
        if result.analytics is not None:
            self.analytics[camera] = result.analytics
        det = result.detections
        if det is not None and det.tracker_id is not None:
            self.in_view[camera] = int((det.tracker_id >= 0).sum())
        meter = self.meters.get(camera)
        self.newest[camera] = max(self.newest.get(camera, 0.0), result.frame.captured_at)
        if meter is not None:
            elapsed_s = time.monotonic() - result.frame.captured_at
            meter.record(elapsed_s * 1000.0)
            self.latency[camera].observe(elapsed_s)
        if self.publish is not None and result.image is not None:  # a Ray frame may come without one
            self.publish(camera, result.image)
