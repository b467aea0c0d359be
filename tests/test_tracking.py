"""The tracker on synthetic trajectories with known identities; zones, lines and lifecycle."""

from __future__ import annotations

import numpy as np
import pytest

from edgeyolo.tracking.tracker import ByteTracker, iou_matrix
from edgeyolo.tracking.zones import in_polygon
from tracking_sim import SimObject, frames, identity_metrics


def track(objects: list[SimObject], n: int, *, seed: int = 0, **kw: object):
    tr = ByteTracker(min_hits=3, **kw)  # type: ignore[arg-type]
    per_frame = []
    for fr in frames(objects, n, seed=seed):
        up = tr.update(fr.dets.boxes, fr.dets.scores, fr.dets.class_ids, fr.timestamp)
        per_frame.append((fr.gids, up.det_track_ids.tolist()))
    return identity_metrics(per_frame)


def test_iou_matrix_known_values() -> None:
    """IoU of identical, half-overlapping and disjoint boxes."""
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0, 50 / 150, 0.0]])


@pytest.mark.parametrize("seed", range(5))
def test_crossing_paths_keep_their_ids(seed: int) -> None:
    """Two walkers of different build cross head-on, boxes overlapping: no switch."""
    objs = [
        SimObject(1, (100, 300), (8, 0)),
        SimObject(2, (500, 310), (-8, 0), size=(46, 112)),
    ]
    m = track(objs, 50, seed=seed)
    assert (m.switches, m.fragments, m.merges, m.tracks) == (0, 0, 0, 2)


@pytest.mark.parametrize("seed", range(10))
def test_identical_boxes_crossing_recover_their_ids(seed: int) -> None:
    """Identical boxes meeting exactly: the one frame of total overlap is a coin toss, but
    every id is right again the frame after (at most one flickering frame per walker)."""
    objs = [SimObject(1, (100, 300), (8, 0)), SimObject(2, (500, 300), (-8, 0))]
    tr = ByteTracker(min_hits=3)
    wrong = 0
    ids: dict[int, int] = {}
    for fr in frames(objs, 50, seed=seed):
        up = tr.update(fr.dets.boxes, fr.dets.scores, fr.dets.class_ids, fr.timestamp)
        for g, t in zip(fr.gids, up.det_track_ids.tolist(), strict=True):
            if fr.index == 10:
                ids[g] = t
            elif fr.index > 10:
                wrong += t != ids[g]
    assert sorted(ids.values()) == [1, 2]
    assert wrong <= 2


@pytest.mark.parametrize("seed", range(5))
def test_crossing_while_one_is_hidden(seed: int) -> None:
    """At the crossing only one box is detected for 4 frames (NMS merged them): ids survive."""
    objs = [
        SimObject(1, (100, 300), (8, 0)),
        SimObject(2, (500, 300), (-8, 0), hidden=(range(23, 27),)),
    ]
    m = track(objs, 50, seed=seed)
    assert (m.switches, m.fragments, m.merges) == (0, 0, 0)


def test_one_second_occlusion_keeps_the_id() -> None:
    """A walker hidden for 15 frames at 15 fps comes back under the same id."""
    objs = [
        SimObject(1, (100, 300), (5, 0), hidden=(range(20, 35),)),
        SimObject(2, (100, 450), (3, -1)),
    ]
    m = track(objs, 60)
    assert (m.switches, m.fragments, m.merges, m.tracks) == (0, 0, 0, 2)


def test_occlusion_longer_than_max_lost_starts_a_new_track() -> None:
    """Hidden for 3 s with max_lost_s 1.5: the track ended, so the walker gets a new id."""
    objs = [SimObject(1, (100, 300), (2, 0), hidden=(range(20, 65),))]
    m = track(objs, 90)
    assert (m.switches, m.fragments, m.tracks) == (1, 1, 2)


def test_many_walkers_entering_and_leaving() -> None:
    """12 walkers on crossing lanes enter and leave; identity errors stay bounded."""
    rng = np.random.default_rng(7)
    objs = []
    for g in range(12):
        first = int(rng.integers(0, 60))
        y = float(rng.uniform(150, 500))
        vx = float(rng.choice([-1, 1]) * rng.uniform(3, 9))
        x0 = 30.0 if vx > 0 else 930.0
        objs.append(
            SimObject(g, (x0, y), (vx, float(rng.uniform(-1, 1))), first=first, last=first + 80)
        )
    m = track(objs, 160, seed=3)
    assert (m.switches, m.fragments, m.merges, m.tracks) == (0, 0, 0, 12)


def test_flicker_does_not_make_tracks() -> None:
    """A false positive seen for 2 frames at a time never gets a track id (min_hits 3)."""
    objs = [
        SimObject(1, (400, 300), (0, 0), hidden=tuple(range(k + 2, k + 5) for k in range(0, 60, 5)))
    ]
    m = track(objs, 60)
    assert m.tracks == 0


def test_low_score_detections_continue_a_track() -> None:
    """A walker whose score drops to 0.3 (half hidden) for 10 frames keeps its id throughout."""
    obj = SimObject(1, (100, 300), (5, 0))
    tr = ByteTracker(min_hits=3, high_thresh=0.5, low_thresh=0.1)
    ids = []
    for fr in frames([obj], 40):
        scores = fr.dets.scores.copy()
        if 15 <= fr.index < 25:
            scores[:] = 0.3
        ids.append(tr.update(fr.dets.boxes, scores, fr.dets.class_ids, fr.timestamp).det_track_ids)
    assert [int(i[0]) for i in ids[2:]] == [1] * 38


def test_classes_are_never_mixed() -> None:
    """A car driving through a person's box does not take over the person's track."""
    objs = [
        SimObject(1, (300, 300), (0, 0), class_id=0),
        SimObject(2, (100, 300), (10, 0), size=(40, 100), class_id=2),
    ]
    m = track(objs, 50)
    assert (m.switches, m.merges, m.tracks) == (0, 0, 2)


def test_point_in_polygon() -> None:
    """Even-odd rule on a concave polygon, including a point in its notch."""
    poly = np.array([[0, 0], [10, 0], [10, 10], [5, 5], [0, 10]], np.float64)
    pts = np.array([[2, 2], [5, 8], [8, 6], [11, 5], [5, 4.9]], np.float64)
    assert in_polygon(pts, poly).tolist() == [True, False, True, False, True]


def test_kalman_blocks_equal_the_matrix_filter() -> None:
    """Predict and update on the 2 x 2 blocks give what the 8 x 8 matrix filter gives:
    F P F^T + Q, then K = P H^T (H P H^T + R)^-1, x + K (z - H x), (I - K H) P."""
    from edgeyolo.tracking import kalman

    rng = np.random.default_rng(0)
    z0 = np.column_stack(
        (
            rng.uniform(0, 900, 5),
            rng.uniform(0, 500, 5),
            rng.uniform(20, 60, 5),
            rng.uniform(50, 150, 5),
        )
    )
    mean, cov = kalman.initiate(z0)
    mean[:, 4:] = rng.normal(0, 20, (5, 4))
    dt = 0.07
    f = np.eye(8)
    f[:4, 4:] = dt * np.eye(4)
    h = np.eye(4, 8)
    p = kalman.full_covariance(cov)
    for step in range(3):
        m2, c2 = kalman.predict(mean, cov, dt)
        hh = mean[:, 3]
        q = np.array([0.2**2] * 4 + [0.35**2] * 4) * dt
        p_pred = f @ p @ f.T + np.einsum("n,k,kl->nkl", hh * hh, q, np.eye(8))
        np.testing.assert_allclose(m2, mean @ f.T)
        np.testing.assert_allclose(kalman.full_covariance(c2), p_pred)
        z = m2[:, :4] + rng.normal(0, 3, (5, 4))
        m3, c3 = kalman.update(m2, c2, z)
        r = np.einsum("n,kl->nkl", (0.05 * m2[:, 3]) ** 2, np.eye(4))
        s = h @ p_pred @ h.T + r
        k = p_pred @ h.T @ np.linalg.inv(s)
        want_m = m2 + np.einsum("nij,nj->ni", k, z - m2[:, :4])
        want_p = (np.eye(8) - k @ h) @ p_pred
        np.testing.assert_allclose(m3, want_m, err_msg=f"step {step}")
        np.testing.assert_allclose(kalman.full_covariance(c3), want_p, atol=1e-9)
        mean, cov, p = m3, c3, want_p


def test_kalman_update_pulls_towards_the_measurement() -> None:
    """A corrected track lies between prediction and measurement, with less uncertainty."""
    from edgeyolo.tracking import kalman

    mean, cov = kalman.initiate(np.array([[100.0, 100.0, 40.0, 100.0]]))
    z = np.array([[110.0, 100.0, 40.0, 100.0]])
    m2, c2 = kalman.update(mean, cov, z)
    assert 100.0 < m2[0, 0] < 110.0
    assert c2[0, 0, 0] < cov[0, 0, 0]


def test_posture_needs_min_duration_and_ignores_unknown() -> None:
    """A posture counts after holding min_s; a blip back and unknown frames change nothing."""
    from edgeyolo.tracking.lifecycle import PostureFilter

    pf = PostureFilter(min_s=1.0)
    seq = [(0.0, "standing"), (0.5, "standing"), (1.0, "standing")]
    seq += [(1.1, "lying"), (1.2, "standing"), (1.3, "lying"), (1.8, "unknown"), (2.4, "lying")]
    changes = [(t, pf.current) for t, raw in seq if pf.step(raw, t)]  # type: ignore[arg-type]
    assert changes == [(1.0, "standing"), (2.4, "lying")]
