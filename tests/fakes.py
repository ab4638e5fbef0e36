"""Test doubles for fault injection: a model with a set delay and a known answer."""

from __future__ import annotations

import time

import numpy as np

from streamer.models.base import Model, ModelInfo


class DelayModel(Model):
    """A v8-layout detector that takes ``delay_s`` per call and finds one box per image.

    The box is the centre quarter of the input with class 0 at 0.9: a known answer that
    survives decode, NMS and the mapping back to source pixels.
    """

    def __init__(self, delay_s: float = 0.1, nc: int = 80) -> None:
        self.delay_s = delay_s
        self.nc = nc
        self.calls = 0

    def open(self) -> None:
        self.info = ModelInfo(
            path="delay-model", backend="fake", device="cpu", task="detect", layout="v8",
            names=tuple(f"class{i}" for i in range(self.nc)), imgsz=(640, 640),
        )

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        time.sleep(self.delay_s)
        b, _, h, w = batch.shape
        out = np.zeros((b, 4 + self.nc, 8), np.float32)
        out[:, :4, 0] = [w / 2, h / 2, w / 2, h / 2]
        out[:, 4, 0] = 0.9
        return out
