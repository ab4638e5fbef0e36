"""Association: IoU between boxes, score fusion, and assignment with a cost limit.

``linear_assignment`` gives ByteTrack's answer (``lap.lapjv(cost, extend_cost=True,
cost_limit=thresh)``, the solver Ultralytics uses) but first takes out what needs no solver:
a row or column with no pair below the limit can only stay unmatched, and a row and a column
that are each other's only candidate below the limit are matched to each other. Both follow
from the limit: lapjv's extended problem pays ``thresh`` for leaving a row and a column
unmatched, so a pair is taken only when its cost is below ``thresh`` and pairs that cannot
be taken split the problem into independent parts. What is left (objects whose boxes overlap
several candidates) goes to lapjv in one smaller call. In a street scene that is most of the
time nothing, which turns lapjv's O(n³) on the full matrix into O(n²) bookkeeping.
"""

from __future__ import annotations

import lap  # type: ignore[import-untyped]
import numpy as np

from streamer import _numba  # noqa: F401 - sets the Numba cache folder before numba loads
from numba import njit


@njit(nogil=True, cache=True, error_model="numpy")
def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU (len(a), len(b)) float64 of xyxy boxes; 0 where the union is not positive."""
    n = a.shape[0]
    m = b.shape[0]
    out = np.zeros((n, m), np.float64)
    for i in range(n):
        ax1 = np.float64(a[i, 0])
        ay1 = np.float64(a[i, 1])
        ax2 = np.float64(a[i, 2])
        ay2 = np.float64(a[i, 3])
        area_a = (ax2 - ax1) * (ay2 - ay1)
        for j in range(m):
            bx1 = np.float64(b[j, 0])
            by1 = np.float64(b[j, 1])
            bx2 = np.float64(b[j, 2])
            by2 = np.float64(b[j, 3])
            iw = min(ax2, bx2) - max(ax1, bx1)
            ih = min(ay2, by2) - max(ay1, by1)
            if iw <= 0.0 or ih <= 0.0:
                continue
            inter = iw * ih
            union = area_a + (bx2 - bx1) * (by2 - by1) - inter
            if union > 0.0:
                out[i, j] = inter / union
    return out


def fuse_score(iou: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ByteTrack's fused cost ``1 − IoU · score`` (rows tracks, columns detections)."""
    return 1.0 - iou * np.asarray(scores, np.float64)[None, :]


@njit(nogil=True, cache=True, error_model="numpy")
def split_trivial(cost: np.ndarray, thresh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pairs, hard_rows, hard_cols)``: the pairs that need no solver (K, 2), and the rows
    and columns left to solve. A row or column in neither has no pair below ``thresh``.
    """
    n, m = cost.shape
    row_count = np.zeros(n, np.int64)
    col_count = np.zeros(m, np.int64)
    row_last = np.full(n, -1, np.int64)
    for i in range(n):
        for j in range(m):
            if cost[i, j] < thresh:  # NaN compares false: never a candidate
                row_count[i] += 1
                col_count[j] += 1
                row_last[i] = j
    pairs = np.empty((min(n, m), 2), np.int64)
    forced_col = np.zeros(m, np.bool_)
    forced_row = np.zeros(n, np.bool_)
    k = 0
    for i in range(n):
        j = row_last[i]
        if row_count[i] == 1 and col_count[j] == 1:
            pairs[k, 0] = i
            pairs[k, 1] = j
            forced_row[i] = True
            forced_col[j] = True
            k += 1
    hard_rows = np.empty(n, np.int64)
    nr = 0
    for i in range(n):
        if row_count[i] > 0 and not forced_row[i]:
            hard_rows[nr] = i
            nr += 1
    hard_cols = np.empty(m, np.int64)
    nc = 0
    for j in range(m):
        if col_count[j] > 0 and not forced_col[j]:
            hard_cols[nc] = j
            nc += 1
    return pairs[:k], hard_rows[:nr], hard_cols[:nc]


def linear_assignment(cost: np.ndarray, thresh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-cost matching of rows to columns where a pair needs ``cost < thresh``.

    ``cost``: (N, M) float64. Returns ``(pairs, unmatched_rows, unmatched_cols)``: ``pairs``
    int64 (K, 2) of ``[row, col]`` sorted by row, the others int64 index arrays, ascending.
    Empty matrices are fine (everything unmatched).
    """
    n, m = cost.shape
    if n == 0 or m == 0:
        return np.empty((0, 2), np.int64), np.arange(n, dtype=np.int64), np.arange(m, dtype=np.int64)
    cost = np.ascontiguousarray(cost, np.float64)
    pairs, hard_rows, hard_cols = split_trivial(cost, float(thresh))
    if hard_rows.size:
        sub = cost[np.ix_(hard_rows, hard_cols)]
        # Non-candidates (cost >= thresh, NaN) can never be taken; a finite value above the
        # limit keeps lapjv away from NaN and from ties at exactly the limit.
        sub[~(sub < thresh)] = abs(thresh) * 2.0 + 1.0
        _, x, _ = lap.lapjv(sub, extend_cost=True, cost_limit=thresh)
        got = x >= 0
        solved = np.stack([hard_rows[got], hard_cols[x[got]]], axis=1)
        pairs = np.concatenate([pairs, solved])
        pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
    row_free = np.ones(n, bool)
    row_free[pairs[:, 0]] = False
    col_free = np.ones(m, bool)
    col_free[pairs[:, 1]] = False
    return pairs, np.flatnonzero(row_free), np.flatnonzero(col_free)
