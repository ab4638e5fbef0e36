"""Greedy non-maximum suppression, compiled with Numba.

Semantics (Ultralytics' ``non_max_suppression``, true per-class variant):

* boxes are visited in descending score order (stable: equal scores keep input order);
* a kept box suppresses every later box *of the same class* (any class when ``agnostic``)
  whose IoU with it is strictly greater than ``iou_thres``;
* at most ``max_det`` boxes are kept.

IoU is computed in float32 as ``inter / (area_a + area_b − inter)`` with the intersection
clamped at zero, like torchvision. A NaN IoU (zero-area boxes) never suppresses.
"""

from __future__ import annotations

import numpy as np

from streamer import _numba  # noqa: F401 - sets the Numba cache folder before numba loads
from numba import njit


@njit(nogil=True, cache=True, error_model="numpy")
def iou_one(boxes: np.ndarray, i: int, j: int) -> np.float32:
    """IoU of rows ``i`` and ``j`` of ``boxes`` (N, 4) float32 xyxy, in float32."""
    zero = np.float32(0.0)
    area_i = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
    area_j = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
    iw = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
    ih = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
    iw = max(iw, zero)
    ih = max(ih, zero)
    inter = iw * ih
    return inter / (area_i + area_j - inter)


@njit(nogil=True, cache=True, error_model="numpy")
def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    iou_thres: float,
    agnostic: bool,
    max_det: int,
) -> np.ndarray:
    """Return the indices of the kept boxes, highest score first.

    ``boxes``: (N, 4) float32 xyxy; ``scores``: (N,) float32; ``classes``: (N,) int32.
    """
    n = boxes.shape[0]
    keep = np.empty(min(n, max(max_det, 0)), np.int64)
    if n == 0 or max_det <= 0:
        return keep[:0]
    # argsort of the negated scores with a stable sort: descending, ties in input order.
    order = np.argsort(-scores, kind="mergesort")
    suppressed = np.zeros(n, np.bool_)
    thres = np.float32(iou_thres)
    kept = 0
    for oi in range(n):
        i = order[oi]
        if suppressed[i]:
            continue
        keep[kept] = i
        kept += 1
        if kept >= max_det:
            break
        for oj in range(oi + 1, n):
            j = order[oj]
            if suppressed[j]:
                continue
            if not agnostic and classes[j] != classes[i]:
                continue
            if iou_one(boxes, i, j) > thres:
                suppressed[j] = True
    return keep[:kept]
