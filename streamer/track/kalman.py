"""Batched constant-velocity Kalman filter on boxes, compiled with Numba.

State per track (8,) float64: ``[cx, cy, a, h, vcx, vcy, va, vh]`` with ``(cx, cy)`` the box
centre in source-frame pixels, ``a = w / h`` the aspect ratio and ``h`` the height in pixels;
velocities are per *nominal frame* (one frame at the tracker's ``frame_rate``). Measurements
(4,) are ``[cx, cy, a, h]`` of a detection.

Noise model (ByteTrack's, as in Ultralytics' ``KalmanFilterXYAH``): standard deviations are
proportional to the box height ``h``, with weights ``1/20`` for positions and ``1/160`` for
velocities, and small fixed values for the aspect ratio (``1e-2``/``1e-5`` process,
``1e-1`` measurement). The height used for the process noise is the one *before* the step,
and for the measurement noise the predicted one, as there.

Time: ``predict`` takes ``dt``, the step in nominal frames. The transition is
``x += v · dt`` and the process noise covariance is ``dt · Q``, with ``Q`` ByteTrack's
per-frame noise. Why ``dt · Q``: ByteTrack's ``Q`` is a diagonal random-walk noise per frame;
``dt`` independent frames of it add up to ``dt · Q`` (the cross terms that an exact
integration of a white-noise acceleration would add are absent from ByteTrack's per-frame
model too), so a skipped frame costs as much uncertainty as a frame that was seen and not
matched, and ``dt = 1`` is ByteTrack's step exactly. ``dt = 0`` leaves the state unchanged.

Each kernel has a plain NumPy twin in :mod:`streamer.track.reference`.
"""

from __future__ import annotations

import numpy as np

from streamer import _numba  # noqa: F401 - sets the Numba cache folder before numba loads
from numba import njit

STD_WEIGHT_POSITION = 1.0 / 20.0
STD_WEIGHT_VELOCITY = 1.0 / 160.0


@njit(nogil=True, cache=True, error_model="numpy")
def xyxy_to_xyah(xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) ``[x1, y1, x2, y2]`` → (N, 4) float64 ``[cx, cy, w / h, h]``."""
    n = xyxy.shape[0]
    out = np.empty((n, 4), np.float64)
    for i in range(n):
        x1 = np.float64(xyxy[i, 0])
        y1 = np.float64(xyxy[i, 1])
        x2 = np.float64(xyxy[i, 2])
        y2 = np.float64(xyxy[i, 3])
        h = y2 - y1
        out[i, 0] = (x1 + x2) * 0.5
        out[i, 1] = (y1 + y2) * 0.5
        out[i, 2] = (x2 - x1) / h
        out[i, 3] = h
    return out


@njit(nogil=True, cache=True, error_model="numpy")
def xyah_to_xyxy(mean: np.ndarray) -> np.ndarray:
    """First four columns ``[cx, cy, a, h]`` of (N, >=4) → (N, 4) float64 ``[x1, y1, x2, y2]``."""
    n = mean.shape[0]
    out = np.empty((n, 4), np.float64)
    for i in range(n):
        h = mean[i, 3]
        w = mean[i, 2] * h
        out[i, 0] = mean[i, 0] - w * 0.5
        out[i, 1] = mean[i, 1] - h * 0.5
        out[i, 2] = out[i, 0] + w
        out[i, 3] = out[i, 1] + h
    return out


@njit(nogil=True, cache=True, error_model="numpy")
def initiate(measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New tracks from (N, 4) measurements: mean (N, 8) with zero velocity, diagonal cov (N, 8, 8)."""
    n = measurement.shape[0]
    mean = np.zeros((n, 8), np.float64)
    cov = np.zeros((n, 8, 8), np.float64)
    for i in range(n):
        h = np.float64(measurement[i, 3])
        for k in range(4):
            mean[i, k] = measurement[i, k]
        sp = 2.0 * STD_WEIGHT_POSITION * h
        sv = 10.0 * STD_WEIGHT_VELOCITY * h
        cov[i, 0, 0] = sp * sp
        cov[i, 1, 1] = sp * sp
        cov[i, 2, 2] = 1e-2 * 1e-2
        cov[i, 3, 3] = sp * sp
        cov[i, 4, 4] = sv * sv
        cov[i, 5, 5] = sv * sv
        cov[i, 6, 6] = 1e-5 * 1e-5
        cov[i, 7, 7] = sv * sv
    return mean, cov


@njit(nogil=True, cache=True, error_model="numpy")
def predict_kernel(mean: np.ndarray, cov: np.ndarray, dt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step of ``dt[i]`` nominal frames for every track; returns new arrays."""
    n = mean.shape[0]
    out_mean = np.empty((n, 8), np.float64)
    out_cov = np.empty((n, 8, 8), np.float64)
    tmp = np.empty((8, 8), np.float64)
    for i in range(n):
        d = dt[i]
        h = mean[i, 3]
        for k in range(4):
            out_mean[i, k] = mean[i, k] + d * mean[i, k + 4]
            out_mean[i, k + 4] = mean[i, k + 4]
        # F P with F = [[I, d I], [0, I]]: the position rows gain d times the velocity rows.
        for r in range(8):
            for c in range(8):
                tmp[r, c] = cov[i, r, c]
        for r in range(4):
            for c in range(8):
                tmp[r, c] += d * cov[i, r + 4, c]
        # (F P) F^T: the position columns gain d times the velocity columns.
        for r in range(8):
            for c in range(4):
                out_cov[i, r, c] = tmp[r, c] + d * tmp[r, c + 4]
            for c in range(4, 8):
                out_cov[i, r, c] = tmp[r, c]
        sp = STD_WEIGHT_POSITION * h
        sv = STD_WEIGHT_VELOCITY * h
        out_cov[i, 0, 0] += d * sp * sp
        out_cov[i, 1, 1] += d * sp * sp
        out_cov[i, 2, 2] += d * 1e-2 * 1e-2
        out_cov[i, 3, 3] += d * sp * sp
        out_cov[i, 4, 4] += d * sv * sv
        out_cov[i, 5, 5] += d * sv * sv
        out_cov[i, 6, 6] += d * 1e-5 * 1e-5
        out_cov[i, 7, 7] += d * sv * sv
    return out_mean, out_cov


def predict(mean: np.ndarray, cov: np.ndarray, dt: np.ndarray | float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Predict (N, 8) means and (N, 8, 8) covariances ``dt`` nominal frames ahead.

    ``dt`` is a scalar for all tracks or an (N,) array, one step per track.
    """
    steps = np.broadcast_to(np.asarray(dt, np.float64), (mean.shape[0],))
    return predict_kernel(mean, cov, np.ascontiguousarray(steps))


@njit(nogil=True, cache=True, error_model="numpy")
def update(mean: np.ndarray, cov: np.ndarray, measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct track ``i`` with measurement row ``i`` (N, 4); returns new (N, 8) and (N, 8, 8).

    With ``S = P[:4, :4] + R`` the innovation covariance and ``K = P[:, :4] S⁻¹`` the gain:
    ``mean += K (z − mean[:4])`` and ``P −= K S Kᵀ`` (``= P[:, :4] Kᵀ``, as ``K S = P[:, :4]``).
    ``S`` is symmetric positive definite, so it is solved through its Cholesky factor.
    """
    n = mean.shape[0]
    out_mean = np.empty((n, 8), np.float64)
    out_cov = np.empty((n, 8, 8), np.float64)
    s = np.empty((4, 4), np.float64)
    chol = np.zeros((4, 4), np.float64)
    gain = np.empty((8, 4), np.float64)
    innov = np.empty(4, np.float64)
    for i in range(n):
        h = mean[i, 3]
        sp = STD_WEIGHT_POSITION * h
        for r in range(4):
            for c in range(4):
                s[r, c] = cov[i, r, c]
        s[0, 0] += sp * sp
        s[1, 1] += sp * sp
        s[2, 2] += 1e-1 * 1e-1
        s[3, 3] += sp * sp
        # Cholesky S = L Lᵀ.
        for r in range(4):
            for c in range(r + 1):
                acc = s[r, c]
                for k in range(c):
                    acc -= chol[r, k] * chol[c, k]
                if r == c:
                    chol[r, r] = np.sqrt(acc)
                else:
                    chol[r, c] = acc / chol[c, c]
        # Row g of K solves S gᵀ = P[g, :4]ᵀ (S symmetric): forward then backward substitution.
        for g in range(8):
            y0 = cov[i, g, 0] / chol[0, 0]
            y1 = (cov[i, g, 1] - chol[1, 0] * y0) / chol[1, 1]
            y2 = (cov[i, g, 2] - chol[2, 0] * y0 - chol[2, 1] * y1) / chol[2, 2]
            y3 = (cov[i, g, 3] - chol[3, 0] * y0 - chol[3, 1] * y1 - chol[3, 2] * y2) / chol[3, 3]
            x3 = y3 / chol[3, 3]
            x2 = (y2 - chol[3, 2] * x3) / chol[2, 2]
            x1 = (y1 - chol[2, 1] * x2 - chol[3, 1] * x3) / chol[1, 1]
            x0 = (y0 - chol[1, 0] * x1 - chol[2, 0] * x2 - chol[3, 0] * x3) / chol[0, 0]
            gain[g, 0] = x0
            gain[g, 1] = x1
            gain[g, 2] = x2
            gain[g, 3] = x3
        for k in range(4):
            innov[k] = measurement[i, k] - mean[i, k]
        for g in range(8):
            out_mean[i, g] = mean[i, g] + (
                gain[g, 0] * innov[0] + gain[g, 1] * innov[1] + gain[g, 2] * innov[2] + gain[g, 3] * innov[3]
            )
        for r in range(8):
            for c in range(8):
                out_cov[i, r, c] = cov[i, r, c] - (
                    cov[i, r, 0] * gain[c, 0]
                    + cov[i, r, 1] * gain[c, 1]
                    + cov[i, r, 2] * gain[c, 2]
                    + cov[i, r, 3] * gain[c, 3]
                )
    return out_mean, out_cov
