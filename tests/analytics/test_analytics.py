"""Analytics per stream: Detections in, FrameAnalytics out, and its JSONL record shape."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest

from streamer.analytics import Analytics, Crossing, FrameAnalytics, ZoneEvent, parse_lines, parse_zones
from streamer.errors import ConfigError
from streamer.types import Detections

NAMES = ("person", "bicycle", "car")
LINES = parse_lines({"gate": [[400, 0], [400, 272]], "door": {"start": [0, 100], "end": [300, 100]}})
ZONES = parse_zones({"driveway": [[0, 200], [640, 200], [640, 272], [0, 272]]})


def dets(rows: Sequence[tuple[int, int, float, float]], tracked: bool = True) -> Detections:
    """(track_id, class_id, x, y) of each box's bottom centre."""
    n = len(rows)
    return Detections(
        xyxy=np.array([[x - 10, y - 40, x + 10, y] for _, _, x, y in rows], np.float32).reshape(n, 4),
        confidence=np.full(n, 0.9, np.float32),
        class_id=np.array([c for _, c, _, _ in rows], np.int32),
        tracker_id=np.array([i for i, _, _, _ in rows], np.int64) if tracked else None,
    )


def test_nothing_configured_and_nothing_seen() -> None:
    fa = Analytics().update(Detections.empty(), t=0.0)
    assert fa.to_record(NAMES) == {"lines": {}, "zones": {}, "zone_entries": {}}
    fa = Analytics(LINES, ZONES).update(Detections.empty(), t=0.0)
    assert fa.to_record(NAMES) == {
        "lines": {"gate": {"in": 0, "out": 0, "classes": {}}, "door": {"in": 0, "out": 0, "classes": {}}},
        "zones": {"driveway": {}},
        "zone_entries": {"driveway": {}},
    }
    assert (fa.crossings, fa.entries, fa.exits) == ((), (), ())


def test_a_stream_of_frames() -> None:
    analytics = Analytics(LINES, ZONES)
    frames = [
        (0.0, [(1, 2, 450, 240), (2, 0, 150, 90), (3, 0, 100, 150), (-1, 0, 50, 240)]),
        (0.5, [(1, 2, 350, 240), (2, 0, 150, 110), (3, 0, 100, 230)]),  # 1 crosses gate in, 2 door in, 3 enters
        (1.0, [(1, 2, 450, 240), (3, 0, 100, 235)]),  # 1 back out; 2 gone
        (2.5, [(1, 2, 350, 150)]),  # 1 in again (not counted again) and leaves the driveway; 3 gone
    ]
    out: list[FrameAnalytics] = [analytics.update(dets(rows), t) for t, rows in frames]

    assert out[0].entries == (ZoneEvent("driveway", 1, 2, 0.0),)
    assert out[1].crossings == (Crossing("gate", 1, 2, "in"), Crossing("door", 2, 0, "in"))
    assert out[1].entries == (ZoneEvent("driveway", 3, 0, 0.5),)
    assert out[1].dwell == {"driveway": {1: 0.5, 3: 0.0}}
    assert out[2].crossings == (Crossing("gate", 1, 2, "out"),)
    assert out[3].crossings == ()
    # 3 was last seen inside at 1.0 and is unseen for longer than the grace (1 s): it left then.
    assert out[3].exits == (ZoneEvent("driveway", 1, 2, 2.5, 2.5), ZoneEvent("driveway", 3, 0, 1.0, 0.5))

    last = out[-1]
    assert last.t == 2.5
    assert last.lines == {"gate": {"in": 1, "out": 1}, "door": {"in": 1, "out": 0}}
    assert last.lines_by_class == {"gate": {2: {"in": 1, "out": 1}}, "door": {0: {"in": 1, "out": 0}}}
    assert last.zones == {"driveway": {}}
    assert last.zone_entries == {"driveway": {0: 1, 2: 1}}

    assert out[1].to_record(NAMES) == {
        "lines": {
            "gate": {"in": 1, "out": 0, "classes": {"car": {"in": 1, "out": 0}}},
            "door": {"in": 1, "out": 0, "classes": {"person": {"in": 1, "out": 0}}},
        },
        "zones": {"driveway": {"person": 1, "car": 1}},
        "zone_entries": {"driveway": {"person": 1, "car": 1}},
        "events": [
            {"type": "cross", "line": "gate", "track_id": 1, "class": "car", "direction": "in"},
            {"type": "cross", "line": "door", "track_id": 2, "class": "person", "direction": "in"},
            {"type": "entry", "zone": "driveway", "track_id": 3, "class": "person"},
        ],
    }
    record = last.to_record(NAMES)
    assert record["events"] == [
        {"type": "exit", "zone": "driveway", "track_id": 1, "class": "car", "dwell_s": 2.5},
        {"type": "exit", "zone": "driveway", "track_id": 3, "class": "person", "dwell_s": 0.5},
    ]
    assert json.loads(json.dumps(record)) == record
    # Earlier snapshots are not changed by later updates.
    assert out[1].lines["gate"] == {"in": 1, "out": 0}


def test_record_names_unknown_classes_by_number_and_merges_shared_names() -> None:
    analytics = Analytics(LINES, ZONES)
    analytics.update(dets([(1, 7, 450, 240), (2, 1, 460, 250)]), 0.0)
    fa = analytics.update(dets([(1, 7, 350, 240), (2, 1, 340, 250)]), 1.0)
    assert fa.to_record(NAMES)["lines"]["gate"]["classes"] == {"bicycle": {"in": 1, "out": 0}, "7": {"in": 1, "out": 0}}
    assert fa.to_record(("a", "x", "c", "d", "e", "f", "g", "x"))["zones"] == {"driveway": {"x": 2}}


def test_streams_do_not_share_state() -> None:
    a, b = Analytics(LINES), Analytics(LINES)
    a.update(dets([(1, 0, 450, 100)]), 0.0)
    b.update(dets([(1, 0, 350, 100)]), 0.0)
    assert a.update(dets([(1, 0, 350, 100)]), 1.0).lines["gate"] == {"in": 1, "out": 0}
    assert b.update(dets([(1, 0, 350, 100)]), 1.0).lines["gate"] == {"in": 0, "out": 0}


def test_untracked_detections_are_refused() -> None:
    with pytest.raises(ValueError, match=r"detections must carry tracker_id \(run a tracker before analytics\)"):
        Analytics(LINES).update(dets([(0, 0, 1, 1)], tracked=False), 0.0)


def test_bad_time() -> None:
    with pytest.raises(ValueError, match=r"^t must be a finite number of seconds, but got None$"):
        Analytics(LINES).update(Detections.empty(), None)  # type: ignore[arg-type]


def test_bad_specs() -> None:
    with pytest.raises(ConfigError, match=r"^lines: the name 'gate' is used twice$"):
        Analytics(LINES + LINES[:1])
    with pytest.raises(ConfigError, match=r"^zones must hold ZoneSpec values, but got LineSpec$"):
        Analytics((), LINES)  # type: ignore[arg-type]


def test_a_track_unseen_for_less_than_the_grace_stays_inside() -> None:
    """An occlusion (the tracker reports no row for a while, then the same id) keeps the stay
    and its dwell; past the grace the track exits at the time it was last seen."""
    analytics = Analytics((), ZONES, zone_grace_s=1.0)
    inside = [(5, 0, 100, 230)]
    timeline = [(0.0, inside), (0.4, []), (0.9, []), (1.2, inside), (1.6, []), (2.7, [])]
    out = [analytics.update(dets(rows), t) for t, rows in timeline]
    assert [len(f.entries) for f in out] == [1, 0, 0, 0, 0, 0]
    assert [f.zones["driveway"] for f in out[:5]] == [{0: 1}] * 5
    assert out[3].dwell == {"driveway": {5: 1.2}}
    assert out[5].exits == (ZoneEvent("driveway", 5, 0, 1.2, 1.2),)
    assert out[5].zones == {"driveway": {}}
    assert analytics.update(dets([(5, 0, 100, 100)]), 3.0).zone_entries == {"driveway": {0: 1}}
