"""A constant-velocity Kalman filter over boxes, batched over every track at once.

State per track: ``cx, cy, w, h`` (box centre and size, source pixels) and their velocities
in pixels per second. Measurements are boxes (``cx, cy, w, h``). Noise scales with the box
height, as in SORT/ByteTrack, so a near (large) person may move more pixels than a far one.
Time steps come from frame timestamps, so skipped or dropped frames predict further.

The motion model, the process noise and the measurement noise act on each of the four
coordinates separately (each is a position with its velocity), and a new track starts with
a diagonal covariance: so the 8 x 8 covariance stays block-diagonal, four 2 x 2 blocks, and
is stored as those blocks: ``cov`` is ``n x 3 x 4`` = (var of position, covariance of
position and velocity, var of velocity) per coordinate. Predict and update are then a few
elementwise operations on ``n x 4`` arrays instead of batched 8 x 8 matrix products, with
exactly the same result (tests/test_tracking.py checks it against the matrix form).
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
PP, PV, VV = 0, 1, 2  # the blocks of ``cov``


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
    """Means and covariances (``n x 3 x 4`` blocks) of new tracks from ``n x 4`` measurements."""
    n = len(z)
    mean = np.zeros((n, 8))
    mean[:, :4] = z
    s = _scale(z[:, 3])[:, None]
    cov = np.zeros((n, 3, 4))
    cov[:, PP] = (2 * _STD_MEAS * s) ** 2
    cov[:, VV] = (_STD_VEL_INIT * s) ** 2
    return mean, cov


def predict(mean: F64, cov: F64, dt: float) -> tuple[F64, F64]:
    """Advance every track by ``dt`` seconds; returns new arrays."""
    if len(mean) == 0:
        return mean, cov
    s2 = _scale(mean[:, 3:4]) ** 2  # noise from the height before the step, as in SORT
    mean = mean.copy()
    mean[:, :4] += dt * mean[:, 4:]
    pp, pv, vv = cov[:, PP], cov[:, PV], cov[:, VV]
    out = np.empty_like(cov)
    # F P F^T + Q per coordinate, F = [[1, dt], [0, 1]].
    out[:, PP] = pp + dt * (2 * pv + dt * vv) + (_STD_POS**2 * dt) * s2
    out[:, PV] = pv + dt * vv
    out[:, VV] = vv + (_STD_VEL**2 * dt) * s2
    return mean, out


def update(mean: F64, cov: F64, z: F64) -> tuple[F64, F64]:
    """Correct ``n`` tracks with their ``n x 4`` measurements ``z``; returns new arrays."""
    if len(mean) == 0:
        return mean, cov
    pp, pv, vv = cov[:, PP], cov[:, PV], cov[:, VV]
    s = pp + (_STD_MEAS**2) * _scale(mean[:, 3:4]) ** 2  # innovation variance
    kp, kv = pp / s, pv / s  # gains of position and velocity
    innov = z - mean[:, :4]
    new_mean = np.empty_like(mean)
    new_mean[:, :4] = mean[:, :4] + kp * innov
    new_mean[:, 4:] = mean[:, 4:] + kv * innov
    new_cov = np.empty_like(cov)
    new_cov[:, PP] = pp - kp * pp
    new_cov[:, PV] = pv - kp * pv
    new_cov[:, VV] = vv - kv * pv
    return new_mean, new_cov


def full_covariance(cov: F64) -> F64:
    """The ``n x 8 x 8`` covariance the blocks stand for (for tests and debugging)."""
    n = len(cov)
    out = np.zeros((n, 8, 8))
    i = np.arange(4)
    out[:, i, i] = cov[:, PP]
    out[:, i, i + 4] = out[:, i + 4, i] = cov[:, PV]
    out[:, i + 4, i + 4] = cov[:, VV]
    return out
