"""Drawing real detections of the demo models on real demo frames."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from edgeyolo.annotate import (
    COCO_SKELETON,
    LINE_COLOUR,
    ZONE_COLOUR,
    Header,
    Shape,
    annotate,
    camera_shapes,
    model_colour,
)
from realresults import RealModels, demo_frames, with_tracks


@pytest.fixture(scope="module")
def result():
    return RealModels().run("demo", 1, demo_frames(1, start=60)[0])


def _has_colour(img: np.ndarray, colour: tuple[int, int, int], x: int, y: int, r: int = 2) -> bool:
    patch = img[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1].reshape(-1, 3)
    return bool((np.abs(patch.astype(int) - colour).sum(axis=1) < 40).any())


def test_draws_on_a_copy_never_on_the_frame(result):
    """The engines' frame is unchanged; the copy has each model's boxes in its colour."""
    image = result.frame.image
    before = hashlib.sha256(image.tobytes()).hexdigest()
    out = annotate(image, result.outputs, header=Header("demo", 15.0, 40.0))
    assert hashlib.sha256(image.tobytes()).hexdigest() == before
    assert out.shape == image.shape
    assert out.dtype == np.uint8
    assert out is not image
    assert not np.shares_memory(out, image)
    assert not np.array_equal(out, image)
    for i, o in enumerate(result.outputs):
        assert len(o.detections) > 0, f"{o.model} saw nothing on the demo frame"
        # Alone (the models' boxes overlap), in its own colour: every box's right edge.
        alone = annotate(image, result.outputs, models={o.model})
        for box in np.rint(o.detections.boxes).astype(int).tolist():
            x2, yc = min(box[2], image.shape[1] - 1), (box[1] + box[3]) // 2
            assert _has_colour(alone, model_colour(i), x2, yc), (o.model, box)


def test_track_ids_are_drawn_when_present(result):
    """The same frame with track ids differs from it without, around the labels only."""
    plain = annotate(result.frame.image, result.outputs)
    tracked_result = with_tracks(result, {"det-fp32": list(range(100, 200))})
    tracked = annotate(tracked_result.frame.image, tracked_result.outputs)
    diff = np.abs(plain.astype(int) - tracked).sum(axis=2) > 0
    assert diff.any()
    # Only text changed: a small share of the picture.
    assert diff.mean() < 0.02


def test_pose_skeleton_limbs_are_drawn(result):
    """A limb between two confident keypoints of a real pose result is drawn in its colour."""
    index = next(i for i, o in enumerate(result.outputs) if o.model == "pose-fp32")
    out = annotate(result.frame.image, [result.outputs[index]], models={"pose-fp32"})
    kpts = result.outputs[index].detections.keypoints
    checked = 0
    for person in kpts:
        for a, b in COCO_SKELETON:
            if person[a, 2] >= 0.5 and person[b, 2] >= 0.5:
                mid = (person[a, :2] + person[b, :2]) / 2
                if np.linalg.norm(person[a, :2] - person[b, :2]) > 12:
                    assert _has_colour(out, model_colour(0), int(mid[0]), int(mid[1]))
                    checked += 1
    assert checked > 5


def test_models_filter_zones_and_header(result):
    """Only the chosen models are drawn; zones and lines too; the header darkens its strip."""
    zone = Shape("door", ((100.0, 300.0), (300.0, 300.0), (300.0, 500.0), (100.0, 500.0)))
    line = Shape("gate", ((500.0, 100.0), (700.0, 400.0)), closed=False)
    none = annotate(result.frame.image, result.outputs, models=set())
    with_shapes = annotate(result.frame.image, [], shapes=[zone, line])
    assert np.array_equal(none, result.frame.image)
    assert _has_colour(with_shapes, ZONE_COLOUR, 200, 500)
    assert _has_colour(with_shapes, LINE_COLOUR, 600, 250)
    assert not _has_colour(with_shapes, ZONE_COLOUR, 600, 250)
    head = annotate(result.frame.image, [], header=Header("demo", 15.0, 40.0))
    assert head[:22].mean() < result.frame.image[:22].mean() / 2 + 20
    assert np.array_equal(head[22:], result.frame.image[22:])


def test_camera_zones_and_lines_from_the_demo_config(result):
    """The demo camera's normalized zone and line land where the fractions say."""
    from conftest import DEMO_CONFIG
    from edgeyolo.config import load_config

    cam = load_config(DEMO_CONFIG).cameras[0]
    shapes = camera_shapes(cam)
    assert [(s.name, s.closed, s.normalized) for s in shapes] == [
        ("lawn", True, True),
        ("middle", False, True),
    ]
    out = annotate(result.frame.image, [], shapes=shapes)
    h, w = out.shape[:2]
    assert _has_colour(out, ZONE_COLOUR, int(0.25 * w), int(0.45 * h))  # the lawn's top edge
    assert _has_colour(out, LINE_COLOUR, int(0.5 * w), int(0.35 * h))  # the line above it
