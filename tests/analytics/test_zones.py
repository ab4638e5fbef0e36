"""Point in polygon (Numba kernel, NumPy twin, OpenCV as an outside check) and ZoneMonitor's bookkeeping."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from streamer.analytics.geometry import ZoneSpec
from streamer.analytics.zones import ZoneEvent, ZoneMonitor, points_in_polygon, points_in_polygon_reference

SQUARE = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float64)
L_SHAPE = np.array([[0, 0], [10, 0], [10, 4], [4, 4], [4, 10], [0, 10]], np.float64)
BOW_TIE = np.array([[0, 0], [10, 10], [10, 0], [0, 10]], np.float64)  # self-crossing at (5, 5)

# (why, polygon, points, inside)
PIP: list[tuple[str, np.ndarray, list[tuple[float, float]], list[bool]]] = [
    ("no points", SQUARE, [], []),
    ("square", SQUARE, [(5, 5), (0.5, 9.5), (-1, 5), (11, 5), (5, -0.1), (5, 10.1)],
     [True, True, False, False, False, False]),
    ("concave notch is outside", L_SHAPE, [(2, 2), (8, 2), (2, 8), (8, 8), (5, 5)], [True, True, True, False, False]),
    ("bow tie, even-odd", BOW_TIE, [(2, 5), (8, 5), (5, 2), (5, 8)], [True, True, False, False]),
]


@pytest.mark.parametrize(("why", "polygon", "points", "want"), PIP, ids=[p[0] for p in PIP])
def test_points_in_polygon(why: str, polygon: np.ndarray, points: list[tuple[float, float]], want: list[bool]) -> None:
    pts = np.array(points, np.float64).reshape(-1, 2)
    for fn in (points_in_polygon, points_in_polygon_reference):
        got = fn(pts, polygon)
        assert got.dtype == np.bool_ and got.shape == (len(points),)
        assert got.tolist() == want, fn.__name__


def random_polygon(rng: np.random.Generator, m: int) -> np.ndarray:
    angles = np.sort(rng.uniform(0, 2 * np.pi, m))
    radii = rng.uniform(20, 200, m)  # star-shaped, often concave
    return np.stack([320 + radii * np.cos(angles), 240 + radii * np.sin(angles)], axis=1)


def test_kernel_matches_its_numpy_twin_exactly() -> None:
    rng = np.random.default_rng(11)
    for _ in range(200):
        poly = random_polygon(rng, int(rng.integers(3, 24)))
        if rng.random() < 0.3:
            poly = np.round(poly)  # integer polygons put points on edges and vertices below
        pts = np.concatenate([rng.uniform(100, 540, (50, 2)), poly, np.round(rng.uniform(100, 540, (20, 2)))])
        np.testing.assert_array_equal(points_in_polygon(pts, poly), points_in_polygon_reference(pts, poly))


def test_kernel_agrees_with_opencv_off_the_edges() -> None:
    rng = np.random.default_rng(12)
    checked = 0
    for _ in range(100):
        poly = random_polygon(rng, int(rng.integers(3, 16)))
        pts = rng.uniform(100, 540, (60, 2))
        got = points_in_polygon(pts, poly)
        contour = poly.astype(np.float32).reshape(-1, 1, 2)
        for (x, y), inside in zip(pts.tolist(), got.tolist(), strict=True):
            distance = cv2.pointPolygonTest(contour, (x, y), True)
            if abs(distance) > 1e-3:  # on an edge either answer is allowed
                assert inside == (distance > 0), (x, y)
                checked += 1
    assert checked > 5000


# --------------------------------------------------------------------------- ZoneMonitor

DRIVEWAY = ZoneSpec("driveway", ((0, 200), (640, 200), (640, 272), (0, 272)))


def frame(rows: list[tuple[int, int, float, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(track_id, class_id, x, y) of each box's bottom centre -> update's arrays."""
    ids = np.array([r[0] for r in rows], np.int64)
    cls = np.array([r[1] for r in rows], np.int32)
    xyxy = np.array([[x - 10, y - 40, x + 10, y] for _, _, x, y in rows], np.float32).reshape(-1, 4)
    return ids, cls, xyxy


IN, OUT = 240.0, 100.0  # a y inside the driveway, one above it


def test_empty_updates() -> None:
    zone = ZoneMonitor(DRIVEWAY)
    assert zone.update(*frame([]), t=0.0) == ([], [])
    assert zone.occupancy == {} and zone.entries_total == {} and zone.dwell_times == {}
    assert zone.dwell(1) == 0.0


def test_occupancy_entries_and_dwell() -> None:
    zone = ZoneMonitor(DRIVEWAY)
    person, car = 0, 2
    came, left = zone.update(*frame([(1, person, 50, IN), (2, person, 100, OUT), (3, car, 300, IN)]), t=10.0)
    assert came == [ZoneEvent("driveway", 1, person, 10.0), ZoneEvent("driveway", 3, car, 10.0)] and left == []
    assert zone.occupancy == {person: 1, car: 1}

    came, left = zone.update(*frame([(1, person, 60, IN), (2, person, 100, IN), (3, car, 310, IN)]), t=10.5)
    assert came == [ZoneEvent("driveway", 2, person, 10.5)] and left == []
    assert zone.occupancy == {person: 2, car: 1}
    assert zone.entries_total == {person: 2, car: 1}
    assert zone.dwell(1) == 0.5 and zone.dwell(2) == 0.0 and zone.dwell(3) == 0.5

    # 3 drives out, 1 walks on inside.
    came, left = zone.update(*frame([(1, person, 70, IN), (2, person, 100, IN), (3, car, 310, OUT)]), t=12.0)
    assert came == [] and left == [ZoneEvent("driveway", 3, car, 12.0, 2.0)]
    assert zone.occupancy == {person: 2}
    assert zone.dwell_times == {1: 2.0, 2: 1.5}
    assert zone.dwell(3) == 0.0
    assert zone.entries_total == {person: 2, car: 1}


def test_a_vanished_track_exits_at_once() -> None:
    zone = ZoneMonitor(DRIVEWAY)
    zone.update(*frame([(1, 0, 50, IN), (2, 0, 80, IN)]), t=0.0)
    came, left = zone.update(*frame([(2, 0, 80, IN)]), t=1.0)  # 1 lost by the tracker
    assert came == [] and left == [ZoneEvent("driveway", 1, 0, 1.0, 1.0)]
    came, left = zone.update(*frame([(-1, 0, 80, IN)]), t=2.0)  # 2's row untracked now
    assert left == [ZoneEvent("driveway", 2, 0, 2.0, 2.0)]
    assert zone.occupancy == {}
    # 1 found again inside: a new stay (dwell from 0), but the same track is not counted twice.
    came, left = zone.update(*frame([(1, 0, 50, IN)]), t=3.0)
    assert came == [ZoneEvent("driveway", 1, 0, 3.0)]
    zone.update(*frame([(1, 0, 50, IN)]), t=3.25)
    assert zone.dwell(1) == 0.25
    assert zone.entries_total == {0: 2}


def test_untracked_rows_are_ignored() -> None:
    zone = ZoneMonitor(DRIVEWAY)
    for t in range(5):
        assert zone.update(*frame([(-1, 0, 50, IN), (-1, 1, 60, IN)]), t=float(t)) == ([], [])
    assert zone.occupancy == {} and zone.entries_total == {}


def test_occupancy_follows_the_class_now_but_entries_keep_the_first() -> None:
    zone = ZoneMonitor(DRIVEWAY)
    zone.update(*frame([(1, 5, 50, IN)]), t=0.0)
    zone.update(*frame([(1, 7, 50, IN)]), t=1.0)
    assert zone.occupancy == {7: 1} and zone.entries_total == {5: 1}
    _, left = zone.update(*frame([]), t=2.0)
    assert left == [ZoneEvent("driveway", 1, 7, 2.0, 2.0)]


def test_anchor() -> None:
    # A box standing just above the zone: its bottom is in, its top is not.
    top = ZoneMonitor(ZoneSpec("z", DRIVEWAY.polygon, anchor="top_center"))
    bottom = ZoneMonitor(DRIVEWAY)
    rows = frame([(1, 0, 50, 210)])  # box y from 170 to 210
    bottom.update(*rows, t=0.0)
    top.update(*rows, t=0.0)
    assert bottom.occupancy == {0: 1} and top.occupancy == {}


def test_time_going_back_never_gives_a_negative_dwell() -> None:
    zone = ZoneMonitor(DRIVEWAY)
    zone.update(*frame([(1, 0, 50, IN)]), t=100.0)
    zone.update(*frame([(1, 0, 50, IN)]), t=3.0)  # the stream's clock restarted
    assert zone.dwell(1) == 0.0
    _, left = zone.update(*frame([]), t=4.0)
    assert left[0].dwell_s == 0.0


def test_memory_is_bounded_by_age() -> None:
    zone = ZoneMonitor(DRIVEWAY, max_age=5)
    for i in range(500):
        zone.update(*frame([(i, 0, 50, IN), (100_000 + i, 0, 50, OUT)]), t=float(i))
        assert zone.remembered <= 5
    assert zone.entries_total == {0: 500}
    assert zone.forgotten == 495


@pytest.mark.parametrize("t", [float("nan"), float("inf"), None, "1.0", True])
def test_bad_time(t: object) -> None:
    with pytest.raises(ValueError, match=r"^t must be a finite number of seconds, but got "):
        ZoneMonitor(DRIVEWAY).update(*frame([]), t=t)  # type: ignore[arg-type]


def test_bad_construction() -> None:
    with pytest.raises(ValueError, match=r"max_age must be an integer >= 1 \(updates\), but got -3"):
        ZoneMonitor(DRIVEWAY, max_age=-3)
    with pytest.raises(TypeError, match="spec must be a ZoneSpec, but got LineSpec"):
        from streamer.analytics.geometry import LineSpec

        ZoneMonitor(LineSpec("g", (0, 0), (1, 1)))  # type: ignore[arg-type]
