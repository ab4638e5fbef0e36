"""Synthetic scenes with known identities for tracker tests and benchmarks.

Objects move with a slowly wandering velocity through a frame, crossing each other; the
"detector" misses some of them, jitters every box, scores them noisily (some fall into
ByteTrack's low band) and adds clutter boxes that belong to nobody.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamer.types import Detections


@dataclass(frozen=True)
class Scene:
    """Per frame: ground truth (ids, xyxy) of the visible objects, and the detections."""

    truth: list[tuple[np.ndarray, np.ndarray]]
    detections: list[Detections]
    fps: float


def make_scene(
    seed: int,
    *,
    frames: int = 300,
    objects: int = 16,
    fps: float = 30.0,
    size: tuple[float, float] = (1280.0, 720.0),
    miss_rate: float = 0.08,
    low_rate: float = 0.15,
    jitter: float = 0.04,
    clutter: float = 1.0,
) -> Scene:
    """A scene of ``frames`` frames at ``fps``; speeds are in pixels per second.

    Objects walk or ride in from anywhere, turn gently (heading and speed drift), and are
    gone once they leave the picture; boxes are clipped to it. ``jitter`` is the box noise
    as a fraction of the box size; ``clutter`` the mean number of false boxes per frame.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    birth = np.where(rng.random(objects) < 0.4, 0, rng.integers(0, frames * 3 // 4, objects))
    h = rng.uniform(40, 160, objects)
    w = h * rng.uniform(0.35, 0.9, objects)  # people and bikes: taller than wide
    pos = np.stack([rng.uniform(0.05, 0.95, objects) * width, rng.uniform(0.15, 0.85, objects) * height], axis=1)
    speed = rng.uniform(30, 160, objects)
    heading = rng.uniform(0, 2 * np.pi, objects)
    gone = np.zeros(objects, bool)
    truth: list[tuple[np.ndarray, np.ndarray]] = []
    dets: list[Detections] = []
    dt = 1.0 / fps
    for f in range(frames):
        heading += rng.normal(0, 0.5, objects) * np.sqrt(dt)  # about 30 degrees a second
        speed = np.clip(speed + rng.normal(0, 10, objects) * np.sqrt(dt), 20, 200)
        moving = birth <= f
        # Ground-plane motion seen from a raised camera: vertical motion looks slower.
        pos[moving] += (np.stack([np.cos(heading), 0.5 * np.sin(heading)], axis=1) * speed[:, None] * dt)[moving]
        boxes = np.stack([pos[:, 0] - w / 2, pos[:, 1] - h / 2, pos[:, 0] + w / 2, pos[:, 1] + h / 2], axis=1)
        clipped = np.clip(boxes, 0, [width, height, width, height])
        visible_area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
        gone |= moving & (visible_area < 0.3 * w * h)  # left the picture: not coming back
        alive = np.flatnonzero(moving & ~gone)
        truth.append((alive.astype(np.int64) + 1, clipped[alive]))
        seen = alive[rng.random(alive.size) >= miss_rate]
        b = clipped[seen]
        bw = (b[:, 2] - b[:, 0])[:, None]
        bh = (b[:, 3] - b[:, 1])[:, None]
        b = b + rng.normal(0, jitter, b.shape) * np.concatenate([bw, bh, bw, bh], axis=1)
        s = np.where(rng.random(len(b)) < low_rate, rng.uniform(0.11, 0.25, len(b)), rng.uniform(0.3, 0.95, len(b)))
        k = rng.poisson(clutter)
        cw = rng.uniform(20, 80, k)
        cxy = rng.uniform(0, 1, (k, 2)) * [width, height]
        c = np.concatenate([cxy - cw[:, None] / 2, cxy + cw[:, None] * np.array([0.5, 1.0])], axis=1)
        cs = rng.uniform(0.1, 0.45, k)
        order = rng.permutation(len(b) + k)  # detectors give no useful order
        xyxy = np.concatenate([b, c])[order].astype(np.float32)
        conf = np.concatenate([s, cs])[order].astype(np.float32)
        dets.append(Detections(xyxy, conf, np.zeros(len(xyxy), np.int32)))
    return Scene(truth, dets, fps)
