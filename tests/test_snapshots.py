"""Snapshot picking and encoding on real results of the demo models."""

from __future__ import annotations

import asyncio

import cv2
import numpy as np
import pytest

from edgeyolo.config import SnapshotConfig
from edgeyolo.snapshots import SnapshotStage, encode_bounded
from edgeyolo.stages import FrameResult
from realresults import RealModels, demo_frames, with_tracks


@pytest.fixture(scope="module")
def results() -> list[FrameResult]:
    models = RealModels(["det-fp32", "pose-fp32"])
    return [models.run("demo", i + 1, img) for i, img in enumerate(demo_frames(4, step=8))]


def run_stage(
    config: SnapshotConfig, results: list[FrameResult], pause_s: float = 0.05
) -> list[tuple[str, str, bytes]]:
    got: list[tuple[str, str, bytes]] = []

    async def main() -> None:
        stage = SnapshotStage("demo", config, lambda c, lab, j: got.append((c, lab, j)))
        for r in results:
            assert stage(r) is r
            await asyncio.sleep(pause_s)  # let the worker thread encode
        await asyncio.sleep(0.5)
        stage.close()

    asyncio.run(main())
    return got


def decode(jpeg: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def test_latest_detection_full_frame_scaled_to_max_width(results):
    """Without tracking: a JPEG of the frame per label, scaled to max_width, within max_bytes."""
    cfg = SnapshotConfig(enabled=True, labels=["person", "car"], min_interval_s=0, max_width=640)
    got = run_stage(cfg, results[2:3])  # a frame with people and the car
    labels = sorted(lab for _, lab, _ in got)
    assert labels == ["car", "person"]
    for camera, _, jpeg in got:
        assert camera == "demo"
        assert len(jpeg) <= cfg.max_bytes
        assert decode(jpeg).shape == (360, 640, 3)


def test_rate_limited_per_label(results):
    """Four frames within a second, min_interval_s 10: one snapshot of the label."""
    cfg = SnapshotConfig(enabled=True, labels=["person"], min_interval_s=10)
    got = run_stage(cfg, results)
    assert [lab for _, lab, _ in got] == ["person"]


def test_crop_is_the_object(results):
    """Crop mode: the best person's box plus a margin, not the frame."""
    cfg = SnapshotConfig(
        enabled=True, labels=["person"], min_interval_s=0, mode="crop", models=["det-fp32"]
    )
    r = results[0]
    det = r.outputs[0]
    person = next(i for i, c in enumerate(det.detections.class_ids.tolist()) if c == 0)
    x1, y1, x2, y2 = det.detections.boxes[person].tolist()
    (_, _, jpeg), *_ = run_stage(cfg, [r])
    img = decode(jpeg)
    # The box and up to 15 % margin on each side (less where the frame ends).
    assert (y2 - y1) * 0.99 <= img.shape[0] <= (y2 - y1) * 1.3 + 2
    assert (x2 - x1) * 0.99 <= img.shape[1] <= (x2 - x1) * 1.3 + 2
    assert img.shape[:2] != results[0].frame.image.shape[:2]


def test_tracked_object_only_when_its_score_improves(results):
    """With track ids: the same objects at the same scores again make no new snapshot; a new
    track id (a new object) does."""
    cfg = SnapshotConfig(enabled=True, labels=["person"], min_interval_s=0, models=["det-fp32"])
    r = results[0]
    n = len(r.outputs[0].detections)
    first = with_tracks(r, {"det-fp32": list(range(1, n + 1))})
    again = with_tracks(r, {"det-fp32": list(range(1, n + 1))})
    new = with_tracks(r, {"det-fp32": list(range(101, n + 101))})
    assert len(run_stage(cfg, [first, again])) == 1
    assert len(run_stage(cfg, [first, again, new])) == 2


def test_encode_bounded_shrinks_or_refuses(results):
    """A JPEG over max_bytes is re-encoded smaller; one that cannot fit is refused."""
    img = results[0].frame.image
    full = encode_bounded(img, 95, 10_000_000)
    assert full is not None
    small = encode_bounded(img, 95, len(full) // 4)
    assert small is not None
    assert len(small) <= len(full) // 4
    assert decode(small).shape[2] == 3
    assert encode_bounded(img, 95, 200) is None


def test_untracked_model_does_not_displace_a_tracked_candidate(results):
    """det-fp32 tracked, pose-fp32 not: the pending picture stays det-fp32's tracked object
    though pose-fp32 (untracked) reports people in the same and later frames."""
    cfg = SnapshotConfig(enabled=True, labels=["person"], min_interval_s=3600)
    got: list[str] = []

    async def main() -> None:
        stage = SnapshotStage("demo", cfg, lambda _c, lab, _j: got.append(lab))
        n = len(results[0].outputs[0].detections)
        stage(with_tracks(results[0], {"det-fp32": list(range(1, n + 1))}))  # published at once
        await asyncio.sleep(0.5)
        stage(with_tracks(results[1], {"det-fp32": list(range(50, 80))}))  # new objects
        stage(results[2])  # nothing tracked
        pending = stage._pending["person"]
        assert pending.tracked
        assert pending.model == "det-fp32"
        stage.close()

    asyncio.run(main())
    assert got == ["person"]
