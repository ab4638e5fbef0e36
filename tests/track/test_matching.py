"""IoU kernel and assignment against their references, and properties for any input."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.track import reference
from streamer.track.matching import fuse_score, iou_matrix, linear_assignment


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 300, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(2, 120, (n, 2))], axis=1).astype(np.float32)


@pytest.mark.parametrize(("n", "m"), [(0, 0), (0, 3), (3, 0), (1, 1), (5, 9), (40, 30)])
def test_iou_matches_reference(n: int, m: int) -> None:
    rng = np.random.default_rng(n * 100 + m)
    a, b = random_boxes(rng, n), random_boxes(rng, m)
    got = iou_matrix(a, b)
    assert got.shape == (n, m) and got.dtype == np.float64
    np.testing.assert_allclose(got, reference.iou_matrix(a, b), rtol=1e-12, atol=1e-15)
    # Properties: symmetric, in [0, 1], a box overlaps itself fully.
    np.testing.assert_allclose(iou_matrix(b, a), got.T, rtol=1e-12)
    assert np.all((got >= 0) & (got <= 1))
    np.testing.assert_allclose(np.diagonal(iou_matrix(a, a)), 1.0)


def test_iou_degenerate_boxes_are_zero() -> None:
    boxes = np.array([[0, 0, 0, 0], [5, 5, 5, 9], [0, 0, 10, 10]], np.float32)
    got = iou_matrix(boxes, boxes)
    np.testing.assert_array_equal(got[:2, :2], 0.0)
    np.testing.assert_array_equal(got, reference.iou_matrix(boxes, boxes))


def test_fuse_score() -> None:
    iou = np.array([[1.0, 0.5], [0.0, 0.2]])
    np.testing.assert_allclose(fuse_score(iou, np.array([0.9, 0.5], np.float32)), [[0.1, 0.75], [1.0, 0.9]], atol=1e-7)
    assert fuse_score(np.empty((0, 2)), np.ones(2)).shape == (0, 2)


@pytest.mark.parametrize(
    ("shape", "thresh", "pairs", "rows", "cols"),
    [
        ((0, 0), 0.8, [], [], []),
        ((0, 4), 0.8, [], [], [0, 1, 2, 3]),
        ((2, 0), 0.8, [], [0, 1], []),
    ],
)
def test_empty_assignment(shape: tuple[int, int], thresh: float, pairs: list, rows: list, cols: list) -> None:
    got_pairs, got_rows, got_cols = linear_assignment(np.empty(shape), thresh)
    assert got_pairs.shape == (0, 2)
    assert got_rows.tolist() == rows and got_cols.tolist() == cols


def test_known_assignment() -> None:
    # Row 0 prefers col 0 but the cheaper total gives it col 1; row 2 has nothing below 0.8;
    # col 2 pairs only with row 3 (forced without the solver).
    cost = np.array(
        [
            [0.10, 0.20, 1.00, 1.00],
            [0.15, 0.90, 1.00, 1.00],
            [0.95, 0.85, 1.00, 0.99],
            [1.00, 1.00, 0.30, 1.00],
        ]
    )
    pairs, rows, cols = linear_assignment(cost, 0.8)
    assert pairs.tolist() == [[0, 1], [1, 0], [3, 2]]
    assert rows.tolist() == [2] and cols.tolist() == [3]


@pytest.mark.parametrize("seed", range(200))
def test_assignment_matches_lapjv_on_whole_matrix(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(1, 40)), int(rng.integers(1, 40))
    if seed % 2:  # a scene: boxes near each other, costs 1 − IoU · score
        tracks = random_boxes(rng, n)
        dets = np.concatenate([tracks[rng.integers(0, n, m)] + rng.normal(0, 8, (m, 4)).astype(np.float32)])
        cost = fuse_score(iou_matrix(tracks, dets), rng.uniform(0.1, 1, m))
    else:  # dense random costs, many overlapping candidates
        cost = rng.random((n, m))
    thresh = float(rng.choice([0.3, 0.5, 0.7, 0.8, 1.0]))
    got = linear_assignment(cost, thresh)
    want = reference.linear_assignment(cost, thresh)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    pairs = got[0]
    assert np.all(cost[pairs[:, 0], pairs[:, 1]] < thresh)
    assert len(set(pairs[:, 0])) == len(pairs) and len(set(pairs[:, 1])) == len(pairs)
