"""Tracking, zone and line settings: defaults, and the errors a user sees for mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import DEMO_CONFIG, DEMO_VIDEO, DET
from edgeyolo.config import ConfigValidationError, TrackingConfig, load_config


def issues(tmp_path: Path, camera: dict | None = None, tracking: dict | None = None) -> list[str]:
    cam = {"name": "cam", "source": str(DEMO_VIDEO), **(camera or {})}
    model = {"name": "det", "path": str(DET), "task": "detect"}
    if tracking is not None:
        model["tracking"] = tracking
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"cameras": [cam], "models": [model]}))
    with pytest.raises(ConfigValidationError) as info:
        load_config(path)
    return [str(i) for i in info.value.issues]


def test_tracking_is_off_by_default_and_on_in_the_demo() -> None:
    """A model without a tracking section is not tracked; the demo tracks its models."""
    assert TrackingConfig().enabled is False
    cfg = load_config(DEMO_CONFIG)
    assert [m.name for m in cfg.models if m.tracking.enabled] == ["det-fp32", "pose-fp32"]
    assert [z.name for z in cfg.cameras[0].zones] == ["lawn"]
    assert [ln.name for ln in cfg.cameras[0].lines] == ["middle"]


def test_polygon_needs_three_points(tmp_path: Path) -> None:
    """A zone of two points is refused, naming the zone and its key path."""
    (msg,) = issues(tmp_path, {"zones": [{"name": "door", "points": [[0, 0], [10, 10]]}]})
    assert msg.startswith("cameras[0].zones[0]: ")
    assert "zone 'door' has 2 point(s); a polygon needs at least 3" in msg


def test_normalized_points_outside_0_1(tmp_path: Path) -> None:
    """Normalized points must be fractions of the frame."""
    zone = {"name": "yard", "normalized": True, "points": [[0, 0], [1.2, 0], [1, 1]]}
    (msg,) = issues(tmp_path, {"zones": [zone]})
    assert "point 1 (1.2, 0) is outside 0..1" in msg


def test_pixel_points_outside_the_frame(tmp_path: Path) -> None:
    """Negative pixels are outside any frame (beyond the far edge is checked on frame 1)."""
    line = {"name": "door", "points": [[-5, 100], [200, 100]]}
    (msg,) = issues(tmp_path, {"lines": [line]})
    assert msg.startswith("cameras[0].lines[0]: ")
    assert "point 0 (-5, 100) is outside the frame" in msg


def test_line_needs_two_distinct_points(tmp_path: Path) -> None:
    """A line is a segment: exactly two points, not the same."""
    one = issues(tmp_path, {"lines": [{"name": "a", "points": [[0, 0], [1, 1], [2, 2]]}]})
    assert "line 'a' needs exactly 2 points, got 3" in one[0]
    same = issues(tmp_path, {"lines": [{"name": "b", "points": [[5, 5], [5, 5]]}]})
    assert "line 'b' has two equal points" in same[0]


def test_duplicate_zone_and_line_names(tmp_path: Path) -> None:
    """Names are unique per camera and kind (they become topics)."""
    tri = [[0, 0], [100, 0], [0, 100]]
    cam = {
        "zones": [{"name": "a", "points": tri}, {"name": "a", "points": tri}],
        "lines": [
            {"name": "l", "points": [[0, 0], [9, 9]]},
            {"name": "l", "points": [[1, 1], [9, 0]]},
        ],
    }
    (msg,) = issues(tmp_path, cam)
    assert "camera 'cam': zone names must be unique, repeated: a" in msg
    del cam["zones"][1]
    (msg,) = issues(tmp_path, cam)
    assert "camera 'cam': line names must be unique, repeated: l" in msg


def test_tracking_thresholds(tmp_path: Path) -> None:
    """low_thresh above high_thresh, and unknown keys, are refused with the key path."""
    (msg,) = issues(tmp_path, tracking={"enabled": True, "high_thresh": 0.3, "low_thresh": 0.4})
    assert msg.startswith("models[0].tracking: ")
    assert "low_thresh (0.4) must not be above high_thresh (0.3)" in msg
    (msg,) = issues(tmp_path, tracking={"enabeld": True})
    assert msg.startswith("models[0].tracking.enabeld = True: unknown key")
