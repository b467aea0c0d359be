"""Config validation: the messages a user sees for each kind of mistake."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import DEMO_CONFIG, DEMO_VIDEO, DET, POSE, REPO
from edgeyolo.config import ConfigValidationError, load_config
from edgeyolo.errors import ConfigError
from helpers import run_cli


def write(tmp_path: Path, data: object, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def base() -> dict:
    return {
        "cameras": [{"name": "cam", "source": str(DEMO_VIDEO)}],
        "models": [{"name": "det", "path": str(DET), "task": "detect"}],
    }


def issues_of(path: Path) -> list[str]:
    with pytest.raises(ConfigValidationError) as info:
        load_config(path)
    return [str(i) for i in info.value.issues]


def test_bundled_configs_are_valid():
    """The demo and the fully commented example validate."""
    for name in ("demo.yaml", "example.yaml"):
        cfg = load_config(REPO / "config" / name)
        assert cfg.models
        assert all(m.path.is_file() for m in cfg.models)


def test_relative_paths_resolve_against_the_file(tmp_path):
    cfg = load_config(DEMO_CONFIG)
    assert cfg.cameras[0].source == str(DEMO_VIDEO)
    assert cfg.models[0].path == DET


def test_unknown_key_is_named(tmp_path):
    data = base()
    data["models"][0]["threshold"] = 0.5
    assert issues_of(write(tmp_path, data)) == [
        (
            "models[0].threshold = 0.5: unknown key (check the spelling; see config/example.yaml "
            "for every key)"
        )
    ]


def test_bad_type_names_key_and_value(tmp_path):
    data = base()
    data["models"][0]["conf"] = "high"
    (msg,) = issues_of(write(tmp_path, data))
    assert msg.startswith("models[0].conf = 'high': ")
    assert "number" in msg


def test_out_of_range_and_bad_choice(tmp_path):
    data = base()
    data["models"][0]["iou"] = 1.5
    data["backend"] = "cuda"
    msgs = issues_of(write(tmp_path, data))
    assert any(
        m.startswith("backend = 'cuda': Input should be 'auto', 'onnxruntime'") for m in msgs
    )
    assert any(
        m.startswith("models[0].iou = 1.5: Input should be less than or equal to 1") for m in msgs
    )


def test_missing_model_file(tmp_path):
    data = base()
    data["models"][0]["path"] = "nothere/model.onnx"
    assert issues_of(write(tmp_path, data)) == [
        f"models[0].path = '{tmp_path / 'nothere/model.onnx'}': no such file"
    ]


def test_unknown_camera_reference_and_duplicates(tmp_path):
    data = base()
    data["models"].append({"name": "det", "path": str(POSE), "task": "pose", "cameras": ["back"]})
    (msg,) = issues_of(write(tmp_path, data))
    assert msg == "models: model names must be unique, repeated: det"
    data["models"][1]["name"] = "pose"
    (msg,) = issues_of(write(tmp_path, data))
    assert msg == "models: model 'pose' lists camera 'back', which is not defined (cameras: cam)"


def test_not_yaml_and_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "cameras: [\n"))
    assert issues_of(write(tmp_path, "- a\n- b\n")) == [
        "(top level): expected a mapping of keys to values"
    ]
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "absent.yaml")


def run_check(path: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("check-config", str(path), timeout=120)


def test_check_config_cli_lists_every_error(tmp_path):
    data = base()
    data["models"][0]["conf"] = "high"
    data["cameras"][0]["colour"] = "red"
    path = write(tmp_path, data)
    res = run_check(path)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert f"{path}: cameras[0].colour = 'red': unknown key" in lines[0] + lines[1]
    assert any("models[0].conf = 'high'" in ln for ln in lines)
    assert lines[-1] == f"{path}: 2 error(s)"


def test_check_config_cli_wrong_task(tmp_path):
    """A pose model configured as detect is caught by opening the model."""
    data = base()
    data["models"][0]["path"] = str(POSE)
    path = write(tmp_path, data)
    res = run_check(path)
    assert res.returncode == 1
    assert (
        "models[0] = 'det': models[det].task is 'detect', but edgeyolo-demo-pose.onnx is a "
        "'pose' model; set task: pose"
    ) in res.stderr


def test_check_config_cli_unknown_class_label(tmp_path):
    data = base()
    data["models"][0]["classes"] = ["person", "unicorn"]
    res = run_check(write(tmp_path, data))
    assert res.returncode == 1
    assert "models[det].classes: 'unicorn' is not a label of edgeyolo-demo-det.onnx" in res.stderr


def test_check_config_cli_ok():
    res = run_check(DEMO_CONFIG)
    assert res.returncode == 0, res.stderr
    assert "ok (1 camera(s), 4 model(s)" in res.stdout
