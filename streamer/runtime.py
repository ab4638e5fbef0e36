"""Process-wide settings: thread pools of OpenCV (and PyTorch when it is used).

OpenCV, PyTorch and ONNX Runtime each start a pool sized to every core. On a small machine
those pools fight each other and the pipeline's own threads; streamer gives inference its
threads (see ``streamer.models.base.default_threads``) and keeps OpenCV's pool small, since
its per-frame work (resize, drawing) is short.
"""

from __future__ import annotations

import os

import cv2

_configured = False


def configure_threads() -> None:
    global _configured
    if _configured:
        return
    _configured = True
    cores = os.cpu_count() or 1
    cv2.setNumThreads(1 if cores <= 4 else max(1, cores // 4))
