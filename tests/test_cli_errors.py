"""What a new user sees when a command line or a config is wrong: one line naming the option
or the file, the key and the value, never a traceback, never a secret (a QA pass, issue-free).

Each case runs the real command on the real demo models and video.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from typing import TYPE_CHECKING

import pytest
import yaml

from conftest import DEMO_VIDEO, DET, MODELS, REPO, edgeyolo_cmd, run_cli, shared_media
from mosquitto import Mosquitto

if TYPE_CHECKING:
    from pathlib import Path

HTTP_TYPO_SECRET = "HttpT0kTypo9"  # noqa: S105
TLS_TYPO_SECRET = "TlsKeyPassQ7"  # noqa: S105


def _config(tmp_path: Path, name: str, **sections: object) -> Path:
    data = {
        "cameras": [{"name": "demo", "source": str(DEMO_VIDEO)}],
        "models": [{"name": "det", "path": str(DET), "task": "detect"}],
        **sections,
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _clean(res: subprocess.CompletedProcess[str]) -> str:
    """stderr of a failed command, checked to be an error line and not a traceback."""
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stderr, res.stderr
    return res.stderr


@pytest.mark.parametrize(
    ("where", "section", "secret"),
    [
        # http holds `token`: a misspelled `tokn` is probably the token
        ("http.tokn", {"http": {"token": "abc123", "tokn": HTTP_TYPO_SECRET}}, HTTP_TYPO_SECRET),
        # under sinks.mqtt (which holds the password), at any depth
        (
            "sinks.mqtt.tls.keypass",
            {
                "sinks": {
                    "mqtt": {"url": "mqtts://127.0.0.1:8883", "tls": {"keypass": TLS_TYPO_SECRET}}
                }
            },
            TLS_TYPO_SECRET,
        ),
    ],
)
def test_misspelled_key_in_a_secret_section_is_masked(
    tmp_path: Path, where: str, section: dict[str, object], secret: str
):
    path = _config(tmp_path, "typo.yaml", **section)
    for cmd in (("check-config", "--no-models", str(path)), ("run", "-c", str(path))):
        err = _clean(run_cli(*cmd))
        assert f"{where} = '***': unknown key" in err, err
        assert secret not in err, err


def test_misspelled_key_elsewhere_shows_its_value(tmp_path: Path):
    """Masking is for sections with secrets: elsewhere the value helps find the mistake."""
    path = _config(tmp_path, "typo.yaml", logging={"levl": "debug"})
    err = _clean(run_cli("check-config", "--no-models", str(path)))
    assert "logging.levl = 'debug': unknown key" in err, err


def test_yaml_error_names_the_file_and_line(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("cameras:\n  - name: a\n    source: [x\n", encoding="utf-8")
    err = _clean(run_cli("check-config", str(path)))
    assert f"{path}: not valid YAML" in err, err
    assert 'in "broken.yaml", line' in err, err
    assert "<unicode string>" not in err, err


@pytest.mark.parametrize(
    ("option", "value", "shown"),
    [
        ("--conf", "2", "--conf 2.0: "),
        ("--iou", "-1", "--iou -1.0: "),
        ("--max-det", "0", "--max-det 0: "),
    ],
)
def test_predict_out_of_range_option(option: str, value: str, shown: str):
    bus = shared_media("bus.jpg")
    err = _clean(run_cli("predict", "--model", str(DET), option, value, str(bus)))
    assert err.startswith(f"edgeyolo predict: error: {shown}"), err


@pytest.mark.parametrize("value", ["0", "-1", "x"])
def test_run_max_frames_must_be_positive(value: str):
    """`--max-frames 0` used to load every model and stop at once, reporting success."""
    res = run_cli("run", "--max-frames", value)
    assert res.returncode == 2, res.stderr
    assert "argument --max-frames:" in res.stderr, res.stderr
    assert '"event": "model loaded"' not in res.stderr


def test_run_bad_http_address_named_once():
    err = _clean(run_cli("run", "--max-frames", "1", "--http", "nonsense"))
    assert err.count("--http 'nonsense'") == 1, err
    assert "the port must be a number" in err, err


def test_bench_drift_missing_model():
    missing = MODELS / "no-such-int8.onnx"
    err = _clean(run_cli("bench", "drift", str(DET), str(missing), "--speed-runs", "0"))
    assert f"{missing}: no such model file" in err, err


def test_key_given_twice_is_an_error(tmp_path: Path):
    """YAML keeps the last of two equal keys; a second `conf:` lower down used to win unseen."""
    path = tmp_path / "twice.yaml"
    path.write_text(
        f"cameras:\n  - name: demo\n    source: {DEMO_VIDEO}\n"
        f"models:\n  - name: det\n    path: {DET}\n    task: detect\n"
        "    conf: 0.9\n    iou: 0.5\n    conf: 0.1\n",
        encoding="utf-8",
    )
    for cmd in (("check-config", str(path)), ("run", "-c", str(path))):
        err = _clean(run_cli(*cmd))
        assert "found key 'conf' a second time (first on line 8)" in err, err
        assert 'in "twice.yaml", line 10' in err, err


def test_key_given_twice_on_one_line_is_an_error(tmp_path: Path):
    path = _config(tmp_path, "flow.yaml")
    path.write_text(path.read_text(encoding="utf-8") + "logging: {level: debug, level: info}\n")
    err = _clean(run_cli("check-config", "--no-models", str(path)))
    assert "found key 'level' a second time" in err, err


def test_merge_keys_may_override(tmp_path: Path):
    """`<<: *anchor` and then one of its keys again is no duplicate."""
    path = tmp_path / "merge.yaml"
    path.write_text(
        f"cameras:\n  - name: demo\n    source: {DEMO_VIDEO}\n"
        f"models:\n  - &m\n    name: det\n    path: {DET}\n    task: detect\n"
        "  - <<: *m\n    name: det2\n    conf: 0.5\n",
        encoding="utf-8",
    )
    res = run_cli("check-config", "--no-models", str(path))
    assert res.returncode == 0, res.stderr
    assert "2 model(s)" in res.stdout


def test_password_given_twice_is_not_shown(tmp_path: Path):
    first, second = "F1rstPassw0rd", "S2condPassw0rd"
    path = _config(tmp_path, "pw.yaml")
    path.write_text(
        path.read_text(encoding="utf-8") + f"sinks:\n  mqtt:\n    url: mqtt://127.0.0.1:1883\n"
        f"    password: {first}\n    password: {second}\n",
        encoding="utf-8",
    )
    err = _clean(run_cli("check-config", str(path)))
    assert "found key 'password' a second time" in err, err
    assert first not in err, err
    assert second not in err, err


def test_folder_as_camera_source(tmp_path: Path):
    """A folder passed as a video: check-config said ok and run said 'no such file'."""
    folder = tmp_path / "clips"
    folder.mkdir()
    path = _config(tmp_path, "folder.yaml", cameras=[{"name": "demo", "source": str(folder)}])
    for cmd in (("check-config", "--no-models", str(path)), ("run", "-c", str(path))):
        err = _clean(run_cli(*cmd))
        assert f"cameras[0].source = '{folder}': a folder, not a file" in err, err


def test_no_output_at_all_is_warned(tmp_path: Path):
    """No JSON lines, no MQTT, no HTTP: it ran and told nobody anything."""
    path = _config(tmp_path, "silent.yaml", sinks={"jsonl": {"enabled": False}})
    res = run_cli("check-config", "--no-models", str(path))
    assert res.returncode == 0, res.stderr
    assert f"{path}: warning: no output: sinks.jsonl.enabled is false" in res.stderr
    res = run_cli("run", "-c", str(path), "--max-frames", "1", "--log-format", "json")
    assert res.returncode == 0, res.stderr
    assert "no output: sinks.jsonl.enabled is false" in res.stderr
    # Any one output is enough.
    quiet = _config(
        tmp_path, "http.yaml", sinks={"jsonl": {"enabled": False}}, http={"enabled": True}
    )
    res = run_cli("check-config", "--no-models", str(quiet))
    assert res.returncode == 0, res.stderr
    assert "warning" not in res.stderr, res.stderr


def test_stdout_reader_exits():
    """`edgeyolo run | head -1`: the camera failed with '[Errno 32] Broken pipe'; now the
    service stops at once with one line saying why (exit 1 as before, so that systemd's
    Restart=on-failure and `set -o pipefail` still see it)."""
    proc = subprocess.Popen(
        edgeyolo_cmd("run", "--loop", "--log-format", "json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["type"] == "detections"
        proc.stdout.close()
        _, err_bytes = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err_bytes.decode()
    assert proc.returncode == 1, err
    assert '"event": "stdout closed by its reader"' in err, err
    assert '"reason": "stdout closed"' in err, err
    for bad in ("camera failed", "Exception ignored", "Traceback"):
        assert bad not in err, err


@pytest.mark.mqtt
def test_remove_discovery_wrong_password_says_so(tmp_path: Path):
    """A broker that refuses the credentials: the error names the user and says what to check
    (the url it showed had no user, and there was no hint)."""
    broker = Mosquitto(tmp_path / "broker", users={"edgeyolo": "right-one"})
    broker.start()
    try:
        url = f"mqtt://edgeyolo:Wr0ngPassw0rd@127.0.0.1:{broker.port}"
        res = run_cli("mqtt", "remove-discovery", "--mqtt-url", url, "--timeout", "5", timeout=60)
    finally:
        broker.stop()
    err = _clean(res)
    assert f"MQTT broker mqtt://edgeyolo@127.0.0.1:{broker.port}: " in err, err
    assert "the broker refused the credentials" in err, err
    assert "Wr0ngPassw0rd" not in err, err


def test_every_option_has_help():
    """`edgeyolo COMMAND --help` lists every option (README): each with what it does."""
    from edgeyolo.cli import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        assert "``" not in (parser.description or ""), f"{name}: reST markup in --help"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}")
            elif action.option_strings and action.help is None:
                missing.append(f"{name} {action.option_strings[-1]}")

    walk(build_parser(), "edgeyolo")
    assert missing == [], missing


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (("--classes", "person,unicorn"), "--classes: 'unicorn' is not a label of"),
        (("--classes", "99"), "--classes: class id 99 is outside 0..79"),
        (
            ("--task", "pose"),
            "--task is 'pose', but edgeyolo-demo-det.onnx is a 'detect' model; use --task detect",
        ),
    ],
)
def test_predict_model_checks_name_the_option(args: tuple[str, ...], shown: str):
    """They named a config key (models[edgeyolo-demo-det].classes) that predict has not got."""
    bus = shared_media("bus.jpg")
    err = _clean(run_cli("predict", "--model", str(DET), *args, str(bus)))
    assert f"edgeyolo predict: error: {shown}" in err, err


@pytest.mark.parametrize(
    ("section", "shown"),
    [
        ({"loging": {"level": "debug"}}, "loging: unknown key (check"),
        ({"mqtt": {"url": "mqtt://127.0.0.1:1883"}}, "mqtt: unknown key (check"),
        (
            {"http": {"prot": 9000}},
            "http.prot = '***': unknown key (check",
        ),  # masked: http has the token
    ],
)
def test_unknown_key_suggests_the_known_one(tmp_path: Path, section: dict[str, object], shown: str):
    path = _config(tmp_path, "typo.yaml", **section)
    err = _clean(run_cli("check-config", "--no-models", str(path)))
    want = {"loging": "'logging'", "mqtt": "'sinks.mqtt'", "http": "'port'"}[next(iter(section))]
    assert shown in err, err
    assert f"for every key); did you mean {want}?" in err, err


def test_unknown_key_without_a_near_one_gets_no_guess(tmp_path: Path):
    path = _config(tmp_path, "typo.yaml", logging={"verbosity": 3})
    err = _clean(run_cli("check-config", "--no-models", str(path)))
    assert "logging.verbosity = 3: unknown key" in err, err
    assert "did you mean" not in err, err


def test_camera_without_models_is_warned_by_check_config(tmp_path: Path):
    """run skips it with a warning; check-config said nothing."""
    path = _config(
        tmp_path,
        "idle.yaml",
        cameras=[
            {"name": "a", "source": str(DEMO_VIDEO)},
            {"name": "b", "source": str(DEMO_VIDEO)},
        ],
        models=[{"name": "det", "path": str(DET), "task": "detect", "cameras": ["a"]}],
    )
    res = run_cli("check-config", "--no-models", str(path))
    assert res.returncode == 0, res.stderr
    assert f"{path}: warning: cameras[1] 'b': no model runs on it" in res.stderr, res.stderr
    assert "cameras[0]" not in res.stderr, res.stderr


def _run_with_closed(fd: int, *args: str) -> subprocess.CompletedProcess[str]:
    """``edgeyolo ARGS`` started with file descriptor ``fd`` (1 or 2) closed; the other of
    stdout/stderr is captured."""
    return subprocess.run(
        edgeyolo_cmd(*args),
        stdout=subprocess.DEVNULL if fd == 1 else subprocess.PIPE,
        stderr=subprocess.DEVNULL if fd == 2 else subprocess.PIPE,
        text=True,
        timeout=60,
        cwd=REPO,
        preexec_fn=lambda: os.close(fd),  # the child starts with it closed
        check=False,
    )


def test_stdout_closed_from_the_start():
    """`edgeyolo run >&-`: the camera failed with 'JsonlSink.emit() before start()'."""
    res = _run_with_closed(1, "run", "--max-frames", "1")
    err = _clean(res)
    assert "edgeyolo run: error: sinks.jsonl.path '-': stdout is closed" in err, err
    assert "camera failed" not in err, err


def test_stderr_closed_from_the_start():
    """`edgeyolo run 2>&-` exited 1 before doing anything (the first log line raised on a
    None sys.stderr), with nowhere to say so. It runs; the logs go nowhere."""
    res = _run_with_closed(2, "run", "--max-frames", "1", "--mqtt-url", "embedded")
    assert res.returncode == 0
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert {e["model"] for e in events if e["type"] == "detections"} == {
        "det-fp32",
        "det-int8",
        "pose-fp32",
        "pose-int8",
    }


def test_zones_without_a_tracked_model_are_warned(tmp_path: Path):
    """Zones and lines count tracked objects only; on an untracked camera they sat silent."""
    zone = {"name": "lawn", "points": [[0, 0], [1, 0], [1, 1]], "normalized": True}
    camera = {"name": "demo", "source": str(DEMO_VIDEO), "zones": [zone]}
    model = {"name": "det", "path": str(DET), "task": "detect"}
    path = _config(tmp_path, "zones.yaml", cameras=[camera], models=[model])
    res = run_cli("check-config", "--no-models", str(path))
    assert res.returncode == 0, res.stderr
    assert "warning: cameras[0] 'demo': its zones and lines (lawn) count tracked objects" in (
        res.stderr
    )
    model["tracking"] = {"enabled": True}
    path = _config(tmp_path, "tracked.yaml", cameras=[camera], models=[model])
    res = run_cli("check-config", "--no-models", str(path))
    assert res.returncode == 0, res.stderr
    assert "warning" not in res.stderr, res.stderr


def test_predict_on_a_folder(tmp_path: Path):
    """It said '<folder>: no such file'."""
    err = _clean(run_cli("predict", "--model", str(DET), str(tmp_path)))
    assert f"{tmp_path}: a folder; give image or video files (e.g. {tmp_path}/*.jpg)" in err, err


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (("--frames", "0"), "argument --frames: 0; expected at least 1"),
        (("--frames", "-3"), "argument --frames: -3; expected at least 1"),
        (("--warmup", "-1"), "argument --warmup: -1; expected 0 or more"),
        (("--cameras", "0"), "argument --cameras: 0; expected at least 1"),
        (("--paced",), "bench --paced: only with --cameras N"),
        (("--rounds", "3", "--paced"), "bench --paced and --rounds: only with --cameras N"),
        (("tracking", "--frames", "0"), "argument --frames: 0; expected at least 1"),
    ],
)
def test_bench_refuses_counts_it_cannot_use(args, shown):
    """`bench --frames 0` used to run and then say the source delivered no frames; --paced and
    --rounds without --cameras were ignored: now each is one error line before anything runs."""
    err = _clean(run_cli("bench", *args))
    assert shown in err, err
