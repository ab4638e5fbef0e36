"""Per-frame costs of analytics: drawing, point in polygon (Numba vs NumPy), Analytics.update.

Run from the repository root: ``python -m tests.analytics.bench_analytics``. Not a test
(timings swing on a shared machine): it prints medians of many repeats.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial

import cv2
import numpy as np

from streamer.analytics import Analytics, LineSpec, ZoneSpec, parse_lines, parse_zones
from streamer.analytics.draw import draw_lines, draw_zones
from streamer.analytics.zones import points_in_polygon, points_in_polygon_reference
from streamer.types import Detections


def median_ms(fn: Callable[[], object], repeats: int = 300, rounds: int = 7) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        times.append((time.perf_counter() - t0) / repeats * 1e3)
    return statistics.median(times)


def full_blend(image: np.ndarray) -> None:
    tinted = image.copy()
    cv2.addWeighted(tinted, 0.2, image, 0.8, 0.0, dst=image)


def geometry(w: int, h: int) -> tuple[tuple[LineSpec, ...], tuple[ZoneSpec, ...]]:
    lines = parse_lines({"gate": [[w * 0.6, 0], [w * 0.6, h]], "door": [[0, h * 0.4], [w * 0.5, h * 0.4]]})
    zones = parse_zones({
        "driveway": [[0, h * 0.7], [w, h * 0.7], [w, h], [0, h]],  # a wide band: the costly case
        "porch": [[w * 0.1, h * 0.1], [w * 0.3, h * 0.1], [w * 0.3, h * 0.3], [w * 0.1, h * 0.3]],
    })
    return lines, zones


def main() -> None:
    names = ("person", "bicycle", "car")
    for w, h in ((640, 272), (1280, 720)):
        lines, zones = geometry(w, h)
        image = np.full((h, w, 3), 90, np.uint8)
        counts = {"gate": {"in": 12, "out": 3}, "door": {"in": 0, "out": 1}}
        occupancy: dict[str, dict[int, int]] = {"driveway": {0: 2, 2: 1}, "porch": {}}
        ms_lines = median_ms(partial(draw_lines, image, lines, counts))
        ms_zones = median_ms(partial(draw_zones, image, zones, occupancy, names))
        ms_outline = median_ms(partial(draw_zones, image, zones, occupancy, names, fill_alpha=0.0))
        ms_full = median_ms(partial(full_blend, image))
        print(f"{w}x{h}: draw_lines (2 lines) {ms_lines:.3f} ms, draw_zones (2 zones, fill) {ms_zones:.3f} ms, "
              f"outline only {ms_outline:.3f} ms (for scale, one full-frame blend {ms_full:.3f} ms)")

    rng = np.random.default_rng(0)
    for n, m in ((10, 4), (50, 4), (50, 16), (200, 32)):
        angles = np.sort(rng.uniform(0, 2 * np.pi, m))
        poly = np.stack([320 + 150 * np.cos(angles), 200 + 100 * np.sin(angles)], axis=1)
        pts = rng.uniform(0, 640, (n, 2))
        us_numba = 1e3 * median_ms(partial(points_in_polygon, pts, poly), 2000)
        us_numpy = 1e3 * median_ms(partial(points_in_polygon_reference, pts, poly), 2000)
        print(f"point in polygon, {n} points, {m} sides: Numba {us_numba:.1f} us, NumPy {us_numpy:.1f} us")

    lines, zones = geometry(640, 272)
    for n in (0, 10, 50):
        xs = rng.uniform(0, 620, n)
        ys = rng.uniform(40, 272, n)
        frames = []
        for step in range(100):
            x = (xs + 3 * step) % 620
            xyxy = np.stack([x, ys - 40, x + 20, ys], axis=1).astype(np.float32)
            frames.append(Detections(xyxy, np.ones(n, np.float32), rng.integers(0, 3, n).astype(np.int32),
                                     np.arange(n, dtype=np.int64)))
        ms = median_ms(partial(_Stepper(Analytics(lines, zones), frames, names)), 200)
        print(f"Analytics.update + to_record, 2 lines + 2 zones, {n} tracks: {ms:.3f} ms")


class _Stepper:
    """One frame of a looping clip per call, with its own clock."""

    def __init__(self, analytics: Analytics, frames: list[Detections], names: tuple[str, ...]) -> None:
        self.analytics, self.frames, self.names, self.i = analytics, frames, names, 0

    def __call__(self) -> None:
        fa = self.analytics.update(self.frames[self.i % len(self.frames)], self.i * 0.04)
        fa.to_record(self.names)
        self.i += 1


if __name__ == "__main__":
    main()
