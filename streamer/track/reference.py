"""Plain NumPy references of the tracker's Numba kernels.

They state the same semantics in the most direct NumPy form (matrices built in full, the
formulas as ByteTrack writes them), and the tests compare each kernel with its reference on
random inputs. They are not used on the hot path.
"""

from __future__ import annotations

import lap  # type: ignore[import-untyped]
import numpy as np

from streamer.track.kalman import STD_WEIGHT_POSITION, STD_WEIGHT_VELOCITY


def xyxy_to_xyah(xyxy: np.ndarray) -> np.ndarray:
    b = np.asarray(xyxy, np.float64).reshape(-1, 4)
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, w / h, h], axis=1)


def xyah_to_xyxy(mean: np.ndarray) -> np.ndarray:
    m = np.asarray(mean, np.float64)
    w = m[:, 2] * m[:, 3]
    x1 = m[:, 0] - w / 2
    y1 = m[:, 1] - m[:, 3] / 2
    return np.stack([x1, y1, x1 + w, y1 + m[:, 3]], axis=1)


def initiate(measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(measurement, np.float64).reshape(-1, 4)
    n = len(z)
    mean = np.concatenate([z, np.zeros((n, 4))], axis=1)
    h = z[:, 3]
    std = np.stack(
        [
            2 * STD_WEIGHT_POSITION * h,
            2 * STD_WEIGHT_POSITION * h,
            np.full(n, 1e-2),
            2 * STD_WEIGHT_POSITION * h,
            10 * STD_WEIGHT_VELOCITY * h,
            10 * STD_WEIGHT_VELOCITY * h,
            np.full(n, 1e-5),
            10 * STD_WEIGHT_VELOCITY * h,
        ],
        axis=1,
    )
    cov = np.zeros((n, 8, 8))
    cov[:, np.arange(8), np.arange(8)] = std**2
    return mean, cov


def process_noise(h: np.ndarray) -> np.ndarray:
    """ByteTrack's per-frame process noise covariance (N, 8, 8) for heights (N,)."""
    n = len(h)
    std = np.stack(
        [
            STD_WEIGHT_POSITION * h,
            STD_WEIGHT_POSITION * h,
            np.full(n, 1e-2),
            STD_WEIGHT_POSITION * h,
            STD_WEIGHT_VELOCITY * h,
            STD_WEIGHT_VELOCITY * h,
            np.full(n, 1e-5),
            STD_WEIGHT_VELOCITY * h,
        ],
        axis=1,
    )
    q = np.zeros((n, 8, 8))
    q[:, np.arange(8), np.arange(8)] = std**2
    return q


def transition(dt: np.ndarray) -> np.ndarray:
    """Constant-velocity transition matrices F (N, 8, 8) for steps dt (N,)."""
    f = np.tile(np.eye(8), (len(dt), 1, 1))
    for k in range(4):
        f[:, k, k + 4] = dt
    return f


def predict(mean: np.ndarray, cov: np.ndarray, dt: np.ndarray | float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(mean, np.float64)
    steps = np.broadcast_to(np.asarray(dt, np.float64), (len(mean),))
    f = transition(steps)
    new_mean = np.einsum("nij,nj->ni", f, mean)
    new_cov = f @ cov @ f.transpose(0, 2, 1) + steps[:, None, None] * process_noise(mean[:, 3])
    return new_mean, new_cov


def update(mean: np.ndarray, cov: np.ndarray, measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(mean, np.float64)
    n = len(mean)
    h = mean[:, 3]
    r = np.zeros((n, 4, 4))
    r[:, np.arange(4), np.arange(4)] = np.stack(
        [STD_WEIGHT_POSITION * h, STD_WEIGHT_POSITION * h, np.full(n, 1e-1), STD_WEIGHT_POSITION * h], axis=1
    ) ** 2
    hm = np.eye(4, 8)
    s = hm @ cov @ hm.T + r
    pht = cov @ hm.T  # (N, 8, 4)
    gain = np.linalg.solve(s, pht.transpose(0, 2, 1)).transpose(0, 2, 1)
    innovation = np.asarray(measurement, np.float64) - mean[:, :4]
    new_mean = mean + np.einsum("nij,nj->ni", gain, innovation)
    new_cov = cov - gain @ s @ gain.transpose(0, 2, 1)
    return new_mean, new_cov


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU (len(a), len(b)) in float64; 0 where the union is not positive."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def linear_assignment(cost: np.ndarray, thresh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole matrix through ``lap.lapjv`` at once, as ByteTrack does.

    lapjv may take a pair whose cost equals the limit exactly (a tie with leaving both
    unmatched, e.g. zero IoU at a limit of 1); such pairs are left unmatched, which keeps
    the total cost and states the rule ``cost < thresh``.
    """
    rows, cols = cost.shape
    if cost.size == 0:
        return np.empty((0, 2), np.int64), np.arange(rows), np.arange(cols)
    _, x, y = lap.lapjv(cost, extend_cost=True, cost_limit=thresh)
    matched = np.flatnonzero(x >= 0)
    matched = matched[cost[matched, x[matched]] < thresh]
    x = np.where(np.isin(np.arange(rows), matched), x, -1)
    y = np.full(cols, -1)
    y[x[matched]] = matched
    pairs = np.stack([matched, x[matched]], axis=1).astype(np.int64)
    return pairs, np.flatnonzero(x < 0), np.flatnonzero(y < 0)
