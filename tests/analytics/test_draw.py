"""Drawing lines and zones: pixels change along them, zero and missing counts are fine."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.analytics.draw import draw_lines, draw_zones
from streamer.analytics.geometry import LineSpec, ZoneSpec

NAMES = ("person", "bicycle", "car")
GATE = LineSpec("gate", (400, 0), (400, 272))
ZONE = ZoneSpec("driveway", ((20, 200), (620, 200), (620, 262), (20, 262)))


def blank(h: int = 272, w: int = 640) -> np.ndarray:
    return np.full((h, w, 3), 40, np.uint8)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    diff: np.ndarray = np.any(a != b, axis=2)
    return diff


def test_nothing_to_draw() -> None:
    image = blank()
    assert draw_lines(image, (), {}) is image
    assert draw_zones(image, (), {}, NAMES) is image
    assert np.all(image == 40)


@pytest.mark.parametrize("counts", [{}, {"gate": {"in": 0, "out": 0}}, {"gate": {"in": 12, "out": 3}}])
def test_line_pixels_and_arrow(counts: dict[str, dict[str, int]]) -> None:
    image = blank()
    out = draw_lines(image, [GATE], counts)
    assert out is image
    diff = changed(image, blank())
    assert diff[::10, 400].all()  # along the whole line
    # The arrow points the `in` way, towards -x for this line: pixels left of it near the middle,
    # beyond where the label (on the +x side) could be.
    assert diff[130:142, 375:395].any()
    assert not diff[:, :370].any()


def test_label_shows_the_counts() -> None:
    zero, some = blank(), blank()
    draw_lines(zero, [GATE], {})
    draw_lines(some, [GATE], {"gate": {"in": 12, "out": 3}})
    assert changed(zero, some).any()
    assert not changed(zero, some)[:, :395].any()  # only the label differs, on the +x side


@pytest.mark.parametrize("occupancy", [{}, {"driveway": {}}, {"driveway": {0: 2, 2: 1}}])
def test_zone_outline_and_fill(occupancy: dict[str, dict[int, int]]) -> None:
    image = blank()
    draw_zones(image, [ZONE], occupancy, NAMES)
    diff = changed(image, blank())
    assert diff[200, 100:600].all() and diff[262, 100:600].all()  # top and bottom edges
    assert diff[230, 100:600].all()  # translucent fill inside
    assert not diff[100:180, 100:600].any() and not diff[265:, :].any()  # nothing far outside
    outline_only = blank()
    draw_zones(outline_only, [ZONE], occupancy, NAMES, fill_alpha=0.0)
    assert not changed(outline_only, blank())[230, 100:600].any()


def test_zone_fill_is_translucent() -> None:
    image = np.zeros((272, 640, 3), np.uint8)
    image[:, :, 1] = 200
    draw_zones(image, [ZONE], {}, NAMES, fill_alpha=0.2)
    inside = image[230, 300]
    assert 0 < inside[1] < 200 and inside[1] > 100  # mostly the picture, tinted


def test_geometry_off_the_frame_is_clipped() -> None:
    image = blank(100, 100)
    draw_zones(image, [ZoneSpec("far", ((500, 500), (600, 500), (600, 600)))], {}, NAMES)
    draw_lines(image, [LineSpec("edge", (-50, 50), (150, 50))], {})
    assert changed(image, blank(100, 100))[50, :].all()


def test_bad_alpha() -> None:
    with pytest.raises(ValueError, match=r"fill_alpha must be in \[0, 1\], but got 1.5"):
        draw_zones(blank(), [ZONE], {}, NAMES, fill_alpha=1.5)
