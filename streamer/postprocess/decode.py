"""Checked entry points to the Numba kernels.

The kernels trust their inputs (shapes, dtypes, contiguity); these wrappers check them once
and turn anything unusable into a :class:`~streamer.errors.ModelError` that says what was
expected and what was found, so no Numba typing error or out-of-bounds access can escape.
"""

from __future__ import annotations

import functools

import numpy as np

from streamer.errors import ModelError
from streamer.postprocess import yolo
from streamer.postprocess.checks import as_float32
from streamer.postprocess.classify import top_k
from streamer.postprocess.nms import nms
from streamer.types import Classifications, Detections, Letterbox

def decode_detections(
    raw: np.ndarray,
    layout: str,
    class_mask: np.ndarray,
    lb: Letterbox,
    *,
    conf: float,
    iou: float,
    agnostic: bool = False,
    multi_label: bool = False,
    max_det: int = 300,
    max_nms: int = yolo.MAX_NMS,
) -> Detections:
    """Decode one image's raw output (batch axis removed) into detections in source pixels."""
    out = as_float32(raw, "model output")
    nc = int(class_mask.shape[0])
    h, w = lb.source_hw
    if layout == "v8":
        if out.ndim != 2 or out.shape[0] != 4 + nc:
            raise ModelError(f"v8 output must have shape ({4 + nc}, A) for {nc} classes, but got {out.shape}")
        boxes, scores, cls = yolo.postprocess_v8(
            out, conf, iou, class_mask, agnostic, multi_label, max_det, max_nms, lb.scale, lb.pad_x, lb.pad_y, w, h
        )
    elif layout == "v5":
        if out.ndim != 2 or out.shape[1] != 5 + nc:
            raise ModelError(f"v5 output must have shape (A, {5 + nc}) for {nc} classes, but got {out.shape}")
        boxes, scores, cls = yolo.postprocess_v5(
            out, conf, iou, class_mask, agnostic, multi_label, max_det, max_nms, lb.scale, lb.pad_x, lb.pad_y, w, h
        )
    elif layout == "end2end":
        if out.ndim != 2 or out.shape[1] != 6:
            raise ModelError(f"end-to-end output must have shape (N, 6), but got {out.shape}")
        boxes, scores, cls = yolo.postprocess_end2end(out, conf, class_mask, max_det, lb.scale, lb.pad_x, lb.pad_y, w, h)
    else:
        raise ModelError(f"no decoder for output layout '{layout}', expecting one of ['v8', 'v5', 'end2end']")
    return Detections(boxes, scores, cls)


@functools.lru_cache(maxsize=64)
def keep_mask(classes: tuple[int, ...] | None, nc: int) -> np.ndarray:
    """(nc,) bool: True for the class ids in ``classes`` (None: every class); ids out of range
    are ignored. Made once per (classes, nc) and shared by every caller: never modified."""
    mask = np.ones(nc, np.bool_)
    if classes is not None:
        mask[:] = False
        mask[[c for c in classes if 0 <= c < nc]] = True
    return mask


def decode_classes(raw: np.ndarray, k: int) -> Classifications:
    out = as_float32(raw, "classifier output").ravel()
    if out.size == 0:
        raise ModelError("classifier output is empty")
    ids, probs = top_k(out, k)
    return Classifications(ids, probs)


def checked_nms(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, agnostic: bool = False, max_det: int = 300
) -> np.ndarray:
    """NMS with its inputs checked: (N, 4) boxes, (N,) scores and (N,) class ids."""
    b = as_float32(boxes, "boxes")
    s = as_float32(scores, "scores")
    if b.ndim != 2 or b.shape[1] != 4:
        raise ModelError(f"boxes must have shape (N, 4), but got {b.shape}")
    n = b.shape[0]
    if s.shape != (n,):
        raise ModelError(f"scores must have shape ({n},), but got {s.shape}")
    c = np.asarray(classes)
    if c.shape != (n,) or not issubclass(c.dtype.type, (np.integer, np.bool_)):
        raise ModelError(f"classes must be ({n},) integers, but got shape {c.shape} dtype {c.dtype}")
    return nms(b, s, c.astype(np.int32), float(iou), bool(agnostic), int(max_det))
