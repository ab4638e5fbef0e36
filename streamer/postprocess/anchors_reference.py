"""Plain NumPy references of :mod:`streamer.postprocess.anchors`, and the box encoder.

They restate the module's formulas in the most direct form (loops for the anchors, whole-array
NumPy for the decoding) so the tests can compare the fast versions with them. Not used on the
hot path.
"""

from __future__ import annotations

import math

import numpy as np

from streamer.postprocess import reference
from streamer.postprocess.anchors import AnchorConfig


def generate_anchors(config: AnchorConfig) -> np.ndarray:
    """Anchors as float32 ``(A, 4)`` ``cx, cy, w, h`` in input pixels, one at a time."""
    height, width = config.input_hw
    rows: list[tuple[float, float, float, float]] = []
    for k, stride in enumerate(config.strides):
        fh = math.ceil(height / stride)
        fw = math.ceil(width / stride)
        m = config.min_sizes[k]
        shapes: list[tuple[float, float]] = []
        extra_done = not config.max_sizes
        for r in config.aspect_ratios[k]:
            shapes.append((m * math.sqrt(r), m / math.sqrt(r)))
            if r == 1.0 and not extra_done:
                side = math.sqrt(m * config.max_sizes[k])
                shapes.append((side, side))
                extra_done = True
        if not extra_done:
            side = math.sqrt(m * config.max_sizes[k])
            shapes.append((side, side))
        if config.clip:
            shapes = [(min(w, float(width)), min(h, float(height))) for w, h in shapes]
        for y in range(fh):
            for x in range(fw):
                for w, h in shapes:
                    rows.append(((x + 0.5) * stride, (y + 0.5) * stride, w, h))
    return np.array(rows, np.float64).reshape(-1, 4).astype(np.float32)


def encode_boxes(boxes_xyxy: np.ndarray, anchors: np.ndarray, variances: tuple[float, float]) -> np.ndarray:
    """The inverse of :func:`decode_boxes`: float32 ``(A, 4)`` regressions ``l_x, l_y, l_w, l_h``.

    ``boxes_xyxy`` (A, 4) in input pixels, one target box per anchor row of ``anchors``
    (A, 4) ``cx, cy, w, h``: ``l_x = (cx − a_cx) / (v_xy · a_w)``, ``l_w = ln(w / a_w) / v_wh``.
    """
    b = np.asarray(boxes_xyxy, np.float64)
    a = np.asarray(anchors, np.float64)
    v_xy, v_wh = float(variances[0]), float(variances[1])
    cx = (b[:, 0] + b[:, 2]) / 2.0
    cy = (b[:, 1] + b[:, 3]) / 2.0
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    loc = np.stack(
        [
            (cx - a[:, 0]) / (v_xy * a[:, 2]),
            (cy - a[:, 1]) / (v_xy * a[:, 3]),
            np.log(w / a[:, 2]) / v_wh,
            np.log(h / a[:, 3]) / v_wh,
        ],
        axis=1,
    )
    return loc.reshape(-1, 4).astype(np.float32)


def decode_boxes(loc: np.ndarray, anchors: np.ndarray, variances: tuple[float, float]) -> np.ndarray:
    """Float32 ``(A, 4)`` xyxy boxes in input pixels from regressions ``loc`` (A, 4) float32."""
    v_xy, v_wh = float(variances[0]), float(variances[1])
    lx, ly, lw, lh = (loc[:, i].astype(np.float64) for i in range(4))
    acx, acy, aw, ah = (anchors[:, i].astype(np.float64) for i in range(4))
    cx = acx + lx * v_xy * aw
    cy = acy + ly * v_xy * ah
    with np.errstate(over="ignore", invalid="ignore"):
        half_w = aw * np.exp(lw * v_wh) / 2.0
        half_h = ah * np.exp(lh * v_wh) / 2.0
        xyxy = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
        return xyxy.reshape(-1, 4).astype(np.float32)


def probabilities(scores: np.ndarray, softmax: bool) -> np.ndarray:
    """Float32 (A, C) class probabilities: the softmax over all columns, or ``scores`` as they are."""
    if not softmax:
        return scores.astype(np.float32)
    x = scores.astype(np.float64)
    m = np.fmax.reduce(x, axis=1, initial=-np.inf)  # NaN ignored, like the kernel's ``v > m``
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(x - m[:, None])
        total = np.zeros(len(x), np.float64)
        for c in range(x.shape[1]):
            total = total + e[:, c]
        return (e / total[:, None]).astype(np.float32)


def candidates(
    loc: np.ndarray,
    scores: np.ndarray,
    anchors: np.ndarray,
    variances: tuple[float, float],
    conf: float,
    class_mask: np.ndarray,
    background_index: int,
    softmax: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    probs = probabilities(scores, softmax)
    filled = np.where(np.isnan(probs), np.float32(-np.inf), probs)
    if background_index >= 0:
        filled[:, background_index] = -np.inf
    best_col = np.argmax(filled, axis=1) if filled.shape[0] else np.zeros(0, np.int64)
    best = filled[np.arange(len(filled)), best_col]
    cls = best_col - ((background_index >= 0) & (best_col > background_index))
    passed = best > np.float32(conf)
    passed[passed] &= class_mask[cls[passed]]
    rows = np.flatnonzero(passed)
    boxes = decode_boxes(loc[rows], anchors[rows], variances)
    return boxes, best[rows].astype(np.float32), cls[rows].astype(np.int32)


def decode_ssd(
    loc: np.ndarray,
    scores: np.ndarray,
    anchors: np.ndarray,
    variances: tuple[float, float],
    conf: float,
    iou: float,
    class_mask: np.ndarray,
    background_index: int,
    softmax: bool,
    max_det: int,
    max_nms: int,
    scale: float,
    pad_x: float,
    pad_y: float,
    width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes, kept, cls = candidates(loc, scores, anchors, variances, conf, class_mask, background_index, softmax)
    return reference.finish(boxes, kept, cls, iou, False, max_det, max_nms, scale, pad_x, pad_y, width, height)
