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
