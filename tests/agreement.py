"""Agreement of detections with a reference, as defined for the reference files in tests/data.

Per frame, predictions sorted by confidence are matched greedily to the unmatched reference
box of the same class with the highest IoU; a match needs IoU >= 0.5;
F1 = 2·TP / (2·TP + FP + FN) over the clip.
"""

from __future__ import annotations

from collections.abc import Sequence


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_counts(pred: list[tuple[list[float], float, int]], ref: list[tuple[list[float], float, int]]) -> tuple[int, int, int]:
    """(TP, FP, FN) of one frame; items are (xyxy, confidence, class_id)."""
    used = [False] * len(ref)
    tp = fp = 0
    for box, _, cls in sorted(pred, key=lambda d: -d[1]):
        best, best_j = 0.5, -1
        for j, (rbox, _, rcls) in enumerate(ref):
            if used[j] or rcls != cls:
                continue
            v = box_iou(box, rbox)
            if v >= best:
                best, best_j = v, j
        if best_j >= 0:
            used[best_j] = True
            tp += 1
        else:
            fp += 1
    return tp, fp, used.count(False)


def f1_score(pred_frames: list[list[tuple[list[float], float, int]]], ref_frames: list[list[tuple[list[float], float, int]]]) -> tuple[float, int, int, int]:
    if len(pred_frames) != len(ref_frames):
        raise ValueError(f"frame counts differ: {len(pred_frames)} predicted vs {len(ref_frames)} reference")
    tp = fp = fn = 0
    for p, r in zip(pred_frames, ref_frames, strict=True):
        a, b, c = match_counts(p, r)
        tp, fp, fn = tp + a, fp + b, fn + c
    denom = 2 * tp + fp + fn
    return (2 * tp / denom if denom else 1.0), tp, fp, fn


def from_jsonl(records: list[dict]) -> list[list[tuple[list[float], float, int]]]:  # type: ignore[type-arg]
    return [[(d["xyxy"], d["confidence"], d["class_id"]) for d in r["detections"]] for r in records]


def from_reference(frames: list[list[list[float]]]) -> list[list[tuple[list[float], float, int]]]:
    return [[(d[:4], d[4], int(d[5])) for d in f] for f in frames]
