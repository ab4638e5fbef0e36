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

from typing import TYPE_CHECKING

from streamer.errors import (
    AssetError,
    ConfigError,
    ModelError,
    SinkError,
    SourceOpenError,
    StageError,
    StreamerError,
)

if TYPE_CHECKING:
    from streamer.api import build_pipeline, stream
    from streamer.track import Tracker
    from streamer.types import Detections, Frame, Letterbox, Result

# The rest of the API is imported when first used (PEP 562): ``import streamer`` stays light,
# so the command starts (and takes Ctrl+C as a stop) before NumPy, OpenCV and Numba load.
#
# Every module that imports PyAV (``av``) imports OpenCV first: both bring their own FFmpeg
# libraries, and with PyAV's loaded first OpenCV's window (its Qt backend) hangs in
# ``namedWindow``. A program that imports ``av`` itself should import ``cv2`` before it too.
_LAZY = {
    "build_pipeline": "streamer.api", "stream": "streamer.api", "Tracker": "streamer.track",
    "Detections": "streamer.types", "Frame": "streamer.types", "Letterbox": "streamer.types",
    "Result": "streamer.types",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streamer' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
