"""The line counting rule as a table, the direction convention, and LineCounter scenarios with exact counts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from streamer.analytics.geometry import LineSpec, Point
from streamer.analytics.lines import Crossing, LineCounter, _side, crossing, sides

A: Point = (400.0, 0.0)  # the vertical line x = 400 drawn top to bottom
B: Point = (400.0, 272.0)

# (why, p0, p1, start, end, margin, expected): +1 in, -1 out, 0 not counted
RULE: list[tuple[str, Point, Point, Point, Point, float, int]] = [
    ("no motion", (450, 100), (450, 100), A, B, 0.0, 0),
    ("crosses towards -x", (450, 100), (350, 100), A, B, 0.0, 1),
    ("crosses towards +x", (350, 100), (450, 100), A, B, 0.0, -1),
    ("crosses diagonally", (410, 0), (390, 272), A, B, 0.0, 1),
    ("through the end point", (450, 262), (350, 282), A, B, 0.0, 1),
    ("through the start point", (350, 10), (450, -10), A, B, 0.0, -1),
    ("beside the end", (450, 280), (350, 280), A, B, 0.0, 0),
    ("beside the start", (450, -5), (350, -5), A, B, 0.0, 0),
    ("beside the end, diagonally", (450, 260), (350, 300), A, B, 0.0, 0),
    ("parallel, on one side", (450, 0), (450, 272), A, B, 0.0, 0),
    ("parallel, along the line", (400, 10), (400, 200), A, B, 0.0, 0),
    ("from the line to a side", (400, 100), (350, 100), A, B, 0.0, 0),
    ("from a side onto the line", (450, 100), (400, 100), A, B, 0.0, 0),
    ("stays on one side", (450, 100), (420, 50), A, B, 0.0, 0),
    ("one pixel each side, no margin", (401, 100), (399, 100), A, B, 0.0, 1),
    ("one pixel each side, inside the margin", (401, 100), (399, 100), A, B, 2.0, 0),
    ("three pixels each side, past the margin", (403, 100), (397, 100), A, B, 2.0, 1),
    ("horizontal line left to right, moving down", (150, 90), (150, 110), (0, 100), (300, 100), 0.0, 1),
    ("horizontal line left to right, moving up", (150, 110), (150, 90), (0, 100), (300, 100), 0.0, -1),
    ("horizontal line right to left, moving down", (150, 90), (150, 110), (300, 100), (0, 100), 0.0, -1),
    ("oblique line, crossing its middle", (0, 10), (10, 0), (0, 0), (10, 10), 0.0, -1),
    ("oblique line, past its end", (20, 30), (30, 20), (0, 0), (10, 10), 0.0, 0),
    ("far from the origin", (1e6 + 1, 5e5), (1e6 - 1, 5e5), (1e6, 0), (1e6, 1e6), 0.0, 1),
]


@pytest.mark.parametrize(("why", "p0", "p1", "start", "end", "margin", "want"), RULE, ids=[r[0] for r in RULE])
def test_rule(why: str, p0: Point, p1: Point, start: Point, end: Point, margin: float, want: int) -> None:
    assert crossing(p0, p1, start, end, margin) == want
    # Going back reverses the direction; drawing the line the other way round does too.
    assert crossing(p1, p0, start, end, margin) == -want
    assert crossing(p0, p1, end, start, margin) == -want


def test_direction_of_a_vertical_line_drawn_top_to_bottom() -> None:
    # The module docstring: for x = 400 from y = 0 to y = 272, moving towards -x is `in`,
    # moving towards +x is `out`.
    assert crossing((401, 136), (399, 136), A, B) == 1
    assert crossing((399, 136), (401, 136), A, B) == -1


def test_vectorised_sides_agree_with_the_rules_side_test() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        a = (float(rng.uniform(-50, 700)), float(rng.uniform(-50, 700)))
        b = (float(rng.uniform(-50, 700)), float(rng.uniform(-50, 700)))
        margin = float(rng.choice([0.0, 0.0, 3.0]))
        pts = rng.uniform(-50, 700, (40, 2))
        pts[:5] = np.array(a) + rng.uniform(0, 1, (5, 1)) * (np.array(b) - np.array(a))  # on or next to it
        pts[5] = a
        want = [_side((x, y), a, b, margin) for x, y in pts.tolist()]
        got = sides(pts, a, b, margin)
        assert got.dtype == np.int8
        assert got.tolist() == want
    assert sides(np.empty((0, 2)), A, B).shape == (0,)


# --------------------------------------------------------------------------- LineCounter


def boxes(points: list[tuple[float, float]]) -> np.ndarray:
    """Boxes whose bottom centre is each point."""
    out = np.array([[x - 10, y - 40, x + 10, y] for x, y in points], np.float32)
    return out.reshape(-1, 4)


def frame(rows: list[tuple[int, int, float, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(track_id, class_id, x, y) rows -> the arrays LineCounter.update takes."""
    ids = np.array([r[0] for r in rows], np.int64)
    cls = np.array([r[1] for r in rows], np.int32)
    return ids, cls, boxes([(r[2], r[3]) for r in rows])


GATE = LineSpec("gate", A, B)


def test_empty_frames_count_nothing() -> None:
    counter = LineCounter(GATE)
    for _ in range(3):
        assert counter.update(*frame([])) == []
    assert counter.counts == {"in": 0, "out": 0}
    assert counter.counts_by_class == {}
    assert counter.remembered == 0


def test_untracked_rows_are_never_merged_into_one_track() -> None:
    counter = LineCounter(GATE)
    # Two different untracked objects, one each side, alternating: as one fake track they would count.
    for i in range(10):
        x = 450.0 if i % 2 == 0 else 350.0
        assert counter.update(*frame([(-1, 0, x, 100.0), (-1, 0, 800 - x, 120.0)])) == []
    assert counter.counts == {"in": 0, "out": 0}
    assert counter.remembered == 0


def scenario() -> dict[int, list[tuple[int, int, float, float]]]:
    """Frame index -> rows (track_id, class_id, x, y) of the anchor; the gate is x = 400, y in [0, 272]."""
    rng = np.random.default_rng(3)
    frames: dict[int, list[tuple[int, int, float, float]]] = {i: [] for i in range(80)}
    # 1, class 0: comes from +x, jitters along the line (exactly on it) for 50 frames, leaves to -x: in 1.
    for i in range(80):
        x = 450.0 - 10 * i if i < 5 else (400.0 if i < 55 else 400.0 - 10 * (i - 54))
        frames[i].append((1, 0, x, 100.0 + float(rng.uniform(-3, 3))))
    # 2, class 2: at x=480 until frame 4, frames 5-9 dropped, x=320 from frame 10: in 1, on frame 10.
    for i in list(range(5)) + list(range(10, 20)):
        frames[i].append((2, 2, 480.0 if i < 5 else 320.0, 200.0))
    # 3, class 0: from -x up onto the line for 3 frames, then back: nothing.
    for i, x in enumerate([300, 340, 380, 400, 400, 400, 380, 340, 300]):
        frames[i].append((3, 0, float(x), 150.0))
    # 4, class 1: born standing on the line, stays for 60 frames, then steps off: nothing.
    for i in range(65):
        frames[i].append((4, 1, 400.0 if i < 60 else 420.0, 60.0))
    # 5, class 2: in on frame 2, out on frame 4, in again on frame 6 (already counted): in 1, out 1.
    for i, x in enumerate([450, 430, 370, 390, 410, 430, 370, 350]):
        frames[i].append((5, 2, float(x), 250.0))
    # 6, class 2: passes beside the end of the line (y = 300 > 272): nothing.
    for i, x in enumerate(range(450, 340, -20)):
        frames[i].append((6, 2, float(x), 300.0))
    # untracked rows crossing back and forth: nothing.
    for i in range(0, 80, 2):
        frames[i].append((-1, 0, 450.0 if i % 4 else 350.0, 100.0))
    return frames


def test_scenario_exact_counts() -> None:
    counter = LineCounter(GATE)
    events: list[tuple[int, Crossing]] = []
    for i, rows in scenario().items():
        events += [(i, c) for c in counter.update(*frame(rows))]
    assert events == [
        (2, Crossing("gate", 5, 2, "in")),
        (4, Crossing("gate", 5, 2, "out")),
        (10, Crossing("gate", 2, 2, "in")),
        (55, Crossing("gate", 1, 0, "in")),
    ]
    assert counter.counts == {"in": 3, "out": 1}
    assert counter.counts_by_class == {0: {"in": 1, "out": 0}, 2: {"in": 2, "out": 1}}


def test_jitter_across_the_line_needs_a_margin() -> None:
    # +-1 px across the line for 40 frames: without a margin, each flip is a real crossing,
    # bounded by "once per track and direction"; a 2 px margin hides them all.
    xs = [450.0] + [401.0 if i % 2 else 399.0 for i in range(40)] + [350.0]
    for margin, want in ((0.0, {"in": 1, "out": 1}), (2.0, {"in": 1, "out": 0})):
        counter = LineCounter(LineSpec("gate", A, B, margin=margin))
        for x in xs:
            counter.update(*frame([(9, 0, x, 100.0)]))
        assert counter.counts == want, margin


def test_class_is_the_tracks_class_at_the_crossing() -> None:
    counter = LineCounter(GATE)
    counter.update(*frame([(1, 3, 450.0, 100.0)]))
    assert counter.update(*frame([(1, 7, 350.0, 100.0)])) == [Crossing("gate", 1, 7, "in")]
    assert counter.counts_by_class == {7: {"in": 1, "out": 0}}


def test_anchor_decides_what_crosses() -> None:
    # A box whose bottom is past a horizontal line at y = 100 but whose centre is not.
    spec_bottom = LineSpec("h", (0, 100), (640, 100))
    spec_centre = LineSpec("h", (0, 100), (640, 100), anchor="center")
    before = np.array([[100, 40, 120, 90]], np.float32)  # bottom 90, centre 65
    after = np.array([[100, 70, 120, 110]], np.float32)  # bottom 110, centre 90
    ids, cls = np.array([1], np.int64), np.array([0], np.int32)
    bottom, centre = LineCounter(spec_bottom), LineCounter(spec_centre)
    for xyxy in (before, after):
        bottom.update(ids, cls, xyxy)
        centre.update(ids, cls, xyxy)
    assert bottom.counts == {"in": 1, "out": 0}
    assert centre.counts == {"in": 0, "out": 0}


def test_memory_is_bounded_by_age() -> None:
    counter = LineCounter(GATE, max_age=3)
    counter.update(*frame([(1, 0, 450.0, 100.0)]))
    for _ in range(3):
        counter.update(*frame([]))
    assert counter.remembered == 0 and counter.forgotten == 1
    # Back on the other side after being forgotten: a fresh track, no crossing.
    assert counter.update(*frame([(1, 0, 350.0, 100.0)])) == []
    # Many short-lived ids: never more than max_age frames' worth remembered.
    for i in range(1000):
        counter.update(*frame([(100 + i, 0, 450.0, 100.0)]))
        assert counter.remembered <= 3


def test_seen_tracks_are_kept_across_a_gap_shorter_than_max_age() -> None:
    counter = LineCounter(GATE, max_age=3)
    counter.update(*frame([(1, 0, 450.0, 100.0)]))
    counter.update(*frame([]))
    counter.update(*frame([]))
    assert counter.update(*frame([(1, 0, 350.0, 100.0)])) == [Crossing("gate", 1, 0, "in")]


def test_forget() -> None:
    counter = LineCounter(GATE)
    counter.update(*frame([(1, 0, 450.0, 100.0), (2, 0, 450.0, 120.0)]))
    counter.forget([1, 99])
    assert counter.remembered == 1
    got = counter.update(*frame([(1, 0, 350.0, 100.0), (2, 0, 350.0, 120.0)]))
    assert got == [Crossing("gate", 2, 0, "in")]


BAD_ROWS: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]] = [
    (np.zeros(2, np.int64), np.zeros(2, np.int32), np.zeros((2, 3), np.float32),
     r"xyxy must be a 2D np.ndarray with shape \(_, 4\), but got shape \(2, 3\)"),
    (np.zeros(3, np.int64), np.zeros(2, np.int32), np.zeros((2, 4), np.float32),
     r"track_ids must have shape \(2,\) to match xyxy, but got shape \(3,\)"),
    (np.arange(2, dtype=np.int64), np.zeros(1, np.int32), np.zeros((2, 4), np.float32),
     r"class_ids must have shape \(2,\) to match xyxy, but got shape \(1,\)"),
    (np.array([1.0, 2.0]), np.zeros(2, np.int32), np.zeros((2, 4), np.float32),
     r"track_ids must be integers, but got dtype float64"),
    (np.array([4, -1, 4, -1], np.int64), np.zeros(4, np.int32), np.zeros((4, 4), np.float32),
     r"track_ids must be unique within a frame, but got \[4, 4\]"),
]


@pytest.mark.parametrize(("ids", "cls", "xyxy", "message"), BAD_ROWS, ids=range(len(BAD_ROWS)))
def test_bad_rows(ids: np.ndarray, cls: np.ndarray, xyxy: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LineCounter(GATE).update(ids, cls, xyxy)


def test_bad_construction() -> None:
    with pytest.raises(ValueError, match=r"max_age must be an integer >= 1 \(updates\), but got 0"):
        LineCounter(GATE, max_age=0)
    with pytest.raises(TypeError, match="spec must be a LineSpec, but got dict"):
        LineCounter({"name": "gate"})  # type: ignore[arg-type]


def reference_counts(tracks: dict[int, list[tuple[int, float, float]]], spec: LineSpec) -> list[tuple[int, int, str]]:
    """The documented behaviour written out per track: the rule between consecutive positions
    that have a side, each direction counted the first time only -> (frame, track, direction)."""
    found = []
    for tid, seq in tracks.items():
        sided = [(i, (x, y)) for i, x, y in seq if _side((x, y), spec.start, spec.end, spec.margin) != 0]
        done: set[str] = set()
        for (_, p0), (i, p1) in itertools.pairwise(sided):
            d = crossing(p0, p1, spec.start, spec.end, spec.margin)
            name = "in" if d > 0 else "out"
            if d and name not in done:
                done.add(name)
                found.append((i, tid, name))
    return sorted(found)


@pytest.mark.parametrize("seed", range(20))
def test_counter_matches_the_rule_applied_per_track(seed: int) -> None:
    rng = np.random.default_rng(seed)
    spec = LineSpec("g", (200.0, 50.0), (260.0, 250.0), margin=float(rng.choice([0.0, 1.5])))
    n_tracks, n_frames = 12, 40
    pos = rng.uniform(120, 340, (n_tracks, 2))
    tracks: dict[int, list[tuple[int, float, float]]] = {t: [] for t in range(n_tracks)}
    counter = LineCounter(spec, max_age=10_000)
    got = []
    for i in range(n_frames):
        pos += rng.normal(0, 12, pos.shape)
        snap = rng.random(n_tracks) < 0.1  # some land exactly on the line
        pos[snap] = np.array(spec.start) + rng.uniform(0, 1, (int(snap.sum()), 1)) * np.subtract(spec.end, spec.start)
        present = rng.random(n_tracks) < 0.8  # dropped frames and misses
        rows = [(t, 0, float(pos[t, 0]), float(pos[t, 1])) for t in range(n_tracks) if present[t]]
        rows += [(-1, 0, float(x), float(y)) for x, y in rng.uniform(150, 310, (2, 2))]
        order = rng.permutation(len(rows))
        rows = [rows[k] for k in order]
        for t, _, x, y in rows:
            if t >= 0:
                tracks[t].append((i, x, y))
        ids = np.array([r[0] for r in rows], np.int64)
        # Exact anchors: boxes of width 0 whose bottom centre is (x, y).
        xyxy = np.array([[x, y - 10, x, y] for _, _, x, y in rows], np.float64)
        got += [(i, c.track_id, c.direction) for c in counter.update(ids, np.zeros(len(rows), np.int32), xyxy)]
    assert sorted(got) == reference_counts(tracks, spec)
