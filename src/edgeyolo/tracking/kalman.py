"""A constant-velocity Kalman filter over boxes, batched over every track at once.

State per track: ``cx, cy, w, h`` (box centre and size, source pixels) and their velocities
in pixels per second. Measurements are boxes (``cx, cy, w, h``). Noise scales with the box
height, as in SORT/ByteTrack, so a near (large) person may move more pixels than a far one.
Time steps come from frame timestamps, so skipped or dropped frames predict further.

The motion model, the process noise and the measurement noise act on each of the four
coordinates separately (each is a position with its velocity), and a new track starts with
a diagonal covariance: so the 8 x 8 covariance stays block-diagonal, four 2 x 2 blocks
(var of position, covariance of position and velocity, var of velocity per coordinate).
More: the four blocks start equal and every step treats them alike (the noise of all four
scales with the same box height), so they stay equal, bit for bit. Predict and update are
then a few elementwise operations on one 2 x 2 block per track instead of batched 8 x 8
matrix products, with exactly the same result (tests/test_tracking.py checks it against the
matrix form).

The tracker keeps everything in one ``11 x n`` array, a column per track (``STATE_ROWS``):
the mean (rows 0-7: cx, cy, w, h and their velocities), then the block (rows 8-10: var of
position, covariance, var of velocity). Each quantity of all tracks is then one contiguous
row, which is what makes numpy's per-call cost small for tens of tracks.
``initiate``/``predict``/``update`` are the same filter on ``n x 8`` means and ``n x 3 x 4``
blocks (``cov[:, 0]`` var of position, ``1`` covariance, ``2`` var of velocity, per
coordinate).
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
STATE_ROWS = 11  # rows of the packed state: the mean (8), then the block (PP, PV, VV)


def xyxy_to_cxcywh(boxes: npt.NDArray[np.floating]) -> F64:
    """``n x 4`` xyxy -> ``n x 4`` centre x, centre y, width, height (float64)."""
    b = boxes.astype(np.float64, copy=False)
    wh = b[:, 2:] - b[:, :2]
    return np.concatenate((b[:, :2] + wh / 2, wh), axis=1)


def cxcywh_to_xyxy(z: F64) -> F64:
    """Inverse of ``xyxy_to_cxcywh``."""
    half = z[:, 2:4] / 2
    return np.concatenate((z[:, :2] - half, z[:, :2] + half), axis=1)


# ---------------------------------------------------------------- the packed (20 x n) form


def initiate_state(z: F64) -> F64:
    """Packed states of new tracks from ``4 x n`` measurements (rows cx, cy, w, h)."""
    x = np.zeros((STATE_ROWS, z.shape[1]))
    x[:4] = z
    s = np.maximum(z[3], 1.0)  # boxes of zero height would make the noise vanish
    x[8] = (2 * _STD_MEAS * s) ** 2
    x[10] = (_STD_VEL_INIT * s) ** 2
    return x


def predict_state(x: F64, dt: float) -> F64:
    """Advance every track (column) of ``x`` by ``dt`` seconds; returns a new array."""
    s2 = np.maximum(x[3], 1.0)  # noise from the height before the step, as in SORT
    s2 *= s2
    out: F64 = x.copy()
    out[:4] += dt * x[4:8]
    # F P F^T + Q, F = [[1, dt], [0, 1]].
    pp, pv, vv = x[8], x[9], x[10]
    dvv = dt * vv
    out[8] = pp + dt * (2 * pv + dvv) + (_STD_POS**2 * dt) * s2
    out[9] += dvv
    out[10] += (_STD_VEL**2 * dt) * s2
    return out


def update_state(x: F64, z: F64) -> F64:
    """Correct the tracks (columns) of ``x`` with their ``4 x n`` measurements ``z``."""
    pp, pv, vv = x[8], x[9], x[10]
    s = np.maximum(x[3], 1.0)
    s = pp + (_STD_MEAS**2) * s**2  # innovation variance
    kp, kv = pp / s, pv / s  # gains of position and velocity
    innov = z - x[:4]
    out = np.empty_like(x)
    out[:4] = x[:4] + kp * innov
    out[4:8] = x[4:8] + kv * innov
    out[8] = pp - kp * pp
    out[9] = pv - kp * pv
    out[10] = vv - kv * pv
    return out


def pack(mean: F64, cov: F64) -> F64:
    """``n x 8`` means and ``n x 3 x 4`` blocks (equal over the coordinates, as this filter
    makes them) -> the packed ``11 x n`` state."""
    if not (cov == cov[:, :, :1]).all():
        raise ValueError("the four coordinates' covariance blocks differ: not from this filter")
    return np.concatenate((mean.T, cov[:, :, 0].T))


def unpack(x: F64) -> tuple[F64, F64]:
    """Inverse of ``pack``."""
    n = x.shape[1]
    cov = np.repeat(x[8:].T[:, :, None], 4, axis=2)
    return np.ascontiguousarray(x[:8].T), cov.reshape(n, 3, 4)


# ---------------------------------------------------------------- per-track rows


def initiate(z: F64) -> tuple[F64, F64]:
    """Means and covariances (``n x 3 x 4`` blocks) of new tracks from ``n x 4`` measurements."""
    return unpack(initiate_state(np.ascontiguousarray(z.T)))


def predict(mean: F64, cov: F64, dt: float) -> tuple[F64, F64]:
    """Advance every track by ``dt`` seconds; returns new arrays."""
    if len(mean) == 0:
        return mean, cov
    return unpack(predict_state(pack(mean, cov), dt))


def update(mean: F64, cov: F64, z: F64) -> tuple[F64, F64]:
    """Correct ``n`` tracks with their ``n x 4`` measurements ``z``; returns new arrays."""
    if len(mean) == 0:
        return mean, cov
    return unpack(update_state(pack(mean, cov), np.ascontiguousarray(z.T)))


def full_covariance(cov: F64) -> F64:
    """The ``n x 8 x 8`` covariance the blocks stand for (for tests and debugging)."""
    n = len(cov)
    out = np.zeros((n, 8, 8))
    i = np.arange(4)
    out[:, i, i] = cov[:, PP]
    out[:, i, i + 4] = out[:, i + 4, i] = cov[:, PV]
    out[:, i + 4, i + 4] = cov[:, VV]
    return out
