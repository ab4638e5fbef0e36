"""Drawing counting lines and zones onto frames, in place, with OpenCV.

Costs stay small per frame: a line is a few OpenCV primitives; a zone's translucent fill is
blended only over the polygon's bounding box (set ``fill_alpha=0`` for outline only). See
``tests/analytics/bench_analytics.py`` for measured times.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from streamer.analytics.geometry import LineSpec, ZoneSpec
from streamer.render import class_colour, draw_label

# Lines in bright, saturated colours (BGR) that stay visible on roads and floors; zones take
# the class palette by their index.
_LINE_COLOURS = ((0, 255, 255), (255, 0, 255), (255, 255, 0), (0, 128, 255), (128, 255, 0))


def _thickness(image: np.ndarray) -> int:
    # Grows with the frame like the box outlines in streamer.render: 1 px at 640, 2 px at 1280.
    side = int(max(image.shape[0], image.shape[1]))
    return max(1, round(side / 640))


def _ipt(p: tuple[float, float]) -> tuple[int, int]:
    return round(p[0]), round(p[1])


def draw_lines(
    image: np.ndarray, specs: Sequence[LineSpec], counts: Mapping[str, Mapping[str, int]]
) -> np.ndarray:
    """Draw each line, an arrow pointing the ``in`` way, and ``name in N / out M``; in place.

    ``counts`` is ``FrameAnalytics.lines``; a line missing from it is drawn with zeros.
    """
    h, w = image.shape[:2]
    thickness = _thickness(image)
    arrow = max(16.0, 0.1 * min(h, w))
    for index, spec in enumerate(specs):
        colour = _LINE_COLOURS[index % len(_LINE_COLOURS)]
        (ax, ay), (bx, by) = spec.start, spec.end
        cv2.line(image, _ipt(spec.start), _ipt(spec.end), colour, thickness + 1, cv2.LINE_AA)
        length = math.hypot(bx - ax, by - ay)
        nx, ny = -(by - ay) / length, (bx - ax) / length  # the `in` side (lines.py docstring)
        mx, my = (ax + bx) / 2.0, (ay + by) / 2.0
        cv2.arrowedLine(image, _ipt((mx, my)), _ipt((mx + nx * arrow, my + ny * arrow)), colour, thickness,
                        cv2.LINE_AA, tipLength=0.35)
        c = counts.get(spec.name, {})
        text = f"{spec.name} in {int(c.get('in', 0))} / out {int(c.get('out', 0))}"
        # On the `out` side of the midpoint, so the label never covers the arrow.
        lx, ly = mx - nx * arrow * 0.5, my - ny * arrow * 0.5
        draw_label(image, text, int(lx), int(min(max(ly, 0), h - 1)), colour)
    return image


def draw_zones(
    image: np.ndarray,
    specs: Sequence[ZoneSpec],
    occupancy: Mapping[str, Mapping[int, int]],
    names: tuple[str, ...],
    *,
    fill_alpha: float = 0.2,
) -> np.ndarray:
    """Draw each zone's outline over a translucent fill and ``name: 2 person, 1 car``; in place.

    ``occupancy`` is ``FrameAnalytics.zones``; a zone missing from it reads ``name: 0``.
    """
    if not 0.0 <= fill_alpha <= 1.0:
        raise ValueError(f"fill_alpha must be in [0, 1], but got {fill_alpha!r}")
    h, w = image.shape[:2]
    thickness = _thickness(image)
    for index, spec in enumerate(specs):
        colour = class_colour(index)
        pts = np.array([_ipt(p) for p in spec.polygon], np.int32)
        if fill_alpha > 0.0:
            x0, y0 = max(int(pts[:, 0].min()), 0), max(int(pts[:, 1].min()), 0)
            x1, y1 = min(int(pts[:, 0].max()) + 1, w), min(int(pts[:, 1].max()) + 1, h)
            if x1 > x0 and y1 > y0:
                roi = image[y0:y1, x0:x1]
                tinted = roi.copy()
                cv2.fillPoly(tinted, [pts - np.array([x0, y0], np.int32)], colour)
                # dst=roi blends into the frame itself (OpenCV keeps the view's row stride): no extra copy.
                cv2.addWeighted(tinted, fill_alpha, roi, 1.0 - fill_alpha, 0.0, dst=roi)
        cv2.polylines(image, [pts], True, colour, thickness, cv2.LINE_AA)
        occ = occupancy.get(spec.name, {})
        parts = [f"{n} {names[c] if 0 <= c < len(names) else c}" for c, n in sorted(occ.items()) if n]
        text = f"{spec.name}: {', '.join(parts) if parts else 0}"
        top = int(np.argmin(pts[:, 1]))
        draw_label(image, text, int(pts[top, 0]), int(min(max(pts[top, 1], 0), h - 1)), colour)
    return image
