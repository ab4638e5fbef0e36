"""Line counts and zone occupancy of tracked detections, one :class:`Analytics` per stream.

``Analytics(lines, zones)`` holds one :class:`~streamer.analytics.lines.LineCounter` per
line and one :class:`~streamer.analytics.zones.ZoneMonitor` per zone; all state lives in
that object, so each camera needs its own. Feed it every frame's tracked
:class:`~streamer.types.Detections` (``tracker_id`` -1 rows are ignored) and the frame time:

    analytics = Analytics(parse_lines(cfg["lines"]), parse_zones(cfg["zones"]))
    frame_analytics = analytics.update(detections, t=frame.pts_s)
    record.update(frame_analytics.to_record(names))

The JSONL form, :meth:`FrameAnalytics.to_record`, with class names::

    {"lines": {"gate": {"in": 3, "out": 1, "classes": {"car": {"in": 2, "out": 1}}}},
     "zones": {"driveway": {"person": 2}},
     "zone_entries": {"driveway": {"person": 5}},
     "events": [{"type": "cross", "line": "gate", "track_id": 7, "class": "car", "direction": "in"},
                {"type": "entry", "zone": "driveway", "track_id": 9, "class": "person"},
                {"type": "exit", "zone": "driveway", "track_id": 4, "class": "person", "dwell_s": 3.2}]}

``lines`` (cumulative counts), ``zones`` (occupancy now) and ``zone_entries`` (cumulative
distinct tracks that entered) are always present, as empty mappings when nothing is
configured; ``events`` only on frames that have any, so a quiet stream writes short records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.analytics.geometry import ANCHORS, LineSpec, ZoneSpec, anchors, parse_lines, parse_zones
from streamer.analytics.lines import Crossing, LineCounter, crossing
from streamer.analytics.zones import ZoneEvent, ZoneMonitor, points_in_polygon
from streamer.errors import ConfigError
from streamer.types import Detections

__all__ = [
    "ANCHORS",
    "Analytics",
    "Crossing",
    "FrameAnalytics",
    "LineCounter",
    "LineSpec",
    "ZoneEvent",
    "ZoneMonitor",
    "ZoneSpec",
    "anchors",
    "crossing",
    "parse_lines",
    "parse_zones",
    "points_in_polygon",
]


def _label(names: tuple[str, ...], class_id: int) -> str:
    return names[class_id] if 0 <= class_id < len(names) else str(class_id)


def _by_name(per_class: dict[int, int], names: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for cls, n in per_class.items():
        label = _label(names, cls)
        out[label] = out.get(label, 0) + n  # two ids with one name add up rather than overwrite
    return out


@dataclass(frozen=True, slots=True)
class FrameAnalytics:
    """What one frame's update produced; the mappings are snapshots, safe to keep.

    ``lines``: cumulative ``{line: {"in": n, "out": n}}``; ``lines_by_class``: the same split
    ``{line: {class_id: {"in", "out"}}}``; ``zones``: occupancy now ``{zone: {class_id: n}}``;
    ``zone_entries``: cumulative distinct tracks that entered, ``{zone: {class_id: n}}``;
    ``crossings``, ``entries``, ``exits``: this frame's events; ``dwell``: ``{zone: {track_id:
    seconds}}`` of the tracks inside now; ``t``: the frame time given to the update.
    """

    t: float
    lines: dict[str, dict[str, int]]
    lines_by_class: dict[str, dict[int, dict[str, int]]]
    zones: dict[str, dict[int, int]]
    zone_entries: dict[str, dict[int, int]]
    crossings: tuple[Crossing, ...]
    entries: tuple[ZoneEvent, ...]
    exits: tuple[ZoneEvent, ...]
    dwell: dict[str, dict[int, float]]

    def to_record(self, names: tuple[str, ...]) -> dict[str, Any]:
        """The JSONL form with class names (see the module docstring for the shape)."""
        lines: dict[str, Any] = {}
        for line, counts in self.lines.items():
            classes: dict[str, dict[str, int]] = {}
            for cls, c in self.lines_by_class.get(line, {}).items():
                slot = classes.setdefault(_label(names, cls), {"in": 0, "out": 0})
                slot["in"] += c["in"]
                slot["out"] += c["out"]
            lines[line] = {"in": counts["in"], "out": counts["out"], "classes": classes}
        record: dict[str, Any] = {
            "lines": lines,
            "zones": {zone: _by_name(occ, names) for zone, occ in self.zones.items()},
            "zone_entries": {zone: _by_name(ent, names) for zone, ent in self.zone_entries.items()},
        }
        events: list[dict[str, Any]] = [
            {"type": "cross", "line": c.line, "track_id": c.track_id, "class": _label(names, c.class_id),
             "direction": c.direction}
            for c in self.crossings
        ]
        events += [
            {"type": "entry", "zone": e.zone, "track_id": e.track_id, "class": _label(names, e.class_id)}
            for e in self.entries
        ]
        events += [
            {"type": "exit", "zone": e.zone, "track_id": e.track_id, "class": _label(names, e.class_id),
             "dwell_s": round(e.dwell_s, 3)}
            for e in self.exits
        ]
        if events:
            record["events"] = events
        return record


def _unique_names(specs: Sequence[LineSpec | ZoneSpec], kind: type, where: str) -> None:
    seen: set[str] = set()
    for spec in specs:
        if not isinstance(spec, kind):
            raise ConfigError(f"{where} must hold {kind.__name__} values, but got {type(spec).__name__}")
        if spec.name in seen:
            raise ConfigError(f"{where}: the name {spec.name!r} is used twice")
        seen.add(spec.name)


class Analytics:
    """Every line and zone of one stream; ``update`` once per frame, in frame order.

    ``max_age`` (updates) bounds what is remembered about tracks no longer seen;
    ``zone_grace_s`` is how long a track may go unseen inside a zone before it exits; see
    :mod:`streamer.analytics.lines` and :mod:`streamer.analytics.zones` for the rules.
    """

    def __init__(self, lines: Sequence[LineSpec] = (), zones: Sequence[ZoneSpec] = (), *, max_age: int = 300,
                 zone_grace_s: float = 1.0) -> None:
        lines, zones = tuple(lines), tuple(zones)
        _unique_names(lines, LineSpec, "lines")
        _unique_names(zones, ZoneSpec, "zones")
        self.lines = lines
        self.zones = zones
        self._counters = [LineCounter(spec, max_age=max_age) for spec in lines]
        self._monitors = [ZoneMonitor(spec, max_age=max_age, grace_s=zone_grace_s) for spec in zones]

    def update(self, detections: Detections, t: float) -> FrameAnalytics:
        """Count this frame's tracked ``detections`` (source-frame pixels) seen at time ``t`` seconds.

        ``t`` is any clock in seconds that grows with the frames (stream time or
        ``Frame.captured_at``); only differences of it are used, for dwell times.
        """
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
            raise ValueError(f"t must be a finite number of seconds, but got {t!r}")
        if detections.tracker_id is None:
            if len(detections):
                raise ValueError("detections must carry tracker_id (run a tracker before analytics), but got None")
            track_ids = np.empty((0,), np.int64)
        else:
            track_ids = detections.tracker_id
        class_ids, xyxy = detections.class_id, detections.xyxy
        crossings: list[Crossing] = []
        for counter in self._counters:
            crossings += counter.update(track_ids, class_ids, xyxy)
        entries: list[ZoneEvent] = []
        exits: list[ZoneEvent] = []
        for monitor in self._monitors:
            came, left = monitor.update(track_ids, class_ids, xyxy, t)
            entries += came
            exits += left
        return FrameAnalytics(
            t=float(t),
            lines={c.spec.name: c.counts for c in self._counters},
            lines_by_class={c.spec.name: c.counts_by_class for c in self._counters},
            zones={m.spec.name: m.occupancy for m in self._monitors},
            zone_entries={m.spec.name: m.entries_total for m in self._monitors},
            crossings=tuple(crossings),
            entries=tuple(entries),
            exits=tuple(exits),
            dwell={m.spec.name: m.dwell_times for m in self._monitors},
        )
