from __future__ import annotations

import numpy as np
import pytest

from streamer.types import Detections


def test_empty() -> None:
    d = Detections.empty()
    assert len(d) == 0 and d.xyxy.shape == (0, 4)


def test_mask_and_slice() -> None:
    d = Detections(
        xyxy=np.arange(12, dtype=np.float32).reshape(3, 4),
        confidence=np.array([0.9, 0.2, 0.5], np.float32),
        class_id=np.array([0, 1, 2], np.int32),
    )
    kept = d[d.confidence > 0.3]
    assert len(kept) == 2 and kept.class_id.tolist() == [0, 2]
    assert len(d[1:]) == 2


@pytest.mark.parametrize(
    ("xyxy", "conf", "cls", "message"),
    [
        (np.zeros((3, 5), np.float32), np.zeros(3), np.zeros(3), r"shape \(_, 4\), but got shape \(3, 5\)"),
        (np.zeros((3, 4), np.float32), np.zeros(2), np.zeros(3), "confidence must have 3 rows"),
        (np.zeros((3, 4), np.float32), np.zeros(3), np.zeros((3, 1)), r"class_id must be a 1D"),
        ([[0, 0, 1, 1]], np.zeros(1), np.zeros(1), "xyxy must be a np.ndarray"),
    ],
)
def test_validation_says_expected_and_got(xyxy, conf, cls, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        Detections(xyxy=xyxy, confidence=conf, class_id=cls)


def test_bad_mask_shape() -> None:
    d = Detections.empty()
    with pytest.raises(ValueError, match="boolean mask"):
        d[np.array([True])]


def _dets(n: int, tracker: bool = False, extra: bool = False) -> Detections:
    return Detections(
        xyxy=np.arange(4 * n, dtype=np.float32).reshape(n, 4),
        confidence=np.linspace(0.1, 0.9, n, dtype=np.float32),
        class_id=np.arange(n, dtype=np.int32),
        tracker_id=np.arange(n, dtype=np.int64) + 7 if tracker else None,
        data={"area": np.arange(n, dtype=np.float32)} if extra else {},
    )


def _changed(d: Detections, field_name: str) -> Detections:
    """A copy of ``d`` with one element of ``field_name`` changed."""
    xyxy, conf, cls = d.xyxy.copy(), d.confidence.copy(), d.class_id.copy()
    tracker = None if d.tracker_id is None else d.tracker_id.copy()
    data = {k: v.copy() for k, v in d.data.items()}
    if field_name == "xyxy":
        xyxy[0, 0] += 1
    elif field_name == "confidence":
        conf[0] += 0.01
    elif field_name == "class_id":
        cls[0] += 1
    elif field_name == "tracker_id":
        tracker = None
    elif field_name == "tracker_id_value":
        assert tracker is not None
        tracker[0] += 1
    elif field_name == "data_key":
        data = {"other": data["area"]}
    elif field_name == "data_value":
        data["area"][0] += 1
    return Detections(xyxy, conf, cls, tracker, data)


@pytest.mark.parametrize("n", [0, 1, 3])
def test_equal_detections_compare_equal(n: int) -> None:
    assert Detections.empty() == Detections.empty()
    assert _dets(n) == _dets(n)
    assert _dets(n, tracker=True, extra=True) == _dets(n, tracker=True, extra=True)
    assert (_dets(n) != _dets(n)) is False


@pytest.mark.parametrize(
    "field_name", ["xyxy", "confidence", "class_id", "tracker_id", "tracker_id_value", "data_key", "data_value"]
)
def test_detections_differing_in_one_field_are_unequal(field_name: str) -> None:
    d = _dets(3, tracker=True, extra=True)
    assert d != _changed(d, field_name)
    assert _changed(d, field_name) != d


def test_detections_of_different_lengths_or_types_are_unequal() -> None:
    assert _dets(2) != _dets(3)
    assert Detections.empty() != _dets(1)
    assert _dets(1) != "not detections"
