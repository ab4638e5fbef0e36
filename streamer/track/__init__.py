"""Multi-object tracking: ByteTrack over streamer's detections, one tracker per stream."""

from __future__ import annotations

from streamer.track.bytetrack import Tracker, Tracks

__all__ = ["Tracker", "Tracks"]
