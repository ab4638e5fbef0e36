"""Plain NumPy references of the Numba kernels in this package.

They state the same semantics in the most direct NumPy form, and the tests compare each
kernel with its reference on random inputs. They are not used on the hot path.
"""

from __future__ import annotations

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU (len(a), len(b)) of float32 xyxy boxes, computed in float32."""
    a = a.astype(np.float32, copy=False)
    b = b.astype(np.float32, copy=False)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(iw, np.float32(0)) * np.maximum(ih, np.float32(0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (area_a[:, None] + area_b[None, :] - inter)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_thres: float, agnostic: bool, max_det: int) -> np.ndarray:
    order = np.argsort(-scores, kind="stable")
    suppressed = np.zeros(len(boxes), bool)
    keep: list[int] = []
    thres = np.float32(iou_thres)
    for pos, i in enumerate(order):
        if len(keep) >= max_det:
            break
        if suppressed[i]:
            continue
        keep.append(int(i))
        rest = order[pos + 1 :]
        rest = rest[~suppressed[rest]]
        if not agnostic:
            rest = rest[classes[rest] == classes[i]]
        if rest.size:
            overlap = iou_matrix(boxes[i : i + 1], boxes[rest])[0]
            suppressed[rest[overlap > thres]] = True
    return np.asarray(keep, np.int64)


def _xywh2xyxy(xywh: np.ndarray) -> np.ndarray:
    half = xywh[:, 2:4] / np.float32(2.0)
    return np.concatenate([xywh[:, 0:2] - half, xywh[:, 0:2] + half], axis=1).astype(np.float32)


def candidates_v8(out: np.ndarray, conf: float, class_mask: np.ndarray, multi_label: bool):
    scores_all = out[4:].T  # (A, nc)
    thres = np.float32(conf)
    if multi_label:
        anchor, cls = np.nonzero(scores_all > thres)
        keep = class_mask[cls]
        anchor, cls = anchor[keep], cls[keep]
        scores = scores_all[anchor, cls]
    else:
        # NaN never wins a comparison, so it is ignored like in the kernel.
        filled = np.where(np.isnan(scores_all), -np.inf, scores_all)
        cls = np.argmax(filled, axis=1)
        best = filled[np.arange(len(filled)), cls]
        anchor = np.nonzero((best > thres) & class_mask[cls])[0]
        cls = cls[anchor]
        scores = best[anchor]
    boxes = _xywh2xyxy(out[:4, anchor].T)
    return boxes, scores.astype(np.float32), cls.astype(np.int32)


def candidates_v5(out: np.ndarray, conf: float, class_mask: np.ndarray, multi_label: bool):
    thres = np.float32(conf)
    obj = out[:, 4]
    rows = np.nonzero(obj > thres)[0]
    cls_scores = out[rows, 5:] * obj[rows, None]
    if multi_label:
        r, cls = np.nonzero(cls_scores > thres)
        keep = class_mask[cls]
        r, cls = r[keep], cls[keep]
        scores = cls_scores[r, cls]
    else:
        filled = np.where(np.isnan(cls_scores), -np.inf, cls_scores)
        cls = np.argmax(filled, axis=1) if len(filled) else np.zeros(0, np.int64)
        best = filled[np.arange(len(filled)), cls]
        r = np.nonzero((best > thres) & class_mask[cls])[0]
        cls, scores = cls[r], best[r]
    boxes = _xywh2xyxy(out[rows[r], :4])
    return boxes, scores.astype(np.float32), cls.astype(np.int32)


def scale_and_clip(boxes: np.ndarray, scale: float, pad_x: float, pad_y: float, width: int, height: int) -> np.ndarray:
    pads = np.array([pad_x, pad_y, pad_x, pad_y], np.float32)
    limits = np.array([width, height, width, height], np.float32)
    mapped = (boxes - pads) / np.float32(scale)
    mapped = np.where(mapped >= 0, mapped, np.float32(0))  # NaN fails >= and becomes 0
    return np.minimum(mapped, limits).astype(np.float32)


def postprocess(
    layout: str,
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
):
    if layout == "v8":
        boxes, scores, cls = candidates_v8(out, conf, class_mask, multi_label)
    else:
        boxes, scores, cls = candidates_v5(out, conf, class_mask, multi_label)
    return finish(boxes, scores, cls, iou, agnostic, max_det, max_nms, scale, pad_x, pad_y, width, height)


def finish(boxes, scores, cls, iou, agnostic, max_det, max_nms, scale, pad_x, pad_y, width, height):  # type: ignore[no-untyped-def]
    """Reference of ``yolo.finish_detections``: top ``max_nms``, NMS, map to source pixels."""
    if len(boxes) > max_nms:
        top = np.sort(np.argsort(-scores, kind="stable")[:max_nms])
        boxes, scores, cls = boxes[top], scores[top], cls[top]
    keep = nms(boxes, scores, cls, iou, agnostic, max_det)
    return scale_and_clip(boxes[keep], scale, pad_x, pad_y, width, height), scores[keep], cls[keep]
