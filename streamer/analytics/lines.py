"""Counting tracked objects that cross a line.

**The rule** (:func:`crossing`). A track's anchor moving from ``p0`` to ``p1`` crosses the
segment AB (``start`` to ``end``) when

1. ``p0`` and ``p1`` are strictly on opposite sides of the infinite line through A and B, and
2. the segment ``p0 p1`` meets the segment AB itself, end points included,

so an object passing beside the end of a line is not counted.

**Direction.** Walk from ``start`` to ``end``: crossing from your LEFT to your RIGHT is
``in``, from right to left is ``out``. Left and right are as seen on the screen, in image
coordinates (y down). For a vertical line drawn top to bottom, x = 400 from y = 0 to
y = 272, the walker faces down the screen, so their left hand points towards +x: an object
moving towards -x (leftwards on the screen) counts ``in``, one moving towards +x counts
``out``. For a horizontal line drawn left to right, moving down the screen is ``in``. In
vector terms the ``in`` direction is ``(-dy, dx)`` for ``(dx, dy) = end - start``: the
line's direction turned 90 degrees clockwise on the screen. Swap start and end to swap them.

**On the line.** A point exactly on the line (or within the spec's ``margin`` of it) has no
side. :class:`LineCounter` keeps, per track, the last position that had a side and
evaluates the rule between it and the current position, so a box standing on the line,
jitter along it, or frames dropped around it count once, when the anchor is finally on the
other side, and never at all if it goes back to where it came from.

**Counted once per track and direction.** A track that crosses in, turns back out and
crosses in again counts in 1, out 1. Id switches on the line can still double count (the new
id has no memory); a margin of a few pixels removes most jitter flips.

**Bounded memory.** A track not seen for ``max_age`` updates is forgotten (its side and what
it was counted for); :meth:`LineCounter.forget` drops ids at once. A forgotten id that comes
back starts afresh, so ``max_age`` should outlast the tracker's own memory of lost tracks
(ByteTrack keeps them 30 frames; the default here is 300).

State lives in the counter object: one per line per stream, never shared between cameras.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from streamer.analytics.geometry import LineSpec, Point, anchors

IN = "in"
OUT = "out"
_BIT = {IN: 1, OUT: 2}


def _side(p: Point, a: Point, b: Point, margin: float) -> int:
    """+1 right of A->B on screen, -1 left, 0 on the line or within ``margin`` pixels of it."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    cross = dx * (p[1] - a[1]) - dy * (p[0] - a[0])
    # |cross| / |AB| is the distance to the line; margin 0 leaves the exact test cross == 0.
    if abs(cross) <= margin * math.hypot(dx, dy):
        return 0
    return 1 if cross > 0 else -1


def crossing(p0: Point, p1: Point, start: Point, end: Point, margin: float = 0.0) -> int:
    """The counting rule: +1 when ``p0 -> p1`` crosses segment start-end ``in``, -1 ``out``, 0 not at all."""
    s0 = _side(p0, start, end, margin)
    s1 = _side(p1, start, end, margin)
    if s0 == 0 or s1 == 0 or s0 == s1:
        return 0
    # p0 and p1 straddle the infinite line, so p0 != p1; now A and B must not lie strictly on
    # the same side of the line through p0 and p1 (touching an end point counts).
    mx, my = p1[0] - p0[0], p1[1] - p0[1]
    ta = mx * (start[1] - p0[1]) - my * (start[0] - p0[0])
    tb = mx * (end[1] - p0[1]) - my * (end[0] - p0[0])
    if (ta > 0 and tb > 0) or (ta < 0 and tb < 0):
        return 0
    return 1 if s1 > 0 else -1


def sides(points: np.ndarray, start: Point, end: Point, margin: float = 0.0) -> np.ndarray:
    """Vectorised side test: ``points`` float64 (N, 2) -> int8 (N,) of +1 / -1 / 0, as in :func:`crossing`."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    cross = dx * (points[:, 1] - start[1]) - dy * (points[:, 0] - start[0])
    out = np.where(cross > 0, 1, -1).astype(np.int8)
    out[np.abs(cross) <= margin * math.hypot(dx, dy)] = 0
    return out


@dataclass(frozen=True, slots=True)
class Crossing:
    """One counted crossing: ``direction`` is ``"in"`` or ``"out"``; ``class_id`` is the track's class then."""

    line: str
    track_id: int
    class_id: int
    direction: str


class _Track:
    __slots__ = ("counted", "seen", "side", "x", "y")

    def __init__(self, side: int, x: float, y: float, seen: int) -> None:
        self.side = side  # last non-zero side, 0 while the track has only been on the line
        self.x = x
        self.y = y
        self.seen = seen
        self.counted = 0  # bit set of _BIT directions already counted


def check_rows(track_ids: np.ndarray, class_ids: np.ndarray, xyxy: np.ndarray) -> tuple[np.ndarray, ...]:
    """Validate one frame's tracked rows and return them as (int64, int64, float array) views."""
    track_ids = np.asarray(track_ids)
    class_ids = np.asarray(class_ids)
    xyxy = np.asarray(xyxy)
    if xyxy.ndim != 2 or xyxy.shape[1] != 4:
        raise ValueError(f"xyxy must be a 2D np.ndarray with shape (_, 4), but got shape {xyxy.shape}")
    n = xyxy.shape[0]
    for name, arr in (("track_ids", track_ids), ("class_ids", class_ids)):
        if arr.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) to match xyxy, but got shape {arr.shape}")
        if n and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must be integers, but got dtype {arr.dtype}")
    track_ids = track_ids.astype(np.int64, copy=False)
    valid = track_ids[track_ids >= 0]
    if valid.size != np.unique(valid).size:
        raise ValueError(f"track_ids must be unique within a frame, but got {sorted(valid.tolist())}")
    return track_ids, class_ids.astype(np.int64, copy=False), xyxy


class LineCounter:
    """Cumulative in/out counts of tracks crossing one line; see the module docstring for the rule.

    ``update`` takes one frame's tracked rows (``track_ids`` int64 (N,), -1 for rows that are
    not in a confirmed track and are ignored; ``class_ids`` int (N,); ``xyxy`` (N, 4) source
    pixels) and returns the crossings counted on that frame.
    """

    def __init__(self, spec: LineSpec, *, max_age: int = 300) -> None:
        if not isinstance(spec, LineSpec):
            raise TypeError(f"spec must be a LineSpec, but got {type(spec).__name__}")
        if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 1:
            raise ValueError(f"max_age must be an integer >= 1 (updates), but got {max_age!r}")
        self.spec = spec
        self.max_age = max_age
        self._tracks: OrderedDict[int, _Track] = OrderedDict()  # least recently seen first
        self._updates = 0
        self._in = 0
        self._out = 0
        self._by_class: dict[int, dict[str, int]] = {}
        self.forgotten = 0  # tracks dropped by the age limit, for stats

    def update(self, track_ids: np.ndarray, class_ids: np.ndarray, xyxy: np.ndarray) -> list[Crossing]:
        track_ids, class_ids, xyxy = check_rows(track_ids, class_ids, xyxy)
        self._updates += 1
        now = self._updates
        spec = self.spec
        keep = track_ids >= 0
        ids = track_ids[keep].tolist()
        classes = class_ids[keep].tolist()
        points = anchors(xyxy[keep], spec.anchor)
        now_sides = sides(points, spec.start, spec.end, spec.margin).tolist()
        found: list[Crossing] = []
        for tid, cls, side, (x, y) in zip(ids, classes, now_sides, points.tolist(), strict=True):
            track = self._tracks.get(tid)
            if track is None:
                self._tracks[tid] = _Track(side, x, y, now)
                continue
            track.seen = now
            self._tracks.move_to_end(tid)
            if side == 0:
                continue  # on the line: keep the last position that had a side
            if track.side != 0 and track.side != side:
                direction = crossing((track.x, track.y), (x, y), spec.start, spec.end, spec.margin)
                if direction != 0:
                    name = IN if direction > 0 else OUT
                    if not track.counted & _BIT[name]:
                        track.counted |= _BIT[name]
                        self._count(name, cls)
                        found.append(Crossing(spec.name, tid, cls, name))
            track.side, track.x, track.y = side, x, y
        self._expire(now)
        return found

    def _count(self, direction: str, class_id: int) -> None:
        if direction == IN:
            self._in += 1
        else:
            self._out += 1
        per_class = self._by_class.setdefault(class_id, {IN: 0, OUT: 0})
        per_class[direction] += 1

    def _expire(self, now: int) -> None:
        while self._tracks:
            tid, track = next(iter(self._tracks.items()))
            if now - track.seen < self.max_age:
                break
            del self._tracks[tid]
            self.forgotten += 1

    def forget(self, track_ids: np.ndarray | list[int]) -> None:
        """Drop what is remembered about these tracks (for example when the tracker removes them)."""
        for tid in np.asarray(track_ids, np.int64).reshape(-1).tolist():
            self._tracks.pop(tid, None)

    @property
    def counts(self) -> dict[str, int]:
        """Cumulative ``{"in": n, "out": n}`` (a new dict each call)."""
        return {IN: self._in, OUT: self._out}

    @property
    def counts_by_class(self) -> dict[int, dict[str, int]]:
        """Cumulative ``{class_id: {"in": n, "out": n}}`` by the class a track had when it crossed."""
        return {cls: dict(c) for cls, c in sorted(self._by_class.items())}

    @property
    def remembered(self) -> int:
        """How many tracks the counter holds state for now (bounded by the age limit)."""
        return len(self._tracks)
