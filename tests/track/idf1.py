"""IDF1 (Ristani et al. 2016, "Performance Measures and a Data Set for Multi-Target,
Multi-Camera Tracking"): how much of the time each identity keeps one id.

Per frame, a (ground-truth id, predicted id) pair scores a hit when their boxes overlap with
IoU >= ``iou_thresh``. Hits are summed over frames per pair; the one-to-one mapping of
ground-truth ids to predicted ids with the most hits (linear assignment) gives IDTP, and
IDF1 = 2 · IDTP / (ground-truth boxes + predicted boxes).
"""

from __future__ import annotations

from collections.abc import Sequence

import lap  # type: ignore[import-untyped]
import numpy as np

from streamer.track.reference import iou_matrix

# One frame: (ids int (K,), boxes float (K, 4) xyxy).
Frame = tuple[np.ndarray, np.ndarray]


def idf1(truth: Sequence[Frame], pred: Sequence[Frame], iou_thresh: float = 0.5) -> float:
    """IDF1 in [0, 1] of ``pred`` against ``truth`` (frames aligned by position).

    Both empty is a perfect 1.0: nothing was there and nothing was claimed.
    """
    if len(truth) != len(pred):
        raise ValueError(f"truth and pred must have the same number of frames, got {len(truth)} and {len(pred)}")
    n_truth = sum(len(ids) for ids, _ in truth)
    n_pred = sum(len(ids) for ids, _ in pred)
    if n_truth + n_pred == 0:
        return 1.0
    gt_ids = np.unique(np.concatenate([np.asarray(ids, np.int64) for ids, _ in truth] + [np.empty(0, np.int64)]))
    pr_ids = np.unique(np.concatenate([np.asarray(ids, np.int64) for ids, _ in pred] + [np.empty(0, np.int64)]))
    if gt_ids.size == 0 or pr_ids.size == 0:
        return 0.0
    hits = np.zeros((gt_ids.size, pr_ids.size), np.int64)
    for (g_ids, g_boxes), (p_ids, p_boxes) in zip(truth, pred):
        if len(g_ids) == 0 or len(p_ids) == 0:
            continue
        g, p = np.nonzero(iou_matrix(np.asarray(g_boxes), np.asarray(p_boxes)) >= iou_thresh)
        np.add.at(hits, (np.searchsorted(gt_ids, np.asarray(g_ids)[g]), np.searchsorted(pr_ids, np.asarray(p_ids)[p])), 1)
    _, x, _ = lap.lapjv(-hits.astype(np.float64), extend_cost=True)
    rows = np.flatnonzero(x >= 0)
    idtp = int(hits[rows, x[rows]].sum())
    return 2.0 * idtp / (n_truth + n_pred)
