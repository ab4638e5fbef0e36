"""Numba Kalman kernels against their NumPy twins, and the time step's meaning."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.track import kalman, reference


def random_state(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tracks after a few steps: positive heights, velocities, dense SPD covariances."""
    z = np.stack(
        [rng.uniform(0, 1920, n), rng.uniform(0, 1080, n), rng.uniform(0.2, 3.0, n), rng.uniform(5, 400, n)], axis=1
    )
    mean, cov = reference.initiate(z)
    mean[:, 4:] = rng.normal(0, 3, (n, 4)) * [1, 1, 0.01, 0.5]
    for _ in range(int(rng.integers(1, 4))):
        mean, cov = reference.predict(mean, cov, rng.uniform(0.5, 3.0, n))
        meas = reference.xyxy_to_xyah(reference.xyah_to_xyxy(mean) + rng.normal(0, 2, (n, 4)))
        mean, cov = reference.update(mean, cov, meas)
    return mean, cov, z


@pytest.mark.parametrize("n", [0, 1, 2, 7, 50])
def test_initiate_matches_reference(n: int) -> None:
    _, _, z = random_state(np.random.default_rng(n), n)
    got_mean, got_cov = kalman.initiate(z)
    want_mean, want_cov = reference.initiate(z)
    np.testing.assert_array_equal(got_mean, want_mean)
    np.testing.assert_allclose(got_cov, want_cov, rtol=1e-15, atol=0)


@pytest.mark.parametrize("seed", range(40))
def test_predict_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 60))
    mean, cov, _ = random_state(rng, n)
    dt = rng.uniform(0, 5, n) if seed % 2 else float(rng.choice([0.0, 1.0, 2.5]))
    got_mean, got_cov = kalman.predict(mean, cov, dt)
    want_mean, want_cov = reference.predict(mean, cov, dt)
    np.testing.assert_allclose(got_mean, want_mean, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(got_cov, want_cov, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("seed", range(40))
def test_update_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 60))
    mean, cov, _ = random_state(rng, n)
    meas = reference.xyxy_to_xyah(reference.xyah_to_xyxy(mean) + rng.normal(0, 5, (n, 4)))
    got_mean, got_cov = kalman.update(mean, cov, meas)
    want_mean, want_cov = reference.update(mean, cov, meas)
    np.testing.assert_allclose(got_mean, want_mean, rtol=1e-9, atol=1e-7)
    np.testing.assert_allclose(got_cov, want_cov, rtol=1e-7, atol=1e-7)
    # The corrected covariance stays symmetric and no larger than the predicted one.
    np.testing.assert_allclose(got_cov, got_cov.transpose(0, 2, 1), atol=1e-7)
    assert np.all(np.diagonal(got_cov, axis1=1, axis2=2) <= np.diagonal(cov, axis1=1, axis2=2) + 1e-9)


@pytest.mark.parametrize("seed", range(10))
def test_box_conversions_match_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 40))
    xy = rng.uniform(0, 600, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 200, (n, 2))], axis=1).astype(np.float32)
    np.testing.assert_allclose(kalman.xyxy_to_xyah(boxes), reference.xyxy_to_xyah(boxes), rtol=1e-12)
    back = kalman.xyah_to_xyxy(kalman.xyxy_to_xyah(boxes))
    np.testing.assert_allclose(back, boxes, atol=1e-3)
    np.testing.assert_allclose(back, reference.xyah_to_xyxy(reference.xyxy_to_xyah(boxes)), rtol=1e-12, atol=1e-9)


def test_unit_step_is_bytetracks() -> None:
    # ByteTrack's step written out for one track: F with ones above the diagonal block,
    # Q = diag((h/20)², (h/20)², 1e-4, (h/20)², (h/160)², (h/160)², 1e-10, (h/160)²).
    mean = np.array([[100.0, 50.0, 0.5, 80.0, 2.0, -1.0, 0.001, 0.5]])
    cov = np.diag(np.arange(1.0, 9.0))[None]
    f = np.eye(8) + np.eye(8, k=4)
    h = 80.0
    q = np.diag([(h / 20) ** 2, (h / 20) ** 2, 1e-4, (h / 20) ** 2, (h / 160) ** 2, (h / 160) ** 2, 1e-10, (h / 160) ** 2])
    got_mean, got_cov = kalman.predict(mean, cov, 1.0)
    np.testing.assert_allclose(got_mean[0], f @ mean[0])
    np.testing.assert_allclose(got_cov[0], f @ cov[0] @ f.T + q)


def test_time_step_semantics() -> None:
    mean, cov, _ = random_state(np.random.default_rng(3), 5)
    # dt = 0 changes nothing.
    same_mean, same_cov = kalman.predict(mean, cov, 0.0)
    np.testing.assert_array_equal(same_mean, mean)
    np.testing.assert_array_equal(same_cov, cov)
    # The mean moves by velocity · dt: one step of 2 frames lands where two steps of 1 do.
    two_mean, two_cov = kalman.predict(mean, cov, 2.0)
    m1, _ = kalman.predict(*kalman.predict(mean, cov, 1.0), 1.0)
    np.testing.assert_allclose(two_mean, m1)
    # Uncertainty grows with the step; its noise is 2·Q at the height before the step.
    diag = np.diagonal
    assert np.all(diag(two_cov, axis1=1, axis2=2) > diag(kalman.predict(mean, cov, 1.0)[1], axis1=1, axis2=2))
    f2 = reference.transition(np.full(len(mean), 2.0))
    np.testing.assert_allclose(two_cov, f2 @ cov @ f2.transpose(0, 2, 1) + 2 * reference.process_noise(mean[:, 3]))
