"""Config hardening (issue 10): partial overrides, non-UTF-8 files, unwritable sinks, secrets."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from conftest import DEMO_VIDEO, DET
from edgeyolo.config import parse_config
from helpers import run_cli


def _base(**sinks: object) -> dict:
    return {
        "cameras": [{"name": "demo", "source": str(DEMO_VIDEO)}],
        "models": [{"name": "d", "path": str(DET), "task": "detect"}],
        "sinks": sinks,
    }


def _check(tmp_path: Path, raw: dict | str | bytes, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "c.yaml"
    if isinstance(raw, bytes):
        path.write_bytes(raw)
    else:
        path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw), encoding="utf-8")
    return run_cli("check-config", *args, str(path))


def test_partial_message_override_merges_with_the_defaults(tmp_path: Path):
    """`messages: {stream: {qos: 1}}` keeps the stream's default retain (False)."""
    raw = _base(mqtt={"url": "mqtt://127.0.0.1:1", "messages": {"stream": {"qos": 1}}})
    out = _check(tmp_path, raw, "--no-models")
    assert out.returncode == 0, out.stderr
    msgs = parse_config(raw, tmp_path / "c.yaml").sinks.mqtt.messages  # type: ignore[union-attr]
    assert (msgs.stream.qos, msgs.stream.retain) == (1, False)
    assert (msgs.state.qos, msgs.state.retain) == (1, True)
    raw["sinks"]["mqtt"]["messages"] = {"state": {"retain": False}, "stats": {"qos": 7}}
    out = _check(tmp_path, raw, "--no-models")
    assert out.returncode == 1
    assert "sinks.mqtt.messages.stats.qos = 7" in out.stderr
    assert "retain" not in out.stderr


def test_non_utf8_config_is_one_clear_error(tmp_path: Path):
    """A config saved as Latin-1 names the file, the byte and its offset; no traceback."""
    text = yaml.safe_dump(_base(), allow_unicode=True).replace("demo", "küche", 1)
    raw = text.encode("latin-1")
    offset = raw.index(b"\xfc")
    out = _check(tmp_path, raw)
    assert out.returncode == 1
    assert f"c.yaml: not UTF-8 text: byte 0xfc at offset {offset}" in out.stderr
    assert "Traceback" not in out.stderr
    res = run_cli("run", "-c", str(tmp_path / "c.yaml"))
    assert res.returncode == 2
    assert f"not UTF-8 text: byte 0xfc at offset {offset}" in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_http_port_in_use_is_one_line_and_nonzero(tmp_path: Path):
    """`run --http HOST:PORT` on a taken port: one error line naming it, exit 2."""
    import socket

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_base(jsonl={"enabled": False})), encoding="utf-8")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = run_cli(
            "run", "-c", str(path), "--max-frames", "1", "--http", f"127.0.0.1:{port}",
            "--log-level", "error",
        )  # fmt: skip
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert lines == [lines[0]], res.stderr
    assert f"http: cannot listen on 127.0.0.1:{port}" in lines[0]
    assert "address already in use" in lines[0].lower()


def test_unwritable_jsonl_path_is_a_config_error(tmp_path: Path):
    """check-config (and so run) refuses a JSON-lines path in a missing folder or a folder."""
    for bad, why in (
        (tmp_path / "missing" / "events.jsonl", "does not exist"),
        (tmp_path, "is a folder"),
    ):
        raw = _base(jsonl={"path": str(bad)})
        out = _check(tmp_path, raw, "--no-models")
        assert out.returncode == 1, out.stderr
        assert f"sinks.jsonl.path = '{bad}'" in out.stderr
        assert why in out.stderr
        res = run_cli("run", "-c", str(tmp_path / "c.yaml"), timeout=60)
        assert res.returncode == 2
        assert why in res.stderr
        assert "Traceback" not in res.stderr
    ok = _base(jsonl={"path": str(tmp_path / "events.jsonl")})
    assert _check(tmp_path, ok, "--no-models").returncode == 0


def test_cuda_graph_setting_defaults_to_auto_and_names_a_bad_value(tmp_path: Path):
    """``tensorrt.gpu.cuda_graph``: auto by default; a typo names the key, value and choices."""
    raw = _base()
    assert parse_config(raw, tmp_path / "c.yaml").tensorrt.gpu.cuda_graph == "auto"
    raw["tensorrt"] = {"gpu": {"cuda_graph": "yes"}}
    out = _check(tmp_path, raw, "--no-models")
    assert out.returncode == 1
    assert "c.yaml: tensorrt.gpu.cuda_graph = 'yes': Input should be 'auto', 'on' or 'off'" in (
        out.stderr
    )
    raw["tensorrt"] = {"gpu": {"cuda_graph": "off"}}
    assert _check(tmp_path, raw, "--no-models").returncode == 0
