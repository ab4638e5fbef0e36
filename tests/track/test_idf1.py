"""Known answers for the IDF1 used to score trackers."""

from __future__ import annotations

import numpy as np
import pytest

from tests.track.idf1 import Frame, idf1


def frame(ids: list[int], xs: list[float]) -> Frame:
    return np.asarray(ids, np.int64), np.asarray([[x, 0, x + 10, 10] for x in xs], np.float64).reshape(-1, 4)


EMPTY = frame([], [])


@pytest.mark.parametrize(
    ("truth", "pred", "want"),
    [
        ([], [], 1.0),
        ([EMPTY, EMPTY], [EMPTY, EMPTY], 1.0),
        ([frame([1], [0])], [EMPTY], 0.0),  # everything missed
        ([EMPTY], [frame([5], [0])], 0.0),  # everything made up
        ([frame([1], [0])] * 4, [frame([7], [0])] * 4, 1.0),  # ids are labels: 7 is fine
        # One object, its id switches halfway: the best mapping keeps 2 of 4 frames.
        ([frame([1], [0])] * 4, [frame([7], [0])] * 2 + [frame([8], [0])] * 2, 2 * 2 / 8),
        # Two objects swap ids halfway: 2 of 4 frames each.
        (
            [frame([1, 2], [0, 50])] * 4,
            [frame([7, 8], [0, 50])] * 2 + [frame([8, 7], [0, 50])] * 2,
            2 * 4 / 16,
        ),
        # A box shifted by 4 of 10 px has IoU 6/14 < 0.5: no hit, though both are there.
        ([frame([1], [0])], [frame([7], [4])], 0.0),
        # Shifted by 2 px: IoU 8/12 >= 0.5, a hit.
        ([frame([1], [0])], [frame([7], [2])], 1.0),
        # A missed frame and an extra false box: IDTP 2, 3 truth boxes + 3 predicted.
        ([frame([1], [0])] * 3, [frame([7], [0]), EMPTY, frame([7, 9], [0, 80])], 2 * 2 / 6),
    ],
)
def test_known_answers(truth: list[Frame], pred: list[Frame], want: float) -> None:
    assert idf1(truth, pred) == pytest.approx(want)


def test_frame_counts_must_agree() -> None:
    with pytest.raises(ValueError, match="same number of frames"):
        idf1([EMPTY], [])
