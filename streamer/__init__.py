"""streamer: a real-time video stream processor.

Embedding it::

    import streamer

    for result in streamer.stream("sample:bikes", model="yolo11n"):
        print(result.frame.index, len(result.detections))
"""

from __future__ import annotations

import os as _os

# FFmpeg and OpenCV print their own warnings (e.g. "moov atom not found") on stderr, around
# streamer's one-line errors. Quiet them unless the user asked for them.
_os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
_os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

__version__ = "0.1.0"

from streamer.api import build_pipeline, stream
from streamer.errors import (
    AssetError,
    ConfigError,
    ModelError,
    SinkError,
    SourceOpenError,
    StageError,
    StreamerError,
)
from streamer.track import Tracker
from streamer.types import Detections, Frame, Letterbox, Result

__all__ = [
    "AssetError",
    "ConfigError",
    "Detections",
    "Frame",
    "Letterbox",
    "ModelError",
    "Result",
    "SinkError",
    "SourceOpenError",
    "StageError",
    "StreamerError",
    "Tracker",
    "__version__",
    "build_pipeline",
    "stream",
]
