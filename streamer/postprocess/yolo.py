"""Decode YOLO outputs into detections, compiled with Numba.

Layouts (per image, after the batch axis):

* **v8** (YOLOv8 / YOLO11): ``(4 + nc, A)``: rows 0–3 ``cx, cy, w, h`` in model-input
  pixels, then one sigmoid score per class, no objectness.
* **v5**: ``(A, 5 + nc)``: ``cx, cy, w, h, objectness, class scores``; a row is a candidate
  when ``obj > conf`` and its score is ``cls · obj``.
* **end2end** (YOLOv10, ``nms=True`` exports): ``(N, 6)``: ``x1, y1, x2, y2, score, class``,
  already suppressed.

Candidate selection follows Ultralytics: the best class score must be strictly greater than
``conf``; each box keeps its best class (``multi_label`` gives one row per class above
``conf``); the class filter applies to that class; if more than ``max_nms`` candidates remain,
the top ``max_nms`` by score go on to NMS. Boxes are then mapped back through the letterbox
(``(x − pad) / scale``) and clipped to the source frame.
"""

from __future__ import annotations

import numpy as np

from streamer import _numba  # noqa: F401 - sets the Numba cache folder before numba loads
from numba import njit

from streamer.postprocess.nms import nms

MAX_NMS = 30000


@njit(nogil=True, cache=True, error_model="numpy")
def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best scores, in input order (stable for ties)."""
    order = np.argsort(-scores, kind="mergesort")[:k]
    return np.sort(order)


@njit(nogil=True, cache=True, error_model="numpy")
def candidates_v8(
    out: np.ndarray, conf: float, class_mask: np.ndarray, multi_label: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Select candidates from one v8 output ``(4 + nc, A)``.

    Returns ``boxes`` (N, 4) float32 xyxy in model-input pixels, ``scores`` (N,) float32 and
    ``classes`` (N,) int32, in anchor order (then class order with ``multi_label``).
    ``class_mask``: (nc,) bool, True for classes to keep.
    """
    nc = out.shape[0] - 4
    a = out.shape[1]
    thres = np.float32(conf)
    if multi_label:
        count = 0
        for c in range(nc):
            if class_mask[c]:
                for k in range(a):
                    if out[4 + c, k] > thres:
                        count += 1
        anchor = np.empty(count, np.int64)
        classes = np.empty(count, np.int32)
        scores = np.empty(count, np.float32)
        n = 0
        for k in range(a):
            for c in range(nc):
                if class_mask[c] and out[4 + c, k] > thres:
                    anchor[n] = k
                    classes[n] = c
                    scores[n] = out[4 + c, k]
                    n += 1
    else:
        # Pass 1: the best score per anchor, a branch-free running max over the class rows
        # (sequential memory, SIMD-friendly). NaN never wins a comparison, so it is ignored.
        best = np.full(a, -np.inf, np.float32)
        for c in range(nc):
            row = out[4 + c]
            for k in range(a):
                v = row[k]
                b = best[k]
                best[k] = v if v > b else b
        # Pass 2, only for the few anchors above the threshold: which class was best (the
        # first one reaching the maximum, like argmax), and the class filter.
        count = 0
        for k in range(a):
            if best[k] > thres:
                count += 1
        anchor = np.empty(count, np.int64)
        classes = np.empty(count, np.int32)
        scores = np.empty(count, np.float32)
        n = 0
        for k in range(a):
            b = best[k]
            if b > thres:
                c_best = 0
                for c in range(nc):
                    if out[4 + c, k] == b:
                        c_best = c
                        break
                if class_mask[c_best]:
                    anchor[n] = k
                    classes[n] = c_best
                    scores[n] = b
                    n += 1
        anchor, classes, scores = anchor[:n], classes[:n], scores[:n]
    boxes = np.empty((anchor.shape[0], 4), np.float32)
    half = np.float32(2.0)
    for i in range(anchor.shape[0]):
        k = anchor[i]
        cx, cy = out[0, k], out[1, k]
        dw, dh = out[2, k] / half, out[3, k] / half
        boxes[i, 0] = cx - dw
        boxes[i, 1] = cy - dh
        boxes[i, 2] = cx + dw
        boxes[i, 3] = cy + dh
    return boxes, scores, classes


@njit(nogil=True, cache=True, error_model="numpy")
def candidates_v5(
    out: np.ndarray, conf: float, class_mask: np.ndarray, multi_label: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Select candidates from one v5 output ``(A, 5 + nc)`` (see :func:`candidates_v8`)."""
    a = out.shape[0]
    nc = out.shape[1] - 5
    thres = np.float32(conf)
    cap = a * nc if multi_label else a
    anchor = np.empty(cap, np.int64)
    classes = np.empty(cap, np.int32)
    scores = np.empty(cap, np.float32)
    n = 0
    for k in range(a):
        obj = out[k, 4]
        if not obj > thres:
            continue
        if multi_label:
            for c in range(nc):
                s = out[k, 5 + c] * obj
                if s > thres and class_mask[c]:
                    anchor[n] = k
                    classes[n] = c
                    scores[n] = s
                    n += 1
        else:
            best = np.float32(-np.inf)
            best_c = 0
            for c in range(nc):
                s = out[k, 5 + c] * obj
                if s > best:
                    best = s
                    best_c = c
            if best > thres and class_mask[best_c]:
                anchor[n] = k
                classes[n] = best_c
                scores[n] = best
                n += 1
    boxes = np.empty((n, 4), np.float32)
    half = np.float32(2.0)
    for i in range(n):
        k = anchor[i]
        cx, cy = out[k, 0], out[k, 1]
        dw, dh = out[k, 2] / half, out[k, 3] / half
        boxes[i, 0] = cx - dw
        boxes[i, 1] = cy - dh
        boxes[i, 2] = cx + dw
        boxes[i, 3] = cy + dh
    return boxes, scores[:n].copy(), classes[:n].copy()


@njit(nogil=True, cache=True, error_model="numpy")
def candidates_end2end(out: np.ndarray, conf: float, class_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Select rows of one end-to-end output ``(N, 6)`` = ``x1, y1, x2, y2, score, class``."""
    n_rows = out.shape[0]
    nc = class_mask.shape[0]
    thres = np.float32(conf)
    keep = np.zeros(n_rows, np.bool_)
    count = 0
    for i in range(n_rows):
        c = out[i, 5]
        if out[i, 4] > thres and c >= 0 and c < nc and class_mask[int(c)]:
            keep[i] = True
            count += 1
    boxes = np.empty((count, 4), np.float32)
    scores = np.empty(count, np.float32)
    classes = np.empty(count, np.int32)
    n = 0
    for i in range(n_rows):
        if keep[i]:
            for j in range(4):
                boxes[n, j] = out[i, j]
            scores[n] = out[i, 4]
            classes[n] = np.int32(out[i, 5])
            n += 1
    return boxes, scores, classes


@njit(nogil=True, cache=True, error_model="numpy")
def scale_and_clip(boxes: np.ndarray, scale: float, pad_x: float, pad_y: float, width: int, height: int) -> None:
    """Map model-input boxes back to source pixels, in place: ``(x − pad) / scale``, clipped."""
    gain = np.float32(scale)
    px = np.float32(pad_x)
    py = np.float32(pad_y)
    w = np.float32(width)
    h = np.float32(height)
    zero = np.float32(0.0)
    for i in range(boxes.shape[0]):
        for j in range(4):
            limit = w if j % 2 == 0 else h
            v = (boxes[i, j] - (px if j % 2 == 0 else py)) / gain
            if not v >= zero:  # also catches NaN, which becomes 0 instead of leaking out
                v = zero
            elif v > limit:
                v = limit
            boxes[i, j] = v


@njit(nogil=True, cache=True, error_model="numpy")
def finish_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    iou: float,
    agnostic: bool,
    max_det: int,
    max_nms: int,
    run_nms: bool,
    scale: float,
    pad_x: float,
    pad_y: float,
    width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shared tail of every decoder: keep the best ``max_nms`` candidates, NMS (or, for
    outputs already suppressed, order by score), at most ``max_det``, map to source pixels."""
    if boxes.shape[0] > max_nms:
        top = _top_k(scores, max_nms)
        boxes, scores, classes = boxes[top], scores[top], classes[top]
    if run_nms:
        keep = nms(boxes, scores, classes, iou, agnostic, max_det)
    else:
        order = np.argsort(-scores, kind="mergesort")
        keep = order[: max(max_det, 0)]
    out_boxes = boxes[keep]
    scale_and_clip(out_boxes, scale, pad_x, pad_y, width, height)
    return out_boxes, scores[keep], classes[keep]


@njit(nogil=True, cache=True, error_model="numpy")
def postprocess_v8(
    out: np.ndarray,
    conf: float,
    iou: float,
    class_mask: np.ndarray,
    agnostic: bool,
    multi_label: bool,
    max_det: int,
    max_nms: int,
    scale: float,
    pad_x: float,
    pad_y: float,
    width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates, NMS and mapping to source pixels for one v8 output, in one call."""
    boxes, scores, classes = candidates_v8(out, conf, class_mask, multi_label)
    return finish_detections(boxes, scores, classes, iou, agnostic, max_det, max_nms, True, scale, pad_x, pad_y, width, height)


@njit(nogil=True, cache=True, error_model="numpy")
def postprocess_v5(
    out: np.ndarray,
    conf: float,
    iou: float,
    class_mask: np.ndarray,
    agnostic: bool,
    multi_label: bool,
    max_det: int,
    max_nms: int,
    scale: float,
    pad_x: float,
    pad_y: float,
    width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates, NMS and mapping to source pixels for one v5 output, in one call."""
    boxes, scores, classes = candidates_v5(out, conf, class_mask, multi_label)
    return finish_detections(boxes, scores, classes, iou, agnostic, max_det, max_nms, True, scale, pad_x, pad_y, width, height)


@njit(nogil=True, cache=True, error_model="numpy")
def postprocess_end2end(
    out: np.ndarray,
    conf: float,
    class_mask: np.ndarray,
    max_det: int,
    scale: float,
    pad_x: float,
    pad_y: float,
    width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Threshold, order and map one end-to-end output (no NMS: the model already did it)."""
    boxes, scores, classes = candidates_end2end(out, conf, class_mask)
    return finish_detections(boxes, scores, classes, 0.0, True, max_det, out.shape[0] + 1, False, scale, pad_x, pad_y, width, height)
