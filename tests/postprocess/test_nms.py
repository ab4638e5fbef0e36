"""Numba NMS against its NumPy reference, plus properties that must hold for any input."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.postprocess import reference
from streamer.postprocess.nms import nms


def random_boxes(rng: np.random.Generator, n: int, clustered: bool = True) -> np.ndarray:
    if clustered:  # many heavy overlaps, like a detector's candidates around objects
        centres = rng.uniform(0, 640, (max(1, n // 20 + 1), 2))
        c = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 8, (n, 2))
    else:
        c = rng.uniform(0, 640, (n, 2))
    wh = rng.uniform(4, 120, (n, 2))
    return np.concatenate([c - wh / 2, c + wh / 2], axis=1).astype(np.float32)


def check_against_reference(boxes, scores, classes, iou, agnostic, max_det):  # type: ignore[no-untyped-def]
    got = nms(boxes, scores, classes, iou, agnostic, max_det)
    want = reference.nms(boxes, scores, classes, iou, agnostic, max_det)
    np.testing.assert_array_equal(got, want)
    return got


@pytest.mark.parametrize(
    ("n", "max_det"),
    [(0, 300), (1, 300), (2, 300), (5, 0), (10, 1)],
)
def test_small_cases(n: int, max_det: int) -> None:
    rng = np.random.default_rng(n)
    boxes = random_boxes(rng, n)
    scores = rng.random(n).astype(np.float32)
    classes = rng.integers(0, 3, n).astype(np.int32)
    keep = check_against_reference(boxes, scores, classes, 0.7, False, max_det)
    assert len(keep) <= max(max_det, 0)


@pytest.mark.parametrize("seed", range(300))
def test_random_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 400))
    boxes = random_boxes(rng, n, clustered=bool(seed % 2))
    # Quantized scores every third seed: many exact ties, order must stay stable.
    scores = rng.random(n).astype(np.float32)
    if seed % 3 == 0:
        scores = (np.round(scores * 4) / 4).astype(np.float32)
    classes = rng.integers(0, 1 + seed % 5, n).astype(np.int32)
    iou = float(rng.choice([0.0, 0.3, 0.45, 0.7, 1.0]))
    agnostic = bool(seed % 4 == 1)
    max_det = int(rng.choice([1, 10, 300, 1000]))
    keep = check_against_reference(boxes, scores, classes, iou, agnostic, max_det)
    # Properties: a subset, sorted by score, no same-class pair above the threshold.
    assert len(set(keep.tolist())) == len(keep)
    assert np.all(np.diff(scores[keep]) <= 0)
    if len(keep) > 1:
        ious = reference.iou_matrix(boxes[keep], boxes[keep])
        same = np.ones_like(ious, bool) if agnostic else classes[keep][:, None] == classes[keep][None, :]
        np.fill_diagonal(same, False)
        assert not np.any((ious > np.float32(iou)) & same)


@pytest.mark.parametrize("n", [1_000, 10_000, 30_000])
def test_large_inputs_match_reference(n: int) -> None:
    rng = np.random.default_rng(n)
    boxes = random_boxes(rng, n)
    scores = rng.random(n).astype(np.float32)
    classes = rng.integers(0, 80, n).astype(np.int32)
    check_against_reference(boxes, scores, classes, 0.7, False, 300)


def test_identical_boxes_keep_first_of_equal_scores() -> None:
    boxes = np.tile(np.array([[10, 10, 50, 50]], np.float32), (4, 1))
    scores = np.array([0.5, 0.9, 0.9, 0.1], np.float32)
    classes = np.zeros(4, np.int32)
    assert nms(boxes, scores, classes, 0.5, False, 300).tolist() == [1]


def test_class_aware_keeps_overlapping_boxes_of_other_classes() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    classes = np.array([0, 1], np.int32)
    assert nms(boxes, scores, classes, 0.5, False, 300).tolist() == [0, 1]
    assert nms(boxes, scores, classes, 0.5, True, 300).tolist() == [0]


def test_threshold_is_strict() -> None:
    # IoU of these two is exactly 0.5: suppression needs IoU > iou.
    boxes = np.array([[0, 0, 30, 10], [10, 0, 40, 10]], np.float32)
    assert float(reference.iou_matrix(boxes[:1], boxes[1:])[0, 0]) == 0.5
    scores = np.array([0.9, 0.8], np.float32)
    classes = np.zeros(2, np.int32)
    assert nms(boxes, scores, classes, 0.5, False, 300).tolist() == [0, 1]
    assert nms(boxes, scores, classes, 0.49, False, 300).tolist() == [0]


def test_iou_symmetric() -> None:
    rng = np.random.default_rng(0)
    a = random_boxes(rng, 50)
    m = reference.iou_matrix(a, a)
    np.testing.assert_array_equal(m, m.T)
