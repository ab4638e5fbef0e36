"""Counting lines and zones as data: specs, their YAML forms, and box anchor points.

Coordinates are *source-frame* pixels (the decoded frame, before letterboxing), x to the
right and y down, the same system as ``Detections.xyxy``. A spec is checked once, where it
is made (in the config loader, through :func:`parse_lines` / :func:`parse_zones`), so the
per-frame code never meets a degenerate line or a zone without area.

YAML forms accepted::

    lines:
      gate: {start: [400, 0], end: [400, 272]}      # or: gate: [[400, 0], [400, 272]]
      door: {start: [0, 100], end: [300, 100], anchor: center, margin: 2}
    zones:
      driveway: [[0, 200], [640, 200], [640, 272], [0, 272]]   # or {points: [...], anchor: ...}

An *anchor* names the point of a box that is tested against a line or a zone.
``bottom_center`` (the default) is where an object meets the ground, which is what a line
painted on a road or a zone drawn on a floor is about; ``center`` suits top-down views.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.errors import ConfigError

Point = tuple[float, float]

# Fractions (fx, fy) of the box: x = x1 + fx * (x2 - x1), y = y1 + fy * (y2 - y1).
_ANCHOR_FRACTIONS: dict[str, tuple[float, float]] = {
    "bottom_center": (0.5, 1.0),
    "center": (0.5, 0.5),
    "top_center": (0.5, 0.0),
    "bottom_left": (0.0, 1.0),
    "bottom_right": (1.0, 1.0),
    "top_left": (0.0, 0.0),
    "top_right": (1.0, 0.0),
}
ANCHORS: tuple[str, ...] = tuple(_ANCHOR_FRACTIONS)

_LINE_KEYS = ("start", "end", "anchor", "margin")
_ZONE_KEYS = ("points", "anchor")


def _check_anchor(anchor: Any, where: str) -> str:
    if not isinstance(anchor, str) or anchor not in _ANCHOR_FRACTIONS:
        raise ConfigError(f"{where}.anchor must be one of {list(ANCHORS)}, but got {anchor!r}")
    return anchor


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: a name must be a non-empty string, but got {name!r}")
    return name


def _point(value: Any, where: str) -> Point:
    """``[x, y]`` of two finite numbers (YAML ints or floats, not booleans) -> ``(x, y)`` floats."""
    ok = (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )
    if not ok:
        raise ConfigError(f"{where} must be [x, y] numbers, but got {value!r}")
    return float(value[0]), float(value[1])


def _fmt(p: Point) -> str:
    return f"[{p[0]:g}, {p[1]:g}]"


def polygon_area(points: tuple[Point, ...]) -> float:
    """Unsigned shoelace area; a self-crossing polygon's lobes may cancel (its even-odd inside still stands)."""
    xs = np.array([p[0] for p in points], np.float64)
    ys = np.array([p[1] for p in points], np.float64)
    return float(abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2.0)


def _check_line(name: Any, start: Any, end: Any, anchor: Any, margin: Any, where: str) -> tuple[Point, Point]:
    _check_name(name, where)
    a = _point(start, f"{where}.start")
    b = _point(end, f"{where}.end")
    if a == b:
        raise ConfigError(f"{where} has start == end ({_fmt(a)}); a line needs two distinct points")
    _check_anchor(anchor, where)
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not (0.0 <= margin < math.inf):
        raise ConfigError(f"{where}.margin must be a number >= 0 (pixels), but got {margin!r}")
    return a, b


def _check_zone(name: Any, polygon: Any, anchor: Any, where: str, where_points: str | None = None) -> tuple[Point, ...]:
    _check_name(name, where)
    at = where_points or where
    if not isinstance(polygon, list | tuple):
        raise ConfigError(f"{at} must be a list of [x, y] points, but got {polygon!r}")
    if len(polygon) < 3:
        raise ConfigError(f"{at} must have at least 3 points, but got {len(polygon)}")
    points = tuple(_point(p, f"{at}[{i}]") for i, p in enumerate(polygon))
    if polygon_area(points) == 0.0:
        raise ConfigError(f"{where} has zero area (its points are all on one line)")
    _check_anchor(anchor, where)
    return points


@dataclass(frozen=True, slots=True)
class LineSpec:
    """A counting line: the segment from ``start`` to ``end``, in source-frame pixels.

    ``anchor`` names the box point that crosses it (see :data:`ANCHORS`). ``margin`` is a dead
    band in pixels either side of the line: an anchor closer to the line than that has no
    side, like one exactly on it, so a box that jitters on the line by less than the margin
    never counts. The default 0 is the exact rule. See :mod:`streamer.analytics.lines` for
    which way is ``in``.
    """

    name: str
    start: Point
    end: Point
    anchor: str = "bottom_center"
    margin: float = 0.0

    def __post_init__(self) -> None:
        a, b = _check_line(self.name, self.start, self.end, self.anchor, self.margin, f"lines.{self.name}")
        object.__setattr__(self, "start", a)
        object.__setattr__(self, "end", b)
        object.__setattr__(self, "margin", float(self.margin))


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    """A zone: a polygon of at least 3 ``(x, y)`` points, in source-frame pixels.

    Inside is decided by the even-odd rule on ``anchor`` (see :mod:`streamer.analytics.zones`).
    """

    name: str
    polygon: tuple[Point, ...]
    anchor: str = "bottom_center"

    def __post_init__(self) -> None:
        points = _check_zone(self.name, self.polygon, self.anchor, f"zones.{self.name}")
        object.__setattr__(self, "polygon", points)


def _named_items(value: Any, where: str, what: str) -> list[tuple[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping of name to {what}, but got {value!r}")
    items = []
    for name, item in value.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: a {what} name must be a non-empty string, but got {name!r}")
        items.append((name, item))
    return items


def _check_keys(item: Mapping[str, Any], valid: tuple[str, ...], where: str) -> None:
    for key in item:
        if key not in valid:
            raise ConfigError(f"{where}: unknown key {key!r}, expecting one of {sorted(valid)}")


def parse_lines(value: Any, where: str = "lines") -> tuple[LineSpec, ...]:
    """The ``lines`` section of a pipeline file -> specs, in file order; ``None`` means none.

    Raises :class:`~streamer.errors.ConfigError` with one line naming the key and the problem.
    """
    specs = []
    for name, item in _named_items(value, where, "line"):
        here = f"{where}.{name}"
        anchor: Any = "bottom_center"
        margin: Any = 0.0
        if isinstance(item, Mapping):
            _check_keys(item, _LINE_KEYS, here)
            for key in ("start", "end"):
                if key not in item:
                    raise ConfigError(f"{here}.{key} is missing: a line needs start and end, e.g. [x, y]")
            start, end = item["start"], item["end"]
            anchor = item.get("anchor", anchor)
            margin = item.get("margin", margin)
        elif isinstance(item, list | tuple):
            if len(item) != 2:
                raise ConfigError(f"{here} must have 2 points, but got {len(item)}")
            start, end = item
        else:
            raise ConfigError(f"{here} must be [[x, y], [x, y]] or {{start: [x, y], end: [x, y]}}, but got {item!r}")
        a, b = _check_line(name, start, end, anchor, margin, here)
        specs.append(LineSpec(name, a, b, anchor, float(margin)))
    return tuple(specs)


def parse_zones(value: Any, where: str = "zones") -> tuple[ZoneSpec, ...]:
    """The ``zones`` section of a pipeline file -> specs, in file order; ``None`` means none.

    Raises :class:`~streamer.errors.ConfigError` with one line naming the key and the problem.
    """
    specs = []
    for name, item in _named_items(value, where, "zone"):
        here = f"{where}.{name}"
        anchor: Any = "bottom_center"
        if isinstance(item, Mapping):
            _check_keys(item, _ZONE_KEYS, here)
            if "points" not in item:
                raise ConfigError(f"{here}.points is missing: a zone needs at least 3 [x, y] points")
            polygon, where_points = item["points"], f"{here}.points"
            anchor = item.get("anchor", anchor)
        else:
            polygon, where_points = item, here
        points = _check_zone(name, polygon, anchor, here, where_points)
        specs.append(ZoneSpec(name, points, anchor))
    return tuple(specs)


def anchors(xyxy: np.ndarray, anchor: str) -> np.ndarray:
    """The ``anchor`` point of each box: ``xyxy`` (N, 4) -> float64 (N, 2) ``[x, y]``.

    float64 so that side tests on lines far from the origin keep their sign exactly.
    """
    fractions = _ANCHOR_FRACTIONS.get(anchor)
    if fractions is None:
        raise ConfigError(f"anchor must be one of {list(ANCHORS)}, but got {anchor!r}")
    boxes = np.asarray(xyxy)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"xyxy must be a 2D np.ndarray with shape (_, 4), but got shape {boxes.shape}")
    boxes = boxes.astype(np.float64, copy=False)
    fx, fy = fractions
    out = np.empty((boxes.shape[0], 2), np.float64)
    out[:, 0] = boxes[:, 0] + fx * (boxes[:, 2] - boxes[:, 0])
    out[:, 1] = boxes[:, 1] + fy * (boxes[:, 3] - boxes[:, 1])
    return out
