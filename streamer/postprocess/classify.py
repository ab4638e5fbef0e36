"""Classification outputs: probabilities and top-k."""

from __future__ import annotations

import numpy as np

from streamer import _numba  # noqa: F401 - sets the Numba cache folder before numba loads
from numba import njit


@njit(nogil=True, cache=True, error_model="numpy")
def to_probabilities(scores: np.ndarray) -> np.ndarray:
    """Softmax of ``scores`` (K,) unless they already are probabilities (in [0, 1], sum 1)."""
    k = scores.shape[0]
    total = 0.0
    is_prob = True
    for i in range(k):
        v = scores[i]
        if not (v >= 0.0 and v <= 1.0):
            is_prob = False
        total += v
    if is_prob and abs(total - 1.0) < 1e-3:
        return scores.astype(np.float32)
    m = -np.inf
    for i in range(k):
        if scores[i] > m:
            m = scores[i]
    out = np.empty(k, np.float32)
    if not np.isfinite(m):
        out[:] = np.float32(1.0 / k) if k else np.float32(0.0)
        return out
    s = 0.0
    for i in range(k):
        e = np.exp(np.float64(scores[i]) - m) if np.isfinite(scores[i]) else 0.0
        out[i] = e
        s += e
    for i in range(k):
        out[i] = np.float32(out[i] / s)
    return out


@njit(nogil=True, cache=True, error_model="numpy")
def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most probable classes of one output, best first (ties: lower id first)."""
    probs = to_probabilities(scores.ravel())
    order = np.argsort(-probs, kind="mergesort")[: max(k, 0)]
    return order.astype(np.int32), probs[order]
