"""A constant-velocity Kalman filter over boxes, batched over every track at once.

State per track: ``cx, cy, w, h`` (box centre and size, source pixels) and their velocities
in pixels per second. Measurements are boxes (``cx, cy, w, h``). Noise scales with the box
height, as in SORT/ByteTrack, so a near (large) person may move more pixels than a far one.
Time steps come from frame timestamps, so skipped or dropped frames predict further.

All functions work on stacked arrays (``n x 8`` means, ``n x 8 x 8`` covariances): with
20 tracks one numpy call per step costs less than a Python loop over the tracks would.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

# Standard deviations relative to the box height: measurement noise of a box side, process
# noise of position per sqrt(second) and of velocity (px/s) per sqrt(second).
_STD_MEAS = 0.05
_STD_POS = 0.2
_STD_VEL = 0.35
# A new track's velocity is unknown: its initial std, in box heights per second.
_STD_VEL_INIT = 1.0
_EYE4 = np.eye(4)
_Q_UNIT = np.array([_STD_POS**2] * 4 + [_STD_VEL**2] * 4)


def xyxy_to_cxcywh(boxes: npt.NDArray[np.floating]) -> F64:
    """``n x 4`` xyxy -> ``n x 4`` centre x, centre y, width, height (float64)."""
    b = boxes.astype(np.float64, copy=False)
    wh = b[:, 2:] - b[:, :2]
    return np.concatenate((b[:, :2] + wh / 2, wh), axis=1)


def cxcywh_to_xyxy(z: F64) -> F64:
    """Inverse of ``xyxy_to_cxcywh``."""
    half = z[:, 2:4] / 2
    return np.concatenate((z[:, :2] - half, z[:, :2] + half), axis=1)


def _scale(h: F64) -> F64:
    # Boxes of zero height would make the noise vanish; a pixel is the floor.
    return np.maximum(h, 1.0)


def initiate(z: F64) -> tuple[F64, F64]:
    """Means and covariances of new tracks from ``n x 4`` measurements."""
    n = len(z)
    mean = np.zeros((n, 8))
    mean[:, :4] = z
    s = _scale(z[:, 3])[:, None]
    std = np.concatenate(
        (np.repeat(2 * _STD_MEAS * s, 4, axis=1), np.repeat(_STD_VEL_INIT * s, 4, axis=1)), axis=1
    )
    cov = np.zeros((n, 8, 8))
    cov.reshape(n, 64)[:, ::9] = std**2
    return mean, cov


def predict(mean: F64, cov: F64, dt: float) -> tuple[F64, F64]:
    """Advance every track by ``dt`` seconds; returns new arrays."""
    n = len(mean)
    if n == 0:
        return mean, cov
    s = _scale(mean[:, 3])  # noise from the height before the step, as in SORT/ByteTrack
    mean = mean.copy()
    mean[:, :4] += dt * mean[:, 4:]
    # F P F^T with F = [[I, dt I], [0, I]], by blocks: rows first (F P), then columns.
    # Cheaper than batched 8x8 matmuls, which numpy runs without BLAS for small stacks.
    cov = cov.copy()
    cov[:, :4, :] += dt * cov[:, 4:, :]
    cov[:, :, :4] += dt * cov[:, :, 4:]
    # Process noise: the diagonal, (std x box height)^2 x dt, through a strided view.
    cov.reshape(n, 64)[:, ::9] += (s * s)[:, None] * (_Q_UNIT * dt)
    return mean, cov


def update(mean: F64, cov: F64, z: F64) -> tuple[F64, F64]:
    """Correct ``n`` tracks with their ``n x 4`` measurements ``z``; returns new arrays."""
    if len(mean) == 0:
        return mean, cov
    r = (_STD_MEAS * _scale(mean[:, 3])) ** 2
    s_mat = cov[:, :4, :4] + r[:, None, None] * _EYE4  # innovation covariance, n x 4 x 4
    ph = cov[:, :, :4]  # P H^T, n x 8 x 4
    # K = P H^T S^-1, solved rather than inverted: S is symmetric, so K^T = solve(S, H P).
    gain = np.linalg.solve(s_mat, np.swapaxes(ph, 1, 2)).swapaxes(1, 2)
    innov = z - mean[:, :4]
    new_mean = mean + (gain @ innov[:, :, None])[:, :, 0]
    new_cov = cov - gain @ np.swapaxes(ph, 1, 2)
    return new_mean, new_cov
