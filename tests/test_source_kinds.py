"""One function decides what a source string is; config validation and capture agree on it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import DEMO_VIDEO, DET, edgeyolo_cmd
from edgeyolo.config import ConfigValidationError, load_config
from edgeyolo.sources.kinds import is_live, pipeline_elements, source_kind

BGR = "videoconvert ! video/x-raw,format=BGR ! appsink"


def write(tmp_path: Path, cameras: list[dict], name: str = "c.yaml") -> Path:
    cfg = tmp_path / name
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(
        yaml.safe_dump(
            {"cameras": cameras, "models": [{"name": "det", "path": str(DET), "task": "detect"}]}
        )
    )
    return cfg


def test_quoted_device_index_is_a_device_for_config_and_capture(tmp_path):
    """source: "0" (a string) is device 0 in both places: not refused as a missing file."""
    cfg = write(tmp_path, [{"name": "usb", "source": "0"}])
    loaded = load_config(cfg).cameras[0]
    assert loaded.source == "0"
    assert source_kind(loaded.source) == "device"
    out = subprocess.run(
        edgeyolo_cmd("check-config", "--no-models", str(cfg)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "ok (1 camera(s)" in out.stdout


@pytest.mark.parametrize(
    ("source", "live"),
    [
        (0, True),
        ("/dev/video0", True),
        ("rtsp://cam/stream", True),
        ("http://cam/mjpeg", True),
        (str(DEMO_VIDEO), False),
        (f"nvarguscamerasrc sensor-id=0 ! nvvidconv ! {BGR}", True),
        (f"v4l2src device=/dev/video1 ! {BGR}", True),
        (f"rtspsrc location=rtsp://cam/s latency=0 ! decodebin ! {BGR}", True),
        (f"uridecodebin uri=rtsp://cam/s ! {BGR}", True),
        (f"uridecodebin uri=file:///v.mp4 ! {BGR}", False),
        (f"filesrc location=a.mp4 ! decodebin ! {BGR}", False),
        (f"videotestsrc num-buffers=60 ! {BGR}", False),
        (f"videotestsrc is-live=true ! {BGR}", True),
    ],
)
def test_live_or_finite(source, live):
    assert is_live(source) is live


def test_live_override_only_where_it_can_mean_something(tmp_path):
    src = f"videotestsrc ! {BGR}"
    assert is_live(src, True) is True
    assert is_live("rtsp://cam/s", False) is False
    cfg = write(tmp_path, [{"name": "f", "source": str(DEMO_VIDEO), "live": True}])
    with pytest.raises(ConfigValidationError) as err:
        load_config(cfg)
    assert "live applies to GStreamer pipelines and network URLs only" in str(err.value)
    assert "this source is a file" in str(err.value)


def test_pipeline_must_end_in_appsink(tmp_path):
    cfg = write(tmp_path, [{"name": "g", "source": "videotestsrc ! autovideosink"}])
    with pytest.raises(ConfigValidationError) as err:
        load_config(cfg)
    (issue,) = err.value.issues
    assert issue.loc == "cameras[0].source"
    assert "must end in appsink" in issue.message


def test_relative_filesrc_location_is_resolved_against_the_config_folder(tmp_path):
    """Like a plain file source, a pipeline's relative location= is the config's folder's."""
    video_dir = tmp_path.resolve() / "conf" / "clips"
    video_dir.mkdir(parents=True)
    (video_dir / "a b.mp4").write_bytes(b"only its existence is checked here")
    (video_dir / "c.mp4").write_bytes(b"only its existence is checked here")
    absolute = f"filesrc location={DEMO_VIDEO} ! decodebin ! {BGR}"
    cfg = write(
        tmp_path / "conf",
        [
            {"name": "a", "source": f'filesrc location="clips/a b.mp4" ! decodebin ! {BGR}'},
            {"name": "c", "source": f"filesrc location=clips/c.mp4 ! decodebin ! {BGR}"},
            {"name": "abs", "source": absolute},
        ],
    )
    a, c, ab = (cam.source for cam in load_config(cfg).cameras)
    assert isinstance(a, str)
    assert isinstance(c, str)
    assert pipeline_elements(a)[0] == ("filesrc", {"location": str(video_dir / "a b.mp4")})
    assert c == f"filesrc location={video_dir / 'c.mp4'} ! decodebin ! {BGR}"
    assert ab == absolute


def test_missing_filesrc_location_is_reported(tmp_path):
    cfg = write(
        tmp_path, [{"name": "g", "source": f"filesrc location=nope.mp4 ! decodebin ! {BGR}"}]
    )
    with pytest.raises(ConfigValidationError) as err:
        load_config(cfg)
    (issue,) = err.value.issues
    assert issue.loc == "cameras[0].source"
    assert issue.message == f"filesrc location={tmp_path.resolve() / 'nope.mp4'}: no such file"
