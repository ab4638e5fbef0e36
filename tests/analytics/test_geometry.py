"""Line and zone specs: the YAML forms, the error table with exact messages, box anchors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from streamer.analytics.geometry import (
    ANCHORS,
    LineSpec,
    ZoneSpec,
    anchors,
    parse_lines,
    parse_zones,
    polygon_area,
)
from streamer.errors import ConfigError

VALID_ANCHORS = "['bottom_center', 'center', 'top_center', 'bottom_left', 'bottom_right', 'top_left', 'top_right']"
SQUARE = [[0, 0], [10, 0], [10, 10], [0, 10]]

# --------------------------------------------------------------------------- lines

LINES_OK: list[tuple[Any, tuple[LineSpec, ...]]] = [
    (None, ()),
    ({}, ()),
    ({"gate": [[400, 0], [400, 272]]}, (LineSpec("gate", (400.0, 0.0), (400.0, 272.0)),)),
    ({"gate": {"start": [400, 0], "end": [400, 272]}}, (LineSpec("gate", (400.0, 0.0), (400.0, 272.0)),)),
    (
        {"door": {"start": [0, 100.5], "end": [300, 100], "anchor": "center", "margin": 2}},
        (LineSpec("door", (0.0, 100.5), (300.0, 100.0), "center", 2.0),),
    ),
    (
        {"b": [[0, 0], [1, 1]], "a": [[2, 2], [3, 3]]},  # file order is kept, not sorted
        (LineSpec("b", (0.0, 0.0), (1.0, 1.0)), LineSpec("a", (2.0, 2.0), (3.0, 3.0))),
    ),
]


@pytest.mark.parametrize(("value", "want"), LINES_OK, ids=range(len(LINES_OK)))
def test_parse_lines(value: Any, want: tuple[LineSpec, ...]) -> None:
    got = parse_lines(value)
    assert got == want
    for spec in got:
        assert all(isinstance(v, float) for v in (*spec.start, *spec.end, spec.margin))


LINES_BAD: list[tuple[Any, str]] = [
    ([1, 2], "lines must be a mapping of name to line, but got [1, 2]"),
    ({1: [[0, 0], [1, 1]]}, "lines: a line name must be a non-empty string, but got 1"),
    ({"gate": [[0, 0], [1, 1], [2, 2]]}, "lines.gate must have 2 points, but got 3"),
    ({"gate": []}, "lines.gate must have 2 points, but got 0"),
    ({"gate": 5}, "lines.gate must be [[x, y], [x, y]] or {start: [x, y], end: [x, y]}, but got 5"),
    ({"gate": [[0, 0], [1]]}, "lines.gate.end must be [x, y] numbers, but got [1]"),
    ({"gate": {"start": [0, "a"], "end": [1, 1]}}, "lines.gate.start must be [x, y] numbers, but got [0, 'a']"),
    ({"gate": {"start": [True, 0], "end": [1, 1]}}, "lines.gate.start must be [x, y] numbers, but got [True, 0]"),
    ({"gate": {"start": [float("nan"), 0], "end": [1, 1]}},
     "lines.gate.start must be [x, y] numbers, but got [nan, 0]"),
    ({"gate": {"start": "0,0", "end": [1, 1]}}, "lines.gate.start must be [x, y] numbers, but got '0,0'"),
    ({"gate": {"start": [0, 0]}}, "lines.gate.end is missing: a line needs start and end, e.g. [x, y]"),
    ({"gate": {"start": [0, 0], "end": [1, 1], "stop": 1}},
     "lines.gate: unknown key 'stop', expecting one of ['anchor', 'end', 'margin', 'start']"),
    ({"gate": {"start": [400, 0], "end": [400, 0]}},
     "lines.gate has start == end ([400, 0]); a line needs two distinct points"),
    ({"gate": [[1.5, 2], [1.5, 2.0]]}, "lines.gate has start == end ([1.5, 2]); a line needs two distinct points"),
    ({"gate": {"start": [0, 0], "end": [1, 1], "anchor": "feet"}},
     f"lines.gate.anchor must be one of {VALID_ANCHORS}, but got 'feet'"),
    ({"gate": {"start": [0, 0], "end": [1, 1], "margin": -1}},
     "lines.gate.margin must be a number >= 0 (pixels), but got -1"),
    ({"gate": {"start": [0, 0], "end": [1, 1], "margin": "2"}},
     "lines.gate.margin must be a number >= 0 (pixels), but got '2'"),
]


@pytest.mark.parametrize(("value", "message"), LINES_BAD, ids=range(len(LINES_BAD)))
def test_parse_lines_errors(value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_lines(value)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_parse_lines_names_the_callers_key() -> None:
    with pytest.raises(ConfigError, match=r"^analytics\.lines\.gate must have 2 points, but got 1$"):
        parse_lines({"gate": [[0, 0]]}, where="analytics.lines")


# --------------------------------------------------------------------------- zones

ZONES_OK: list[tuple[Any, tuple[ZoneSpec, ...]]] = [
    (None, ()),
    ({}, ()),
    ({"z": [[0, 0], [4, 0], [0, 3]]}, (ZoneSpec("z", ((0.0, 0.0), (4.0, 0.0), (0.0, 3.0))),)),
    (
        {"driveway": {"points": SQUARE, "anchor": "center"}},
        (ZoneSpec("driveway", ((0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)), "center"),),
    ),
]


@pytest.mark.parametrize(("value", "want"), ZONES_OK, ids=range(len(ZONES_OK)))
def test_parse_zones(value: Any, want: tuple[ZoneSpec, ...]) -> None:
    assert parse_zones(value) == want


ZONES_BAD: list[tuple[Any, str]] = [
    ("x", "zones must be a mapping of name to zone, but got 'x'"),
    ({"": SQUARE}, "zones: a zone name must be a non-empty string, but got ''"),
    ({"driveway": [[0, 200], [640, 200]]}, "zones.driveway must have at least 3 points, but got 2"),
    ({"driveway": []}, "zones.driveway must have at least 3 points, but got 0"),
    ({"driveway": 5}, "zones.driveway must be a list of [x, y] points, but got 5"),
    ({"driveway": [[0, 0], [1, 0], [1]]}, "zones.driveway[2] must be [x, y] numbers, but got [1]"),
    ({"driveway": [[0, 0], [1, 1], [2, 2], [3, 3]]}, "zones.driveway has zero area (its points are all on one line)"),
    ({"driveway": [[5, 5], [5, 5], [5, 5]]}, "zones.driveway has zero area (its points are all on one line)"),
    ({"driveway": {"anchor": "center"}}, "zones.driveway.points is missing: a zone needs at least 3 [x, y] points"),
    ({"driveway": {"points": [[0, 0], "x", [1, 1]]}}, "zones.driveway.points[1] must be [x, y] numbers, but got 'x'"),
    ({"driveway": {"points": [[0, 0], [1, 1]]}}, "zones.driveway.points must have at least 3 points, but got 2"),
    ({"driveway": {"points": SQUARE, "anchor": "feet"}},
     f"zones.driveway.anchor must be one of {VALID_ANCHORS}, but got 'feet'"),
    ({"driveway": {"points": SQUARE, "polygon": SQUARE}},
     "zones.driveway: unknown key 'polygon', expecting one of ['anchor', 'points']"),
]


@pytest.mark.parametrize(("value", "message"), ZONES_BAD, ids=range(len(ZONES_BAD)))
def test_parse_zones_errors(value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_zones(value)
    assert str(info.value) == message


def test_specs_check_themselves_when_built_directly() -> None:
    with pytest.raises(ConfigError, match=r"^lines\.g has start == end \(\[1, 1\]\)"):
        LineSpec("g", (1, 1), (1, 1))
    with pytest.raises(ConfigError, match=r"^zones\.z must have at least 3 points, but got 2$"):
        ZoneSpec("z", ((0, 0), (1, 1)))
    with pytest.raises(ConfigError, match=r"^zones\.z\.anchor must be one of \["):
        ZoneSpec("z", ((0, 0), (1, 0), (0, 1)), anchor="middle")
    assert LineSpec("g", (0, 0), (1, 2)).start == (0.0, 0.0)


def test_polygon_area() -> None:
    assert polygon_area(((0.0, 0.0), (4.0, 0.0), (0.0, 3.0))) == 6.0
    assert polygon_area(((0.0, 0.0), (0.0, 3.0), (4.0, 0.0))) == 6.0  # either winding


# --------------------------------------------------------------------------- anchors

BOX = np.array([[10, 20, 30, 60]], np.float32)
ANCHOR_POINTS = {
    "bottom_center": (20, 60),
    "center": (20, 40),
    "top_center": (20, 20),
    "bottom_left": (10, 60),
    "bottom_right": (30, 60),
    "top_left": (10, 20),
    "top_right": (30, 20),
}


def test_anchor_table_covers_every_anchor() -> None:
    assert set(ANCHOR_POINTS) == set(ANCHORS)


@pytest.mark.parametrize("anchor", ANCHORS)
def test_anchors(anchor: str) -> None:
    empty = anchors(np.empty((0, 4), np.float32), anchor)
    assert empty.shape == (0, 2) and empty.dtype == np.float64
    got = anchors(np.concatenate([BOX, BOX + 100]), anchor)
    want = np.array([ANCHOR_POINTS[anchor], np.add(ANCHOR_POINTS[anchor], 100)], np.float64)
    np.testing.assert_array_equal(got, want)


def test_anchors_errors() -> None:
    with pytest.raises(ConfigError, match=r"^anchor must be one of \[.*\], but got 'feet'$"):
        anchors(BOX, "feet")
    with pytest.raises(ValueError, match=r"xyxy must be a 2D np.ndarray with shape \(_, 4\), but got shape \(3,\)"):
        anchors(np.zeros(3), "center")
